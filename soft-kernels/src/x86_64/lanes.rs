//! One SIMD register of f32 lanes, as a trait over `__m256` (AVX2 + F16C) and `__m512`
//! (AVX-512F), so each kernel is written once and instantiated per instruction set inside
//! a `#[target_feature]` function, where these `#[inline(always)]` methods are inlined.
//!
//! Every method is `unsafe`: it may only run on a CPU with the instruction set of its
//! implementation (the tables in `x86_64/mod.rs` are handed out only after detection),
//! and the pointer methods read or write `LANES` (or `n`) elements at the pointer.

use core::arch::x86_64::*;

/// f32 lanes with the operations the kernels use. None of them fuses a multiply and an
/// add; each rounds exactly as the scalar operation does.
pub(crate) trait Lanes: Copy {
    /// Lanes per register.
    const LANES: usize;
    /// All lanes +0.0.
    unsafe fn zero() -> Self;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self;
    /// `LANES` f32 values at `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// The first `n < LANES` f32 values at `p`; the other lanes +0.0.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self;
    /// `LANES` f16 values at `p`, widened exactly.
    unsafe fn load_f16(p: *const u16) -> Self;
    /// `LANES` i8 values at `p`, converted exactly.
    unsafe fn load_i8(p: *const i8) -> Self;
    /// Stores all lanes at `p`.
    unsafe fn store(p: *mut f32, v: Self);
    /// Stores the first `n < LANES` lanes at `p`.
    unsafe fn store_partial(p: *mut f32, v: Self, n: usize);
    /// Stores all lanes at `p` as f16, rounding to nearest even.
    unsafe fn store_f16(p: *mut u16, v: Self);
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn div(a: Self, b: Self) -> Self;
    /// IEEE square root (correctly rounded, like `libm::sqrtf`).
    unsafe fn sqrt(a: Self) -> Self;
    /// `LANES` f32 values at `base + index[l] · stride` for lanes `l < n`; +0.0 beyond.
    unsafe fn gather(base: *const f32, stride: usize, n: usize) -> Self;
    /// Writes the lanes to `out` (`LANES` values).
    unsafe fn spill(v: Self, out: &mut [f32; 16]);

    /// A per-lane condition.
    type Mask: Copy;
    /// `a > b` (false where either is NaN).
    unsafe fn gt(a: Self, b: Self) -> Self::Mask;
    /// `a < b` (false where either is NaN).
    unsafe fn lt(a: Self, b: Self) -> Self::Mask;
    /// `a` is NaN.
    unsafe fn is_nan(a: Self) -> Self::Mask;
    /// `m ? a : b`, lane by lane.
    unsafe fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// `(|x|, sign bit of x)`: the bits with the sign cleared, and the sign bit alone.
    unsafe fn split_sign(x: Self) -> (Self, Self);
    /// The bits of `a` or-ed with the bits of `b`.
    unsafe fn or_bits(a: Self, b: Self) -> Self;
    /// [`math::exp_core`](crate::math)'s scale factors from `k` (see there): with
    /// `m = bits(k) − (0x4B40_0000 − 254)`, `2^n1 = bits((m >> 1) << 23)` and
    /// `2^n2 = bits((m << 23) − ((m >> 1) << 23))`, in wrapping u32 arithmetic.
    unsafe fn exp_scales(k: Self) -> (Self, Self);
}

/// Eight lanes: AVX2 with F16C.
#[derive(Clone, Copy)]
pub(crate) struct V256(__m256);

/// Sixteen lanes: AVX-512F.
#[derive(Clone, Copy)]
pub(crate) struct V512(__m512);

/// `_mm256_maskload_ps`/`maskstore` mask with the first `n` lanes set.
#[inline(always)]
unsafe fn mask256(n: usize) -> __m256i {
    // SAFETY: SSE2/AVX are implied by AVX2, which the caller's CPU has.
    unsafe {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }
}

