//! [`crate::math`] lane by lane: the same operations in the same order, a blend for every
//! `sel`, so every lane gives the scalar function's bits. Then the kernels built on them:
//! exp and GELU rows, and the Gaussian kernel rows (a register-blocked distance sum, then
//! `exp`).

use super::lanes::Lanes;
use crate::math::{
    ERF_CLAMP, ERF_P, ERF_R, ERF_T, EXP_HI, EXP_LO, EXP_P, GELU_CUBIC, LN2_HI, LN2_LO, LOG2E,
    MAGIC, SQRT_2_OVER_PI, TANH_P, TANH_T,
};
use crate::operand::{Out, Strided};

/// Horner evaluation `((c0·x + c1)·x + c2)…`, one multiply and one add per step.
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
unsafe fn horner<L: Lanes>(x: L, c: &[f32]) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let mut p = L::splat(c.first().copied().unwrap_or(0.0));
        for &ci in c.iter().skip(1) {
            p = L::add(L::mul(p, x), L::splat(ci));
        }
        p
    }
}

/// [`crate::math::exp_core`]: `xc` within `[EXP_LO, EXP_HI]`.
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn exp_core<L: Lanes>(xc: L) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let magic = L::splat(MAGIC);
        let k = L::add(L::mul(xc, L::splat(LOG2E)), magic);
        let nf = L::sub(k, magic);
        let r = L::sub(
            L::sub(xc, L::mul(nf, L::splat(LN2_HI))),
            L::mul(nf, L::splat(LN2_LO)),
        );
        let p = horner(r, &EXP_P);
        let e = L::add(L::splat(1.0), L::add(r, L::mul(L::mul(r, r), p)));
        let (s1, s2) = L::exp_scales(k);
        L::mul(L::mul(e, s1), s2)
    }
}

/// [`crate::math::exp`].
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn exp<L: Lanes>(x: L) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let hi = L::splat(EXP_HI);
        let lo = L::splat(EXP_LO);
        let xc = L::select(L::gt(x, hi), hi, x);
        let xc = L::select(L::lt(xc, lo), lo, xc);
        let y = exp_core(xc);
        L::select(L::is_nan(x), x, y)
    }
}

/// [`crate::math::tanh`].
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn tanh<L: Lanes>(x: L) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let (a, sign) = L::split_sign(x);
        let one = L::splat(1.0);
        let a2 = L::add(a, a);
        let hi = L::splat(EXP_HI);
        let e = exp_core(L::select(L::gt(a2, hi), hi, a2));
        let big = L::sub(one, L::div(L::splat(2.0), L::add(e, one)));
        let s = L::mul(a, a);
        let p = horner(s, &TANH_P);
        let small = L::add(a, L::mul(L::mul(a, s), p));
        let y = L::select(L::lt(a, L::splat(TANH_T)), small, big);
        let y = L::or_bits(y, sign);
        L::select(L::is_nan(x), x, y)
    }
}

/// [`crate::math::erf`].
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn erf<L: Lanes>(x: L) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let (a, sign) = L::split_sign(x);
        let clamp = L::splat(ERF_CLAMP);
        let ac = L::select(L::gt(a, clamp), clamp, a);
        let s = L::mul(ac, ac);
        let p = horner(s, &ERF_P);
        let small = L::add(ac, L::mul(ac, p));
        let e = exp_core(L::sub(L::zero(), s));
        let u = L::div(L::splat(2.0), L::add(L::splat(2.0), ac));
        let q = horner(u, &ERF_R);
        let big = L::sub(L::splat(1.0), L::mul(e, q));
        let y = L::select(L::lt(a, L::splat(ERF_T)), small, big);
        let y = L::or_bits(y, sign);
        L::select(L::is_nan(x), x, y)
    }
}

/// [`crate::math::gelu_tanh`].
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
unsafe fn gelu_tanh<L: Lanes>(x: L) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let cube = L::mul(L::mul(x, x), x);
        let inner = L::add(x, L::mul(L::splat(GELU_CUBIC), cube));
        let t = tanh(L::mul(L::splat(SQRT_2_OVER_PI), inner));
        L::mul(L::mul(L::splat(0.5), x), L::add(L::splat(1.0), t))
    }
}

/// [`crate::math::gelu_erf`].
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
unsafe fn gelu_erf<L: Lanes>(x: L) -> L {
    // SAFETY: the CPU runs L (caller).
    unsafe {
        let e = erf(L::mul(x, L::splat(core::f32::consts::FRAC_1_SQRT_2)));
        L::mul(L::mul(x, L::splat(0.5)), L::add(L::splat(1.0), e))
    }
}

/// An elementwise function over lanes. A trait, not a closure: a closure does not
/// inherit the caller's `#[target_feature]`, so its intrinsics would not inline (that
/// made these rows 15–30× slower than scalar code).
pub(crate) trait LaneFn {
    /// The function of every lane.
    ///
    /// # Safety
    /// The CPU runs `L`.
    unsafe fn apply<L: Lanes>(v: L) -> L;
}

/// `exp`.
pub(crate) struct Exp;
/// `gelu_tanh`.
pub(crate) struct GeluTanh;
/// `gelu_erf`.
pub(crate) struct GeluErf;

