//! The SIMD GEMM: a register block of `MR` rows × `NV` vectors of columns, every
//! accumulator one output's sum in depth order (a separate multiply and add per term, no
//! FMA), so the result is the generic kernel's bit for bit.
//!
//! Per depth step the block loads `NV` vectors of the right operand and broadcasts one
//! left-operand value per row. Column panels outside, row blocks inside: a panel of the
//! right operand stays in cache while every row block reads it. An f16 or int8 panel
//! that more than one row block reads is widened to f32 once (F16C/AVX-512 conversion,
//! sign extension), a depth chunk at a time; a single row block widens as it loads.

use core::mem::MaybeUninit;

use super::lanes::Lanes;
use crate::operand::{Lhs, Out, Rhs, RhsData, Start};

/// A stored right-operand element the lanes can load.
pub(crate) trait Element: Copy {
    /// Stored narrower than f32: loading it costs a conversion.
    const WIDENS: bool;
    /// `LANES` elements at `p`, as f32.
    unsafe fn load<L: Lanes>(p: *const Self) -> L;
    /// Element `v` as f32 (for partial vectors).
    fn to_f32(self) -> f32;

    /// The first `n < LANES` elements at `p` (+0.0 beyond): through a small stack copy,
    /// unless the type has a masked load.
    #[inline(always)]
    unsafe fn load_partial<L: Lanes>(p: *const Self, n: usize) -> L {
        let mut tmp = [0.0f32; 16];
        for (i, t) in tmp.iter_mut().enumerate().take(n) {
            // SAFETY: i < n elements readable (caller).
            *t = unsafe { *p.add(i) }.to_f32();
        }
        // SAFETY: tmp holds 16 ≥ LANES values.
        unsafe { L::load(tmp.as_ptr()) }
    }
}

