//! The test suite every kernel implementation runs: [`kernel_suite!`] gives one
//! implementation proptests over shapes (odd sizes, block edges, strides, pieces), edge
//! values and exhaustive f16 sweeps, each checking every output bit against the contract
//! written as the plainest possible loops below. The generic kernels run it too, so their
//! blocking is checked against the contract, not against themselves.

use half::f16;
use proptest::prelude::*;

use crate::math;
use crate::operand::{widen, Elems, Lhs, Out, Rhs, RhsData, Start, Strided, Vector};
use crate::table::Kernels;

/// Bit equality, with every NaN equal to every other (payloads are not in the contract).
pub fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Asserts two slices agree bit for bit, naming the first difference.
pub fn assert_bits(what: &str, got: &[f32], want: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{} lengths", what);
    if let Some(i) = (0..got.len()).find(|&i| !same_bits(got[i], want[i])) {
        return Err(TestCaseError::fail(format!(
            "{what}: index {i}: {} ({:#010x}) vs contract {} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        )));
    }
    Ok(())
}

/// Values that stress rounding: signed zeros, subnormals, huge and tiny magnitudes, exact
/// ties, and ordinary values; mostly ordinary.
pub fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -2.0f32..2.0,
        1 => prop::sample::select(vec![
            0.0f32, -0.0, 1.0, -1.0, 0.5, 1e-40, -1e-40, f32::MIN_POSITIVE, 3.0e38, -3.0e38,
            1e-20, 65504.0, 65520.0, 1.0 + f32::EPSILON, 16777216.0, 0.1,
        ]),
        1 => -1e6f32..1e6,
    ]
}

/// The GEMM contract: `s + a·b` term by term over the depth.
pub fn gemm_contract(
    lhs: &Lhs<'_>,
    rhs: &Rhs<'_>,
    start: Start<'_>,
    out: &mut [f32],
    stride: usize,
) {
    let (rows, depth, cols) = (lhs.rows(), lhs.depth(), rhs.cols());
    let mut a = vec![0.0f32; depth];
    for i in 0..rows {
        lhs.read(i, 0, &mut a);
        for j in 0..cols {
            let b = |k: usize| -> f32 {
                let at = k * rhs.row_stride() + j;
                match rhs.data() {
                    RhsData::F32(v) => v[at],
                    RhsData::F16Finite(v) => f16::from_bits(v[at]).to_f32(),
                    RhsData::F16(v) => v[at].to_f32(),
                    RhsData::I8 { q, .. } => f32::from(q[at]),
                }
            };
            let old = out[i * stride + j];
            let (mut acc, bias) = match (start, rhs.data()) {
                (Start::Bias(v), RhsData::I8 { .. }) => (0.0, v.get(j)),
                (Start::Zero, RhsData::I8 { .. }) => (0.0, 0.0),
                (Start::Zero, _) => (0.0, 0.0),
                (Start::Bias(v), _) => (v.get(j), 0.0),
                (Start::Accumulate, _) => (old, 0.0),
            };
            for (k, &x) in a.iter().enumerate() {
                acc += x * b(k);
            }
            out[i * stride + j] = match rhs.data() {
                RhsData::I8 { scales, .. } => bias + scales[j] * acc,
                _ => acc,
            };
        }
    }
}

/// The Gaussian-rows contract.
pub fn gaussian_contract(q: &Strided<'_>, lt: &Strided<'_>, out: &mut [f32], stride: usize) {
    for t in 0..q.rows() {
        for l in 0..lt.cols() {
            let mut acc = 0.0f32;
            for i in 0..q.cols() {
                let diff = q.at(t, i) - lt.at(i, l);
                acc += diff * diff;
            }
            out[t * stride + l] = math::exp(acc * -0.5);
        }
    }
}

/// The LayerNorm contract, one row.
pub fn layer_norm_contract(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mut sum = 0.0f32;
    for v in x.iter() {
        sum += *v;
    }
    let mean = sum / n;
    let mut sq = 0.0f32;
    for v in x.iter() {
        sq += (*v - mean) * (*v - mean);
    }
    let rstd = 1.0 / libm::sqrtf(sq / n + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) * rstd * w[i] + b[i];
    }
}

