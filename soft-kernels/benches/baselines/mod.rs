//! Naive scalar baselines shared by the criterion benches (`soft-kernels/benches/kernels.rs`)
//! and the table example (`soft-host/examples/bench_table.rs`): textbook loops over
//! PyTorch's `[out][in]` layout and libm, so a kernel's speed-up is a measured ratio.
// Each harness uses a subset.
#![allow(dead_code)]

/// Deterministic uniform values in `[-1, 1)`.
pub struct Rng(soft_kernels::rng::XorShift64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(soft_kernels::rng::XorShift64::new(seed))
    }

    pub fn next(&mut self) -> f32 {
        self.0.signed()
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// `[in][out]` → `[out][in]`.
pub fn transpose<T: Copy>(w: &[T], inputs: usize, outputs: usize) -> Vec<T> {
    let mut t = Vec::with_capacity(w.len());
    for o in 0..outputs {
        for i in 0..inputs {
            t.push(w[i * outputs + o]);
        }
    }
    t
}

/// Naive linear layer over the PyTorch `[out][in]` layout: one dot product per output.
pub fn naive_linear<W: Copy>(
    w: &[W],
    widen: impl Fn(W) -> f32,
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    ni: usize,
) {
    let no = b.len();
    for (xt, yt) in x.chunks_exact(ni).zip(y.chunks_exact_mut(no)) {
        for o in 0..no {
            let mut acc = b[o];
            for i in 0..ni {
                acc += widen(w[o * ni + i]) * xt[i];
            }
            yt[o] = acc;
        }
    }
}

/// Naive int8 linear layer, `[out][in]`, per-output scale applied after the sum.
pub fn naive_linear_i8(q: &[i8], scales: &[f32], b: &[f32], x: &[f32], y: &mut [f32], ni: usize) {
    let no = b.len();
    for (xt, yt) in x.chunks_exact(ni).zip(y.chunks_exact_mut(no)) {
        for o in 0..no {
            let mut acc = 0.0f32;
            for i in 0..ni {
                acc += f32::from(q[o * ni + i]) * xt[i];
            }
            yt[o] = b[o] + scales[o] * acc;
        }
    }
}

/// `c = a · b`, `m×m`, textbook `i, j, k` loops.
pub fn naive_matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize) {
    for i in 0..m {
        for j in 0..m {
            let mut acc = 0.0f32;
            for k in 0..m {
                acc += a[i * m + k] * b[k * m + j];
            }
            c[i * m + j] = acc;
        }
    }
}

/// Naive Gaussian kernel rows: `exp(-|q - l|²/2)` with index loops.
pub fn naive_kernel_rows(q: &[f32], lm: &[f32], d: usize, m: usize, out: &mut [f32]) {
    let rows = q.len() / d;
    for t in 0..rows {
        for l in 0..m {
            let mut dist = 0.0f32;
            for i in 0..d {
                let diff = q[t * d + i] - lm[l * d + i];
                dist += diff * diff;
            }
            out[t * m + l] = (-dist / 2.0).exp();
        }
    }
}

/// Naive GELU rows through libm's tanh.
pub fn naive_gelu_tanh(x: &mut [f32]) {
    for v in x {
        let u = 0.797_884_6 * (*v + 0.044715 * *v * *v * *v);
        *v = 0.5 * *v * (1.0 + libm::tanhf(u));
    }
}

/// Naive exp rows through libm.
pub fn naive_exp(x: &mut [f32]) {
    for v in x {
        *v = libm::expf(*v);
    }
}

/// Naive LayerNorm of `width`-value rows.
pub fn naive_layer_norm(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let n = width as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let r = 1.0 / (var + 1e-5).sqrt();
        for v in row.iter_mut() {
            *v = (*v - mean) * r;
        }
    }
}
