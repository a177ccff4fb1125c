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

/// The sums of a register block of `R` rows (`TOKEN_BLOCK`, or fewer at the end).
type Acc<const R: usize = TOKEN_BLOCK> = [[f32; OUTPUT_BLOCK]; R];
/// A row block's values, depth-major: `packed[k][t]` is depth `k0 + k` of row `t`.
type Packed = [[f32; TOKEN_BLOCK]; K_CHUNK];

/// `acc[t][o] += x[t] · w[o]`: independent multiply-adds, kept in registers.
#[inline(always)]
fn mac_block<const R: usize>(acc: &mut Acc<R>, x: &[f32; TOKEN_BLOCK], w: &[f32; OUTPUT_BLOCK]) {
    for (a, &xv) in acc.iter_mut().zip(x) {
        for (ao, &wo) in a.iter_mut().zip(w) {
            *ao += xv * wo;
        }
    }
}

/// A stored right-operand element, widened exactly to f32.
trait Element: Copy {
    /// Whether values need widening (all but f32): then two row blocks share one
    /// widened block.
    const WIDENS: bool = true;

    fn to_f32(self) -> f32;

    #[inline(always)]
    fn widen_block(src: &[Self; OUTPUT_BLOCK]) -> [f32; OUTPUT_BLOCK] {
        src.map(Self::to_f32)
    }
}

impl Element for f32 {
    const WIDENS: bool = false;

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

/// The rows of a right operand from row `k0` on, split once per depth chunk: full-stride
/// rows (iterating `chunks_exact` lets LLVM prove each row's block in bounds, so the
/// inner loops keep no per-row check: 2.10 instead of 2.8 instructions per MAC on the
/// M4) and the shorter last row a column sub-view may end with.
#[derive(Clone, Copy)]
struct Rows<'a, T> {
    /// Rows `stride` apart.
    data: &'a [T],
    stride: usize,
    /// How many are full (`stride` long); the one after them is `last`.
    full: usize,
    last: &'a [T],
}

impl<'a, T> Rows<'a, T> {
    fn new(d: &'a [T], k0: usize, stride: usize) -> Rows<'a, T> {
        let stride = stride.max(1);
        let data = d.get(k0 * stride..).unwrap_or_default();
        let full = data.len() / stride;
        let last = data.get(full * stride..).unwrap_or_default();
        Rows {
            data,
            stride,
            full,
            last,
        }
    }

    fn exact(&self) -> core::slice::ChunksExact<'a, T> {
        self.data.chunks_exact(self.stride)
    }
}

/// Accumulates `Σ_k packed[k][t] · W[k][o0 + o]` into `acc`, depth in order.
#[inline(always)]
fn gemm_packed<T: Element, const R: usize>(
    rows: &Rows<'_, T>,
    cols: usize,
    o0: usize,
    packed: &[[f32; TOKEN_BLOCK]],
    acc_out: &mut Acc<R>,
) {
    // A local copy and loops without early exits let LLVM keep every accumulator in a
    // register for the whole loop. The full/partial block test stays outside the loops
    // (here and in `widen_rows`): a shared per-row helper measured 2.34 instead of 2.10
    // instructions per MAC on the M4 (f32 weights).
    let mut acc = *acc_out;
    if o0 + OUTPUT_BLOCK <= cols && cols <= rows.stride {
        for (x, wrow) in packed.iter().zip(rows.exact()) {
            if let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            {
                mac_block(&mut acc, x, &T::widen_block(src));
            }
        }
        if let (Some(x), Some(src)) = (
            packed.get(rows.full),
            rows.last
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok()),
        ) {
            mac_block(&mut acc, x, &T::widen_block(src));
        }
    } else {
        let valid = cols.saturating_sub(o0);
        let all = rows.exact().chain(core::iter::once(rows.last));
        for (x, wrow) in packed.iter().zip(all) {
            let mut w = [0.0f32; OUTPUT_BLOCK];
            for (wo, v) in w.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
            mac_block(&mut acc, x, &w);
        }
    }
    *acc_out = acc;
}