/// A GEMM case: shapes, strides, pieces, right-operand type and start, with values.
#[derive(Debug, Clone)]
pub struct GemmCase {
    pub rows: usize,
    pub cols: usize,
    /// Depth of each lhs piece.
    pub depths: Vec<usize>,
    /// Extra elements between lhs rows (0 = packed), and whether the lhs is stored
    /// transposed (column stride = rows + pad).
    pub lhs_pad: usize,
    pub lhs_transposed: bool,
    pub rhs_pad: usize,
    pub out_pad: usize,
    /// 0 f32, 1 f16 weights, 2 f16 activations, 3 int8.
    pub rhs_kind: u8,
    /// 0 zero, 1 f32 bias, 2 f16 bias, 3 accumulate.
    pub start: u8,
    pub lhs: Vec<f32>,
    pub rhs: Vec<f32>,
    pub halves: Vec<u16>,
    pub bytes: Vec<i8>,
    pub scales: Vec<f32>,
    pub bias: Vec<f32>,
    pub out: Vec<f32>,
}

/// GEMM cases of every shape class the kernels block by.
pub fn gemm_case() -> impl Strategy<Value = GemmCase> {
    gemm_case_in(1..30, 0..140)
}

/// Deep GEMM cases with several row blocks: panels widened in depth chunks, chunk edges
/// inside and between pieces.
pub fn deep_gemm_case() -> impl Strategy<Value = GemmCase> {
    gemm_case_in(13..40, 100..400)
}

prop_compose! {
    /// GEMM cases with `rows` rows and 1 to 3 pieces of `depth` each.
    pub fn gemm_case_in(rows: core::ops::Range<usize>, depth: core::ops::Range<usize>)(
        rows in rows,
        cols in 1usize..75,
        depths in prop::collection::vec(depth, 1..=3),
        lhs_pad in 0usize..3,
        lhs_transposed in any::<bool>(),
        rhs_pad in 0usize..3,
        out_pad in 0usize..3,
        rhs_kind in 0u8..4,
        start in 0u8..4,
    )(
        lhs in prop::collection::vec(value(), depths.iter().sum::<usize>() * (rows + lhs_pad) + 200),
        rhs in prop::collection::vec(value(), depths.iter().sum::<usize>() * (cols + rhs_pad) + 1),
        halves in prop::collection::vec(any::<u16>(), depths.iter().sum::<usize>() * (cols + rhs_pad) + 1),
        bytes in prop::collection::vec(any::<i8>(), depths.iter().sum::<usize>() * (cols + rhs_pad) + 1),
        scales in prop::collection::vec(0.001f32..0.1, cols),
        bias in prop::collection::vec(value(), cols),
        out in prop::collection::vec(value(), rows * (cols + out_pad)),
        rows in Just(rows), cols in Just(cols), depths in Just(depths), lhs_pad in Just(lhs_pad),
        lhs_transposed in Just(lhs_transposed), rhs_pad in Just(rhs_pad), out_pad in Just(out_pad),
        rhs_kind in Just(rhs_kind),
        // int8 sums cannot be accumulated across calls.
        start in Just(if rhs_kind == 3 && start == 3 { 1 } else { start }),
    ) -> GemmCase {
        GemmCase { rows, cols, depths, lhs_pad, lhs_transposed, rhs_pad, out_pad, rhs_kind, start, lhs, rhs, halves, bytes, scales, bias, out }
    }
}

