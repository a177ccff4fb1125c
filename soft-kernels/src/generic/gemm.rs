//! The generic GEMM: the reference that defines every GEMM's bits, and the kernel the
//! Cortex-M4F runs.
//!
//! Shape: rows are processed in blocks of [`TOKEN_BLOCK`]; each block's inputs are
//! transposed, [`K_CHUNK`] at a time, into a stack buffer, so one row of it feeds a
//! `TOKEN_BLOCK × OUTPUT_BLOCK` register block of independent sums. The sums wait in the
//! output, as f32, between chunks: that changes no bit, each sum still runs in depth order.

use crate::operand::{widen, widen_finite, Lhs, Out, Rhs, RhsData, Start};

/// Rows per register block.
pub(crate) const TOKEN_BLOCK: usize = 4;
/// Columns per register block: 4 × 8 accumulators on x86-64 (eight SSE registers), 4 × 4 on
/// 32-bit ARM, whose FPU has 32 single registers for the accumulators, one block of
/// weights and the row values.
pub(crate) const OUTPUT_BLOCK: usize = if cfg!(target_arch = "arm") { 4 } else { 8 };
/// Depth per transposed chunk.
const K_CHUNK: usize = 128;
/// Row blocks that share one widened block of f16 or int8 values: widening costs about as
/// much as the multiply-adds it feeds, so sharing it pays.
const GROUP_BLOCKS: usize = 2;

type Acc = [[f32; OUTPUT_BLOCK]; TOKEN_BLOCK];
/// A row block's values, depth-major: `packed[k][t]` is depth `k0 + k` of row `t`.
type Packed = [[f32; TOKEN_BLOCK]; K_CHUNK];

/// `acc[t][o] += x[t] · w[o]`: independent multiply-adds, kept in registers.
#[inline(always)]
fn mac_block(acc: &mut Acc, x: &[f32; TOKEN_BLOCK], w: &[f32; OUTPUT_BLOCK]) {
    for (a, &xv) in acc.iter_mut().zip(x) {
        for (ao, &wo) in a.iter_mut().zip(w) {
            *ao += xv * wo;
        }
    }
}

/// A stored right-operand element, widened exactly to f32.
trait Element: Copy {
    fn to_f32(self) -> f32;

    #[inline(always)]
    fn widen_block(src: &[Self; OUTPUT_BLOCK]) -> [f32; OUTPUT_BLOCK] {
        src.map(Self::to_f32)
    }
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// f16 weights (raw bits), finite by contract.
impl Element for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        widen_finite(self)
    }
}

impl Element for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        widen(self.to_bits())
    }
}

impl Element for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// Calls `$body` with `$d` bound to the right operand's values as a typed slice.
macro_rules! with_rhs {
    ($data:expr, |$d:ident| $body:expr) => {
        match $data {
            RhsData::F32($d) => $body,
            RhsData::F16Finite($d) => $body,
            RhsData::F16($d) => $body,
            RhsData::I8 { q: $d, .. } => $body,
        }
    };
}

/// The rows of `d` (`stride` apart) as full-stride rows plus the shorter last row a
/// column sub-view may end with: iterating `chunks_exact` lets LLVM prove each row's
/// block in bounds, so the inner loops keep no per-row check (2.10 instead of 2.8
/// instructions per MAC on the M4).
#[inline(always)]
fn rows_of<T>(d: &[T], stride: usize) -> (core::slice::ChunksExact<'_, T>, &[T]) {
    let rows = d.chunks_exact(stride.max(1));
    let last = rows.remainder();
    (rows, last)
}

