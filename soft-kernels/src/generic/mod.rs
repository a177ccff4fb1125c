//! The generic scalar kernels: the reference that defines every kernel's bits, and the
//! kernels of targets without a SIMD version (the Cortex-M4F among them). Plain safe Rust;
//! LLVM vectorises some loops across independent outputs, which changes no bit.

mod gauss;
mod gemm;
mod quant;

mod rows;

use crate::table::Kernels;

/// The generic kernels.
pub static GENERIC: Kernels = Kernels {
    name: "generic",
    gemm: gemm::gemm,
    gaussian: gauss::gaussian,
    exp: rows::exp,
    gelu_tanh: rows::gelu_tanh,
    gelu_erf: rows::gelu_erf,
    widen_f16: rows::widen_f16,
    narrow_f16: rows::narrow_f16,
    depthwise: rows::depthwise,
    layer_norm: rows::layer_norm,
    peak: rows::peak,
    quantize: quant::quantize,
    gemm_q8: quant::gemm_q8,
};

#[cfg(test)]
mod accuracy {
    //! The generic kernels against f64 evaluations: how far the contract's f32 rounding
    //! lands from the exact result. (Bit equality of every implementation with the
    //! contract is `suite`'s job.)

    use half::f16;
    use proptest::prelude::*;

    use crate::operand::{Lhs, Out, Rhs, RhsData, Start, Strided, Vector};
    use crate::reference::{gelu_erf, gelu_tanh, layer_norm, matmul, widen};
    use crate::rng::XorShift64;
    use crate::Kernels;

    proptest! {
        #[test]
        fn gemm_is_within_f32_rounding_of_f64(ni in 1usize..300, no in 1usize..40, tokens in 1usize..20, seed in any::<u64>()) {
            let mut r = XorShift64::new(seed | 1);
            let mut rnd = || r.signed();
            let w: Vec<f32> = (0..ni * no).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..no).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..ni * tokens).map(|_| rnd()).collect();
            let lhs = Lhs::new(Strided::rows_of(&x, tokens, ni, ni).unwrap());
            let k = Kernels::generic();
            let mut y = vec![0.0; no * tokens];
            let rhs = Rhs::new(RhsData::F32(&w), ni, no, no).unwrap();
            k.gemm(&lhs, &rhs, Start::Bias(Vector::F32(&b)), &mut Out::new(&mut y, tokens, no, no).unwrap()).unwrap();
            let xw = matmul(&widen(&x), &widen(&w), tokens, ni, no);
            for t in 0..tokens {
                for o in 0..no {
                    let want = f64::from(b[o]) + xw[t * no + o];
                    prop_assert!((f64::from(y[t * no + o]) - want).abs() < 1e-5 * (ni as f64 + 1.0));
                }
            }
            // int8: bias + scale · Σ x·q.
            let q: Vec<i8> = (0..ni * no).map(|i| (i % 255) as i8).collect();
            let scales: Vec<f32> = (0..no).map(|o| 0.01 * (o + 1) as f32).collect();
            let rhs = Rhs::new(RhsData::I8 { q: &q, scales: &scales }, ni, no, no).unwrap();
            k.gemm(&lhs, &rhs, Start::Bias(Vector::F32(&b)), &mut Out::new(&mut y, tokens, no, no).unwrap()).unwrap();
            let xq = matmul(&widen(&x), &q.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), tokens, ni, no);
            for t in 0..tokens {
                for o in 0..no {
                    let want = f64::from(b[o]) + f64::from(scales[o]) * xq[t * no + o];
                    prop_assert!((f64::from(y[t * no + o]) - want).abs() < 1e-4 * (ni as f64 + 1.0));
                }
            }
            // f16 weights give exactly what f32 weights of the same values give.
            let wh: Vec<u16> = w.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
            let wr: Vec<f32> = wh.iter().map(|h| f16::from_bits(*h).to_f32()).collect();
            let (mut y1, mut y2) = (vec![0.0; no * tokens], vec![0.0; no * tokens]);
            k.gemm(&lhs, &Rhs::new(RhsData::F16Finite(&wh), ni, no, no).unwrap(), Start::Zero, &mut Out::new(&mut y1, tokens, no, no).unwrap()).unwrap();
            k.gemm(&lhs, &Rhs::new(RhsData::F32(&wr), ni, no, no).unwrap(), Start::Zero, &mut Out::new(&mut y2, tokens, no, no).unwrap()).unwrap();
            prop_assert_eq!(y1, y2);
        }

        #[test]
        fn layer_norm_is_within_2e_4_of_f64(x in prop::collection::vec(-100.0f32..100.0, 2..64)) {
            let n = x.len();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.01).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * -0.02).collect();
            let mut y = x.clone();
            Kernels::generic().layer_norm(&mut y, n, &Vector::F32(&w), &Vector::F32(&b), 1e-5).unwrap();
            let mut exact = widen(&x);
            layer_norm(&mut exact, &w, &b, 1e-5);
            for i in 0..n {
                let want = exact[i];
                prop_assert!((f64::from(y[i]) - want).abs() < 2e-4, "{} vs {}", y[i], want);
            }
        }
    }

    #[test]
    fn gelus_are_within_1e_6_of_f64() {
        for i in -4000..4000 {
            let x = i as f32 * 0.0025;
            let (erf, tanh) = (gelu_erf(f64::from(x)), gelu_tanh(f64::from(x)));
            let (ge, gt) = (crate::math::gelu_erf(x), crate::math::gelu_tanh(x));
            assert!(
                (f64::from(ge) - erf).abs() <= 1e-6 * (1.0 + erf.abs()),
                "{x}"
            );
            assert!(
                (f64::from(gt) - tanh).abs() <= 1e-6 * (1.0 + tanh.abs()),
                "{x}"
            );
        }
    }
}