impl GemmCase {
    /// Runs `kernels` and the contract on the case; returns both outputs.
    pub fn run(&self, kernels: &Kernels) -> (Vec<f32>, Vec<f32>) {
        let depth: usize = self.depths.iter().sum();
        // Lhs pieces laid one after another, each `rows × depth_p`.
        let mut pieces = Vec::new();
        let mut at = 0;
        for &dp in &self.depths {
            let (rs, cs) = if self.lhs_transposed {
                (1, self.rows + self.lhs_pad)
            } else {
                (dp + self.lhs_pad, 1)
            };
            let len = if dp == 0 {
                0
            } else {
                (self.rows - 1) * rs + (dp - 1) * cs + 1
            };
            pieces.push(Strided::new(&self.lhs[at..at + len], self.rows, dp, rs, cs).unwrap());
            at += len;
        }
        let lhs = Lhs::pieces(&pieces).unwrap();
        let rs = self.cols + self.rhs_pad;
        let halves: Vec<f16> = self.halves.iter().map(|&h| f16::from_bits(h)).collect();
        let finite: Vec<u16> = self
            .halves
            .iter()
            .map(|&h| if h & 0x7c00 == 0x7c00 { h & 0x83ff } else { h })
            .collect();
        let data = match self.rhs_kind {
            0 => RhsData::F32(&self.rhs),
            1 => RhsData::F16Finite(&finite),
            2 => RhsData::F16(&halves),
            _ => RhsData::I8 {
                q: &self.bytes,
                scales: &self.scales,
            },
        };
        let rhs = Rhs::new(data, depth, self.cols, rs).unwrap();
        let bias16: Vec<f16> = self.bias.iter().map(|&b| f16::from_f32(b)).collect();
        let start = match self.start {
            0 => Start::Zero,
            1 => Start::Bias(Vector::F32(&self.bias)),
            2 => Start::Bias(Vector::F16(&bias16)),
            _ => Start::Accumulate,
        };
        let stride = self.cols + self.out_pad;
        let mut got = self.out.clone();
        let mut want = self.out.clone();
        let mut out = Out::new(&mut got, self.rows, self.cols, stride).unwrap();
        kernels.gemm(&lhs, &rhs, start, &mut out).unwrap();
        gemm_contract(&lhs, &rhs, start, &mut want, stride);
        (got, want)
    }
}

/// The integer linear layer's contract, from plain f32 rows and natural-order weights
/// (no layout): per-token quantisation, the exact integer sum, the fixed rescale.
pub fn gemm_q8_contract(
    x: &[f32],
    rows: usize,
    depth: usize,
    w: &[i8],
    w_scales: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let outputs = w_scales.len();
    let mut out = vec![0.0f32; rows * outputs];
    for t in 0..rows {
        let row = &x[t * depth..(t + 1) * depth];
        let mut m = 0.0f32;
        for &v in row {
            if v.abs() > m {
                m = v.abs();
            }
        }
        let (inverse, scale) = if m > 0.0 {
            (127.0 / m, m / 127.0)
        } else {
            (0.0, 0.0)
        };
        let q: Vec<i32> = row
            .iter()
            .map(|&v| {
                let y = v * inverse;
                // Round half to even, by hand.
                let floor = y.floor();
                let rounded = match (y - floor).partial_cmp(&0.5) {
                    Some(core::cmp::Ordering::Less) => floor,
                    Some(core::cmp::Ordering::Greater) => floor + 1.0,
                    _ if floor % 2.0 == 0.0 => floor,
                    _ => floor + 1.0,
                };
                rounded.clamp(-127.0, 127.0) as i32
            })
            .collect();
        for o in 0..outputs {
            let acc: i32 = (0..depth).map(|k| q[k] * i32::from(w[o * depth + k])).sum();
            let b = bias.map_or(0.0, |b| b[o]);
            out[t * outputs + o] = ((acc as f32) * scale) * w_scales[o] + b;
        }
    }
    out
}

/// One integer linear layer: activations (with outliers and all-zero rows), weights in
/// natural order, scales, bias or none.
#[derive(Debug, Clone)]
pub struct Q8Case {
    rows: usize,
    depth: usize,
    x: Vec<f32>,
    w: Vec<i8>,
    w_scales: Vec<f32>,
    bias: Option<Vec<f32>>,
}

/// Shapes across the depth group (16), the token quad and the x86 kernels' eight-output
/// vectors, values across the range.
pub fn q8_case() -> impl Strategy<Value = Q8Case> {
    q8_case_in(0..7, 0..70, 1..20)
}

/// Depths across the x86 kernels' 1024-depth panels, so partial sums cross chunks.
pub fn deep_q8_case() -> impl Strategy<Value = Q8Case> {
    q8_case_in(1..6, 1000..2100, 1..11)
}