/// Widens `W[k][o0..o0 + OB]` for the first `wide.len()` rows into `wide` (zeros past
/// the last column).
#[inline(always)]
fn widen_rows<T: Element>(
    rows: &Rows<'_, T>,
    cols: usize,
    o0: usize,
    wide: &mut [[f32; OUTPUT_BLOCK]],
) {
    if o0 + OUTPUT_BLOCK <= cols && cols <= rows.stride {
        for (dst, wrow) in wide.iter_mut().zip(rows.exact()) {
            if let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            {
                *dst = T::widen_block(src);
            }
        }
        if let (Some(dst), Some(src)) = (
            wide.get_mut(rows.full),
            rows.last
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok()),
        ) {
            *dst = T::widen_block(src);
        }
    } else {
        let valid = cols.saturating_sub(o0);
        let all = rows.exact().chain(core::iter::once(rows.last));
        for (dst, wrow) in wide.iter_mut().zip(all) {
            *dst = [0.0; OUTPUT_BLOCK];
            for (wo, v) in dst.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
        }
    }
}

/// `acc[t][o] += Σ_k packed[k][t] · wide[k][o]`, depth in order.
#[inline(always)]
fn gemm_wide<const R: usize>(
    packed: &[[f32; TOKEN_BLOCK]],
    wide: &[[f32; OUTPUT_BLOCK]],
    acc_out: &mut Acc<R>,
) {
    let mut acc = *acc_out;
    for (x, w) in packed.iter().zip(wide) {
        mac_block(&mut acc, x, w);
    }
    *acc_out = acc;
}

