//! Row kernels: LayerNorm, GELU and exp over slices, f16 conversion, depthwise taps.

use half::f16;

use crate::math;
use crate::operand::{widen, Elems, Vector};

/// LayerNorm of each `width`-value row of `x` in place:
/// `mean = Σx / n`, `var = Σ(x − mean)² / n` (sums in order), `rstd = 1 / √(var + eps)`,
/// `y = ((x − mean) · rstd) · w + b`.
pub(crate) fn layer_norm(x: &mut [f32], width: usize, w: &Vector<'_>, b: &Vector<'_>, eps: f32) {
    if width == 0 {
        return;
    }
    let n = width as f32;
    for row in x.chunks_exact_mut(width) {
        let mean = row.iter().fold(0.0f32, |a, v| a + v) / n;
        let var = row.iter().fold(0.0f32, |a, v| a + (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / libm::sqrtf(var + eps);
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * rstd * w.get(i) + b.get(i);
        }
    }
}

/// [`math::exp`] of every value.
pub(crate) fn exp(x: &mut [f32]) {
    for v in x {
        *v = math::exp(*v);
    }
}

/// [`math::gelu_tanh`] of every value.
pub(crate) fn gelu_tanh(x: &mut [f32]) {
    for v in x {
        *v = math::gelu_tanh(*v);
    }
}

/// [`math::gelu_erf`] of every value.
pub(crate) fn gelu_erf(x: &mut [f32]) {
    for v in x {
        *v = math::gelu_erf(*v);
    }
}

/// Exact f16 → f32.
pub(crate) fn widen_f16(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = widen(s.to_bits());
    }
}

/// f32 → f16, rounding to nearest even (overflow to infinity).
pub(crate) fn narrow_f16(src: &[f32], dst: &mut [f16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

/// `out[i] += scales[(i mod (group·scales.len())) / group] · src[i]`: one tap of a
/// depthwise convolution whose kernel is shared by each group of `group` channels.
pub(crate) fn depthwise(src: Elems<'_>, scales: &[f32], group: usize, out: &mut [f32]) {
    let width = group * scales.len();
    if width == 0 {
        return;
    }
    match src {
        Elems::F32(s) => depthwise_as(s, |x| x, scales, group, out),
        Elems::F16(s) => depthwise_as(s, |x| widen(x.to_bits()), scales, group, out),
    }
}

/// [`depthwise`] over `width = group · scales.len()`-value tokens of one element type,
/// read as f32 by `load`.
#[inline(always)]
fn depthwise_as<T: Copy>(
    src: &[T],
    load: impl Fn(T) -> f32,
    scales: &[f32],
    group: usize,
    out: &mut [f32],
) {
    let width = group * scales.len();
    for (o, x) in out.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
        for ((og, xg), &w) in o
            .chunks_exact_mut(group)
            .zip(x.chunks_exact(group))
            .zip(scales)
        {
            for (ov, &xv) in og.iter_mut().zip(xg) {
                *ov += w * load(xv);
            }
        }
    }
}

/// The peak probe: 16 independent chains `a = a + x·y`, which LLVM keeps in registers
/// (four SSE registers on x86-64, sixteen of the M4's single registers).
pub(crate) fn peak(steps: usize) -> (u64, f32) {
    let mut acc = [0.0f32; 16];
    let mut x = [0.0f32; 16];
    for (i, v) in x.iter_mut().enumerate() {
        *v = 1.0 + i as f32 * 1e-7;
    }
    let y = core::hint::black_box(0.999_999f32);
    for _ in 0..steps {
        for (a, &xv) in acc.iter_mut().zip(&x) {
            *a += xv * y;
        }
    }
    (steps as u64 * 16, acc.iter().sum())
}
