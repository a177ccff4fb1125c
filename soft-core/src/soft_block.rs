//! SOFT attention blocks (stages 1–3), run in place on the token map. The `N×m` kernel
//! matrix `K1` is never stored: its rows are recomputed from the queries in two passes
//! (accumulate `K1ᵀV`, then emit `K1·Z`).
//!
//! Two layouts, the same bits (each token's every sum runs in the same order):
//! - **streaming** (the compact schedule): queries and values are recomputed in each
//!   pass and V reaches the depthwise convolution through a ring of `k` map rows, so the
//!   scratch does not grow with `N`; a chunk's tokens are split among the workers;
//! - **whole maps** (hosts): queries and values are computed once for the whole map, and
//!   each step is one split among the workers (of tokens, landmarks or heads), every
//!   worker looping over its share with scratch of its own.

use soft_kernels::{Elems, Lhs, Out, Rhs, Start, Strided, TokenElem};

use crate::arena::Arena;
use crate::error::Result;
use crate::exec::{carve, carve_ref, per_worker, split, Parts, Run, Schedule};
use crate::format::{TensorId, TensorKind as K};
use crate::linear::{apply, linear, quant_len, Weight};
use crate::newton::{self, InverseConfig};
use crate::probe::{Activity, Probe, Step};
use crate::scratch::{emit_copies, largest, scratch, Emit};
use crate::weights::{Vector, Weights};

/// LayerNorm epsilon of the SOFT blocks (PyTorch's default).
pub(crate) const SOFT_EPS: f32 = 1e-5;

/// Shape of one SOFT stage at a given input size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoftDims {
    pub rows: usize,
    pub cols: usize,
    pub c: usize,
    pub heads: usize,
    pub d: usize,
    pub r: usize,
    pub k: usize,
    pub m: usize,
    /// W8A8 linear layers (scratch for their quantised inputs).
    pub w8a8: bool,
}

impl SoftDims {
    pub fn n(&self) -> usize {
        self.rows * self.cols
    }

    fn landmark_cols(&self) -> usize {
        self.cols / self.r
    }

    /// Tokens per chunk of the passes over the whole map.
    fn chunk(&self, s: &Schedule) -> usize {
        s.chunk.min(self.n()).max(1)
    }

    /// Tokens per chunk of streaming pass 2, which stays within a map row (the V ring
    /// holds the `k` rows around the current one).
    fn row_chunk(&self, s: &Schedule) -> usize {
        s.chunk.min(self.cols).max(1)
    }

    /// Workers of a step over `items` items.
    fn workers(&self, s: &Schedule, items: usize) -> usize {
        s.workers.min(items).max(1)
    }

    /// Pass-2 workers and the tokens each one's scratch holds at a time: streaming splits
    /// each row chunk among the workers; whole maps give each worker whole chunks.
    fn emit_split(&self, s: &Schedule) -> (usize, usize) {
        if s.whole_maps {
            (self.workers(s, self.n()), self.chunk(s))
        } else {
            let chunk = self.row_chunk(s);
            let workers = self.workers(s, chunk);
            (workers, chunk.div_ceil(workers))
        }
    }

    fn patch_len(&self) -> usize {
        self.r * self.r * self.c
    }

    /// Quantised-input scratch of `rows` tokens of the widest linear input, the MLP's
    /// hidden layer (none for float layers).
    fn quant_len(&self, rows: usize) -> usize {
        quant_len(self.w8a8, rows, 4 * self.c)
    }

    /// Quantised-input scratch of one landmark: its patch's query projection (streaming)
    /// and the landmark convolution (one row per head, a patch's queries deep).
    fn landmark_quant_len(&self, whole: bool) -> usize {
        let patch = if whole {
            0
        } else {
            quant_len(self.w8a8, self.r * self.r, self.c)
        };
        patch.max(quant_len(
            self.w8a8,
            self.heads,
            self.patch_len() / self.heads.max(1),
        ))
    }

    /// Width of the buffer that holds a token's `K1` rows, then its MLP hidden layer.
    fn hidden_width(&self) -> usize {
        (self.heads * self.m).max(4 * self.c)
    }

    /// Values of pass 2's `hidden` buffer for `chunk` tokens: their `K1` rows, then the
    /// V tokens one map row of the depthwise convolution reaches, widened once, then the
    /// MLP's hidden layer.
    fn hidden_len(&self, chunk: usize) -> usize {
        (chunk * self.hidden_width()).max((chunk + self.k - 1) * self.c)
    }

    /// The buffers of one block above the token map at its peak: the block's state plus
    /// the largest step's scratch; the pseudo-inverse keeps `P` whole with `keeps_p`.
    pub fn block_buffers<E: TokenElem>(&self, s: &Schedule, keeps_p: bool, emit: Emit<'_, '_>) {
        BlockState::<E>::layout(self, s.whole_maps)
            .iter()
            .for_each(|b| emit.push(*b));
        let newton =
            |e: Emit<'_, '_>| newton::scratch_buffers(self.m, self.d, self.heads, s, keeps_p, e);
        self.other_steps::<E, _>(s, |others, at| {
            let (before, after) = others.split_at(at.min(others.len()));
            let mut steps: heapless::Vec<&dyn Fn(Emit<'_, '_>), 8> = heapless::Vec::new();
            for &step in before
                .iter()
                .chain([&newton as &dyn Fn(Emit<'_, '_>)].iter())
                .chain(after)
            {
                // Capacity 8 holds the 6 steps.
                let _ = steps.push(step);
            }
            largest(&steps, emit);
        });
    }

    /// Calls `f` with a block's steps but the pseudo-inverse, in run order, and the
    /// place the pseudo-inverse runs at among them.
    fn other_steps<E: TokenElem, R>(
        &self,
        s: &Schedule,
        f: impl FnOnce(&[&dyn Fn(Emit<'_, '_>)], usize) -> R,
    ) -> R {
        let chunk = self.chunk(s);
        let (emit_workers, emit_tokens) = self.emit_split(s);
        let tokens = self.workers(s, self.n());
        let pass2 = |e: Emit<'_, '_>| {
            if !s.whole_maps {
                emit_copies(e, 1, &RingScratch::<E>::layout(self));
            }
            emit_copies(
                e,
                emit_workers,
                &EmitScratch::<E>::layout(self, emit_tokens),
            );
        };
        let landmarks = |e: Emit<'_, '_>| {
            let layout = LandmarkScratch::<E>::layout(self, self.workers(s, self.m), s.whole_maps);
            emit_copies(e, 1, &layout);
        };
        if s.whole_maps {
            let projections =
                |e: Emit<'_, '_>| emit_copies(e, tokens, &TokenScratch::<E>::layout(self, chunk));
            let key_value = |e: Emit<'_, '_>| {
                let layout = HeadKernelScratch::<E>::layout(self, chunk);
                emit_copies(e, self.workers(s, self.heads), &layout);
            };
            let round =
                |e: Emit<'_, '_>| emit_copies(e, tokens, &RoundScratch::<E>::layout(self.c, chunk));
            f(&[&projections, &landmarks, &key_value, &round, &pass2], 3)
        } else {
            let key_value = |e: Emit<'_, '_>| {
                emit_copies(
                    e,
                    1,
                    &KeyValueScratch::<E>::layout(self, chunk, self.workers(s, chunk)),
                );
            };
            f(&[&landmarks, &key_value, &pass2], 2)
        }
    }

    /// Arena bytes of one block above the token map ([`SoftDims::block_buffers`]).
    #[cfg(test)]
    pub fn block_bytes<E: TokenElem>(&self, s: &Schedule, keeps_p: bool) -> usize {
        crate::scratch::total(&|e| self.block_buffers::<E>(s, keeps_p, e))
    }

    /// Bytes of the `m×m` Newton–Schulz buffers, the only part that grows faster than `N`.
    pub fn newton_bytes(&self) -> usize {
        newton::matrix_bytes(self.m)
    }