/// Running sums parked in `out` (rows `t0..t0 + R`, columns `o0..o0 + n`).
#[inline(always)]
fn load_block<const R: usize>(
    out: &[f32],
    stride: usize,
    t0: usize,
    o0: usize,
    n: usize,
) -> Acc<R> {
    let mut acc = [[0.0; OUTPUT_BLOCK]; R];
    for (t, a) in acc.iter_mut().enumerate() {
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
fn save_block<const R: usize>(
    acc: &Acc<R>,
    out: &mut [f32],
    stride: usize,
    t0: usize,
    o0: usize,
    n: usize,
) {
    for (t, a) in acc.iter().enumerate() {
        let at = (t0 + t) * stride + o0;
        let dst = out.get_mut(at..at + n).unwrap_or_default();
        match <&mut [f32; OUTPUT_BLOCK]>::try_from(&mut *dst) {
            Ok(full) => *full = *a,
            Err(_) => dst.iter_mut().zip(a).for_each(|(d, v)| *d = *v),
        }
    }
}

/// Where a register block's sums start.
#[derive(Clone, Copy)]
enum Seed {
    Zero,
    Bias([f32; OUTPUT_BLOCK]),
    /// Sums parked in the output by an earlier depth chunk (or the caller).
    Parked,
}

/// One column block of one depth chunk, for every row block of a group.
struct Block<'w, 'd, T> {
    weights: &'w Rows<'d, T>,
    /// The block's weights widened once for all row blocks, if they were.
    wide: Option<&'w [[f32; OUTPUT_BLOCK]]>,
    cols: usize,
    o0: usize,
    /// Valid columns of the block.
    n: usize,
    seed: Seed,
    /// int8's per-column scales and bias, applied after the last depth chunk.
    rescale: Option<([f32; OUTPUT_BLOCK], [f32; OUTPUT_BLOCK])>,
    out_stride: usize,
}

impl<T: Element> Block<'_, '_, T> {
    /// The `R` rows from `t0` on, their packed values `chunk`.
    #[inline(always)]
    fn run<const R: usize>(&self, chunk: &[[f32; TOKEN_BLOCK]], out: &mut [f32], t0: usize) {
        let (stride, o0, n) = (self.out_stride, self.o0, self.n);
        let mut acc: Acc<R> = match self.seed {
            Seed::Zero => [[0.0; OUTPUT_BLOCK]; R],
            Seed::Bias(bias) => [bias; R],
            Seed::Parked => load_block(out, stride, t0, o0, n),
        };
        match self.wide {
            Some(wide) => gemm_wide(chunk, wide, &mut acc),
            None => gemm_packed(self.weights, self.cols, o0, chunk, &mut acc),
        }
        if let Some((scale, bias)) = &self.rescale {
            for a in acc.iter_mut() {
                for ((v, &s), &b) in a.iter_mut().zip(scale).zip(bias) {
                    *v = b + s * *v;
                }
            }
        }
        save_block(&acc, out, stride, t0, o0, n);
    }
}

/// `out = start + lhs · rhs`, the contract in the crate docs.
pub(crate) fn gemm(lhs: &Lhs<'_>, rhs: &Rhs<'_>, start: Start<'_>, out: &mut Out<'_>) {
    let scales = match rhs.data() {
        RhsData::I8 { scales, .. } => Some(scales),
        _ => None,
    };
    let (stride, cols) = (rhs.row_stride(), rhs.cols());
    // One dispatch per call: everything below is specialised for the element type.
    with_rhs!(rhs.data(), |d| gemm_as(
        lhs, d, stride, cols, start, scales, out
    ));
}

/// The GEMM for one element type; `scales`: int8's.
fn gemm_as<T: Element>(
    lhs: &Lhs<'_>,
    d: &[T],
    stride: usize,
    cols: usize,
    start: Start<'_>,
    scales: Option<&[f32]>,
    out: &mut Out<'_>,
) {
    let (rows, depth) = (lhs.rows(), lhs.depth());
    if rows == 0 || cols == 0 {
        return;
    }
    let out_stride = out.row_stride();
    let out = out.data();
    // Stack: 2 × 128 × 4 row values and 128 × OB widened values: 6 KiB on 32-bit ARM,
    // 8 KiB on x86-64. Fixed, whatever the sizes.
    let mut packed: [Packed; GROUP_BLOCKS] = [[[0.0; TOKEN_BLOCK]; K_CHUNK]; GROUP_BLOCKS];
    let mut wide = [[0.0f32; OUTPUT_BLOCK]; K_CHUNK];
    for g0 in (0..rows).step_by(TOKEN_BLOCK * GROUP_BLOCKS) {
        let blocks = (rows - g0).div_ceil(TOKEN_BLOCK).min(GROUP_BLOCKS);
        let mut k0 = 0;
        loop {
            let kn = K_CHUNK.min(depth - k0);
            for (b, block) in packed.iter_mut().enumerate().take(blocks) {
                let t0 = g0 + b * TOKEN_BLOCK;
                let count = TOKEN_BLOCK.min(rows - t0);
                for t in 0..count {
                    // Rows past a short block's last are never read (see `Block::run`).
                    lhs.each(t0 + t, k0, kn, |k, v| {
                        if let Some(p) = block.get_mut(k) {
                            p[t] = v;
                        }
                    });
                }
            }
            let (first, last) = (k0 == 0, k0 + kn == depth);
            let wide = wide.get_mut(..kn).unwrap_or_default();
            let weights = Rows::new(d, k0, stride);
            for o0 in (0..cols).step_by(OUTPUT_BLOCK) {
                let n = OUTPUT_BLOCK.min(cols - o0);
                // The block's bias (the start of float sums, added after scaling int8
                // sums) and int8 scales, read once for every row block.
                let mut bias = [0.0f32; OUTPUT_BLOCK];
                if let Start::Bias(v) = start {
                    v.read_into(o0, bias.get_mut(..n).unwrap_or_default());
                }
                let mut scale = [0.0f32; OUTPUT_BLOCK];
                if let Some(s) = scales {
                    for (d, v) in scale.iter_mut().zip(s.get(o0..o0 + n).unwrap_or_default()) {
                        *d = *v;
                    }
                }
                // With one row block, widening on the fly is cheaper than a buffer.
                let widened = blocks > 1 && T::WIDENS;
                if widened {
                    widen_rows(&weights, cols, o0, wide);
                }
                let job = Block {
                    weights: &weights,
                    wide: if widened { Some(&*wide) } else { None },
                    cols,
                    o0,
                    n,
                    seed: match (first, start) {
                        (true, Start::Bias(_)) if scales.is_none() => Seed::Bias(bias),
                        (true, Start::Zero | Start::Bias(_)) => Seed::Zero,
                        _ => Seed::Parked,
                    },
                    rescale: (last && scales.is_some()).then_some((scale, bias)),
                    out_stride,
                };
                for (b, block) in packed.iter().enumerate().take(blocks) {
                    let t0 = g0 + b * TOKEN_BLOCK;
                    let chunk = block.get(..kn).unwrap_or_default();
                    // A short last block computes only its rows.
                    match rows - t0 {
                        1 => job.run::<1>(chunk, out, t0),
                        2 => job.run::<2>(chunk, out, t0),
                        3 => job.run::<3>(chunk, out, t0),
                        _ => job.run::<TOKEN_BLOCK>(chunk, out, t0),
                    }
                }
            }
            k0 += kn;
            if k0 >= depth {
                break;
            }
        }
    }
}