impl Lanes for V256 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable f32 at p; unaligned load.
        unsafe { V256(_mm256_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        // SAFETY: the caller guarantees n readable f32 at p; masked lanes are not read.
        unsafe { V256(_mm256_maskload_ps(p, mask256(n))) }
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        // SAFETY: the caller guarantees 8 readable u16 (16 bytes) at p; F16C CPU.
        unsafe { V256(_mm256_cvtph_ps(_mm_loadu_si128(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        // SAFETY: the caller guarantees 8 readable bytes at p.
        unsafe {
            let bytes = _mm_loadl_epi64(p.cast());
            V256(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)))
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: the caller guarantees 8 writable f32 at p.
        unsafe { _mm256_storeu_ps(p, v.0) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: Self, n: usize) {
        // SAFETY: the caller guarantees n writable f32 at p; masked lanes are not written.
        unsafe { _mm256_maskstore_ps(p, mask256(n), v.0) }
    }
    #[inline(always)]
    unsafe fn store_f16(p: *mut u16, v: Self) {
        // SAFETY: the caller guarantees 8 writable u16 at p; F16C CPU.
        unsafe { _mm_storeu_si128(p.cast(), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v.0)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_add_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_sub_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_mul_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn div(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_div_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sqrt(a: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_sqrt_ps(a.0)) }
    }
    #[inline(always)]
    unsafe fn gather(base: *const f32, stride: usize, n: usize) -> Self {
        // SAFETY: the caller guarantees base + l·stride readable for l < n; masked lanes
        // are not read. Indices fit in i32 (the caller's views are far smaller).
        unsafe {
            let s = stride as i32;
            let idx = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(s),
            );
            let mask = _mm256_castsi256_ps(mask256(n));
            V256(_mm256_mask_i32gather_ps::<4>(
                _mm256_setzero_ps(),
                base,
                idx,
                mask,
            ))
        }
    }
    #[inline(always)]
    unsafe fn spill(v: Self, out: &mut [f32; 16]) {
        // SAFETY: out has room for 16 ≥ 8 f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v.0) }
    }

    type Mask = __m256;

    #[inline(always)]
    unsafe fn gt(a: Self, b: Self) -> __m256 {
        // SAFETY: AVX2 CPU (trait contract). Ordered, quiet: NaN lanes false.
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a.0, b.0) }
    }
    #[inline(always)]
    unsafe fn lt(a: Self, b: Self) -> __m256 {
        // SAFETY: AVX2 CPU (trait contract). Ordered, quiet: NaN lanes false.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a.0, b.0) }
    }
    #[inline(always)]
    unsafe fn is_nan(a: Self) -> __m256 {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a.0, a.0) }
    }
    #[inline(always)]
    unsafe fn select(m: __m256, a: Self, b: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract). blendv takes the second operand where set.
        unsafe { V256(_mm256_blendv_ps(b.0, a.0, m)) }
    }
    #[inline(always)]
    unsafe fn split_sign(x: Self) -> (Self, Self) {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe {
            let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
            (
                V256(_mm256_andnot_ps(sign, x.0)),
                V256(_mm256_and_ps(sign, x.0)),
            )
        }
    }
    #[inline(always)]
    unsafe fn or_bits(a: Self, b: Self) -> Self {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe { V256(_mm256_or_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn exp_scales(k: Self) -> (Self, Self) {
        // SAFETY: AVX2 CPU (trait contract).
        unsafe {
            let m = _mm256_sub_epi32(
                _mm256_castps_si256(k.0),
                _mm256_set1_epi32(0x4B40_0000 - 254),
            );
            let s1 = _mm256_slli_epi32::<23>(_mm256_srli_epi32::<1>(m));
            let s2 = _mm256_sub_epi32(_mm256_slli_epi32::<23>(m), s1);
            (V256(_mm256_castsi256_ps(s1)), V256(_mm256_castsi256_ps(s2)))
        }
    }
}

impl Lanes for V512 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable f32 at p; unaligned load.
        unsafe { V512(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self {
        // SAFETY: the caller guarantees n readable f32 at p; masked lanes are not read
        // (AVX-512 masked loads suppress faults on masked-off elements).
        unsafe { V512(_mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)) }
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        // SAFETY: the caller guarantees 16 readable u16 (32 bytes) at p.
        unsafe { V512(_mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn load_i8(p: *const i8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        unsafe {
            V512(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                p.cast(),
            ))))
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: the caller guarantees 16 writable f32 at p.
        unsafe { _mm512_storeu_ps(p, v.0) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: Self, n: usize) {
        // SAFETY: the caller guarantees n writable f32 at p; masked lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v.0) }
    }
    #[inline(always)]
    unsafe fn store_f16(p: *mut u16, v: Self) {
        // SAFETY: the caller guarantees 16 writable u16 at p.
        unsafe { _mm256_storeu_si256(p.cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v.0)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_add_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_sub_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_mul_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn div(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_div_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sqrt(a: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { V512(_mm512_sqrt_ps(a.0)) }
    }
    #[inline(always)]
    unsafe fn gather(base: *const f32, stride: usize, n: usize) -> Self {
        // SAFETY: the caller guarantees base + l·stride readable for l < n; masked lanes
        // are not read. Indices fit in i32 (the caller's views are far smaller).
        unsafe {
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride as i32));
            let mask = ((1u32 << n) - 1) as u16;
            V512(_mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                mask,
                idx,
                base.cast(),
            ))
        }
    }
    #[inline(always)]
    unsafe fn spill(v: Self, out: &mut [f32; 16]) {
        // SAFETY: out has room for 16 f32.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v.0) }
    }

    type Mask = __mmask16;

    #[inline(always)]
    unsafe fn gt(a: Self, b: Self) -> __mmask16 {
        // SAFETY: AVX-512F CPU (trait contract). Ordered, quiet: NaN lanes false.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a.0, b.0) }
    }
    #[inline(always)]
    unsafe fn lt(a: Self, b: Self) -> __mmask16 {
        // SAFETY: AVX-512F CPU (trait contract). Ordered, quiet: NaN lanes false.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a.0, b.0) }
    }
    #[inline(always)]
    unsafe fn is_nan(a: Self) -> __mmask16 {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a.0, a.0) }
    }
    #[inline(always)]
    unsafe fn select(m: __mmask16, a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract). mask_blend takes the second where set.
        unsafe { V512(_mm512_mask_blend_ps(m, b.0, a.0)) }
    }
    #[inline(always)]
    unsafe fn split_sign(x: Self) -> (Self, Self) {
        // SAFETY: AVX-512F CPU (trait contract); integer and/andnot are AVX-512F.
        unsafe {
            let sign = _mm512_set1_epi32(i32::MIN);
            let bits = _mm512_castps_si512(x.0);
            (
                V512(_mm512_castsi512_ps(_mm512_andnot_si512(sign, bits))),
                V512(_mm512_castsi512_ps(_mm512_and_si512(sign, bits))),
            )
        }
    }
    #[inline(always)]
    unsafe fn or_bits(a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe {
            let bits = _mm512_or_si512(_mm512_castps_si512(a.0), _mm512_castps_si512(b.0));
            V512(_mm512_castsi512_ps(bits))
        }
    }
    #[inline(always)]
    unsafe fn exp_scales(k: Self) -> (Self, Self) {
        // SAFETY: AVX-512F CPU (trait contract).
        unsafe {
            let m = _mm512_sub_epi32(
                _mm512_castps_si512(k.0),
                _mm512_set1_epi32(0x4B40_0000 - 254),
            );
            let s1 = _mm512_slli_epi32::<23>(_mm512_srli_epi32::<1>(m));
            let s2 = _mm512_sub_epi32(_mm512_slli_epi32::<23>(m), s1);
            (V512(_mm512_castsi512_ps(s1)), V512(_mm512_castsi512_ps(s2)))
        }
    }
}