impl LaneFn for Exp {
    #[inline(always)]
    unsafe fn apply<L: Lanes>(v: L) -> L {
        // SAFETY: forwarded (caller).
        unsafe { exp(v) }
    }
}

impl LaneFn for GeluTanh {
    #[inline(always)]
    unsafe fn apply<L: Lanes>(v: L) -> L {
        // SAFETY: forwarded (caller).
        unsafe { gelu_tanh(v) }
    }
}

impl LaneFn for GeluErf {
    #[inline(always)]
    unsafe fn apply<L: Lanes>(v: L) -> L {
        // SAFETY: forwarded (caller).
        unsafe { gelu_erf(v) }
    }
}

/// Applies `F` to every value of `x` in place (a partial vector for the tail).
///
/// # Safety
/// The CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn map<L: Lanes, F: LaneFn>(x: &mut [f32]) {
    let p = x.as_mut_ptr();
    let pairs = x.len() / (2 * L::LANES) * 2 * L::LANES;
    // Two independent vectors per step: each function is one long dependency chain.
    for i in (0..pairs).step_by(2 * L::LANES) {
        // SAFETY: i + 2·LANES ≤ x.len(); the CPU runs L.
        unsafe {
            let a = F::apply(L::load(p.add(i)));
            let b = F::apply(L::load(p.add(i + L::LANES)));
            L::store(p.add(i), a);
            L::store(p.add(i + L::LANES), b);
        }
    }
    for i in (pairs..x.len()).step_by(L::LANES) {
        let n = (x.len() - i).min(L::LANES);
        // SAFETY: i + n ≤ x.len(); the CPU runs L.
        unsafe {
            if n == L::LANES {
                L::store(p.add(i), F::apply(L::load(p.add(i))));
            } else {
                L::store_partial(p.add(i), F::apply(L::load_partial(p.add(i), n)), n);
            }
        }
    }
}

/// `out[t][l] = exp(−½ · Σ_i (q[t][i] − L[i][l])²)` for `MR` rows and one panel of
/// `NV` vectors of landmarks (the last with `last` valid lanes).
///
/// # Safety
/// Rows `t0..t0 + count` of `q` and `out` and the panel's columns lie in the views
/// (`count ≤ MR`); the CPU runs `L`.
#[inline(always)]
unsafe fn gaussian_block<L: Lanes, const MR: usize, const NV: usize>(
    q: &Strided<'_>,
    lt: &Strided<'_>,
    out: &mut Out<'_>,
    t0: usize,
    count: usize,
    l0: usize,
    last: usize,
) {
    let (qp, qrs, qcs) = (q.data().as_ptr(), q.row_stride(), q.col_stride());
    let (lp, lrs) = (lt.data().as_ptr(), lt.row_stride());
    let (op, ors) = (out.data().as_mut_ptr(), out.row_stride());
    // SAFETY: all reads and writes stay in the checked views (caller); the CPU runs L.
    unsafe {
        let rows: [*const f32; MR] =
            core::array::from_fn(|i| qp.add((t0 + i.min(count - 1)) * qrs));
        let mut acc = [[L::zero(); NV]; MR];
        for i in 0..q.cols() {
            let lrow = lp.add(i * lrs + l0);
            let mut w = [L::zero(); NV];
            for (v, wv) in w.iter_mut().enumerate() {
                let n = if v + 1 == NV { last } else { L::LANES };
                *wv = if n == L::LANES {
                    L::load(lrow.add(v * L::LANES))
                } else {
                    L::load_partial(lrow.add(v * L::LANES), n)
                };
            }
            for (r, accr) in rows.iter().zip(acc.iter_mut()) {
                let x = L::splat(*r.add(i * qcs));
                for (a, &wv) in accr.iter_mut().zip(&w) {
                    let diff = L::sub(x, wv);
                    *a = L::add(*a, L::mul(diff, diff));
                }
            }
        }
        let half = L::splat(-0.5);
        for (r, accr) in acc.iter().enumerate().take(count) {
            for (v, &a) in accr.iter().enumerate() {
                let n = if v + 1 == NV { last } else { L::LANES };
                let y = exp(L::mul(a, half));
                let p = op.add((t0 + r) * ors + l0 + v * L::LANES);
                if n == L::LANES {
                    L::store(p, y);
                } else {
                    L::store_partial(p, y, n);
                }
            }
        }
    }
}

/// Gaussian kernel rows (the crate's contract).
///
/// # Safety
/// The views are checked (`Kernels::gaussian`); the CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn gaussian<L: Lanes>(q: &Strided<'_>, lt: &Strided<'_>, out: &mut Out<'_>) {
    let (rows, m) = (q.rows(), lt.cols());
    // Four rows × two vectors of landmarks; eight rows measured no faster.
    const MR: usize = 4;
    let wide = 2 * L::LANES;
    // SAFETY: every block lies in the checked views; the CPU runs L (caller).
    unsafe {
        for t0 in (0..rows).step_by(MR) {
            let count = (rows - t0).min(MR);
            let mut l0 = 0;
            while l0 + wide <= m {
                gaussian_block::<L, MR, 2>(q, lt, out, t0, count, l0, L::LANES);
                l0 += wide;
            }
            while l0 < m {
                let n = (m - l0).min(L::LANES);
                gaussian_block::<L, MR, 1>(q, lt, out, t0, count, l0, n);
                l0 += n;
            }
        }
    }
}