/// Accumulates `Σ_k packed[k][t] · W[k][o0 + o]` into `acc`, depth in order.
#[inline(always)]
fn gemm_packed<T: Element>(
    d: &[T],
    stride: usize,
    cols: usize,
    o0: usize,
    packed: &[[f32; TOKEN_BLOCK]],
    acc_out: &mut Acc,
) {
    // A local copy and loops without early exits let LLVM keep every accumulator in a
    // register for the whole loop. The full/partial block test stays outside the loops
    // (here and in `widen_rows`): a shared per-row helper measured 2.34 instead of 2.10
    // instructions per MAC on the M4 (f32 weights).
    let mut acc = *acc_out;
    let (rows, last) = rows_of(d, stride);
    let full = rows.len();
    if o0 + OUTPUT_BLOCK <= cols && cols <= stride {
        for (x, wrow) in packed.iter().zip(rows) {
            if let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            {
                mac_block(&mut acc, x, &T::widen_block(src));
            }
        }
        if let (Some(x), Some(src)) = (
            packed.get(full),
            last.get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok()),
        ) {
            mac_block(&mut acc, x, &T::widen_block(src));
        }
    } else {
        let valid = cols.saturating_sub(o0);
        for (x, wrow) in packed.iter().zip(rows.chain(core::iter::once(last))) {
            let mut w = [0.0f32; OUTPUT_BLOCK];
            for (wo, v) in w.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
            mac_block(&mut acc, x, &w);
        }
    }
    *acc_out = acc;
}

/// Widens `W[k][o0..o0 + OB]` for the rows of `d` into `wide` (zeros past the last column).
#[inline(always)]
fn widen_rows<T: Element>(
    d: &[T],
    stride: usize,
    cols: usize,
    o0: usize,
    wide: &mut [[f32; OUTPUT_BLOCK]],
) {
    let (rows, last) = rows_of(d, stride);
    if o0 + OUTPUT_BLOCK <= cols && cols <= stride {
        let full = rows.len();
        for (dst, wrow) in wide.iter_mut().zip(rows) {
            if let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            {
                *dst = T::widen_block(src);
            }
        }
        if let (Some(dst), Some(src)) = (
            wide.get_mut(full),
            last.get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok()),
        ) {
            *dst = T::widen_block(src);
        }
    } else {
        let valid = cols.saturating_sub(o0);
        for (dst, wrow) in wide.iter_mut().zip(rows.chain(core::iter::once(last))) {
            *dst = [0.0; OUTPUT_BLOCK];
            for (wo, v) in dst.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
        }
    }
}

/// `acc[t][o] += Σ_k packed[k][t] · wide[k][o]`, depth in order.
#[inline(always)]
fn gemm_wide(packed: &[[f32; TOKEN_BLOCK]], wide: &[[f32; OUTPUT_BLOCK]], acc_out: &mut Acc) {
    let mut acc = *acc_out;
    for (x, w) in packed.iter().zip(wide) {
        mac_block(&mut acc, x, w);
    }
    *acc_out = acc;
}

/// Rows `first..` of the right operand (empty past its end).
#[inline(always)]
fn rows_from<T>(d: &[T], first: usize, stride: usize) -> &[T] {
    d.get(first * stride..).unwrap_or_default()
}

/// Running sums parked in `out` (rows `t0..t0 + count`, columns `o0..o0 + n`).
#[inline(always)]
fn load_block(out: &[f32], stride: usize, t0: usize, count: usize, o0: usize, n: usize) -> Acc {
    let mut acc = [[0.0; OUTPUT_BLOCK]; TOKEN_BLOCK];
    for (t, a) in acc.iter_mut().enumerate().take(count) {
        let at = (t0 + t) * stride + o0;
        let src = out.get(at..at + n).unwrap_or_default();
        match <&[f32; OUTPUT_BLOCK]>::try_from(src) {
            Ok(full) => *a = *full,
            Err(_) => a.iter_mut().zip(src).for_each(|(v, s)| *v = *s),
        }
    }
    acc
}

/// Stores (or parks) sums in `out`. Whole blocks are array copies: a per-element loop
/// became a `memcpy` call per row on the M4.
#[inline(always)]
fn save_block(
    acc: &Acc,
    out: &mut [f32],
    stride: usize,
    t0: usize,
    count: usize,
    o0: usize,
    n: usize,
) {
    for (t, a) in acc.iter().enumerate().take(count) {
        let at = (t0 + t) * stride + o0;
        let dst = out.get_mut(at..at + n).unwrap_or_default();
        match <&mut [f32; OUTPUT_BLOCK]>::try_from(&mut *dst) {
            Ok(full) => *full = *a,
            Err(_) => dst.iter_mut().zip(a).for_each(|(d, v)| *d = *v),
        }
    }
}

