//! The elementwise functions, as fixed sequences of f32 operations: `+ − × ÷` (each
//! rounded to nearest even), comparisons, selects between two computed values, and integer
//! operations on the bits. No FMA, no table, no data-dependent branch or loop and no math
//! library, so the scalar code here, which defines their bits, and every SIMD version,
//! which repeats it lane by lane (a blend for every `sel`), agree on every target with
//! flush-to-zero off (the reset state of x86 and of the Cortex-M4F's FPSCR).
//!
//! Measured over all 2³² inputs against the correctly rounded result (f64 `exp`, `tanh`
//! and `libm::erf` rounded to f32): at most 1 ulp each, subnormal results included; NaN
//! comes back with its own bits; `tanh` and `erf` are odd bit for bit. The `accuracy`
//! tests re-measure a dense sweep in every test run; `cargo test -p soft-kernels --release
//! -- --ignored exhaustive` measures all 2³².
//!
//! Polynomials are weighted minimax fits with the coefficients rounded to f32 one at a
//! time and the rest refitted; `exp`'s Cody–Waite split of ln 2 follows Cephes `expf`.

/// `if c { a } else { b }` on two already-computed values (a blend in SIMD).
#[inline(always)]
fn sel(c: bool, a: f32, b: f32) -> f32 {
    if c {
        a
    } else {
        b
    }
}

pub(crate) const SIGN: u32 = 0x8000_0000;
pub(crate) const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23, bits 0x4B40_0000

// ---------------------------------------------------------------- exp ----

pub(crate) const LOG2E: f32 = core::f32::consts::LOG2_E; // 0x3FB8AA3B
/// ln 2 split Cody–Waite style: C1 has 9 significant bits so `n * C1` is exact
/// for |n| <= 2^15; C1 + C2 = ln 2 to ~2^-37.
pub(crate) const LN2_HI: f32 = 355.0 / 512.0; // 0x3F318000
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4; // 0xB95E8083
/// e^r ~= 1 + r + r^2 * P(r) on |r| <= ln2/2; P is a degree-4 minimax fit
/// (relative error 2^-28.3 before rounding to f32), P[0] is the r^4 coefficient.
pub(crate) const EXP_P: [f32; 5] = [
    1.381_454e-3,   // 0x3AB511E8
    8.368_745e-3,   // 0x3C091D10
    4.166_839e-2,   // 0x3D2AAC79
    1.666_652_1e-1, // 0x3E2AAA49
    4.999_999_4e-1, // 0x3EFFFFFE
];
/// Inputs are clamped to [EXP_LO, EXP_HI]: exp(89) overflows to +inf, and
/// exp(-104) = 6.8e-46 < 2^-150 (half the smallest subnormal) rounds to +0.
pub(crate) const EXP_HI: f32 = 89.0;
pub(crate) const EXP_LO: f32 = -104.0;

/// e^x, max error 1 ulp (subnormal results included), 32 operations.
///
/// n = round(x * log2 e), r = x - n ln2 (Cody–Waite, exact first step),
/// e^r by polynomial, then multiply by 2^n in two exact-or-final steps
/// 2^(n>>1) * 2^(n - (n>>1)) so that subnormal results are rounded once.
#[inline]
pub fn exp(x: f32) -> f32 {
    // Clamp (a NaN compares false and passes through; it is restored at the end).
    let xc = sel(x > EXP_HI, EXP_HI, x);
    let xc = sel(xc < EXP_LO, EXP_LO, xc);
    let y = exp_core(xc);
    sel(x.is_nan(), x, y)
}

/// The body of [`exp`] without clamping and NaN handling, 26 operations.
/// Requires `xc` in [EXP_LO, EXP_HI] (any other input gives garbage, never UB);
/// there it returns exactly the bits of `exp(xc)`.  `tanh` and `erf` call it
/// directly on arguments that are already in range (or masked out later).
#[inline(always)]
pub fn exp_core(xc: f32) -> f32 {
    // k = 1.5*2^23 + n with n = round-half-even(xc * log2 e), |n| <= 151.
    let k = xc * LOG2E + MAGIC;
    let nf = k - MAGIC;
    // r = xc - n ln2.  nf*LN2_HI is exact and the subtraction is exact (Sterbenz).
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let mut p = EXP_P[0];
    p = p * r + EXP_P[1];
    p = p * r + EXP_P[2];
    p = p * r + EXP_P[3];
    p = p * r + EXP_P[4];
    let e = 1.0 + (r + (r * r) * p); // e^r in [0.70, 1.42]
                                     // Scale by 2^n = 2^n1 * 2^n2, n1 = floor(n/2), n2 = n - n1, both normal.
                                     // The low bits of k hold n + 0x400000, so m = n + 254 = (n1+127)+(n2+127).
    let m = k.to_bits().wrapping_sub(0x4B40_0000 - 254); // n + 254 in [103, 383]
    let s1 = (m >> 1) << 23; // bits of 2^n1 (biased exponent n1 + 127)
    let s2 = (m << 23).wrapping_sub(s1); // bits of 2^n2 (biased exponent n2 + 127)
                                         // e * 2^n1 is exact (>= 2^-77), so only the last product rounds.
    (e * f32::from_bits(s1)) * f32::from_bits(s2)
}

