//! Numeric kernels. Every sum runs in one fixed order (inputs in index order, added to the
//! output one at a time), the same on every target; loops vectorise across independent
//! outputs only, never by splitting a sum. No FMA contraction: Rust never fuses `a * b + c`.

use bytemuck::Pod;
use half::f16;

use crate::weights::{widen, widen_finite, Matrix, MatrixData, Vector};

/// Storage type of token maps and line buffers: f32, or f16 to halve the arena.
pub trait TokenElem: Pod + Default + core::fmt::Debug {
    /// Widens to f32 (exact).
    fn load(self) -> f32;
    /// Rounds an f32 to this type (round to nearest even).
    fn store(v: f32) -> Self;
}

impl TokenElem for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        v
    }
}

impl TokenElem for f16 {
    #[inline(always)]
    fn load(self) -> f32 {
        widen(self.to_bits())
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// Widens `src` into `dst`.
pub fn load_row<E: TokenElem>(src: &[E], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.load();
    }
}

/// Rounds `src` into `dst`.
pub fn store_row<E: TokenElem>(src: &[f32], dst: &mut [E]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = E::store(*s);
    }
}

/// `y += a * x`, elementwise over contiguous outputs.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yo, xo) in y.iter_mut().zip(x) {
        *yo += a * *xo;
    }
}

impl Matrix<'_> {
    /// Starts an accumulation of outputs `o`: the bias for float weights, zero for int8
    /// (whose scale and bias are applied by [`Matrix::finish`]).
    #[inline]
    pub fn begin(&self, bias: Option<&Vector<'_>>, out: &mut [f32]) {
        match (self.data, bias) {
            (MatrixData::I8 { .. }, _) | (_, None) => out.fill(0.0),
            (_, Some(b)) => b.read_into(0, out),
        }
    }

    /// `out += x * row`, for input row `row` (all outputs).
    #[inline]
    pub fn accumulate(&self, row: usize, x: f32, out: &mut [f32]) {
        let n = self.outputs;
        let range = row * n..row * n + n;
        match self.data {
            MatrixData::F32(w) => {
                if let Some(w) = w.get(range) {
                    axpy(out, x, w);
                }
            }
            MatrixData::F16(w) => {
                if let Some(w) = w.get(range) {
                    for (o, &h) in out.iter_mut().zip(w) {
                        *o += x * widen_finite(h);
                    }
                }
            }
            MatrixData::I8 { q, .. } => {
                if let Some(q) = q.get(range) {
                    for (o, &v) in out.iter_mut().zip(q) {
                        *o += x * f32::from(v);
                    }
                }
            }
        }
    }

    /// Completes an accumulation begun with [`Matrix::begin`].
    #[inline]
    pub fn finish(&self, bias: Option<&Vector<'_>>, out: &mut [f32]) {
        if let MatrixData::I8 { scales, .. } = self.data {
            for (i, (o, s)) in out.iter_mut().zip(scales).enumerate() {
                *o = bias.map_or(0.0, |b| b.get(i)) + *s * *o;
            }
        }
    }
}

/// Tokens per register block of the linear microkernel.
pub const TOKEN_BLOCK: usize = 4;
/// Outputs per register block of the linear microkernel: 4 × 8 accumulators on x86-64
/// (eight SSE registers), 4 × 4 on 32-bit ARM, whose FPU has 32 single registers for the
/// accumulators, one block of weights and the token values. The block shape does not
/// change any output's bits: each output still sums its inputs in order.
pub const OUTPUT_BLOCK: usize = if cfg!(target_arch = "arm") { 4 } else { 8 };

type Acc = [[f32; OUTPUT_BLOCK]; TOKEN_BLOCK];

/// `acc[t][o] += x[t] · w[o]`: `TOKEN_BLOCK × OUTPUT_BLOCK` independent multiply-adds,
/// which LLVM keeps in registers and vectorises across `o`. Every output still sums its inputs in order.
#[inline(always)]
fn mac_block(acc: &mut Acc, x: &[f32; TOKEN_BLOCK], w: &[f32; OUTPUT_BLOCK]) {
    for (a, &xv) in acc.iter_mut().zip(x) {
        for (ao, &wo) in a.iter_mut().zip(w) {
            *ao += xv * wo;
        }
    }
}

/// A stored weight element, widened exactly to f32.
trait WeightElem: Copy {
    fn to_f32(self) -> f32;

    /// One register block's weights.
    #[inline(always)]
    fn widen_block(src: &[Self; OUTPUT_BLOCK]) -> [f32; OUTPUT_BLOCK] {
        src.map(Self::to_f32)
    }
}
impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl WeightElem for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // Blob::parse has checked that every weight is finite.
        widen_finite(self)
    }
}