    /// Values of a whole-map store (none when streaming).
    fn whole(&self, whole: bool) -> usize {
        if whole {
            self.n() * self.c
        } else {
            0
        }
    }
}

scratch! {
    /// What a block keeps across its steps.
    pub(crate) struct BlockState(dims: &SoftDims, whole: bool) {
        /// Landmarks of every head, transposed: `[head][d][m]`.
        landmarks: [f32; dims.m * dims.c] in Landmarks,
        /// `K1ᵀV` of every head (`[head][m][d]`), then `Z = pinv(K2)·K1ᵀV` in its place.
        z: [f32; dims.m * dims.c] in Landmarks,
        /// Whole maps: scaled queries of every token (`[N][c]`); after a token's attention,
        /// its norm1 output.
        queries: [f32; dims.whole(whole)] in Tokens,
        /// Whole maps: values of every token, rounded to the token type before pass 2.
        values: [f32; dims.whole(whole)] in Tokens,
    }
}

scratch! {
    /// A chunk of tokens in f32 (one per worker): computing the whole-map projections.
    pub(crate) struct TokenScratch(dims: &SoftDims, chunk: usize) {
        tokens: [f32; chunk * dims.c],
        /// Their quantised form (W8A8).
        quant: [f32; quant_len(dims.w8a8, chunk, dims.c)],
    }
}

scratch! {
    /// The landmark step.
    pub(crate) struct LandmarkScratch(dims: &SoftDims, workers: usize, whole: bool) {
        /// Each worker's patch of `r²` tokens, `[r²][c]` (streaming).
        patch: [f32; if whole { 0 } else { workers * dims.patch_len() }],
        /// Each worker's scaled patch queries, `[head][r²][d]`.
        queries: [f32; workers * dims.patch_len()],
        /// Every landmark before the transpose, `[m][head][d]`.
        rows: [f32; dims.m * dims.c] in Landmarks,
        /// Each worker's quantised inputs (W8A8).
        quant: [f32; workers * dims.landmark_quant_len(whole)],
    }
}

scratch! {
    /// Streaming pass 1.
    pub(crate) struct KeyValueScratch(dims: &SoftDims, chunk: usize, workers: usize) {
        /// A chunk of tokens, f32.
        tokens: [f32; chunk * dims.c],
        /// Their scaled queries.
        queries: [f32; chunk * dims.c],
        /// Their values.
        values: [f32; chunk * dims.c],
        /// Their `K1` rows, `[token][head][m]`.
        kernel: [f32; chunk * dims.heads * dims.m],
        /// Each worker's quantised tokens (W8A8).
        quant: [f32; workers * quant_len(dims.w8a8, chunk, dims.c)],
    }
}

scratch! {
    /// Whole-map pass 1, one per worker: a chunk's `K1` rows for one head, `[token][m]`.
    pub(crate) struct HeadKernelScratch(dims: &SoftDims, chunk: usize) {
        kernel: [f32; chunk * dims.m],
    }
}

scratch! {
    /// Rounding whole-map values to the token type, one per worker.
    pub(crate) struct RoundScratch(c: usize, chunk: usize) {
        rounded: [E; chunk * c],
    }
}

scratch! {
    /// Streaming pass 2: V of the `k` map rows the depthwise convolution reaches.
    pub(crate) struct RingScratch(dims: &SoftDims) {
        ring: [E; dims.k * dims.cols * dims.c],
    }
}

scratch! {
    /// Pass 2, one per worker.
    pub(crate) struct EmitScratch(dims: &SoftDims, chunk: usize) {
        /// A chunk of tokens, f32.
        tokens: [f32; chunk * dims.c],
        /// Their queries (streaming), then the V convolution, then each linear layer's
        /// output.
        work: [f32; chunk * dims.c],
        /// Their attention output.
        attention: [f32; chunk * dims.c],
        /// Their `K1` rows (`[token][head][m]`), then the V tokens the depthwise
        /// convolution reads from one map row (f32), then the MLP's hidden layer.
        hidden: [f32; dims.hidden_len(chunk)],
        /// One row of depthwise kernel weights, `[dx][head]`.
        taps: [f32; dims.k * dims.heads],
        /// Each linear layer's quantised input (W8A8).
        quant: [f32; dims.quant_len(chunk)],
    }
}

/// Weights of one SOFT block, shape-checked when loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoftBlockWeights<'a> {
    q: Weight<'a>,
    q_bias: Vector<'a>,
    v: Weight<'a>,
    v_bias: Vector<'a>,
    /// `[r·r·d, d]`: the landmark convolution as a matrix over a patch's queries.
    landmark: Weight<'a>,
    landmark_norm: (Vector<'a>, Vector<'a>),
    /// `[head][k][k]`.
    vconv: Vector<'a>,
    out: Weight<'a>,
    out_bias: Vector<'a>,
    norm1: (Vector<'a>, Vector<'a>),
    mlp1: Weight<'a>,
    mlp1_bias: Vector<'a>,
    mlp2: Weight<'a>,
    mlp2_bias: Vector<'a>,
    norm2: (Vector<'a>, Vector<'a>),
    /// [`query_divisor`] of the head width.
    query_divisor: f32,
}

impl<'a> SoftBlockWeights<'a> {
    pub fn load(w: &Weights<'a>, dims: &SoftDims, stage: u8, block: u16) -> Result<Self> {
        let id = |kind| TensorId::new(kind, stage, block);
        let matrix = |kind| w.schema_matrix(id(kind))?.weight();
        let vector = |kind| w.schema_vector(id(kind));
        Ok(SoftBlockWeights {
            q: matrix(K::QWeight)?,
            q_bias: vector(K::QBias)?,
            v: matrix(K::VWeight)?,
            v_bias: vector(K::VBias)?,
            landmark: matrix(K::LandmarkWeight)?,
            landmark_norm: (vector(K::LandmarkNormWeight)?, vector(K::LandmarkNormBias)?),
            vconv: vector(K::VConvWeight)?,
            out: matrix(K::OutWeight)?,
            out_bias: vector(K::OutBias)?,
            norm1: (vector(K::Norm1Weight)?, vector(K::Norm1Bias)?),
            mlp1: matrix(K::Mlp1Weight)?,
            mlp1_bias: vector(K::Mlp1Bias)?,
            mlp2: matrix(K::Mlp2Weight)?,
            mlp2_bias: vector(K::Mlp2Bias)?,
            norm2: (vector(K::Norm2Weight)?, vector(K::Norm2Bias)?),
            query_divisor: query_divisor(dims.d),
        })
    }
}

/// The scaled queries `q` and the values `v` of `rows` tokens `src`, widened into `x`.
#[allow(clippy::too_many_arguments)]
fn queries_and_values<E: TokenElem>(
    run: &Run<'_>,
    wt: &SoftBlockWeights<'_>,
    src: &[E],
    x: &mut [f32],
    rows: usize,
    q: &mut [f32],
    v: &mut [f32],
    quant: &mut [f32],
) -> Result<()> {
    run.kernels.widen(E::elems(src), x)?;
    linear(run, &wt.q, &wt.q_bias, x, rows, quant, q)?;
    scale_queries(q, wt.query_divisor);
    linear(run, &wt.v, &wt.v_bias, x, rows, quant, v)
}

/// `d^¼`, by which the reference divides queries, rounded once from f64. Computed once
/// per block: a Cortex-M4 does f64 in software.
fn query_divisor(d: usize) -> f32 {
    libm::sqrt(libm::sqrt(d as f64)) as f32
}

/// `x / d^¼` ([`query_divisor`]).
fn scale_queries(q: &mut [f32], divisor: f32) {
    for v in q.iter_mut() {
        *v /= divisor;
    }
}