prop_compose! {
    /// An integer layer with shapes from the given ranges.
    pub fn q8_case_in(rows: core::ops::Range<usize>, depth: core::ops::Range<usize>, outputs: core::ops::Range<usize>)(rows in rows, depth in depth, outputs in outputs)(
        x in prop::collection::vec(prop_oneof![6 => -2.0f32..2.0, 1 => Just(0.0f32), 1 => -1e4f32..1e4], rows * depth),
        zero_row in any::<bool>(),
        w in prop::collection::vec(any::<i8>(), outputs * depth),
        w_scales in prop::collection::vec(1e-4f32..1.0, outputs),
        bias in prop::option::of(prop::collection::vec(-1.0f32..1.0, outputs)),
        rows in Just(rows),
        depth in Just(depth),
    ) -> Q8Case {
        let mut x = x;
        if zero_row && rows > 0 {
            x[..depth].fill(0.0);
        }
        Q8Case { rows, depth, x, w, w_scales, bias }
    }
}

impl Q8Case {
    /// `kernels`' output and the contract's.
    pub fn run(&self, kernels: &Kernels) -> (Vec<f32>, Vec<f32>) {
        use crate::quant::{padded_depth, quant_values_len, QuantRowsMut, QuantWeights};
        let (rows, depth, outputs) = (self.rows, self.depth, self.w_scales.len());
        let padded = padded_depth(depth);
        let mut w = vec![0i8; outputs * padded];
        for o in 0..outputs {
            w[o * padded..o * padded + depth].copy_from_slice(&self.w[o * depth..(o + 1) * depth]);
        }
        // Poisoned buffers: the kernels must write every value they later read.
        let mut values = vec![0x5555i16; quant_values_len(rows, depth)];
        let mut scales = vec![f32::NAN; rows];
        // Two pieces where the depth allows, as a convolution's rows give them.
        let split = depth / 3;
        let pieces = [
            Strided::new(&self.x, rows, split, depth, 1).unwrap(),
            Strided::new(
                self.x.get(split..).unwrap_or(&[]),
                rows,
                depth - split,
                depth,
                1,
            )
            .unwrap(),
        ];
        let src = Lhs::pieces(&pieces).unwrap();
        let mut q = QuantRowsMut::new(&mut values, &mut scales, rows, depth).unwrap();
        kernels.quantize(&src, &mut q).unwrap();
        let weights = QuantWeights::new(&w, &self.w_scales, outputs, depth).unwrap();
        let mut got = vec![f32::NAN; rows * outputs];
        let start = match &self.bias {
            Some(b) => Start::Bias(Vector::F32(b)),
            None => Start::Zero,
        };
        let mut out = Out::new(&mut got, rows, outputs, outputs).unwrap();
        kernels
            .gemm_q8(&q.as_rows(), &weights, start, &mut out)
            .unwrap();
        let want = gemm_q8_contract(
            &self.x,
            rows,
            depth,
            &self.w,
            &self.w_scales,
            self.bias.as_deref(),
        );
        (got, want)
    }
}