impl WeightElem for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// Accumulates `Σ_i x[t][i] · W[i][o0 + o]` into `acc` over all inputs, in input order.
/// `xs` are four token rows of `inputs` values (a missing token repeats another's row;
/// its results are discarded).
#[inline(always)]
fn gemm_block<T: WeightElem, X: TokenElem>(
    d: &[T],
    outputs: usize,
    o0: usize,
    xs: &[&[X]; TOKEN_BLOCK],
    acc_out: &mut Acc,
) {
    // A local copy and a loop without early exits let LLVM keep every accumulator in a
    // register for the whole loop instead of storing them back each row.
    let mut acc = *acc_out;
    let rows = xs
        .iter()
        .fold(d.len() / outputs.max(1), |n, x| n.min(x.len()));
    let [x0, x1, x2, x3] = xs.map(|x| x.get(..rows).unwrap_or_default());
    let tokens = x0.iter().zip(x1).zip(x2).zip(x3);
    if o0 + OUTPUT_BLOCK <= outputs {
        for ((((a, b), c), e), wrow) in tokens.zip(d.chunks_exact(outputs)) {
            let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            else {
                break;
            };
            let w = src.map(WeightElem::to_f32);
            mac_block(&mut acc, &[a.load(), b.load(), c.load(), e.load()], &w);
        }
    } else {
        let valid = outputs.saturating_sub(o0);
        for ((((a, b), c), e), wrow) in tokens.zip(d.chunks_exact(outputs)) {
            let mut w = [0.0f32; OUTPUT_BLOCK];
            for (wo, v) in w.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
            mac_block(&mut acc, &[a.load(), b.load(), c.load(), e.load()], &w);
        }
    }
    *acc_out = acc;
}

/// Inputs per chunk of [`linear`]: each token block's values for these inputs are
/// transposed into a stack buffer, so one row of it feeds a whole register block.
const K_CHUNK: usize = 128;

/// Token blocks that share one widened block of f16 or int8 weights in [`linear`]:
/// widening costs about as much as the multiply-adds it feeds, so sharing it pays.
const GROUP_BLOCKS: usize = 2;

/// A token block's inputs, input-major: `packed[k][t]` is input `k0 + k` of token `t`.
type Packed = [[f32; TOKEN_BLOCK]; K_CHUNK];

/// Accumulates `Σ_k packed[k][t] · W[k][o0 + o]` into `acc`, inputs in order.
#[inline(always)]
fn gemm_packed<T: WeightElem>(
    d: &[T],
    outputs: usize,
    o0: usize,
    packed: &[[f32; TOKEN_BLOCK]],
    acc_out: &mut Acc,
) {
    // A local copy and a loop without early exits let LLVM keep every accumulator in a
    // register for the whole loop instead of storing them back each row. The full/partial
    // block test stays outside the loops (here and in `widen_rows`): a shared per-row
    // helper measured 2.34 instead of 2.10 instructions per MAC on the M4 (f32 weights).
    let mut acc = *acc_out;
    if o0 + OUTPUT_BLOCK <= outputs {
        for (x, wrow) in packed.iter().zip(d.chunks_exact(outputs)) {
            let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            else {
                break;
            };
            mac_block(&mut acc, x, &T::widen_block(src));
        }
    } else {
        let valid = outputs.saturating_sub(o0);
        for (x, wrow) in packed.iter().zip(d.chunks_exact(outputs)) {
            let mut w = [0.0f32; OUTPUT_BLOCK];
            for (wo, v) in w.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
            mac_block(&mut acc, x, &w);
        }
    }
    *acc_out = acc;
}

/// Widens `W[k][o0..o0 + OB]` for the rows of `d` into `wide` (zeros past the last output).
#[inline(always)]
fn widen_rows<T: WeightElem>(d: &[T], outputs: usize, o0: usize, wide: &mut [[f32; OUTPUT_BLOCK]]) {
    if o0 + OUTPUT_BLOCK <= outputs {
        for (dst, wrow) in wide.iter_mut().zip(d.chunks_exact(outputs)) {
            if let Some(src) = wrow
                .get(o0..o0 + OUTPUT_BLOCK)
                .and_then(|w| <&[T; OUTPUT_BLOCK]>::try_from(w).ok())
            {
                *dst = T::widen_block(src);
            }
        }
    } else {
        let valid = outputs.saturating_sub(o0);
        for (dst, wrow) in wide.iter_mut().zip(d.chunks_exact(outputs)) {
            *dst = [0.0; OUTPUT_BLOCK];
            for (wo, v) in dst.iter_mut().zip(wrow.iter().skip(o0).take(valid)) {
                *wo = v.to_f32();
            }
        }
    }
}

/// `acc[t][o] += Σ_k packed[k][t] · wide[k][o]`, inputs in order.
#[inline(always)]
fn gemm_wide(packed: &[[f32; TOKEN_BLOCK]], wide: &[[f32; OUTPUT_BLOCK]], acc_out: &mut Acc) {
    let mut acc = *acc_out;
    for (x, w) in packed.iter().zip(wide) {
        mac_block(&mut acc, x, w);
    }
    *acc_out = acc;
}

