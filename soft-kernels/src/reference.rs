//! f64 reference operations for tests: the textbook formulas, in f64, that the kernels'
//! and the engine's f32 results are measured against. Test support, not engine code:
//! compiled for this crate's own tests and, for other crates' tests, with the
//! `test-support` feature (soft-core enables it as a dev-dependency).
//!
//! Matrices are row-major; every function computes in the order its formula is written.

use alloc::vec::Vec;

/// `v` widened to f64.
pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// `a · b` for `a` of `n × k` and `b` of `k × m`: the `n × m` product.
pub fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    assert!(a.len() == n * k && b.len() == k * m, "matmul shapes");
    (0..n * m)
        .map(|ij| (0..k).map(|l| a[ij / m * k + l] * b[l * m + ij % m]).sum())
        .collect()
}

/// LayerNorm of one row in place: `(x − mean) / √(var + eps) · w + b`, with the biased
/// variance (PyTorch's).
pub fn layer_norm(x: &mut [f64], w: &[f32], b: &[f32], eps: f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) / libm::sqrt(var + eps) * f64::from(w[i]) + f64::from(b[i]);
    }
}

/// GELU, exact form: `x/2 · (1 + erf(x/√2))`.
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / libm::sqrt(2.0)))
}

/// GELU, tanh approximation: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: f64) -> f64 {
    let c = libm::sqrt(2.0 / core::f64::consts::PI);
    0.5 * x * (1.0 + libm::tanh(c * (x + 0.044715 * x * x * x)))
}

/// SOFT's Gaussian kernel of two rows: `exp(−|a − b|² / 2)`.
pub fn gaussian(a: &[f64], b: &[f64]) -> f64 {
    libm::exp(-a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / 2.0)
}

/// The inverse of the `m × m` matrix `a`, by Gauss–Jordan elimination with partial
/// pivoting.
pub fn inverse(a: &[f64], m: usize) -> Vec<f64> {
    assert_eq!(a.len(), m * m, "inverse shape");
    let w = 2 * m;
    let mut aug = alloc::vec![0.0; m * w];
    for i in 0..m {
        aug[i * w..i * w + m].copy_from_slice(&a[i * m..(i + 1) * m]);
        aug[i * w + m + i] = 1.0;
    }
    for col in 0..m {
        let pivot = (col..m)
            .max_by(|&x, &y| aug[x * w + col].abs().total_cmp(&aug[y * w + col].abs()))
            .unwrap_or(col);
        for j in 0..w {
            aug.swap(col * w + j, pivot * w + j);
        }
        let p = aug[col * w + col];
        for j in 0..w {
            aug[col * w + j] /= p;
        }
        for r in (0..m).filter(|&r| r != col) {
            let f = aug[r * w + col];
            for j in 0..w {
                aug[r * w + j] -= f * aug[col * w + j];
            }
        }
    }
    (0..m)
        .flat_map(|i| aug[i * w + m..(i + 1) * w].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_references_compute_their_formulas() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        assert_eq!(matmul(&a, &b, 2, 3, 2), [58.0, 64.0, 139.0, 154.0]);
        let a = [4.0, 7.0, 2.0, 6.0];
        let inv = inverse(&a, 2);
        let id = matmul(&a, &inv, 2, 2, 2);
        for (got, want) in id.iter().zip([1.0, 0.0, 0.0, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{id:?}");
        }
        let mut x = [1.0, 3.0];
        layer_norm(&mut x, &[2.0, 2.0], &[0.5, 0.5], 0.0);
        assert_eq!(x, [-1.5, 2.5]);
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((gelu_erf(1.0) - 0.841_344_746_068_543).abs() < 1e-12);
        assert!((gelu_tanh(1.0) - 0.841_191_990_607_408).abs() < 1e-12);
        assert_eq!(gaussian(&[1.0, 2.0], &[1.0, 2.0]), 1.0);
        assert!((gaussian(&[0.0, 0.0], &[1.0, 1.0]) - (-1.0f64).exp()).abs() < 1e-15);
    }
}