// --------------------------------------------------------------- tanh ----

/// Below TANH_T the odd polynomial is used, above it 1 - 2/(e^{2|x|} + 1).
/// tanh(0.5493) = 0.5: below that the exp form loses a bit to cancellation.
pub(crate) const TANH_T: f32 = 0.55;
/// tanh(a) ~= a + a^3 * P(a^2) on [0, 0.55]; degree-4 minimax in a^2
/// (relative error 2^-29.8), coefficients rounded to f32 one at a time with
/// the rest refitted.  P[0] is the highest-degree coefficient.
pub(crate) const TANH_P: [f32; 5] = [
    -6.246_070_4e-3, // 0xBBCCABD6
    2.105_250_6e-2,  // 0x3CAC764E
    -5.384_785_3e-2, // 0xBD5C8F91
    1.333_254_6e-1,  // 0x3E088678
    -3.333_331_6e-1, // 0xBEAAAAA5
];

/// tanh(x), max error 1 ulp, odd symmetry exact; exp_core + 25 = 51 operations.
#[inline]
pub fn tanh(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & SIGN;
    let a = f32::from_bits(bits & !SIGN);
    // Large branch.  e = +inf for a > 44.4 gives exactly 1; a = inf gives 1.
    // a + a >= 0 (or NaN, masked at the end), so only the upper clamp of exp
    // is needed: identical bits to exp(a + a).
    let a2 = a + a;
    let e = exp_core(sel(a2 > EXP_HI, EXP_HI, a2));
    let big = 1.0 - 2.0 / (e + 1.0);
    // Small branch.
    let s = a * a;
    let mut p = TANH_P[0];
    p = p * s + TANH_P[1];
    p = p * s + TANH_P[2];
    p = p * s + TANH_P[3];
    p = p * s + TANH_P[4];
    let small = a + (a * s) * p;
    let y = sel(a < TANH_T, small, big);
    let y = f32::from_bits(y.to_bits() | sign);
    sel(x.is_nan(), x, y)
}

// ---------------------------------------------------------------- erf ----

/// Below ERF_T: erf(a) = a + a * P(a^2); above: 1 - e^{-a^2} * R(2/(2+a)).
pub(crate) const ERF_T: f32 = 1.0;
/// erf rounds to 1.0 for a >= 3.9192; clamping at 4 keeps e^{-a^2} R(.) at
/// erfc(4) = 1.5e-8 < 2^-25, so 1 - q rounds to exactly 1.0 beyond.
pub(crate) const ERF_CLAMP: f32 = 4.0;
/// erf(a)/a - 1 ~= P(a^2) on [0, 1]; degree-6 minimax, relative error 2^-29.4
/// after sequential rounding.  P[0] is the highest-degree coefficient.
pub(crate) const ERF_P: [f32; 7] = [
    7.806_904e-5,    // 0x38A3B8FF
    -7.997_853e-4,   // 0xBA51A8AF
    5.187_162e-3,    // 0x3BA9F912
    -2.685_334_7e-2, // 0xBCDBFB8D
    1.128_357_9e-1,  // 0x3DE71673
    -3.761_262_6e-1, // 0xBEC0939F
    1.283_791_7e-1,  // 0x3E0375D4  (2/sqrt(pi) - 1)
];
/// erfc(a) e^{a^2} ~= R(u), u = 2/(2+a), for a in [1, 4]; degree-5 fit
/// minimising the absolute error of erfc (weight e^{-a^2}), 2^-33.0.
/// R[0] is the highest-degree coefficient.
pub(crate) const ERF_R: [f32; 6] = [
    -2.307_844_6e-1, // 0xBE6C52C3
    6.366_303e-1,    // 0x3F22FA34
    -6.440_33e-2,    // 0xBD83E5E1
    3.967_691_4e-1,  // 0x3ECB2553
    2.597_100_4e-1,  // 0x3E84F8B7
    1.821_405_7e-3,  // 0x3AEEBC3C
];