impl Matrix<'_> {
    /// Widens rows `first..first + wide.len()` of output block `o0` into `wide`; false
    /// (and nothing written) for f32 weights, which need no widening.
    #[inline(always)]
    fn widen_block_rows(&self, first: usize, o0: usize, wide: &mut [[f32; OUTPUT_BLOCK]]) -> bool {
        let no = self.outputs;
        let rows = first * no..(first + wide.len()) * no;
        match self.data {
            MatrixData::F32(_) => false,
            MatrixData::F16(d) => {
                widen_rows(d.get(rows).unwrap_or_default(), no, o0, wide);
                true
            }
            MatrixData::I8 { q, .. } => {
                widen_rows(q.get(rows).unwrap_or_default(), no, o0, wide);
                true
            }
        }
    }

    /// `acc += Σ_{i < inputs} xs[t][i] · W[first + i][o0..o0 + OUTPUT_BLOCK]`, rows in order.
    #[inline(always)]
    fn accumulate_block<X: TokenElem>(
        &self,
        first: usize,
        inputs: usize,
        o0: usize,
        xs: &[&[X]; TOKEN_BLOCK],
        acc: &mut Acc,
    ) {
        let (no, rows) = (
            self.outputs,
            first * self.outputs..(first + inputs) * self.outputs,
        );
        match self.data {
            MatrixData::F32(d) => gemm_block(d.get(rows).unwrap_or_default(), no, o0, xs, acc),
            MatrixData::F16(d) => gemm_block(d.get(rows).unwrap_or_default(), no, o0, xs, acc),
            MatrixData::I8 { q, .. } => {
                gemm_block(q.get(rows).unwrap_or_default(), no, o0, xs, acc)
            }
        }
    }

    /// `acc += Σ_k packed[k][t] · W[first + k][o0 + o]`, rows in order.
    #[inline(always)]
    fn accumulate_packed(
        &self,
        first: usize,
        packed: &[[f32; TOKEN_BLOCK]],
        o0: usize,
        acc: &mut Acc,
    ) {
        let no = self.outputs;
        let rows = first * no..(first + packed.len()) * no;
        match self.data {
            MatrixData::F32(d) => gemm_packed(d.get(rows).unwrap_or_default(), no, o0, packed, acc),
            MatrixData::F16(d) => gemm_packed(d.get(rows).unwrap_or_default(), no, o0, packed, acc),
            MatrixData::I8 { q, .. } => {
                gemm_packed(q.get(rows).unwrap_or_default(), no, o0, packed, acc)
            }
        }
    }

    /// Accumulator rows for outputs `o0..`: the bias for float weights, zero for int8.
    #[inline(always)]
    fn start_block(&self, bias: Option<&Vector<'_>>, o0: usize) -> Acc {
        let mut row = [0.0f32; OUTPUT_BLOCK];
        if let (false, Some(b)) = (matches!(self.data, MatrixData::I8 { .. }), bias) {
            let n = OUTPUT_BLOCK.min(b.len().saturating_sub(o0));
            b.read_into(o0, &mut row[..n]);
        }
        [row; TOKEN_BLOCK]
    }

    /// Writes finished accumulators of outputs `o0..` for `tokens` tokens into `y`
    /// (token stride `self.outputs`), applying int8 scales and bias.
    #[inline(always)]
    fn store_block(
        &self,
        acc: &Acc,
        bias: Option<&Vector<'_>>,
        o0: usize,
        y: &mut [f32],
        tokens: usize,
    ) {
        let n = OUTPUT_BLOCK.min(self.outputs.saturating_sub(o0));
        for (t, a) in acc.iter().enumerate().take(tokens) {
            let at = t * self.outputs + o0;
            let Some(dst) = y.get_mut(at..at + n) else {
                continue;
            };
            dst.copy_from_slice(&a[..n]);
            if let MatrixData::I8 { scales, .. } = self.data {
                for (i, (o, s)) in dst.iter_mut().zip(scales.iter().skip(o0)).enumerate() {
                    *o = bias.map_or(0.0, |b| b.get(o0 + i)) + *s * *o;
                }
            }
        }
    }
}