/// Head `h`'s landmarks, transposed (`d × m`).
fn head_landmarks<'a>(lm: &'a [f32], dims: &SoftDims, h: usize) -> Result<Strided<'a>> {
    let (d, m) = (dims.d, dims.m);
    Ok(Strided::rows_of(
        lm.get(h * d * m..).unwrap_or_default(),
        d,
        m,
        m,
    )?)
}

/// `K1` rows of head `h` for `kernel.rows()` tokens from their scaled queries `q`
/// (`[t][c]`).
fn head_kernel_rows(
    run: &Run<'_>,
    dims: &SoftDims,
    lm: &[f32],
    h: usize,
    q: &[f32],
    kernel: &mut Out<'_>,
) -> Result<()> {
    let (c, d) = (dims.c, dims.d);
    let qh = Strided::rows_of(q.get(h * d..).unwrap_or_default(), kernel.rows(), d, c)?;
    Ok(run
        .kernels
        .gaussian(&qh, &head_landmarks(lm, dims, h)?, kernel)?)
}

/// `K1` rows of `rows` tokens, all heads: `kernel[t][h][l]`.
fn kernel_rows(
    run: &Run<'_>,
    dims: &SoftDims,
    lm: &[f32],
    q: &[f32],
    rows: usize,
    kernel: &mut [f32],
) -> Result<()> {
    let (m, hm) = (dims.m, dims.heads * dims.m);
    for h in 0..dims.heads {
        let kh = kernel.get_mut(h * m..).unwrap_or_default();
        head_kernel_rows(run, dims, lm, h, q, &mut Out::new(kh, rows, m, hm)?)?;
    }
    Ok(())
}

/// One SOFT block over the `rows×cols×c` token map, in place.
pub(crate) fn soft_block<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    inv: &InverseConfig,
    probe: &mut impl Probe,
) -> Result<()> {
    let stage = inv.stage;
    let at = |step| Activity { stage, step };
    let whole = run.schedule.whole_maps;
    let mut ar = ar.scope();
    let state = BlockState::<E>::alloc(&mut ar, dims, whole)?;
    if whole {
        probe.enter(at(Step::Projections));
        projections(
            run,
            &mut ar.scope(),
            map,
            dims,
            wt,
            state.queries,
            state.values,
        )?;
        probe.enter(at(Step::Landmarks));
        landmarks(
            run,
            &mut ar.scope(),
            map,
            dims,
            wt,
            Some(state.queries),
            state.landmarks,
        )?;
        probe.enter(at(Step::KeyValue));
        key_value_whole::<E>(
            run,
            &mut ar.scope(),
            dims,
            state.queries,
            state.values,
            state.landmarks,
            state.z,
        )?;
        probe.enter(at(Step::Newton));
        newton::solve(run, &mut ar.scope(), dims, state.landmarks, state.z, inv)?;
        probe.enter(at(Step::Attention));
        round_values::<E>(run, &mut ar.scope(), dims, state.values)?;
        emit_whole(run, &mut ar.scope(), map, dims, wt, state, stage, probe)
    } else {
        probe.enter(at(Step::Landmarks));
        landmarks(run, &mut ar.scope(), map, dims, wt, None, state.landmarks)?;
        probe.enter(at(Step::KeyValue));
        key_value_streaming(
            run,
            &mut ar.scope(),
            map,
            dims,
            wt,
            state.landmarks,
            state.z,
        )?;
        probe.enter(at(Step::Newton));
        newton::solve(run, &mut ar.scope(), dims, state.landmarks, state.z, inv)?;
        emit_streaming(
            run,
            &mut ar.scope(),
            map,
            dims,
            wt,
            state.landmarks,
            state.z,
            stage,
            probe,
        )
    }
}

/// The scaled queries and the values of every token (whole maps), each worker a range of
/// tokens a chunk at a time.
fn projections<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &[E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    queries: &mut [f32],
    values: &mut [f32],
) -> Result<()> {
    let (c, n) = (dims.c, dims.n());
    let chunk = dims.chunk(&run.schedule);
    let workers = dims.workers(&run.schedule, n);
    let scratch = per_worker(workers, || TokenScratch::<E>::alloc(ar, dims, chunk))?;
    let parts: Parts<_> = scratch
        .into_iter()
        .zip(carve_ref(map, c, n, workers))
        .zip(carve(queries, c, n, workers))
        .zip(carve(values, c, n, workers))
        .collect();
    run.try_parallel(parts, |(((s, src), q), v)| {
        let chunks = src.chunks(chunk * c).zip(q.chunks_mut(chunk * c));
        for ((src, q), v) in chunks.zip(v.chunks_mut(chunk * c)) {
            let rows = src.len() / c;
            let x = s.tokens.get_mut(..rows * c).unwrap_or_default();
            queries_and_values(run, wt, src, x, rows, q, v, s.quant)?;
        }
        Ok(())
    })
}

/// Landmarks per head: the `r×r` stride-`r` convolution of the head's queries (weights
/// shared by all heads), LayerNorm, exact GELU; stored transposed, `[head][d][m]`.
fn landmarks<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &[E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    kept: Option<&[f32]>,
    lm: &mut [f32],
) -> Result<()> {
    let (c, d, r, m, heads) = (dims.c, dims.d, dims.r, dims.m, dims.heads);
    let (rr, lw, plen) = (r * r, dims.landmark_cols(), dims.patch_len());
    let workers = dims.workers(&run.schedule, m);
    let scratch = LandmarkScratch::<E>::alloc(ar, dims, workers, kept.is_some())?;
    let k = run.kernels;
    let per_landmark = if kept.is_some() { 0 } else { rr * c * c } + rr * heads * d * d;
    let split_into = run.workers_for(m, m * per_landmark).min(workers);
    let quant_len = dims.landmark_quant_len(kept.is_some());
    let parts: Parts<_> = carve(scratch.patch, plen, split_into, split_into)
        .into_iter()
        .zip(carve(scratch.queries, plen, split_into, split_into))
        .zip(carve(scratch.rows, c, m, split_into))
        .zip(carve(scratch.quant, quant_len, split_into, split_into))
        .enumerate()
        .map(|(w, parts)| (split(m, split_into, w), parts))
        .collect();
    run.try_parallel(parts, |(range, (((patch, queries), rows), quant))| {
        for (l, pooled) in range.clone().zip(rows.chunks_exact_mut(c)) {
            let (ly, lx) = (l / lw, l % lw);
            let token = |p: usize| (ly * r + p / r) * dims.cols + lx * r + p % r;
            match kept {
                Some(kept) => {
                    for p in 0..rr {
                        for h in 0..heads {
                            let src = kept.get(token(p) * c + h * d..).unwrap_or_default();
                            let dst = queries.get_mut((h * rr + p) * d..).unwrap_or_default();
                            for (o, v) in dst.iter_mut().zip(src).take(d) {
                                *o = *v;
                            }
                        }
                    }
                }
                None => {
                    for ky in 0..r {
                        let first = token(ky * r) * c;
                        let src = map.get(first..first + r * c).unwrap_or_default();
                        let dst = patch
                            .get_mut(ky * r * c..(ky + 1) * r * c)
                            .unwrap_or_default();
                        k.widen(E::elems(src), dst)?;
                    }
                    let x = Lhs::new(Strided::rows_of(patch, rr, c, c)?);
                    for h in 0..heads {
                        let dst = queries
                            .get_mut(h * rr * d..(h + 1) * rr * d)
                            .unwrap_or_default();
                        let mut out = Out::new(dst, rr, d, d)?;
                        let b = Start::Bias(wt.q_bias.skip(h * d));
                        let w = wt.q.output_range(h * d, d);
                        apply(run, &w, &x, b, quant, &mut out)?;
                    }
                    scale_queries(queries, wt.query_divisor);
                }
            }
            let lhs = Lhs::new(Strided::rows_of(queries, heads, rr * d, rr * d)?);
            let mut out = Out::new(pooled, heads, d, d)?;
            apply(run, &wt.landmark, &lhs, Start::Zero, quant, &mut out)?;
            k.layer_norm(
                pooled,
                d,
                &wt.landmark_norm.0,
                &wt.landmark_norm.1,
                SOFT_EPS,
            )?;
            k.gelu_erf(pooled);
        }
        Ok(())
    })?;
    for (l, row) in scratch.rows.chunks_exact(c).enumerate() {
        for (hi, v) in row.iter().enumerate() {
            // [l][h][i] -> [h][i][l]; hi = h·d + i.
            if let Some(dst) = lm.get_mut(hi * m + l) {
                *dst = *v;
            }
        }
    }
    Ok(())
}