impl Element for f32 {
    const WIDENS: bool = false;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const f32) -> L {
        // SAFETY: forwarded from the caller (LANES readable elements).
        unsafe { L::load(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn load_partial<L: Lanes>(p: *const f32, n: usize) -> L {
        // SAFETY: forwarded from the caller (n readable elements); a masked load.
        unsafe { L::load_partial(p, n) }
    }
}

impl Element for u16 {
    const WIDENS: bool = true;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const u16) -> L {
        // SAFETY: forwarded from the caller (LANES readable elements).
        unsafe { L::load_f16(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::from_bits(self).to_f32()
    }
}

impl Element for i8 {
    const WIDENS: bool = true;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const i8) -> L {
        // SAFETY: forwarded from the caller (LANES readable elements).
        unsafe { L::load_i8(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// Loads `n ≤ LANES` elements at `p` (all of them when `n == LANES`; the rest +0.0).
#[inline(always)]
unsafe fn load_n<L: Lanes, B: Element>(p: *const B, n: usize) -> L {
    // SAFETY: n elements readable (caller).
    unsafe {
        if n == L::LANES {
            B::load(p)
        } else {
            B::load_partial(p, n)
        }
    }
}

/// One lhs piece as raw parts.
#[derive(Clone, Copy)]
struct Piece {
    ptr: *const f32,
    row_stride: usize,
    col_stride: usize,
    depth: usize,
}

/// Most pieces (a 3×3 convolution's three rows).
const PIECES: usize = crate::operand::MAX_PIECES;

/// Accumulates `Σ_k a[r][k] · b[k][..]` over the whole depth into `acc`, for rows
/// `rows[0..MR]` (each a row index into every piece) and the panel at `b` of `NV`
/// vectors, the last holding `last` valid lanes.
///
/// # Safety
/// The pieces' rows and `b`'s `depth` rows of the panel (`row_stride` apart) must be
/// readable; the CPU must run `L`.
#[inline(always)]
unsafe fn block<L: Lanes, B: Element, const MR: usize, const NV: usize>(
    pieces: &[Piece],
    rows: [usize; MR],
    mut b: *const B,
    b_stride: usize,
    last: usize,
    acc: &mut [[L; NV]; MR],
) {
    for p in pieces {
        let mut a: [*const f32; MR] = [p.ptr; MR];
        for (ai, &r) in a.iter_mut().zip(&rows) {
            // SAFETY: row r lies in the piece (caller).
            *ai = unsafe { p.ptr.add(r * p.row_stride) };
        }
        for k in 0..p.depth {
            let mut w = [acc[0][0]; NV];
            for (v, wv) in w.iter_mut().enumerate() {
                let n = if v + 1 == NV { last } else { L::LANES };
                // SAFETY: row k of the panel holds n elements at v·LANES (caller).
                *wv = unsafe { load_n::<L, B>(b.add(v * L::LANES), n) };
            }
            for (ai, accr) in a.iter().zip(acc.iter_mut()) {
                // SAFETY: element k of the row (caller); the CPU runs L.
                unsafe {
                    let x = L::splat(*ai.add(k * p.col_stride));
                    for (av, &wv) in accr.iter_mut().zip(&w) {
                        *av = L::add(*av, L::mul(x, wv));
                    }
                }
            }
            // Past the last row this pointer is never read: wrapping, not `add`.
            b = b.wrapping_add(b_stride);
        }
    }
}

/// What a panel's sums start from and how they are stored, as lanes.
struct Panel<L: Lanes, const NV: usize> {
    /// Start values (bias for float weights, else zero).
    start: [L; NV],
    /// int8: `(bias, scale)` per column.
    scale: Option<([L; NV], [L; NV])>,
}

/// Which part of the sums a pass over the rows computes.
#[derive(Clone, Copy)]
struct Pass {
    /// Resume the sums parked in `out` (else start from the panel's start values).
    resume: bool,
    /// The sums end in this pass: int8 sums are scaled as they are stored (else they are
    /// parked raw).
    finish: bool,
}

/// Runs the `MR`-row block kernel over rows `r0..r0 + count` (`count ≤ MR`; missing rows
/// repeat the last, their sums are dropped) of one panel of columns `c0..c0 + width`.
///
/// # Safety
/// As [`block`], plus: `out` rows `r0..r0 + count`, columns `c0..c0 + width` writable.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn run_block<L: Lanes, B: Element, const MR: usize, const NV: usize>(
    pieces: &[Piece],
    b: *const B,
    b_stride: usize,
    panel: &Panel<L, NV>,
    pass: Pass,
    out: &mut Out<'_>,
    r0: usize,
    count: usize,
    c0: usize,
    width: usize,
) {
    let last = width - (NV - 1) * L::LANES;
    let stride = out.row_stride();
    let base = out.data().as_mut_ptr();
    let rows: [usize; MR] = core::array::from_fn(|i| r0 + i.min(count - 1));
    let mut acc = [panel.start; MR];
    if pass.resume {
        for (i, accr) in acc.iter_mut().enumerate().take(count) {
            for (v, av) in accr.iter_mut().enumerate() {
                let n = if v + 1 == NV { last } else { L::LANES };
                // SAFETY: out row r0 + i, columns c0 + v·LANES.. + n are in the view.
                unsafe {
                    let p = base.add((r0 + i) * stride + c0 + v * L::LANES);
                    *av = if n == L::LANES {
                        L::load(p)
                    } else {
                        L::load_partial(p, n)
                    };
                }
            }
        }
    }
    // SAFETY: forwarded (caller).
    unsafe { block::<L, B, MR, NV>(pieces, rows, b, b_stride, last, &mut acc) };
    for (i, accr) in acc.iter().enumerate().take(count) {
        for (v, &av) in accr.iter().enumerate() {
            let n = if v + 1 == NV { last } else { L::LANES };
            // SAFETY: as above; the CPU runs L.
            unsafe {
                let value = match &panel.scale {
                    Some((bias, scale)) if pass.finish => L::add(bias[v], L::mul(scale[v], av)),
                    _ => av,
                };
                let p = base.add((r0 + i) * stride + c0 + v * L::LANES);
                if n == L::LANES {
                    L::store(p, value);
                } else {
                    L::store_partial(p, value, n);
                }
            }
        }
    }
}

/// Rows per register block: 12 with 32 registers (AVX-512), 6 with 16 (AVX2).
const fn rows_per_block<L: Lanes>() -> usize {
    if L::LANES == 16 {
        12
    } else {
        6
    }
}

/// One panel of `NV` vectors (columns `c0..c0 + width`) over all rows.
///
/// # Safety
/// As [`run_block`] for every row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn panel<L: Lanes, B: Element, const NV: usize>(
    pieces: &[Piece],
    b: *const B,
    b_stride: usize,
    start: Start<'_>,
    scales: Option<&[f32]>,
    out: &mut Out<'_>,
    c0: usize,
    width: usize,
) {
    // Start values and int8 scales of the panel's columns, as lanes (a loop, not a
    // closure: closures do not inherit the caller's target features).
    let mut bias_values = [0.0f32; 32];
    let mut scale_values = [0.0f32; 32];
    let n = width.min(32);
    if let Start::Bias(b) = start {
        b.read_into(c0, &mut bias_values[..n]);
    }
    if let Some(s) = scales {
        for (d, v) in scale_values.iter_mut().zip(s.iter().skip(c0)).take(n) {
            *d = *v;
        }
    }
    let zero = [L::zero(); NV];
    let mut bias = zero;
    let mut scale = zero;
    for v in 0..NV {
        // SAFETY: the arrays hold 32 ≥ NV·LANES values; the CPU runs L.
        unsafe {
            bias[v] = L::load(bias_values.as_ptr().add(v * L::LANES));
            scale[v] = L::load(scale_values.as_ptr().add(v * L::LANES));
        }
    }
    let (panel_start, scale) = match (scales, start) {
        (Some(_), Start::Bias(_)) => (zero, Some((bias, scale))),
        (Some(_), _) => (zero, Some((zero, scale))),
        (None, Start::Bias(_)) => (bias, None),
        (None, _) => (zero, None),
    };
    let panel = Panel {
        start: panel_start,
        scale,
    };
    let resume = matches!(start, Start::Accumulate);
    let depth: usize = pieces.iter().map(|p| p.depth).sum();
    if !B::WIDENS || out.rows() <= rows_per_block::<L>() || depth == 0 {
        let pass = Pass {
            resume,
            finish: true,
        };
        // SAFETY: forwarded (caller).
        unsafe { rows::<L, B, NV>(pieces, b, b_stride, &panel, pass, out, c0, width) };
        return;
    }
    // Several row blocks read this panel: widen it once, `DEPTH_CHUNK` rows of it at a
    // time, into an f32 buffer the blocks then read (each block parks its sums in `out`
    // between chunks).
    // Not zeroed (a 32 KiB memset per call cost 1 % of a run): each chunk writes every
    // value its blocks read before they read it.
    let mut wide = [MaybeUninit::<f32>::uninit(); DEPTH_CHUNK * 32];
    let wide_ptr = wide.as_mut_ptr().cast::<f32>();
    let wide_stride = NV * L::LANES;
    let last = width - (NV - 1) * L::LANES;
    let mut k0 = 0;
    while k0 < depth {
        let k1 = (k0 + DEPTH_CHUNK).min(depth);
        for k in k0..k1 {
            for v in 0..NV {
                let n = if v + 1 == NV { last } else { L::LANES };
                // SAFETY: row k of the panel holds n elements at v·LANES (caller); the
                // buffer holds DEPTH_CHUNK rows of 32 ≥ NV·LANES values; the CPU runs L.
                unsafe {
                    let w = load_n::<L, B>(b.add(k * b_stride + v * L::LANES), n);
                    L::store(wide_ptr.add((k - k0) * wide_stride + v * L::LANES), w);
                }
            }
        }
        let (chunk, count) = depth_range(pieces, k0, k1);
        let pass = Pass {
            resume: resume || k0 > 0,
            finish: k1 == depth,
        };
        // SAFETY: the chunk's pieces lie inside the caller's; the buffer holds their
        // k1 − k0 rows of the panel, wide_stride apart, each of its NV vectors written
        // just above (the blocks read no other values).
        unsafe {
            rows::<L, f32, NV>(
                &chunk[..count],
                wide_ptr.cast_const(),
                wide_stride,
                &panel,
                pass,
                out,
                c0,
                width,
            )
        };
        k0 = k1;
    }
}

/// Depth rows of a panel widened at a time (a 32 KiB buffer of 32 columns: it stays in
/// the L1 cache with the row blocks' inputs).
const DEPTH_CHUNK: usize = 256;

/// The pieces' depth positions `k0..k1` (counted across pieces in order), as pieces.
fn depth_range(pieces: &[Piece], k0: usize, k1: usize) -> ([Piece; PIECES], usize) {
    let mut out = [Piece {
        ptr: core::ptr::null(),
        row_stride: 0,
        col_stride: 0,
        depth: 0,
    }; PIECES];
    let mut count = 0;
    let mut at = 0;
    for p in pieces {
        let (from, to) = (k0.max(at), k1.min(at + p.depth));
        if from < to {
            out[count] = Piece {
                // In bounds: from − at < p.depth.
                ptr: p.ptr.wrapping_add((from - at) * p.col_stride),
                depth: to - from,
                ..*p
            };
            count += 1;
        }
        at += p.depth;
    }
    (out, count)
}

/// One pass of the block kernel over every row of the panel.
///
/// # Safety
/// As [`run_block`] for every row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rows<L: Lanes, B: Element, const NV: usize>(
    pieces: &[Piece],
    b: *const B,
    b_stride: usize,
    panel: &Panel<L, NV>,
    pass: Pass,
    out: &mut Out<'_>,
    c0: usize,
    width: usize,
) {
    let rows = out.rows();
    let mr = rows_per_block::<L>();
    let mut r0 = 0;
    // SAFETY: (every call) rows r0..r0 + count lie in `out` and in every piece (caller).
    unsafe {
        while r0 < rows {
            let left = rows - r0;
            if mr == 12 && left >= 9 {
                run_block::<L, B, 12, NV>(
                    pieces,
                    b,
                    b_stride,
                    panel,
                    pass,
                    out,
                    r0,
                    left.min(12),
                    c0,
                    width,
                );
                r0 += left.min(12);
            } else if mr == 6 && left >= 5 {
                run_block::<L, B, 6, NV>(
                    pieces,
                    b,
                    b_stride,
                    panel,
                    pass,
                    out,
                    r0,
                    left.min(6),
                    c0,
                    width,
                );
                r0 += left.min(6);
            } else if left >= 3 {
                run_block::<L, B, 4, NV>(
                    pieces,
                    b,
                    b_stride,
                    panel,
                    pass,
                    out,
                    r0,
                    left.min(4),
                    c0,
                    width,
                );
                r0 += left.min(4);
            } else {
                run_block::<L, B, 1, NV>(pieces, b, b_stride, panel, pass, out, r0, 1, c0, width);
                r0 += 1;
            }
        }
    }
}

/// The GEMM for one element type.
///
/// # Safety
/// The operands are checked views (`Kernels::gemm`); the CPU runs `L`.
#[inline(always)]
unsafe fn gemm_as<L: Lanes, B: Element>(
    lhs: &Lhs<'_>,
    b: &[B],
    b_stride: usize,
    cols: usize,
    start: Start<'_>,
    scales: Option<&[f32]>,
    out: &mut Out<'_>,
) {
    let mut pieces = [Piece {
        ptr: core::ptr::null(),
        row_stride: 0,
        col_stride: 0,
        depth: 0,
    }; PIECES];
    let mut count = 0;
    for p in lhs.parts().iter().filter(|p| p.cols() > 0) {
        if let Some(slot) = pieces.get_mut(count) {
            *slot = Piece {
                ptr: p.data().as_ptr(),
                row_stride: p.row_stride(),
                col_stride: p.col_stride(),
                depth: p.cols(),
            };
            count += 1;
        }
    }
    let pieces = &pieces[..count];
    let wide = 2 * L::LANES;
    let mut c0 = 0;
    // SAFETY: (every call) the panels lie inside the checked rhs and out views.
    unsafe {
        while c0 + wide <= cols {
            panel::<L, B, 2>(
                pieces,
                b.as_ptr().add(c0),
                b_stride,
                start,
                scales,
                out,
                c0,
                wide,
            );
            c0 += wide;
        }
        while c0 < cols {
            let width = (cols - c0).min(L::LANES);
            panel::<L, B, 1>(
                pieces,
                b.as_ptr().add(c0),
                b_stride,
                start,
                scales,
                out,
                c0,
                width,
            );
            c0 += width;
        }
    }
}

/// `out = start + lhs · rhs` (the crate's contract).
///
/// # Safety
/// The operands are checked views (`Kernels::gemm`); the CPU runs `L`.
#[inline(always)]
pub(crate) unsafe fn gemm<L: Lanes>(
    lhs: &Lhs<'_>,
    rhs: &Rhs<'_>,
    start: Start<'_>,
    out: &mut Out<'_>,
) {
    if lhs.rows() == 0 || rhs.cols() == 0 {
        return;
    }
    let (stride, cols) = (rhs.row_stride(), rhs.cols());
    // SAFETY: forwarded (caller).
    unsafe {
        match rhs.data() {
            RhsData::F32(d) => gemm_as::<L, f32>(lhs, d, stride, cols, start, None, out),
            RhsData::F16Finite(d) => gemm_as::<L, u16>(lhs, d, stride, cols, start, None, out),
            RhsData::F16(d) => {
                let bits: &[u16] = bytemuck::cast_slice(d);
                gemm_as::<L, u16>(lhs, bits, stride, cols, start, None, out)
            }
            RhsData::I8 { q, scales } => {
                gemm_as::<L, i8>(lhs, q, stride, cols, start, Some(scales), out)
            }
        }
    }
}