/// `y[t] = W·x[t] + b` for every token `t` of a tile (`x`: tokens × inputs, `y`: tokens ×
/// outputs). Register-blocked over 4 tokens × 8 outputs; each output is
/// `((b + x0·w0) + x1·w1) + …` in input order, the same as [`Matrix::begin`],
/// [`Matrix::accumulate`], [`Matrix::finish`] one input at a time.
pub fn linear(w: &Matrix<'_>, bias: Option<&Vector<'_>>, x: &[f32], y: &mut [f32]) {
    let (ni, no) = (w.inputs, w.outputs);
    if ni == 0 || no == 0 {
        return;
    }
    let tokens = (x.len() / ni).min(y.len() / no);
    // Stack: 2 × 128 × 4 token values and 128 × OB widened weights: 6 KiB on 32-bit ARM,
    // 8 KiB on x86-64. Fixed, whatever the layer's size.
    let mut packed: [Packed; GROUP_BLOCKS] = [[[0.0; TOKEN_BLOCK]; K_CHUNK]; GROUP_BLOCKS];
    let mut wide = [[0.0f32; OUTPUT_BLOCK]; K_CHUNK];
    for g0 in (0..tokens).step_by(TOKEN_BLOCK * GROUP_BLOCKS) {
        let blocks = (tokens - g0).div_ceil(TOKEN_BLOCK).min(GROUP_BLOCKS);
        for k0 in (0..ni).step_by(K_CHUNK) {
            let kn = K_CHUNK.min(ni - k0);
            for (b, block) in packed.iter_mut().enumerate().take(blocks) {
                let t0 = g0 + b * TOKEN_BLOCK;
                let count = TOKEN_BLOCK.min(tokens - t0);
                for t in 0..TOKEN_BLOCK {
                    // Missing tokens of a short block repeat the last one; their sums are
                    // dropped.
                    let at = (t0 + t.min(count - 1)) * ni + k0;
                    let row = x.get(at..at + kn).unwrap_or_default();
                    for (p, v) in block.iter_mut().zip(row) {
                        p[t] = *v;
                    }
                }
            }
            let (first, last) = (k0 == 0, k0 + kn == ni);
            let wide = wide.get_mut(..kn).unwrap_or_default();
            for o0 in (0..no).step_by(OUTPUT_BLOCK) {
                // With one token block, widening on the fly is cheaper than a buffer.
                let widened = blocks > 1 && w.widen_block_rows(k0, o0, wide);
                for (b, block) in packed.iter().enumerate().take(blocks) {
                    let t0 = g0 + b * TOKEN_BLOCK;
                    let count = TOKEN_BLOCK.min(tokens - t0);
                    let yb = y.get_mut(t0 * no..(t0 + count) * no).unwrap_or_default();
                    let chunk = block.get(..kn).unwrap_or_default();
                    // Between chunks the running sums wait in `y` as f32: no rounding
                    // changes.
                    let mut acc = if first {
                        w.start_block(bias, o0)
                    } else {
                        load_block(yb, no, o0, count)
                    };
                    if widened {
                        gemm_wide(chunk, wide, &mut acc);
                    } else {
                        w.accumulate_packed(k0, chunk, o0, &mut acc);
                    }
                    if last {
                        w.store_block(&acc, bias, o0, yb, count);
                    } else {
                        save_block(&acc, yb, no, o0, count);
                    }
                }
            }
        }
    }
}

/// Running sums of outputs `o0..` for `tokens` tokens, parked in `y` between input chunks.
#[inline(always)]
fn load_block(y: &[f32], outputs: usize, o0: usize, tokens: usize) -> Acc {
    let mut acc = [[0.0; OUTPUT_BLOCK]; TOKEN_BLOCK];
    for (t, a) in acc.iter_mut().enumerate().take(tokens) {
        let at = t * outputs + o0;
        for (v, s) in a
            .iter_mut()
            .zip(y.get(at..).unwrap_or_default().iter().take(outputs - o0))
        {
            *v = *s;
        }
    }
    acc
}

/// Parks running sums in `y` (see [`load_block`]).
#[inline(always)]
fn save_block(acc: &Acc, y: &mut [f32], outputs: usize, o0: usize, tokens: usize) {
    for (t, a) in acc.iter().enumerate().take(tokens) {
        let at = t * outputs + o0;
        let dst = y.get_mut(at..).unwrap_or_default();
        for (d, v) in dst.iter_mut().zip(a).take(outputs - o0) {
            *d = *v;
        }
    }
}