/// Streaming pass 1: `S_h = K1_hᵀ · V_h` (`[head][m][d]`), a chunk of tokens at a time.
fn key_value_streaming<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &[E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    lm: &[f32],
    s: &mut [f32],
) -> Result<()> {
    let (c, d, m, n, heads) = (dims.c, dims.d, dims.m, dims.n(), dims.heads);
    let hm = heads * m;
    let chunk = dims.chunk(&run.schedule);
    let workers = dims.workers(&run.schedule, chunk);
    let scratch = KeyValueScratch::<E>::alloc(ar, dims, chunk, workers)?;
    let quant_len = quant_len(dims.w8a8, chunk, c);
    let k = run.kernels;
    s.fill(0.0);
    for t0 in (0..n).step_by(chunk) {
        let len = chunk.min(n - t0);
        // Queries, values and K1 rows, split by tokens.
        let split_into = run.workers_for(len, len * (2 * c * c + heads * m * d));
        let split_into = split_into.min(workers);
        let src = map.get(t0 * c..(t0 + len) * c).unwrap_or_default();
        let parts: Parts<_> = carve(scratch.kernel, hm, len, split_into)
            .into_iter()
            .zip(carve(scratch.tokens, c, len, split_into))
            .zip(carve(scratch.queries, c, len, split_into))
            .zip(carve(scratch.values, c, len, split_into))
            .zip(carve_ref(src, c, len, split_into))
            .zip(carve(scratch.quant, quant_len, split_into, split_into))
            .collect();
        run.try_parallel(parts, |(((((kernel, x), q), v), src), quant)| {
            let rows = x.len() / c;
            queries_and_values(run, wt, src, x, rows, q, v, quant)?;
            kernel_rows(run, dims, lm, q, rows, kernel)
        })?;
        // S_h += K1_hᵀ · V_h, split by heads.
        let (kernel, values) = (&*scratch.kernel, &*scratch.values);
        let workers = run.workers_for(heads, heads * m * len * d);
        let parts: Parts<_> = carve(s, m * d, heads, workers)
            .into_iter()
            .enumerate()
            .map(|(w, s)| (split(heads, workers, w), s))
            .collect();
        run.try_parallel(parts, |(range, s)| {
            for (h, sh) in range.clone().zip(s.chunks_exact_mut(m * d)) {
                let k1t = Strided::new(kernel.get(h * m..).unwrap_or_default(), m, len, 1, hm)?;
                let vh = Strided::rows_of(values.get(h * d..).unwrap_or_default(), len, d, c)?;
                let mut out = Out::new(sh, m, d, d)?;
                k.gemm(&Lhs::new(k1t), &Rhs::f32(vh)?, Start::Accumulate, &mut out)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Whole-map pass 1: `S_h = K1_hᵀ · V_h`, each worker whole heads, over every token a
/// chunk at a time (token order, so each sum runs as in the streaming pass).
fn key_value_whole<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    dims: &SoftDims,
    queries: &[f32],
    values: &[f32],
    lm: &[f32],
    s: &mut [f32],
) -> Result<()> {
    let (c, d, m, n, heads) = (dims.c, dims.d, dims.m, dims.n(), dims.heads);
    let chunk = dims.chunk(&run.schedule);
    let workers = dims.workers(&run.schedule, heads);
    let scratch = per_worker(workers, || HeadKernelScratch::<E>::alloc(ar, dims, chunk))?;
    let k = run.kernels;
    s.fill(0.0);
    let parts: Parts<_> = scratch
        .into_iter()
        .zip(carve(s, m * d, heads, workers))
        .enumerate()
        .map(|(w, parts)| (split(heads, workers, w), parts))
        .collect();
    run.try_parallel(parts, |(range, (scratch, s))| {
        for (h, sh) in range.clone().zip(s.chunks_exact_mut(m * d)) {
            for t0 in (0..n).step_by(chunk) {
                let len = chunk.min(n - t0);
                let q = queries.get(t0 * c..).unwrap_or_default();
                let k1 = scratch.kernel.get_mut(..len * m).unwrap_or_default();
                head_kernel_rows(run, dims, lm, h, q, &mut Out::new(k1, len, m, m)?)?;
                let k1t = Strided::new(k1, m, len, 1, m)?;
                let vh = values.get(t0 * c + h * d..).unwrap_or_default();
                let vh = Strided::rows_of(vh, len, d, c)?;
                let mut out = Out::new(sh, m, d, d)?;
                k.gemm(&Lhs::new(k1t), &Rhs::f32(vh)?, Start::Accumulate, &mut out)?;
            }
        }
        Ok(())
    })
}

/// Rounds the whole-map values to the token type (in their f32 store): the depthwise
/// convolution reads V as the streaming layout's ring holds it.
fn round_values<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    dims: &SoftDims,
    values: &mut [f32],
) -> Result<()> {
    let (c, n) = (dims.c, dims.n());
    let chunk = dims.chunk(&run.schedule);
    let workers = dims.workers(&run.schedule, n);
    let scratch = per_worker(workers, || RoundScratch::<E>::alloc(ar, c, chunk))?;
    let k = run.kernels;
    let parts: Parts<_> = scratch
        .into_iter()
        .zip(carve(values, c, n, workers))
        .collect();
    run.try_parallel(parts, |(s, v)| {
        for v in v.chunks_mut(chunk * c) {
            let rounded = s.rounded.get_mut(..v.len()).unwrap_or_default();
            k.narrow(v, E::elems_mut(rounded))?;
            k.widen(E::elems(rounded), v)?;
        }
        Ok(())
    })
}

/// Where pass 2 reads V for the depthwise convolution.
enum ValueRows<'a, E> {
    /// The streaming ring: map row `y` in slot `y mod k`.
    Ring(&'a [E]),
    /// The whole-map values, rounded to the token type.
    Whole(&'a [f32]),
}

impl<E: TokenElem> ValueRows<'_, E> {
    /// `count` tokens of map row `y` from column `x`.
    fn tokens(&self, dims: &SoftDims, y: usize, x: usize, count: usize) -> Elems<'_> {
        let (c, row_len) = (dims.c, dims.cols * dims.c);
        match self {
            ValueRows::Ring(ring) => {
                let at = (y % dims.k) * row_len + x * c;
                E::elems(ring.get(at..at + count * c).unwrap_or_default())
            }
            ValueRows::Whole(values) => {
                let at = y * row_len + x * c;
                Elems::F32(values.get(at..at + count * c).unwrap_or_default())
            }
        }
    }
}

/// Pass 2's attention for `n` tokens from flat token `t0`: `K1·Z + vconv(V)` per head,
/// the output projection, the residual into `s.tokens` (which holds the tokens) and
/// norm1. `kept`: the tokens' scaled queries, else they are computed (into `s.work`).
#[allow(clippy::too_many_arguments)]
fn attend<E: TokenElem>(
    run: &Run<'_>,
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    lm: &[f32],
    z: &[f32],
    values: &ValueRows<'_, E>,
    t0: usize,
    n: usize,
    kept: Option<&[f32]>,
    s: &mut EmitScratch<'_, E>,
) -> Result<()> {
    let (c, d, m, k, heads) = (dims.c, dims.d, dims.m, dims.k, dims.heads);
    let (rows, cols, pad, hm) = (dims.rows, dims.cols, k / 2, heads * m);
    let kernels = run.kernels;
    let x = s.tokens.get_mut(..n * c).unwrap_or_default();
    let work = s.work.get_mut(..n * c).unwrap_or_default();
    let a = s.attention.get_mut(..n * c).unwrap_or_default();
    let hidden = &mut *s.hidden;
    let q: &[f32] = match kept {
        Some(q) => q,
        None => {
            linear(run, &wt.q, &wt.q_bias, x, n, s.quant, work)?;
            scale_queries(work, wt.query_divisor);
            work
        }
    };
    kernel_rows(run, dims, lm, q, n, hidden)?;
    for h in 0..heads {
        let k1 = Strided::rows_of(hidden.get(h * m..).unwrap_or_default(), n, m, hm)?;
        let zh = Strided::rows_of(z.get(h * m * d..).unwrap_or_default(), m, d, d)?;
        let mut out = Out::new(a.get_mut(h * d..).unwrap_or_default(), n, d, c)?;
        kernels.gemm(&Lhs::new(k1), &Rhs::f32(zh)?, Start::Zero, &mut out)?;
    }
    // Depthwise convolution of V, each token's taps in (dy, dx) order, a map row's run
    // of tokens at a time; the queries are done.
    work.fill(0.0);
    let mut t = t0;
    while t < t0 + n {
        let (y, x_lo) = (t / cols, t % cols);
        let x_hi = cols.min(x_lo + (t0 + n - t));
        for dy in 0..k {
            let Some(yy) = (y + dy).checked_sub(pad).filter(|&v| v < rows) else {
                continue;
            };
            for (i, tap) in s.taps.iter_mut().enumerate() {
                // taps[dx·heads + h] = vconv[h][dy][dx].
                let (h, dx) = (i % heads, i / heads);
                *tap = wt.vconv.get((h * k + dy) * k + dx);
            }
            // The row's tokens the taps reach, as f32: widened once here rather than
            // once per tap (exact, so no bit changes).
            let first = x_lo.saturating_sub(pad);
            let reach = (x_hi + pad).min(cols) - first;
            let window: &[f32] = match values.tokens(dims, yy, first, reach) {
                Elems::F32(v) => v,
                src => {
                    let window = hidden.get_mut(..reach * c).unwrap_or_default();
                    kernels.widen(src, window)?;
                    window
                }
            };
            for dx in 0..k {
                // Tokens x whose tap x + dx − pad lies inside the row.
                let lo = x_lo.max(pad.saturating_sub(dx));
                let hi = x_hi.min((cols + pad).saturating_sub(dx));
                if lo >= hi {
                    continue;
                }
                let at = lo + dx - pad - first;
                let src = window.get(at * c..(at + hi - lo) * c).unwrap_or_default();
                let out = (y * cols + lo - t0) * c..(y * cols + hi - t0) * c;
                let w = s.taps.get(dx * heads..(dx + 1) * heads).unwrap_or_default();
                let out = work.get_mut(out).unwrap_or_default();
                kernels.depthwise(Elems::F32(src), w, d, out)?;
            }
        }
        t += x_hi - x_lo;
    }
    for (o, v) in a.iter_mut().zip(work.iter()) {
        *o += *v;
    }
    // Projection and residual, norm1.
    linear(run, &wt.out, &wt.out_bias, a, n, s.quant, work)?;
    for (xv, ov) in x.iter_mut().zip(work.iter()) {
        *xv += *ov;
    }
    Ok(kernels.layer_norm(x, c, &wt.norm1.0, &wt.norm1.1, SOFT_EPS)?)
}

/// Pass 2's MLP (tanh GELU), residual and norm2 for the `n` tokens in `s.tokens`.
fn mlp<E: TokenElem>(
    run: &Run<'_>,
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    n: usize,
    s: &mut EmitScratch<'_, E>,
) -> Result<()> {
    let c = dims.c;
    let x = s.tokens.get_mut(..n * c).unwrap_or_default();
    let work = s.work.get_mut(..n * c).unwrap_or_default();
    let h = s.hidden.get_mut(..n * 4 * c).unwrap_or_default();
    linear(run, &wt.mlp1, &wt.mlp1_bias, x, n, s.quant, h)?;
    run.kernels.gelu_tanh(h);
    linear(run, &wt.mlp2, &wt.mlp2_bias, h, n, s.quant, work)?;
    for (xv, fv) in x.iter_mut().zip(work.iter()) {
        *xv += *fv;
    }
    Ok(run
        .kernels
        .layer_norm(x, c, &wt.norm2.0, &wt.norm2.1, SOFT_EPS)?)
}

/// Streaming pass 2, row by row: V of the original map is kept for the `k` rows the
/// depthwise convolution can still reach, each row computed once as it enters the
/// window; each chunk of a row is split among the workers, attention then MLP.
#[allow(clippy::too_many_arguments)]
fn emit_streaming<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    lm: &[f32],
    z: &[f32],
    stage: u8,
    probe: &mut impl Probe,
) -> Result<()> {
    let (c, d, m, k, heads) = (dims.c, dims.d, dims.m, dims.k, dims.heads);
    let (rows, cols) = (dims.rows, dims.cols);
    let (row_len, pad) = (cols * c, k / 2);
    let chunk = dims.row_chunk(&run.schedule);
    let (workers, part) = dims.emit_split(&run.schedule);
    let ring = RingScratch::<E>::alloc(ar, dims)?.ring;
    let mut scratch = per_worker(workers, || EmitScratch::<E>::alloc(ar, dims, part))?;
    let kernels = run.kernels;
    let attention = Activity {
        stage,
        step: Step::Attention,
    };

    // V of map row `y` into its ring slot, a chunk of the row at a time.
    let fill_ring = |map: &[E], ring: &mut [E], y: usize, s: &mut [EmitScratch<'_, E>]| {
        let slot = (y % k) * row_len;
        let dst = ring.get_mut(slot..slot + row_len).unwrap_or_default();
        for x0 in (0..cols).step_by(chunk) {
            let len = chunk.min(cols - x0);
            let split_into = run.workers_for(len, len * c * c).min(workers);
            let first = y * row_len + x0 * c;
            let src = map.get(first..first + len * c).unwrap_or_default();
            let dst = dst.get_mut(x0 * c..(x0 + len) * c).unwrap_or_default();
            let parts: Parts<_> = s
                .iter_mut()
                .zip(carve_ref(src, c, len, split_into))
                .zip(carve(dst, c, len, split_into))
                .collect();
            run.try_parallel(parts, |((s, src), dst)| {
                let n = src.len() / c;
                let x = s.tokens.get_mut(..n * c).unwrap_or_default();
                let v = s.work.get_mut(..n * c).unwrap_or_default();
                kernels.widen(E::elems(src), x)?;
                linear(run, &wt.v, &wt.v_bias, x, n, s.quant, v)?;
                Ok(kernels.narrow(v, E::elems_mut(dst))?)
            })?;
        }
        Ok::<(), crate::Error>(())
    };

    probe.enter(attention);
    for y in 0..pad.min(rows) {
        fill_ring(map, ring, y, &mut scratch)?;
    }
    for y in 0..rows {
        probe.enter(attention);
        if y + pad < rows {
            fill_ring(map, ring, y + pad, &mut scratch)?;
        }
        for x0 in (0..cols).step_by(chunk) {
            let len = chunk.min(cols - x0);
            let per_token = 2 * c * c + 2 * heads * m * d + k * k * c;
            let split_into = run.workers_for(len, len * per_token).min(workers);
            let first = y * cols + x0;
            let span = first * c..(first + len) * c;
            if x0 > 0 {
                probe.enter(attention);
            }
            let values = ValueRows::Ring(&*ring);
            let parts: Parts<_> = scratch
                .iter_mut()
                .zip(carve_ref(
                    map.get(span.clone()).unwrap_or_default(),
                    c,
                    len,
                    split_into,
                ))
                .enumerate()
                .map(|(w, parts)| (split(len, split_into, w), parts))
                .collect();
            run.try_parallel(parts, |(range, (s, src))| {
                let n = range.len();
                kernels.widen(E::elems(src), s.tokens.get_mut(..n * c).unwrap_or_default())?;
                attend(
                    run,
                    dims,
                    wt,
                    lm,
                    z,
                    &values,
                    first + range.start,
                    n,
                    None,
                    s,
                )
            })?;
            probe.enter(Activity {
                stage,
                step: Step::Mlp,
            });
            let parts: Parts<_> = scratch
                .iter_mut()
                .zip(carve(
                    map.get_mut(span).unwrap_or_default(),
                    c,
                    len,
                    split_into,
                ))
                .collect();
            run.try_parallel(parts, |(s, dst)| {
                let n = dst.len() / c;
                mlp(run, dims, wt, n, s)?;
                let x = s.tokens.get(..n * c).unwrap_or_default();
                Ok(kernels.narrow(x, E::elems_mut(dst))?)
            })?;
        }
    }
    Ok(())
}

/// Whole-map pass 2: each worker a range of tokens, a chunk at a time. The attention
/// writes each token's norm1 output over its query (no longer needed); the MLP reads it
/// from there and writes the block's output over the token.
#[allow(clippy::too_many_arguments)]
fn emit_whole<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    state: BlockState<'_, E>,
    stage: u8,
    probe: &mut impl Probe,
) -> Result<()> {
    let (c, n) = (dims.c, dims.n());
    let (workers, chunk) = dims.emit_split(&run.schedule);
    let mut scratch = per_worker(workers, || EmitScratch::<E>::alloc(ar, dims, chunk))?;
    let kernels = run.kernels;
    let (lm, z) = (&*state.landmarks, &*state.z);
    let values = ValueRows::Whole(&*state.values);
    let parts: Parts<_> = scratch
        .iter_mut()
        .zip(carve_ref(map, c, n, workers))
        .zip(carve(state.queries, c, n, workers))
        .enumerate()
        .map(|(w, parts)| (split(n, workers, w), parts))
        .collect();
    run.try_parallel(parts, |(range, ((s, src), queries))| {
        let chunks = src.chunks(chunk * c).zip(queries.chunks_mut(chunk * c));
        for (i, (src, q)) in chunks.enumerate() {
            let len = src.len() / c;
            kernels.widen(
                E::elems(src),
                s.tokens.get_mut(..len * c).unwrap_or_default(),
            )?;
            let t0 = range.start + i * chunk;
            attend(run, dims, wt, lm, z, &values, t0, len, Some(q), s)?;
            q.copy_from_slice(s.tokens.get(..len * c).unwrap_or_default());
        }
        Ok(())
    })?;
    probe.enter(Activity {
        stage,
        step: Step::Mlp,
    });
    let parts: Parts<_> = scratch
        .iter_mut()
        .zip(carve(map, c, n, workers))
        .zip(carve_ref(state.queries, c, n, workers))
        .collect();
    run.try_parallel(parts, |((s, dst), normed)| {
        let chunks = dst.chunks_mut(chunk * c).zip(normed.chunks(chunk * c));
        for (dst, normed) in chunks {
            let len = dst.len() / c;
            s.tokens
                .get_mut(..len * c)
                .unwrap_or_default()
                .copy_from_slice(normed);
            mlp(run, dims, wt, len, s)?;
            let x = s.tokens.get(..len * c).unwrap_or_default();
            kernels.narrow(x, E::elems_mut(dst))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    //! The streaming block against a dense f64 evaluation that materialises `K1` (`N×m`)
    //! and multiplies in the reference's order, `(K1·pinv(K2))·(K1ᵀV)`.

    use super::*;
    use crate::arena::Watermark;
    use crate::config::ModelConfig;
    use crate::exec::Inline;
    use crate::format::{encode, encoded_len, Blob, Dtype, TensorSpec};
    use crate::newton::InverseConfig;
    use crate::weights::Weights;
    use proptest::prelude::*;
    use soft_kernels::reference::{self, matmul};
    use soft_kernels::Kernels;

    struct Case {
        dims: SoftDims,
        normalized: bool,
        tensors: Vec<(K, Vec<usize>, Vec<f32>)>,
        x: Vec<f32>,
    }

    #[allow(clippy::too_many_arguments)]
    fn case(
        rows: usize,
        cols: usize,
        heads: usize,
        d: usize,
        r: usize,
        k: usize,
        normalized: bool,
        seed: u64,
    ) -> Case {
        let mut values = soft_kernels::rng::XorShift64::new(seed | 1);
        let mut rnd = move || values.signed();
        let c = heads * d;
        let m = (rows / r) * (cols / r);
        let dims = SoftDims {
            rows,
            cols,
            c,
            heads,
            d,
            r,
            k,
            m,
            w8a8: false,
        };
        let mut t = |kind, shape: Vec<usize>, scale: f32, offset: f32| {
            let n = shape.iter().product();
            let v = (0..n).map(|_| offset + scale * rnd()).collect();
            (kind, shape, v)
        };
        let lin = 1.0 / (c as f32).sqrt();
        let tensors = vec![
            t(K::QWeight, vec![c, c], 2.0 * lin, 0.0),
            t(K::QBias, vec![c], 0.1, 0.0),
            t(K::VWeight, vec![c, c], lin, 0.0),
            t(K::VBias, vec![c], 0.1, 0.0),
            t(
                K::LandmarkWeight,
                vec![r, r, d, d],
                1.0 / (r * r * d) as f32,
                0.0,
            ),
            t(K::LandmarkNormWeight, vec![d], 0.3, 1.0),
            t(K::LandmarkNormBias, vec![d], 0.1, 0.0),
            t(K::VConvWeight, vec![heads, k, k], 0.3, 0.0),
            t(K::OutWeight, vec![c, c], lin, 0.0),
            t(K::OutBias, vec![c], 0.1, 0.0),
            t(K::Norm1Weight, vec![c], 0.2, 1.0),
            t(K::Norm1Bias, vec![c], 0.1, 0.0),
            t(K::Mlp1Weight, vec![c, 4 * c], lin, 0.0),
            t(K::Mlp1Bias, vec![4 * c], 0.1, 0.0),
            t(K::Mlp2Weight, vec![4 * c, c], lin / 2.0, 0.0),
            t(K::Mlp2Bias, vec![c], 0.1, 0.0),
            t(K::Norm2Weight, vec![c], 0.2, 1.0),
            t(K::Norm2Bias, vec![c], 0.1, 0.0),
        ];
        let x = (0..rows * cols * c).map(|_| 1.5 * rnd()).collect();
        Case {
            dims,
            normalized,
            tensors,
            x,
        }
    }

    /// The block on `case` (`case.dims.w8a8`: its matrices quantised to W8A8).
    fn streaming(case: &Case, kernels: &'static Kernels, schedule: Schedule) -> Result<Vec<f32>> {
        streaming_keeping(case, kernels, schedule, false)
    }

    /// [`streaming`], the pseudo-inverse keeping `P` whole with `keeps_p`.
    fn streaming_keeping(
        case: &Case,
        kernels: &'static Kernels,
        schedule: Schedule,
        keeps_p: bool,
    ) -> Result<Vec<f32>> {
        let w8a8 = case.dims.w8a8;
        let matrix = |kind| {
            use K::*;
            matches!(
                kind,
                QWeight | VWeight | LandmarkWeight | OutWeight | Mlp1Weight | Mlp2Weight
            )
        };
        let quantised: Vec<Option<(Vec<i8>, Vec<f32>)>> = case
            .tensors
            .iter()
            .map(|(kind, shape, v)| {
                let (outputs, inputs) = (shape[shape.len() - 1], v.len() / shape[shape.len() - 1]);
                (w8a8 && matrix(*kind)).then(|| {
                    let mut q = vec![0i8; outputs * soft_kernels::quant::padded_depth(inputs)];
                    let mut scales = vec![0.0f32; outputs];
                    crate::weights::quantize_q8(v, inputs, outputs, &mut q, &mut scales).unwrap();
                    (q, scales)
                })
            })
            .collect();
        let specs: Vec<TensorSpec<'_>> = case
            .tensors
            .iter()
            .zip(&quantised)
            .map(|((kind, shape, v), q)| match q {
                Some((q, scales)) => TensorSpec {
                    id: TensorId::new(*kind, 1, 0),
                    dtype: Dtype::Q8,
                    shape,
                    data: bytemuck::cast_slice(q),
                    scales: Some(bytemuck::cast_slice(scales)),
                },
                None => TensorSpec {
                    id: TensorId::new(*kind, 1, 0),
                    dtype: Dtype::F32,
                    shape,
                    data: bytemuck::cast_slice(v),
                    scales: None,
                },
            })
            .collect();
        let mut words = vec![0u32; encoded_len(&specs).div_ceil(4)];
        let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..encoded_len(&specs)];
        // Stage 1 of the config has the case's dimensions: the loader takes every
        // tensor's shape from the schema.
        let mut config = ModelConfig {
            w8a8,
            ..ModelConfig::preset("soft_tiny").unwrap()
        };
        config.embed_dims[0] = case.dims.c;
        config.heads[0] = case.dims.heads;
        config.landmark_ratios[0] = case.dims.r;
        config.vconv_sizes[0] = case.dims.k;
        encode(&config, &specs, bytes)?;
        let weights = Weights::new(Blob::parse(bytes)?);
        let wt = SoftBlockWeights::load(&weights, &case.dims, 1, 0)?;
        let inv = InverseConfig {
            normalized: case.normalized,
            iters: 20,
            stage: 1,
            block: 0,
            keeps_p,
        };
        let mut map = case.x.clone();
        let bytes = case.dims.block_bytes::<f32>(&schedule, keeps_p);
        let mut arena = vec![0u8; bytes + 16];
        let mark = Watermark::new();
        let run = Run {
            kernels,
            executor: &Inline,
            schedule,
        };
        soft_block(
            &run,
            &mut Arena::new(&mut arena, &mark),
            &mut map,
            &case.dims,
            &wt,
            &inv,
            &mut (),
        )?;
        assert_eq!(mark.peak(), bytes);
        Ok(map)
    }

    /// The dense block output, and whether the pseudo-inverse is well posed: every head's
    /// `K2` safely non-singular (Gershgorin: each diagonal exceeds its row's off-diagonal
    /// sum by 0.05) and, for SOFT-Norm, the first Newton step a contraction with margin
    /// (`α·λ_max² ≤ 1.9`; at 2, e.g. whenever all row sums are equal, the top direction
    /// neither converges nor diverges and rounding decides, in the reference as here).
    fn dense(case: &Case) -> (Vec<f64>, bool) {
        let SoftDims {
            rows,
            cols,
            c,
            heads,
            d,
            r,
            k,
            m,
            ..
        } = case.dims;
        let n = rows * cols;
        let w = |kind: K| -> Vec<f64> {
            case.tensors
                .iter()
                .find(|t| t.0 == kind)
                .unwrap()
                .2
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        };
        let w32 = |kind: K| case.tensors.iter().find(|t| t.0 == kind).unwrap().2.clone();
        let x: Vec<f64> = case.x.iter().map(|&v| f64::from(v)).collect();
        let affine = |x: &[f64], wk: K, bk: K, ni: usize, no: usize| -> Vec<f64> {
            let (wm, b) = (w(wk), w(bk));
            let mut y = matmul(x, &wm, x.len() / ni, ni, no);
            for (i, v) in y.iter_mut().enumerate() {
                *v += b[i % no];
            }
            y
        };
        let scale = (d as f64).sqrt().sqrt();
        let q: Vec<f64> = affine(&x, K::QWeight, K::QBias, c, c)
            .iter()
            .map(|v| v / scale)
            .collect();
        let v = affine(&x, K::VWeight, K::VBias, c, c);
        let lw = w(K::LandmarkWeight);
        let lcols = cols / r;
        let mut landmarks = vec![vec![0.0; m * d]; heads];
        for (j, lm) in landmarks.iter_mut().enumerate() {
            for l in 0..m {
                let row = &mut lm[l * d..(l + 1) * d];
                for ky in 0..r {
                    for kx in 0..r {
                        let t = ((l / lcols) * r + ky) * cols + (l % lcols) * r + kx;
                        for ci in 0..d {
                            for (o, out) in row.iter_mut().enumerate() {
                                *out +=
                                    lw[((ky * r + kx) * d + ci) * d + o] * q[t * c + j * d + ci];
                            }
                        }
                    }
                }
                let norm = (w32(K::LandmarkNormWeight), w32(K::LandmarkNormBias));
                reference::layer_norm(row, &norm.0, &norm.1, 1e-5);
                for v in row.iter_mut() {
                    *v = reference::gelu_erf(*v);
                }
            }
        }
        let k2s: Vec<Vec<f64>> = landmarks
            .iter()
            .map(|lm| {
                (0..m * m)
                    .map(|ab| reference::gaussian(&lm[ab / m * d..][..d], &lm[ab % m * d..][..d]))
                    .collect()
            })
            .collect();
        let row_sums = |k2: &[f64]| -> Vec<f64> { k2.chunks(m).map(|r| r.iter().sum()).collect() };
        let separated = k2s.iter().all(|k2| {
            k2.chunks(m)
                .enumerate()
                .all(|(a, row)| 2.0 * row[a] - row.iter().sum::<f64>() > 0.05)
        });
        let newton = |mut vv: Vec<f64>, p: &[f64]| {
            for _ in 0..20 {
                let vpv = matmul(&matmul(&vv, p, m, m, m), &vv, m, m, m);
                vv = vv.iter().zip(&vpv).map(|(a, b)| 2.0 * a - b).collect();
            }
            vv
        };
        let mut global_alpha = 0.0;
        let mut well_posed = separated;
        if case.normalized {
            let max = k2s
                .iter()
                .flat_map(|k2| row_sums(k2))
                .fold(f64::MIN, f64::max);
            global_alpha = 2.0 / (max * max);
            let gap = |alpha: f64| {
                k2s.iter()
                    .map(|k2| {
                        let vv: Vec<f64> = k2.iter().map(|x| alpha * x).collect();
                        let prod = matmul(k2, &vv, m, m, m);
                        (0..m)
                            .map(|jj| {
                                (0..m)
                                    .map(|i| ((i == jj) as u8 as f64 - prod[i * m + jj]).abs())
                                    .sum::<f64>()
                            })
                            .fold(f64::MIN, f64::max)
                    })
                    .fold(f64::MIN, f64::max)
            };
            let mut halvings = 0;
            while gap(global_alpha) > 1.01 && halvings < 10 {
                global_alpha *= 0.5;
                halvings += 1;
            }
            for k2 in &k2s {
                let mut e = vec![1.0; m];
                let mut lambda = 0.0;
                for _ in 0..200 {
                    let next = matmul(k2, &e, m, m, 1);
                    lambda = next.iter().map(|x| x * x).sum::<f64>().sqrt();
                    e = next.iter().map(|x| x / lambda).collect();
                }
                well_posed &= global_alpha * lambda * lambda <= 1.9;
            }
        }
        let vw = w(K::VConvWeight);
        let pad = k / 2;
        let mut attn = vec![0.0; n * c];
        for j in 0..heads {
            let (lm, k2) = (&landmarks[j], &k2s[j]);
            let kinv = if case.normalized {
                let vv = newton(k2.iter().map(|x| global_alpha * x).collect(), k2);
                let s: Vec<f64> = row_sums(k2).iter().map(|x| 1.0 / x.sqrt()).collect();
                (0..m * m)
                    .map(|ab| s[ab / m] * vv[ab] * s[ab % m])
                    .collect::<Vec<_>>()
            } else {
                let max = row_sums(k2).into_iter().fold(f64::MIN, f64::max);
                let alpha = 1.8 / (max * max);
                let p: Vec<f64> = (0..m * m)
                    .map(|ab| k2[ab] + if ab / m == ab % m { 0.01 } else { 0.0 })
                    .collect();
                newton(p.iter().map(|x| alpha * x).collect(), &p)
            };
            let k1: Vec<f64> = (0..n * m)
                .map(|tl| {
                    reference::gaussian(&q[tl / m * c + j * d..][..d], &lm[tl % m * d..][..d])
                })
                .collect();
            let vh: Vec<f64> = (0..n * d)
                .map(|ti| v[ti / d * c + j * d + ti % d])
                .collect();
            let k1t: Vec<f64> = (0..m * n).map(|lt| k1[lt % n * m + lt / n]).collect();
            let out = matmul(
                &matmul(&k1, &kinv, n, m, m),
                &matmul(&k1t, &vh, m, n, d),
                n,
                m,
                d,
            );
            for t in 0..n {
                let (y, xx) = (t / cols, t % cols);
                for i in 0..d {
                    let mut conv = 0.0;
                    for dy in 0..k {
                        for dx in 0..k {
                            let (yy, xs) = (
                                (y + dy) as isize - pad as isize,
                                (xx + dx) as isize - pad as isize,
                            );
                            if yy >= 0 && xs >= 0 && (yy as usize) < rows && (xs as usize) < cols {
                                conv += vw[(j * k + dy) * k + dx]
                                    * vh[(yy as usize * cols + xs as usize) * d + i];
                            }
                        }
                    }
                    attn[t * c + j * d + i] = out[t * d + i] + conv;
                }
            }
        }
        let projected = affine(&attn, K::OutWeight, K::OutBias, c, c);
        let mut y: Vec<f64> = x.iter().zip(&projected).map(|(a, b)| a + b).collect();
        for tok in y.chunks_mut(c) {
            reference::layer_norm(tok, &w32(K::Norm1Weight), &w32(K::Norm1Bias), 1e-5);
        }
        let h: Vec<f64> = affine(&y, K::Mlp1Weight, K::Mlp1Bias, c, 4 * c)
            .iter()
            .map(|&x| reference::gelu_tanh(x))
            .collect();
        let f = affine(&h, K::Mlp2Weight, K::Mlp2Bias, 4 * c, c);
        for (a, b) in y.iter_mut().zip(&f) {
            *a += b;
        }
        for tok in y.chunks_mut(c) {
            reference::layer_norm(tok, &w32(K::Norm2Weight), &w32(K::Norm2Bias), 1e-5);
        }
        (y, well_posed)
    }

    /// Forming `P` again at every step gives the bits of keeping it, in every schedule and
    /// kernel set, and each arena peak is its plan (`streaming` checks it).
    #[test]
    fn pseudo_inverse_forming_p_gives_the_bits_of_keeping_it() {
        for normalized in [false, true] {
            // m = 64 landmarks of 2 heads of 16 over 16×16 tokens.
            let case = case(16, 16, 2, 16, 2, 3, normalized, 5);
            let want = streaming(&case, Kernels::generic(), Schedule::COMPACT).unwrap();
            let schedules = [(256, true, 1), (64, true, 3), (8, false, 2), (8, false, 1)];
            for (chunk, whole, workers) in schedules {
                let schedule = Schedule {
                    chunk,
                    whole_maps: whole,
                    workers,
                    min_split_macs: 0,
                };
                for kernels in Kernels::available() {
                    for keeps_p in [false, true] {
                        let got = streaming_keeping(&case, kernels, schedule, keeps_p).unwrap();
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{schedule:?} {} keeps P {keeps_p}",
                            kernels.name()
                        );
                    }
                }
            }
            // Keeping `P` costs one m×m matrix more.
            let compact = Schedule::COMPACT;
            let (formed, kept) = (
                case.dims.block_bytes::<f32>(&compact, false),
                case.dims.block_bytes::<f32>(&compact, true),
            );
            assert_eq!(kept - formed, 64 * 64 * 4, "{formed} {kept}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn streaming_block_matches_dense_evaluation(
            r in prop::sample::select(vec![2usize, 4]),
            extra_rows in 0usize..6,
            extra_cols in 0usize..6,
            heads in 1usize..4,
            d in prop::sample::select(vec![4usize, 8]),
            k in prop::sample::select(vec![1usize, 3, 5]),
            normalized in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let case = case(r + extra_rows, 2 * r + extra_cols, heads, d, r, k, normalized, seed);
            let (want, well_posed) = dense(&case);
            // Without `+0.01·I` (SOFT-Norm), an ill-posed inverse amplifies rounding without
            // bound; the golden tests pin the engine to the reference on such cases.
            prop_assume!(well_posed || !normalized);
            let got = streaming(&case, Kernels::generic(), Schedule::COMPACT).unwrap();
            let err = got.iter().zip(&want).fold(0.0f64, |e, (g, w)| e.max((f64::from(*g) - w).abs()));
            prop_assert!(err < 2e-4, "max abs error {err}");
            // Every layout, chunk size and worker split gives the same bits.
            for (chunk, whole, workers) in [(3, false, 2), (5, true, 1), (4, true, 3), (64, true, 2)] {
                let schedule = Schedule { chunk, whole_maps: whole, workers, min_split_macs: 0 };
                let other = streaming(&case, Kernels::generic(), schedule).unwrap();
                prop_assert!(got.iter().zip(&other).all(|(a, b)| a.to_bits() == b.to_bits()), "{schedule:?}");
            }
        }

        /// W8A8: near the dense evaluation (int8 rounding of every linear input and
        /// weight), and the same bits on every layout, split and kernel set. Heads at
        /// least 8 wide: a 4-wide token's int8 rounding alone reached 0.27 once.
        #[test]
        fn w8a8_block_is_close_and_layout_independent(
            r in prop::sample::select(vec![2usize, 4]),
            extra_rows in 0usize..4,
            extra_cols in 0usize..4,
            heads in 1usize..4,
            d in prop::sample::select(vec![8usize, 16]),
            k in prop::sample::select(vec![1usize, 3]),
            seed in any::<u64>(),
        ) {
            let mut case = case(r + extra_rows, 2 * r + extra_cols, heads, d, r, k, false, seed);
            let (want, well_posed) = dense(&case);
            prop_assume!(well_posed);
            case.dims.w8a8 = true;
            let got = streaming(&case, Kernels::generic(), Schedule::COMPACT).unwrap();
            let err = got.iter().zip(&want).fold(0.0f64, |e, (g, w)| e.max((f64::from(*g) - w).abs()));
            prop_assert!(err < 0.25, "max abs error {err}");
            for (chunk, whole, workers) in [(3, false, 2), (5, true, 1), (4, true, 3), (64, true, 2)] {
                let schedule = Schedule { chunk, whole_maps: whole, workers, min_split_macs: 0 };
                for kernels in [Kernels::generic(), Kernels::detect()] {
                    let other = streaming(&case, kernels, schedule).unwrap();
                    prop_assert!(got.iter().zip(&other).all(|(a, b)| a.to_bits() == b.to_bits()), "{schedule:?} {}", kernels.name());
                }
            }
        }
    }
}