/// Gives one kernel implementation the whole suite. `$kernels` is an
/// `Option<&'static Kernels>`; where it is `None` (the CPU lacks the instructions) the
/// tests pass without checking, and say so.
macro_rules! kernel_suite {
    ($name:ident, $kernels:expr) => {
        mod $name {
            use super::*;

            fn kernels() -> Option<&'static Kernels> {
                let k: Option<&'static Kernels> = $kernels;
                if k.is_none() {
                    std::eprintln!("{}: not available on this CPU; skipped", stringify!($name));
                }
                k
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(300))]

                #[test]
                fn gemm_matches_the_contract(case in gemm_case()) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let (got, want) = case.run(k);
                    assert_bits("gemm", &got, &want)?;
                }

                #[test]
                fn integer_linear_layer_matches_the_contract(case in q8_case()) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let (got, want) = case.run(k);
                    assert_bits("gemm_q8", &got, &want)?;
                }

                #[test]
                fn deep_integer_linear_layer_matches_the_contract(case in deep_q8_case()) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let (got, want) = case.run(k);
                    assert_bits("deep gemm_q8", &got, &want)?;
                }

                #[test]
                fn deep_gemm_matches_the_contract(case in deep_gemm_case()) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let (got, want) = case.run(k);
                    assert_bits("deep gemm", &got, &want)?;
                }

                #[test]
                fn gaussian_matches_the_contract(
                    rows in 1usize..20, d in 1usize..70, m in 1usize..70, pad in 0usize..3,
                    seed in any::<u64>(), spread in prop::sample::select(vec![0.1f32, 1.0, 4.0, 40.0]),
                ) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let mut r = crate::rng::XorShift64::new(seed | 1);
                    let mut rnd = move || r.signed() * spread;
                    let q: Vec<f32> = (0..rows * (d + pad)).map(|_| rnd()).collect();
                    let lm: Vec<f32> = (0..d * (m + pad)).map(|_| rnd()).collect();
                    let qv = Strided::rows_of(&q, rows, d, d + pad).unwrap();
                    let lv = Strided::rows_of(&lm, d, m, m + pad).unwrap();
                    let stride = m + pad;
                    let mut got = vec![7.0f32; rows * stride];
                    let mut want = got.clone();
                    k.gaussian(&qv, &lv, &mut Out::new(&mut got, rows, m, stride).unwrap()).unwrap();
                    gaussian_contract(&qv, &lv, &mut want, stride);
                    assert_bits("gaussian", &got, &want)?;
                    // The landmarks against themselves, read through a transposed view.
                    let rowsv = Strided::new(&lm, m, d, 1, m + pad).unwrap();
                    let mut got = vec![0.0f32; m * m];
                    let mut want = got.clone();
                    k.gaussian(&rowsv, &lv, &mut Out::new(&mut got, m, m, m).unwrap()).unwrap();
                    gaussian_contract(&rowsv, &lv, &mut want, m);
                    assert_bits("gaussian K2", &got, &want)?;
                }

                #[test]
                fn elementwise_functions_match_the_contract(x in prop::collection::vec(prop_oneof![value(), -100.0f32..100.0, any::<f32>()], 0..100)) {
                    let Some(k) = kernels() else { return Ok(()) };
                    for (f, name, one) in [
                        (Kernels::exp as fn(&Kernels, &mut [f32]), "exp", math::exp as fn(f32) -> f32),
                        (Kernels::gelu_tanh, "gelu_tanh", math::gelu_tanh),
                        (Kernels::gelu_erf, "gelu_erf", math::gelu_erf),
                    ] {
                        let mut got = x.clone();
                        f(k, &mut got);
                        let want: Vec<f32> = x.iter().map(|&v| one(v)).collect();
                        assert_bits(name, &got, &want)?;
                    }
                }

                #[test]
                fn layer_norm_matches_the_contract(
                    width in 1usize..300, rows in 1usize..5,
                    x in prop::collection::vec(value(), 1500),
                    w in prop::collection::vec(-2.0f32..2.0, 300),
                    b in prop::collection::vec(-2.0f32..2.0, 300),
                ) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let mut got = x[..rows * width].to_vec();
                    let mut want = got.clone();
                    k.layer_norm(&mut got, width, &Vector::F32(&w[..width]), &Vector::F32(&b[..width]), 1e-5).unwrap();
                    for row in want.chunks_exact_mut(width) {
                        layer_norm_contract(row, &w, &b, 1e-5);
                    }
                    assert_bits("layer_norm", &got, &want)?;
                }

                #[test]
                fn depthwise_matches_the_contract(
                    group in 1usize..40, heads in 1usize..5, tokens in 1usize..6, half in any::<bool>(),
                    scales in prop::collection::vec(-2.0f32..2.0, 5),
                    src in prop::collection::vec(value(), 800),
                    out in prop::collection::vec(value(), 800),
                ) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let n = group * heads * tokens;
                    let scales = &scales[..heads];
                    let src16: Vec<f16> = src[..n].iter().map(|&v| f16::from_f32(v)).collect();
                    let elems = if half { Elems::F16(&src16) } else { Elems::F32(&src[..n]) };
                    let mut got = out[..n].to_vec();
                    k.depthwise(elems, scales, group, &mut got).unwrap();
                    let want: Vec<f32> = (0..n).map(|i| {
                        let x = if half { src16[i].to_f32() } else { src[i] };
                        out[i] + scales[(i % (group * heads)) / group] * x
                    }).collect();
                    assert_bits("depthwise", &got, &want)?;
                }

                #[test]
                fn narrow_matches_the_contract(x in prop::collection::vec(prop_oneof![value(), any::<f32>()], 0..80)) {
                    let Some(k) = kernels() else { return Ok(()) };
                    let mut got = vec![f16::ZERO; x.len()];
                    k.narrow(&x, crate::ElemsMut::F16(&mut got)).unwrap();
                    for (g, v) in got.iter().zip(&x) {
                        let want = f16::from_f32(*v);
                        prop_assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "{} -> {:#06x} vs {:#06x}", v, g.to_bits(), want.to_bits());
                    }
                }
            }

            /// Every f16 bit pattern, widened as an activation and as a (finite) weight in
            /// a GEMM, in runs of every length up to 40 (vector remainders).
            #[test]
            fn every_f16_widens_exactly() {
                let Some(k) = kernels() else { return };
                let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
                let mut got = vec![0.0f32; all.len()];
                k.widen(Elems::F16(&all), &mut got).unwrap();
                for (h, g) in all.iter().zip(&got) {
                    assert!(same_bits(*g, widen(h.to_bits())), "{:#06x}", h.to_bits());
                }
                for len in 1..40 {
                    let mut got = vec![0.0f32; len];
                    k.widen(Elems::F16(&all[31000..31000 + len]), &mut got).unwrap();
                    for (h, g) in all[31000..].iter().zip(&got) {
                        assert!(same_bits(*g, h.to_f32()));
                    }
                }
                // Every finite f16 as a weight: a 1-deep GEMM with x = 1 gives it back.
                let finite: Vec<u16> = (0..=u16::MAX).filter(|b| b & 0x7c00 != 0x7c00).collect();
                let one = [1.0f32];
                let lhs = Lhs::new(Strided::rows_of(&one, 1, 1, 1).unwrap());
                let rhs = Rhs::new(RhsData::F16Finite(&finite), 1, finite.len(), finite.len()).unwrap();
                let mut got = vec![0.0f32; finite.len()];
                k.gemm(&lhs, &rhs, Start::Zero, &mut Out::new(&mut got, 1, finite.len(), finite.len()).unwrap()).unwrap();
                for (h, g) in finite.iter().zip(&got) {
                    // 0 + 1·w is w, except -0.0 + (+0.0)... +0.0 + (-0.0) = +0.0.
                    let w = f16::from_bits(*h).to_f32();
                    assert!(same_bits(*g, 0.0 + w), "{h:#06x}");
                }
            }

            /// A dense sweep of f32 values through the elementwise kernels, in slices whose
            /// lengths cover every vector remainder.
            #[test]
            fn elementwise_sweep_matches_the_contract() {
                let Some(k) = kernels() else { return };
                let xs: Vec<f32> = (0..200_003u32).map(|i| f32::from_bits(i.wrapping_mul(21_475))).collect();
                for (f, name, one) in [
                    (Kernels::exp as fn(&Kernels, &mut [f32]), "exp", math::exp as fn(f32) -> f32),
                    (Kernels::gelu_tanh, "gelu_tanh", math::gelu_tanh),
                    (Kernels::gelu_erf, "gelu_erf", math::gelu_erf),
                ] {
                    let mut got = xs.clone();
                    f(k, &mut got);
                    for (i, (g, x)) in got.iter().zip(&xs).enumerate() {
                        assert!(same_bits(*g, one(*x)), "{name}({x:e}) at {i}: {g:e} vs {:e}", one(*x));
                    }
                }
            }
        }
    };
}

kernel_suite!(generic, Some(Kernels::generic()));
#[cfg(target_arch = "x86_64")]
kernel_suite!(avx2, crate::x86_64::avx2());
#[cfg(target_arch = "x86_64")]
kernel_suite!(avx512, crate::x86_64::avx512());
