//! Row kernels over lanes: f16 conversion, depthwise taps, LayerNorm (sums across rows,
//! one row per lane, so each row still sums in order).

use half::f16;

use super::lanes::Lanes;
use crate::operand::{widen, Elems, Vector};

/// Exact f16 → f32.
///
/// # Safety
/// `src.len() == dst.len()`; the CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn widen_f16<L: Lanes>(src: &[f16], dst: &mut [f32]) {
    let full = src.len().min(dst.len()) / L::LANES * L::LANES;
    for i in (0..full).step_by(L::LANES) {
        // SAFETY: i + LANES ≤ both lengths.
        unsafe {
            let v = L::load_f16(src.as_ptr().add(i).cast());
            L::store(dst.as_mut_ptr().add(i), v);
        }
    }
    for (d, s) in dst.iter_mut().zip(src).skip(full) {
        *d = widen(s.to_bits());
    }
}

/// f32 → f16, rounding to nearest even.
///
/// # Safety
/// `src.len() == dst.len()`; the CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn narrow_f16<L: Lanes>(src: &[f32], dst: &mut [f16]) {
    let full = src.len().min(dst.len()) / L::LANES * L::LANES;
    for i in (0..full).step_by(L::LANES) {
        // SAFETY: i + LANES ≤ both lengths.
        unsafe {
            let v = L::load(src.as_ptr().add(i));
            L::store_f16(dst.as_mut_ptr().add(i).cast(), v);
        }
    }
    for (d, s) in dst.iter_mut().zip(src).skip(full) {
        *d = f16::from_f32(*s);
    }
}

/// `n ≤ LANES` f32 or f16 values at `p`, as lanes (+0.0 beyond `n`).
#[inline(always)]
unsafe fn load_elems<L: Lanes>(src: Elems<'_>, at: usize, n: usize) -> L {
    // SAFETY: (every arm) the caller guarantees at + n ≤ src.len().
    unsafe {
        match src {
            Elems::F32(s) if n == L::LANES => L::load(s.as_ptr().add(at)),
            Elems::F32(s) => L::load_partial(s.as_ptr().add(at), n),
            Elems::F16(s) if n == L::LANES => L::load_f16(s.as_ptr().add(at).cast()),
            Elems::F16(s) => {
                let mut tmp = [0.0f32; 16];
                for (t, h) in tmp.iter_mut().zip(&s[at..at + n]) {
                    *t = h.to_f32();
                }
                L::load(tmp.as_ptr())
            }
        }
    }
}

/// `out[i] += scales[(i mod w)/group] · src[i]`.
///
/// # Safety
/// Lengths checked by `Kernels::depthwise`; the CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn depthwise<L: Lanes>(
    src: Elems<'_>,
    scales: &[f32],
    group: usize,
    out: &mut [f32],
) {
    let width = group * scales.len();
    let tokens = out.len() / width;
    let o = out.as_mut_ptr();
    for t in 0..tokens {
        for (h, &s) in scales.iter().enumerate() {
            let first = t * width + h * group;
            // SAFETY: the CPU runs L; every access below is inside the token's group.
            unsafe {
                let w = L::splat(s);
                for c0 in (0..group).step_by(L::LANES) {
                    let n = (group - c0).min(L::LANES);
                    let at = first + c0;
                    let x = load_elems::<L>(src, at, n);
                    if n == L::LANES {
                        L::store(o.add(at), L::add(L::load(o.add(at)), L::mul(w, x)));
                    } else {
                        let prev = L::load_partial(o.add(at), n);
                        L::store_partial(o.add(at), L::add(prev, L::mul(w, x)), n);
                    }
                }
            }
        }
    }
}

/// `n ≤ LANES` values of a parameter vector from `at`, as lanes.
#[inline(always)]
unsafe fn load_vector<L: Lanes>(v: &Vector<'_>, at: usize, n: usize) -> L {
    match v {
        Vector::F32(s) => load_elems::<L>(Elems::F32(s), at, n),
        Vector::F16(s) => load_elems::<L>(Elems::F16(s), at, n),
    }
}

/// LayerNorm of each `width`-value row. The two sums run across `LANES` rows at once (one
/// row per lane, gathered), each in index order; the normalisation runs along the row.
///
/// # Safety
/// Lengths checked by `Kernels::layer_norm`; the CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn layer_norm<L: Lanes>(
    x: &mut [f32],
    width: usize,
    w: &Vector<'_>,
    b: &Vector<'_>,
    eps: f32,
) {
    let rows = x.len() / width;
    let mut means = [0.0f32; 16];
    let mut rstds = [0.0f32; 16];
    for r0 in (0..rows).step_by(L::LANES) {
        let n = (rows - r0).min(L::LANES);
        // SAFETY: rows r0..r0 + n lie in x; the CPU runs L.
        unsafe {
            let base = x.as_ptr().add(r0 * width);
            let count = L::splat(width as f32);
            let mut sum = L::zero();
            for i in 0..width {
                sum = L::add(sum, L::gather(base.add(i), width, n));
            }
            let mean = L::div(sum, count);
            let mut sq = L::zero();
            for i in 0..width {
                let d = L::sub(L::gather(base.add(i), width, n), mean);
                sq = L::add(sq, L::mul(d, d));
            }
            let var = L::div(sq, count);
            let rstd = L::div(L::splat(1.0), L::sqrt(L::add(var, L::splat(eps))));
            L::spill(mean, &mut means);
            L::spill(rstd, &mut rstds);
        }
        for r in 0..n {
            let row = &mut x[(r0 + r) * width..(r0 + r + 1) * width];
            // SAFETY: every access is inside `row`, `w` and `b` (checked lengths).
            unsafe {
                let (mean, rstd) = (L::splat(means[r]), L::splat(rstds[r]));
                let p = row.as_mut_ptr();
                for c0 in (0..width).step_by(L::LANES) {
                    let m = (width - c0).min(L::LANES);
                    let v = if m == L::LANES {
                        L::load(p.add(c0))
                    } else {
                        L::load_partial(p.add(c0), m)
                    };
                    let y = L::add(
                        L::mul(L::mul(L::sub(v, mean), rstd), load_vector::<L>(w, c0, m)),
                        load_vector::<L>(b, c0, m),
                    );
                    if m == L::LANES {
                        L::store(p.add(c0), y);
                    } else {
                        L::store_partial(p.add(c0), y, m);
                    }
                }
            }
        }
    }
}

/// The peak probe: 24 (AVX-512) or 12 (AVX2) independent register accumulators, each
/// `a = a + x·y` per step.
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn peak<L: Lanes>(steps: usize) -> (u64, f32) {
    const N: usize = 24;
    let chains = if L::LANES == 16 { N } else { N / 2 };
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let mut acc = [L::zero(); N];
        let x = [L::splat(1.000_001), L::splat(0.999_999)];
        let y = L::splat(core::hint::black_box(0.999_999f32));
        for _ in 0..steps {
            for (i, a) in acc.iter_mut().enumerate().take(chains) {
                *a = L::add(*a, L::mul(x[i & 1], y));
            }
        }
        let mut sum = L::zero();
        for a in acc.iter().take(chains) {
            sum = L::add(sum, *a);
        }
        let mut out = [0.0f32; 16];
        L::spill(sum, &mut out);
        ((steps * chains * L::LANES) as u64, out.iter().sum())
    }
}