/// erf(x), max error 1 ulp, odd symmetry exact; exp_core + 39 = 65 operations.
#[inline]
pub fn erf(x: f32) -> f32 {
    let bits = x.to_bits();
    let sign = bits & SIGN;
    let a = f32::from_bits(bits & !SIGN);
    let ac = sel(a > ERF_CLAMP, ERF_CLAMP, a);
    let s = ac * ac;
    // Small branch (only selected for a < 1, where ac == a).
    let mut p = ERF_P[0];
    p = p * s + ERF_P[1];
    p = p * s + ERF_P[2];
    p = p * s + ERF_P[3];
    p = p * s + ERF_P[4];
    p = p * s + ERF_P[5];
    p = p * s + ERF_P[6];
    let small = ac + ac * p;
    // Large branch.
    // -s is in [-16, -0] (or NaN, masked at the end): identical bits to exp(-s).
    let e = exp_core(-s);
    let u = 2.0 / (2.0 + ac);
    let mut q = ERF_R[0];
    q = q * u + ERF_R[1];
    q = q * u + ERF_R[2];
    q = q * u + ERF_R[3];
    q = q * u + ERF_R[4];
    q = q * u + ERF_R[5];
    let big = 1.0 - e * q;
    let y = sel(a < ERF_T, small, big);
    let y = f32::from_bits(y.to_bits() | sign);
    sel(x.is_nan(), x, y)
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, as PyTorch's `nn.GELU()`: `(x · 0.5) · (1 + erf(x · (1/√2)))`.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// √(2/π), the tanh GELU's scale.
pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The tanh GELU's cubic coefficient.
pub(crate) const GELU_CUBIC: f32 = 0.044715;

/// The SOFT blocks' tanh GELU, `x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))`:
/// `(0.5 · x) · (1 + tanh(√(2/π) · (x + 0.044715 · ((x · x) · x))))`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * (x * x * x))))
}

#[cfg(test)]
mod accuracy {
    //! Each function's error, recorded: the engine promises 1e-4 agreement with the
    //! reference, so each must be near-exact (micromath's exp, at 1e-3, would not do).

    use super::*;

    /// Distance in units in the last place between `got` and the f32 rounding of
    /// `exact` (+0 and −0 equal).
    fn ulps(got: f32, exact: f64) -> u64 {
        let want = exact as f32;
        if got == want || (got.is_nan() && want.is_nan()) {
            return 0;
        }
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            i64::from(if b < 0 { i32::MIN - b } else { b })
        };
        key(got).abs_diff(key(want))
    }

    /// Worst error over every `stride`-th f32 bit pattern.
    fn worst(f: fn(f32) -> f32, exact: fn(f64) -> f64, stride: u32) -> u64 {
        (0..=u32::MAX / stride)
            .map(|i| f32::from_bits(i * stride))
            .filter(|x| !x.is_nan())
            .map(|x| ulps(f(x), exact(f64::from(x))))
            .max()
            .unwrap_or(0)
    }

    /// A function's name, its f32 version and its f64 reference.
    type Reference = (&'static str, fn(f32) -> f32, fn(f64) -> f64);

    fn references() -> [Reference; 3] {
        [
            ("exp", exp, libm::exp),
            ("tanh", tanh, libm::tanh),
            ("erf", erf, libm::erf),
        ]
    }

    /// A dense sweep: every 509th bit pattern (8.4 M values) of each function.
    #[test]
    fn within_one_ulp_on_a_dense_sweep() {
        for (name, f, exact) in references() {
            let w = worst(f, exact, 509);
            std::eprintln!("{name}: max {w} ulp over every 509th f32");
            assert!(w <= 1, "{name}: {w} ulp");
        }
    }

    /// All 2³² inputs (a minute or two per function in release mode).
    #[test]
    #[ignore = "exhaustive: run with --release -- --ignored exhaustive"]
    fn exhaustive_within_one_ulp() {
        for (name, f, exact) in references() {
            let w = worst(f, exact, 1);
            std::eprintln!("{name}: max {w} ulp over all f32");
            assert!(w <= 1, "{name}: {w} ulp");
        }
    }

    #[test]
    fn special_values() {
        assert_eq!(exp(0.0).to_bits(), 1.0f32.to_bits());
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert_eq!(exp(-103.0).to_bits(), 1);
        for b in [0x7fc0_0000u32, 0xffc0_0000, 0x7f80_0001, 0xff80_1234] {
            let x = f32::from_bits(b);
            for f in [exp, tanh, erf] {
                assert_eq!(f(x).to_bits(), b);
            }
        }
        for f in [tanh, erf] {
            assert_eq!(f(0.0).to_bits(), 0);
            assert_eq!(f(-0.0).to_bits(), SIGN);
            assert_eq!(f(f32::INFINITY), 1.0);
            assert_eq!(f(f32::NEG_INFINITY), -1.0);
            for i in 0..100_000u32 {
                let x = f32::from_bits(i * 21_247);
                assert_eq!(f(-x).to_bits(), f(x).to_bits() ^ SIGN, "{x}");
            }
        }
    }

    #[test]
    fn constants_have_their_bits() {
        assert_eq!(LOG2E.to_bits(), 0x3FB8_AA3B);
        assert_eq!(LN2_HI.to_bits(), 0x3F31_8000);
        assert_eq!(LN2_LO.to_bits(), 0xB95E_8083);
    }

    #[test]
    fn exp_core_is_exp_inside_the_clamps() {
        for i in 0..2_000_000u32 {
            let x = EXP_LO + (EXP_HI - EXP_LO) * (i as f32 / 2_000_000.0);
            assert_eq!(exp_core(x).to_bits(), exp(x).to_bits(), "{x}");
        }
    }
}