/// LayerNorm of one token in place: `(x - mean) / sqrt(var + eps) * w + b`.
pub fn layer_norm(x: &mut [f32], w: &Vector<'_>, b: &Vector<'_>, eps: f32) {
    if x.is_empty() {
        return;
    }
    let n = x.len() as f32;
    let mean = x.iter().fold(0.0f32, |a, v| a + v) / n;
    let var = x.iter().fold(0.0f32, |a, v| a + (v - mean) * (v - mean)) / n;
    let rstd = 1.0 / libm::sqrtf(var + eps);
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) * rstd * w.get(i) + b.get(i);
    }
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, as PyTorch's `nn.GELU()`.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// The SOFT blocks' tanh GELU, `x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + libm::tanhf(SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))))
}

/// `c = a · b` with `a`: n×k, `b`: k×m, `c`: n×m, row-major; sums over `k` in order.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], k: usize, m: usize) {
    if k == 0 || m == 0 {
        return;
    }
    for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(m)) {
        crow.fill(0.0);
        for (&aik, brow) in arow.iter().zip(b.chunks_exact(m)) {
            axpy(crow, aik, brow);
        }
    }
}

/// One output row of a 3×3, pad-1 convolution (+ folded BatchNorm bias) and ReLU.
///
/// `rows` are the input rows `y·stride - 1 ..= y·stride + 1` (`None` outside the image), each
/// `in_w × cin` channel-last; `out` is `out_w × cout`; `w` is `[3, 3, cin, cout]`.
pub fn conv3x3_relu_row<E: TokenElem>(
    rows: [Option<&[E]>; 3],
    cin: usize,
    stride: usize,
    w: &Matrix<'_>,
    bias: &Vector<'_>,
    out: &mut [f32],
) {
    let cout = w.outputs;
    if cout == 0 || cin == 0 || stride == 0 {
        return;
    }
    let out_w = out.len() / cout;
    let in_w = rows
        .iter()
        .flatten()
        .map(|r| r.len() / cin)
        .max()
        .unwrap_or(0);
    // Interior pixels (all three taps inside the row) go through the register-blocked
    // microkernel; the border pixels, whose padding taps are skipped, one at a time.
    // Both sum the taps in (ky, kx, ci) order, so the path does not change any bit.
    let interior = |ox: usize| ox >= 1 && ox * stride + 1 < in_w;
    let mut ox = 0;
    while ox < out_w {
        if interior(ox) && ox + TOKEN_BLOCK <= out_w && interior(ox + TOKEN_BLOCK - 1) {
            for o0 in (0..cout).step_by(OUTPUT_BLOCK) {
                let mut acc = w.start_block(Some(bias), o0);
                for (ky, row) in rows.iter().enumerate() {
                    let Some(row) = row else { continue };
                    for kx in 0..3 {
                        let xs: [&[E]; TOKEN_BLOCK] = core::array::from_fn(|t| {
                            let ix = (ox + t) * stride + kx - 1;
                            row.get(ix * cin..ix * cin + cin).unwrap_or_default()
                        });
                        w.accumulate_block((ky * 3 + kx) * cin, cin, o0, &xs, &mut acc);
                    }
                }
                let block = out
                    .get_mut(ox * cout..(ox + TOKEN_BLOCK) * cout)
                    .unwrap_or_default();
                w.store_block(&acc, Some(bias), o0, block, TOKEN_BLOCK);
            }
            ox += TOKEN_BLOCK;
            continue;
        }
        let Some(o) = out.get_mut(ox * cout..(ox + 1) * cout) else {
            break;
        };
        w.begin(Some(bias), o);
        for (ky, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            for kx in 0..3 {
                let Some(ix) = (ox * stride + kx).checked_sub(1) else {
                    continue;
                };
                let Some(px) = row.get(ix * cin..ix * cin + cin) else {
                    continue;
                };
                let base = (ky * 3 + kx) * cin;
                for (ci, v) in px.iter().enumerate() {
                    w.accumulate(base + ci, v.load(), o);
                }
            }
        }
        w.finish(Some(bias), o);
        ox += 1;
    }
    for v in out.iter_mut() {
        *v = v.max(0.0);
    }
}

/// Source taps of PyTorch's bilinear resize (`align_corners=False`) along one axis:
/// `(i0, i1, w0, w1)` with `out = w0·in[i0] + w1·in[i1]`.
pub fn bilinear_taps(dst: usize, src_len: usize, dst_len: usize) -> (usize, usize, f32, f32) {
    let scale = src_len as f32 / dst_len as f32;
    let real = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (real as usize).min(src_len.saturating_sub(1));
    let i1 = if i0 + 1 < src_len { i0 + 1 } else { i0 };
    let w1 = real - i0 as f32;
    (i0, i1, 1.0 - w1, w1)
}

/// `out += ` the `G×G` grid `grid` (rows of `out.len()` channels starting at grid row
/// `first_row`) resampled at token `(y, x)` of an `h×w` map.
#[allow(clippy::too_many_arguments)]
pub fn add_resampled(
    grid: &Vector<'_>,
    first_row: usize,
    g: usize,
    h: usize,
    w: usize,
    y: usize,
    x: usize,
    out: &mut [f32],
) {
    let c = out.len();
    let (y0, y1, wy0, wy1) = bilinear_taps(y, g, h);
    let (x0, x1, wx0, wx1) = bilinear_taps(x, g, w);
    let at = |gy: usize, gx: usize, ch: usize| grid.get((first_row + gy * g + gx) * c + ch);
    for (ch, o) in out.iter_mut().enumerate() {
        let top = wx0 * at(y0, x0, ch) + wx1 * at(y0, x1, ch);
        let bottom = wx0 * at(y1, x0, ch) + wx1 * at(y1, x1, ch);
        *o += wy0 * top + wy1 * bottom;
    }
}

/// Gaussian kernel `exp(-|a - b|²/2)`.
#[inline]
pub fn gaussian(a: &[f32], b: &[f32]) -> f32 {
    let dist = a
        .iter()
        .zip(b)
        .fold(0.0f32, |acc, (x, y)| acc + (x - y) * (x - y));
    libm::expf(-dist / 2.0)
}

/// `k1[l] = exp(-|q - L_l|²/2)` for every landmark of one head. Eight landmarks at a
/// time, each with its own accumulator (sums over `d` in order), so the additions of
/// different landmarks overlap instead of waiting on one chain.
pub fn kernel_row(q: &[f32], landmarks: &[f32], d: usize, k1: &mut [f32]) {
    if d == 0 {
        return;
    }
    let mut rows = landmarks.chunks_exact(d);
    for out in k1.chunks_mut(OUTPUT_BLOCK) {
        let ls: [&[f32]; OUTPUT_BLOCK] = core::array::from_fn(|j| {
            if j < out.len() {
                rows.next().unwrap_or(q)
            } else {
                q
            }
        });
        let mut acc = [0.0f32; OUTPUT_BLOCK];
        for (i, &qi) in q.iter().enumerate() {
            for (a, l) in acc.iter_mut().zip(&ls) {
                let diff = qi - l.get(i).copied().unwrap_or(qi);
                *a += diff * diff;
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = libm::expf(-a / 2.0);
        }
    }
}

/// `K2[a][b] = exp(-|L_a - L_b|²/2)` for one head's landmarks.
pub fn landmark_kernel(lh: &[f32], d: usize, k2: &mut [f32]) {
    let m = lh.len() / d.max(1);
    for (row, la) in k2.chunks_exact_mut(m).zip(lh.chunks_exact(d)) {
        kernel_row(la, lh, d, row);
    }
}

/// Largest row sum of an `m×m` matrix (the reference scales its first Newton step by it).
pub fn max_row_sum(k2: &[f32], m: usize) -> f32 {
    k2.chunks_exact(m)
        .map(|row| row.iter().fold(0.0f32, |a, v| a + v))
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Newton–Schulz: `iters` times `V = 2V - (V·P)·V`, exactly the reference's count and order.
/// `t` is scratch the size of `V`; `row` is scratch of one row.
pub fn newton_schulz(
    v: &mut [f32],
    p: &[f32],
    t: &mut [f32],
    row: &mut [f32],
    m: usize,
    iters: usize,
) {
    for _ in 0..iters {
        matmul(v, p, t, m, m);
        for (trow, vrow) in t.chunks_exact_mut(m).zip(v.chunks_exact(m)) {
            matmul(trow, v, row, m, m);
            for ((tr, &vv), &r) in trow.iter_mut().zip(vrow).zip(row.iter()) {
                *tr = 2.0 * vv - r;
            }
        }
        v.swap_with_slice(t);
    }
}

/// Max column sum of `|I - A·B|` (the reference's convergence test for SOFT-Norm).
pub fn identity_gap(a: &[f32], b: &[f32], prod: &mut [f32], m: usize) -> f32 {
    matmul(a, b, prod, m, m);
    (0..m)
        .map(|j| {
            prod.chunks_exact(m)
                .enumerate()
                .fold(0.0f32, |acc, (i, row)| {
                    let e = if i == j { 1.0 } else { 0.0 };
                    acc + libm::fabsf(e - row.get(j).copied().unwrap_or(0.0))
                })
        })
        .fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear_f64(w: &[f32], b: &[f32], x: &[f32], ni: usize, no: usize) -> Vec<f64> {
        (0..no)
            .map(|o| {
                f64::from(b[o])
                    + (0..ni)
                        .map(|i| f64::from(x[i]) * f64::from(w[i * no + o]))
                        .sum::<f64>()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn linear_matches_f64(ni in 1usize..300, no in 1usize..40, tokens in 1usize..20, seed in any::<u64>()) {
            let mut s = seed;
            let mut rnd = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 };
            let w: Vec<f32> = (0..ni * no).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..no).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..ni * tokens).map(|_| rnd()).collect();
            let m = Matrix { inputs: ni, outputs: no, data: MatrixData::F32(&w) };
            let mut y = vec![0.0; no * tokens];
            linear(&m, Some(&Vector::F32(&b)), &x, &mut y);
            for t in 0..tokens {
                let want = linear_f64(&w, &b, &x[t * ni..][..ni], ni, no);
                for o in 0..no {
                    prop_assert!((f64::from(y[t * no + o]) - want[o]).abs() < 1e-5 * (ni as f64 + 1.0));
                    // The bit contract, whatever the blocking: bias, then inputs in order.
                    let in_order = (0..ni).fold(b[o], |a, i| a + x[t * ni + i] * w[i * no + o]);
                    prop_assert_eq!(y[t * no + o].to_bits(), in_order.to_bits());
                }
            }
            // f16 and int8 storage agree with f32 weights of the same values.
            let wh: Vec<u16> = w.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
            let wr: Vec<f32> = wh.iter().map(|h| widen(*h)).collect();
            let mh = Matrix { inputs: ni, outputs: no, data: MatrixData::F16(&wh) };
            let mr = Matrix { inputs: ni, outputs: no, data: MatrixData::F32(&wr) };
            let (mut y1, mut y2) = (vec![0.0; no * tokens], vec![0.0; no * tokens]);
            linear(&mh, Some(&Vector::F32(&b)), &x, &mut y1);
            linear(&mr, Some(&Vector::F32(&b)), &x, &mut y2);
            prop_assert_eq!(&y1, &y2);
            let q: Vec<i8> = (0..ni * no).map(|i| (i % 255) as i8).collect();
            let scales: Vec<f32> = (0..no).map(|o| 0.01 * (o + 1) as f32).collect();
            let mq = Matrix { inputs: ni, outputs: no, data: MatrixData::I8 { q: &q, scales: &scales } };
            linear(&mq, Some(&Vector::F32(&b)), &x, &mut y1);
            for t in 0..tokens {
                for o in 0..no {
                    let want = f64::from(b[o]) + f64::from(scales[o]) * (0..ni).map(|i| f64::from(x[t * ni + i]) * f64::from(q[i * no + o])).sum::<f64>();
                    prop_assert!((f64::from(y1[t * no + o]) - want).abs() < 1e-4 * (ni as f64 + 1.0));
                }
            }
        }

        #[test]
        fn layer_norm_matches_f64(x in prop::collection::vec(-100.0f32..100.0, 2..64)) {
            let n = x.len();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.01).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * -0.02).collect();
            let mut y = x.clone();
            layer_norm(&mut y, &Vector::F32(&w), &Vector::F32(&b), 1e-5);
            let mean = x.iter().map(|v| f64::from(*v)).sum::<f64>() / n as f64;
            let var = x.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / n as f64;
            for i in 0..n {
                let want = (f64::from(x[i]) - mean) / (var + 1e-5).sqrt() * f64::from(w[i]) + f64::from(b[i]);
                prop_assert!((f64::from(y[i]) - want).abs() < 2e-4, "{} vs {}", y[i], want);
            }
        }
    }

    #[test]
    fn gelus_match_f64() {
        for i in -4000..4000 {
            let x = i as f32 * 0.0025;
            let xd = f64::from(x);
            let erf = 0.5 * xd * (1.0 + libm::erf(xd / 2f64.sqrt()));
            let tanh = 0.5
                * xd
                * (1.0
                    + ((2.0 / core::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!(
                (f64::from(gelu_erf(x)) - erf).abs() <= 1e-6 * (1.0 + erf.abs()),
                "{x}"
            );
            assert!(
                (f64::from(gelu_tanh(x)) - tanh).abs() <= 1e-6 * (1.0 + tanh.abs()),
                "{x}"
            );
        }
    }

    #[test]
    fn matmul_matches_f64() {
        let (n, k, m) = (5, 7, 3);
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * m).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![0.0; n * m];
        matmul(&a, &b, &mut c, k, m);
        for i in 0..n {
            for j in 0..m {
                let want: f64 = (0..k)
                    .map(|l| f64::from(a[i * k + l]) * f64::from(b[l * m + j]))
                    .sum();
                assert!((f64::from(c[i * m + j]) - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn conv_row_matches_f64() {
        let (cin, cout, in_w, stride) = (3, 4, 7, 2);
        let out_w = (in_w - 1) / stride + 1;
        let w: Vec<f32> = (0..9 * cin * cout)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..cout).map(|i| i as f32 * 0.05 - 0.1).collect();
        let img: Vec<Vec<f32>> = (0..3)
            .map(|r| {
                (0..in_w * cin)
                    .map(|i| ((i + r * 5) as f32 * 0.3).sin())
                    .collect()
            })
            .collect();
        let m = Matrix {
            inputs: 9 * cin,
            outputs: cout,
            data: MatrixData::F32(&w),
        };
        let mut out = vec![0.0; out_w * cout];
        // Top row missing: the first output row of an image.
        conv3x3_relu_row::<f32>(
            [None, Some(&img[1]), Some(&img[2])],
            cin,
            stride,
            &m,
            &Vector::F32(&b),
            &mut out,
        );
        for ox in 0..out_w {
            for co in 0..cout {
                let mut acc = f64::from(b[co]);
                for ky in 1..3 {
                    for kx in 0..3 {
                        let ix = (ox * stride + kx) as isize - 1;
                        if ix < 0 || ix >= in_w as isize {
                            continue;
                        }
                        for ci in 0..cin {
                            acc += f64::from(img[ky][ix as usize * cin + ci])
                                * f64::from(w[((ky * 3 + kx) * cin + ci) * cout + co]);
                        }
                    }
                }
                assert!((f64::from(out[ox * cout + co]) - acc.max(0.0)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn bilinear_taps_follow_pytorch() {
        // Identity when sizes agree.
        assert_eq!(bilinear_taps(3, 7, 7), (3, 4, 1.0, 0.0));
        // 2 -> 4 upsampling: source coords -0.25 (clamped), 0.25, 0.75, 1.25.
        assert_eq!(bilinear_taps(0, 2, 4), (0, 1, 1.0, 0.0));
        assert_eq!(bilinear_taps(1, 2, 4), (0, 1, 0.75, 0.25));
        assert_eq!(bilinear_taps(3, 2, 4), (1, 1, 0.75, 0.25));
        // 56 -> 16 downsampling: 3.5 * 0.5 - 0.5 = 1.25.
        assert_eq!(bilinear_taps(0, 56, 16), (1, 2, 0.75, 0.25));
    }
}

#[cfg(test)]
mod newton_tests {
    use super::*;
    use proptest::prelude::*;

    /// Inverse by Gauss–Jordan elimination with partial pivoting, in f64.
    pub(crate) fn inverse_f64(a: &[f64], m: usize) -> Vec<f64> {
        let mut aug: Vec<f64> = Vec::with_capacity(m * 2 * m);
        for i in 0..m {
            aug.extend_from_slice(&a[i * m..(i + 1) * m]);
            aug.extend((0..m).map(|j| if i == j { 1.0 } else { 0.0 }));
        }
        let w = 2 * m;
        for col in 0..m {
            let pivot = (col..m)
                .max_by(|&x, &y| aug[x * w + col].abs().total_cmp(&aug[y * w + col].abs()))
                .unwrap();
            for j in 0..w {
                aug.swap(col * w + j, pivot * w + j);
            }
            let p = aug[col * w + col];
            for j in 0..w {
                aug[col * w + j] /= p;
            }
            for r in 0..m {
                if r != col {
                    let f = aug[r * w + col];
                    for j in 0..w {
                        aug[r * w + j] -= f * aug[col * w + j];
                    }
                }
            }
        }
        (0..m)
            .flat_map(|i| aug[i * w + m..(i + 1) * w].to_vec())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// On well-conditioned symmetric matrices, 20 steps from `V0 = P / max_row_sum²`
        /// reach the exact inverse.
        #[test]
        fn newton_schulz_inverts_well_conditioned_symmetric(m in 1usize..24, seed in any::<u64>()) {
            let mut s = seed | 1;
            let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 24) as f32 };
            let mut p = vec![0.0f32; m * m];
            for i in 0..m {
                for j in 0..i {
                    let v = rnd() * 0.5 / m as f32;
                    p[i * m + j] = v;
                    p[j * m + i] = v;
                }
                p[i * m + i] = 1.0 + rnd();
            }
            let max_sum = max_row_sum(&p, m);
            let alpha = 1.0 / (max_sum * max_sum);
            let mut v: Vec<f32> = p.iter().map(|x| alpha * x).collect();
            let (mut t, mut row) = (vec![0.0; m * m], vec![0.0; m]);
            newton_schulz(&mut v, &p, &mut t, &mut row, m, 20);
            let exact = inverse_f64(&p.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), m);
            let scale = exact.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            for (got, want) in v.iter().zip(&exact) {
                prop_assert!((f64::from(*got) - want).abs() <= 1e-5 * scale, "{} vs {}", got, want);
            }
        }
    }

    #[test]
    fn identity_gap_of_exact_inverse_is_zero() {
        let a = [2.0, 0.0, 0.0, 4.0];
        let b = [0.5, 0.0, 0.0, 0.25];
        let mut prod = [0.0; 4];
        assert_eq!(identity_gap(&a, &b, &mut prod, 2), 0.0);
        assert_eq!(identity_gap(&a, &a, &mut prod, 2), 15.0);
    }
}

#[cfg(test)]
mod accuracy {
    //! The elementwise functions' error, recorded: the engine promises 1e-4 agreement with
    //! the reference, so each must be near-exact (micromath's exp, at 1e-3, would not do).

    /// Distance in units in the last place between `got` and the f32 rounding of `exact`.
    fn ulps(got: f32, exact: f64) -> u32 {
        let want = exact as f32;
        if got == want {
            return 0;
        }
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            if b < 0 {
                i32::MIN - b
            } else {
                b
            }
        };
        key(got).abs_diff(key(want))
    }

    fn worst(f: fn(f32) -> f32, exact: fn(f64) -> f64, lo: f32, hi: f32) -> u32 {
        let n = 200_000;
        (0..=n)
            .map(|i| {
                let x = lo + (hi - lo) * i as f32 / n as f32;
                ulps(f(x), exact(f64::from(x)))
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn libm_exp_erf_tanh_sqrt_are_within_two_ulps() {
        let exp = worst(libm::expf, f64::exp, -87.0, 88.0);
        let erf = worst(libm::erff, libm::erf, -6.0, 6.0);
        let tanh = worst(libm::tanhf, f64::tanh, -10.0, 10.0);
        let sqrt = worst(libm::sqrtf, f64::sqrt, 0.0, 1e6);
        std::eprintln!("max ulp error: exp {exp}, erf {erf}, tanh {tanh}, sqrt {sqrt}");
        assert!(
            exp <= 1 && erf <= 2 && tanh <= 2 && sqrt == 0,
            "exp {exp} erf {erf} tanh {tanh} sqrt {sqrt}"
        );
    }
}