/// `out = start + lhs · rhs`, the contract in the crate docs.
pub(crate) fn gemm(lhs: &Lhs<'_>, rhs: &Rhs<'_>, start: Start<'_>, out: &mut Out<'_>) {
    let (rows, depth, cols) = (lhs.rows(), lhs.depth(), rhs.cols());
    if rows == 0 || cols == 0 {
        return;
    }
    let int8_scales = match rhs.data() {
        RhsData::I8 { scales, .. } => Some(scales),
        _ => None,
    };
    let stride = rhs.row_stride();
    let out_stride = out.row_stride();
    let out = out.data();
    // Stack: 2 × 128 × 4 row values, 128 × OB widened values and one 128-value row:
    // 6.5 KiB on 32-bit ARM, 8.5 KiB on x86-64. Fixed, whatever the sizes.
    let mut packed: [Packed; GROUP_BLOCKS] = [[[0.0; TOKEN_BLOCK]; K_CHUNK]; GROUP_BLOCKS];
    let mut wide = [[0.0f32; OUTPUT_BLOCK]; K_CHUNK];
    let mut row = [0.0f32; K_CHUNK];
    for g0 in (0..rows).step_by(TOKEN_BLOCK * GROUP_BLOCKS) {
        let blocks = (rows - g0).div_ceil(TOKEN_BLOCK).min(GROUP_BLOCKS);
        let mut k0 = 0;
        loop {
            let kn = K_CHUNK.min(depth - k0);
            for (b, block) in packed.iter_mut().enumerate().take(blocks) {
                let t0 = g0 + b * TOKEN_BLOCK;
                let count = TOKEN_BLOCK.min(rows - t0);
                for t in 0..TOKEN_BLOCK {
                    // Missing rows of a short block repeat the last one; their sums are
                    // dropped.
                    let values = row.get_mut(..kn).unwrap_or_default();
                    lhs.read(t0 + t.min(count - 1), k0, values);
                    for (p, v) in block.iter_mut().zip(values.iter()) {
                        p[t] = *v;
                    }
                }
            }
            let (first, last) = (k0 == 0, k0 + kn == depth);
            let wide = wide.get_mut(..kn).unwrap_or_default();
            for o0 in (0..cols).step_by(OUTPUT_BLOCK) {
                let n = OUTPUT_BLOCK.min(cols - o0);
                // The block's bias (the start of float sums, added after scaling int8
                // sums) and int8 scales, read once for every row block.
                let mut bias = [0.0f32; OUTPUT_BLOCK];
                if let Start::Bias(v) = start {
                    v.read_into(o0, bias.get_mut(..n).unwrap_or_default());
                }
                let mut scale = [0.0f32; OUTPUT_BLOCK];
                if let Some(s) = int8_scales {
                    for (d, v) in scale.iter_mut().zip(s.get(o0..o0 + n).unwrap_or_default()) {
                        *d = *v;
                    }
                }
                // With one row block, widening on the fly is cheaper than a buffer.
                let widened = blocks > 1
                    && !matches!(rhs.data(), RhsData::F32(_))
                    && with_rhs!(rhs.data(), |d| {
                        widen_rows(rows_from(d, k0, stride), stride, cols, o0, wide);
                        true
                    });
                for (b, block) in packed.iter().enumerate().take(blocks) {
                    let t0 = g0 + b * TOKEN_BLOCK;
                    let count = TOKEN_BLOCK.min(rows - t0);
                    let chunk = block.get(..kn).unwrap_or_default();
                    let mut acc = match (first, start) {
                        (true, Start::Bias(_)) if int8_scales.is_none() => [bias; TOKEN_BLOCK],
                        (true, Start::Zero | Start::Bias(_)) => [[0.0; OUTPUT_BLOCK]; TOKEN_BLOCK],
                        _ => load_block(out, out_stride, t0, count, o0, n),
                    };
                    if widened {
                        gemm_wide(chunk, wide, &mut acc);
                    } else {
                        with_rhs!(rhs.data(), |d| gemm_packed(
                            rows_from(d, k0, stride),
                            stride,
                            cols,
                            o0,
                            chunk,
                            &mut acc
                        ));
                    }
                    if last && int8_scales.is_some() {
                        for a in acc.iter_mut() {
                            for ((v, &s), &b) in a.iter_mut().zip(&scale).zip(&bias) {
                                *v = b + s * *v;
                            }
                        }
                    }
                    save_block(&acc, out, out_stride, t0, count, o0, n);
                }
            }
            k0 += kn;
            if k0 >= depth {
                break;
            }
        }
    }
}
