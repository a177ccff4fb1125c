//! Stage 4: pre-norm softmax-attention blocks over the class token and the `7×7`-ish map,
//! in place. Keys are stored transposed (`[c][n]`) and values row-major (`[n][c]`), both
//! in the token type, so a chunk's scores and its weighted sum are one GEMM each per head.

use soft_kernels::{Lhs, Out, Rhs, RhsData, Start, Strided, TokenElem};

use crate::arena::Arena;
use crate::error::Result;
use crate::exec::{carve, carve_ref, Parts, Run, Schedule};
use crate::format::{TensorId, TensorKind as K};
use crate::linear::{apply, linear, quant_len, Weight};
use crate::probe::{Activity, Probe, Step};
use crate::scratch::{emit_copies, scratch, Emit};
use crate::weights::{Vector, Weights};

/// LayerNorm epsilon of the stage-4 blocks and the final norm.
pub(crate) const STAGE4_EPS: f32 = 1e-6;

/// Shape of the stage-4 softmax blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage4Dims {
    /// Tokens including the class token.
    pub n: usize,
    pub c: usize,
    pub heads: usize,
    pub hidden: usize,
    /// W8A8 linear layers (scratch for their quantised inputs).
    pub w8a8: bool,
}

impl Stage4Dims {
    fn chunk(&self, s: &Schedule) -> usize {
        s.chunk.min(self.n).max(1)
    }

    /// Parts a chunk of tokens is split into.
    fn workers(&self, s: &Schedule) -> usize {
        s.workers.min(self.chunk(s)).max(1)
    }

    /// One worker's quantised-input scratch: a chunk of its widest linear input.
    fn quant_len(&self, chunk: usize) -> usize {
        quant_len(self.w8a8, chunk, self.c.max(self.hidden))
    }

    /// The buffers of one block above the token map.
    pub fn block_buffers<E: TokenElem>(&self, s: &Schedule, emit: Emit<'_, '_>) {
        let layout = Stage4Scratch::<E>::layout(self, self.chunk(s), self.workers(s));
        emit_copies(emit, 1, &layout);
    }
}

scratch! {
    /// One stage-4 block.
    pub(crate) struct Stage4Scratch(dims: &Stage4Dims, chunk: usize, workers: usize) {
        /// Keys of every token, transposed: `[c][n]`.
        keys: [E; dims.n * dims.c] in Tokens,
        /// Values of every token, `[n][c]`.
        values: [E; dims.n * dims.c] in Tokens,
        /// A chunk of tokens, f32.
        tokens: [f32; chunk * dims.c],
        /// Their norm1 output, then each linear layer's output.
        normed: [f32; chunk * dims.c],
        /// Their queries, then their norm2 output.
        queries: [f32; chunk * dims.c],
        /// Their attention output (heads concatenated).
        heads_out: [f32; chunk * dims.c],
        /// Their keys and values, then the MLP's hidden layer.
        wide: [f32; chunk * (2 * dims.c).max(dims.hidden)],
        /// Their attention scores, then probabilities, per head in turn: `[t][n]`.
        scores: [f32; chunk * dims.n],
        /// Each worker's quantised linear inputs (W8A8).
        quant: [f32; workers * dims.quant_len(chunk)],
    }
}

/// Weights of one stage-4 block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage4Weights<'a> {
    norm1: (Vector<'a>, Vector<'a>),
    q: Weight<'a>,
    q_bias: Vector<'a>,
    kv: Weight<'a>,
    kv_bias: Vector<'a>,
    proj: Weight<'a>,
    proj_bias: Vector<'a>,
    norm2: (Vector<'a>, Vector<'a>),
    fc1: Weight<'a>,
    fc1_bias: Vector<'a>,
    fc2: Weight<'a>,
    fc2_bias: Vector<'a>,
}

impl<'a> Stage4Weights<'a> {
    pub fn load(w: &Weights<'a>, block: u16) -> Result<Self> {
        let id = |kind| TensorId::new(kind, 4, block);
        let matrix = |kind| w.schema_matrix(id(kind))?.weight();
        let vector = |kind| w.schema_vector(id(kind));
        Ok(Stage4Weights {
            norm1: (vector(K::Norm1Weight)?, vector(K::Norm1Bias)?),
            q: matrix(K::QWeight)?,
            q_bias: vector(K::QBias)?,
            kv: matrix(K::KvWeight)?,
            kv_bias: vector(K::KvBias)?,
            proj: matrix(K::OutWeight)?,
            proj_bias: vector(K::OutBias)?,
            norm2: (vector(K::Norm2Weight)?, vector(K::Norm2Bias)?),
            fc1: matrix(K::Mlp1Weight)?,
            fc1_bias: vector(K::Mlp1Bias)?,
            fc2: matrix(K::Mlp2Weight)?,
            fc2_bias: vector(K::Mlp2Bias)?,
        })
    }
}

/// Token values as a GEMM right operand, `rows × cols` with a row stride.
fn token_rhs<'a, E: TokenElem>(
    data: &'a [E],
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<Rhs<'a>> {
    let data = match E::elems(data) {
        soft_kernels::Elems::F32(v) => RhsData::F32(v),
        soft_kernels::Elems::F16(v) => RhsData::F16(v),
    };
    Ok(Rhs::new(data, rows, cols, stride)?)
}

/// One pre-norm softmax-attention block over `n` tokens (class token first), in place.
pub(crate) fn stage4_block<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &Stage4Dims,
    wt: &Stage4Weights<'_>,
    probe: &mut impl Probe,
) -> Result<()> {
    let (n, c, heads) = (dims.n, dims.c, dims.heads);
    let d = c / heads.max(1);
    let chunk = dims.chunk(&run.schedule);
    let mut ar = ar.scope();
    let workers = dims.workers(&run.schedule);
    let s = Stage4Scratch::<E>::alloc(&mut ar, dims, chunk, workers)?;
    let quant_len = dims.quant_len(chunk);
    let k = run.kernels;
    let scale = libm::pow(d as f64, -0.5) as f32;
    let wide_width = (2 * c).max(dims.hidden);

    probe.enter(Activity {
        stage: 4,
        step: Step::Attention,
    });
    // Keys (transposed) and values of every token.
    for t0 in (0..n).step_by(chunk) {
        let len = chunk.min(n - t0);
        let split_into = run.workers_for(len, len * 2 * c * c).min(workers);
        {
            let src = map.get(t0 * c..(t0 + len) * c).unwrap_or_default();
            let parts: Parts<_> = carve(s.tokens, c, len, split_into)
                .into_iter()
                .zip(carve(s.wide, wide_width, len, split_into))
                .zip(carve_ref(src, c, len, split_into))
                .zip(carve(s.quant, quant_len, split_into, split_into))
                .collect();
            run.try_parallel(parts, |(((x, kv), src), quant)| {
                let rows = x.len() / c;
                k.widen(E::elems(src), x)?;
                k.layer_norm(x, c, &wt.norm1.0, &wt.norm1.1, STAGE4_EPS)?;
                // Rows `wide_width` apart, as the loop below reads them.
                let lhs = Lhs::new(Strided::rows_of(x, rows, c, c)?);
                let mut out = Out::new(kv, rows, 2 * c, wide_width)?;
                apply(run, &wt.kv, &lhs, Start::Bias(wt.kv_bias), quant, &mut out)
            })?;
        }
        for (i, tok) in s.wide.chunks_exact(wide_width).take(len).enumerate() {
            let t = t0 + i;
            let (key, value) = tok.split_at(c.min(tok.len()));
            for (ch, &v) in key.iter().enumerate() {
                if let Some(dst) = s.keys.get_mut(ch * n + t) {
                    *dst = E::store(v);
                }
            }
            let dst = s.values.get_mut(t * c..(t + 1) * c).unwrap_or_default();
            k.narrow(value.get(..c).unwrap_or_default(), E::elems_mut(dst))?;
        }
    }
    let (keys, values) = (&*s.keys, &*s.values);
    for t0 in (0..n).step_by(chunk) {
        let len = chunk.min(n - t0);
        let split_into = run
            .workers_for(len, len * (2 * c * c + 2 * n * c))
            .min(workers);
        let span = t0 * c..(t0 + len) * c;
        probe.enter(Activity {
            stage: 4,
            step: Step::Attention,
        });
        {
            let src = map.get(span.clone()).unwrap_or_default();
            let parts: Parts<_> = carve(s.tokens, c, len, split_into)
                .into_iter()
                .zip(carve(s.normed, c, len, split_into))
                .zip(carve(s.queries, c, len, split_into))
                .zip(carve(s.heads_out, c, len, split_into))
                .zip(carve(s.scores, n, len, split_into))
                .zip(carve_ref(src, c, len, split_into))
                .zip(carve(s.quant, quant_len, split_into, split_into))
                .collect();
            run.try_parallel(parts, |((((((x, y), q), o), scores), src), quant)| {
                let rows = x.len() / c;
                k.widen(E::elems(src), x)?;
                y.copy_from_slice(x);
                k.layer_norm(y, c, &wt.norm1.0, &wt.norm1.1, STAGE4_EPS)?;
                linear(run, &wt.q, &wt.q_bias, y, rows, quant, q)?;
                for h in 0..heads {
                    // Scores: q_h · k_h, times d^-½.
                    let qh = Strided::rows_of(q.get(h * d..).unwrap_or_default(), rows, d, c)?;
                    let kh = token_rhs(keys.get(h * d * n..).unwrap_or_default(), d, n, n)?;
                    k.gemm(
                        &Lhs::new(qh),
                        &kh,
                        Start::Zero,
                        &mut Out::new(scores, rows, n, n)?,
                    )?;
                    for row in scores.chunks_exact_mut(n) {
                        let mut max = f32::NEG_INFINITY;
                        for sc in row.iter_mut() {
                            *sc *= scale;
                            max = max.max(*sc);
                        }
                        for sc in row.iter_mut() {
                            *sc -= max;
                        }
                        k.exp(row);
                        let sum = row.iter().fold(0.0f32, |a, v| a + v);
                        for sc in row.iter_mut() {
                            *sc /= sum;
                        }
                    }
                    // o_h = P · v_h.
                    let p = Strided::rows_of(scores, rows, n, n)?;
                    let vh = token_rhs(values.get(h * d..).unwrap_or_default(), n, d, c)?;
                    let mut out = Out::new(o.get_mut(h * d..).unwrap_or_default(), rows, d, c)?;
                    k.gemm(&Lhs::new(p), &vh, Start::Zero, &mut out)?;
                }
                linear(run, &wt.proj, &wt.proj_bias, o, rows, quant, y)?;
                for (xv, yv) in x.iter_mut().zip(y.iter()) {
                    *xv += *yv;
                }
                Ok(())
            })?;
        }
        probe.enter(Activity {
            stage: 4,
            step: Step::Mlp,
        });
        let split_into = run.workers_for(len, len * 2 * c * dims.hidden).min(workers);
        let parts: Parts<_> = carve(s.tokens, c, len, split_into)
            .into_iter()
            .zip(carve(s.normed, c, len, split_into))
            .zip(carve(s.queries, c, len, split_into))
            .zip(carve(s.wide, wide_width, len, split_into))
            .zip(carve(
                map.get_mut(span).unwrap_or_default(),
                c,
                len,
                split_into,
            ))
            .zip(carve(s.quant, quant_len, split_into, split_into))
            .collect();
        run.try_parallel(parts, |(((((x, y), o), h), dst), quant)| {
            let rows = x.len() / c;
            o.copy_from_slice(x);
            k.layer_norm(o, c, &wt.norm2.0, &wt.norm2.1, STAGE4_EPS)?;
            let h = h.get_mut(..rows * dims.hidden).unwrap_or_default();
            linear(run, &wt.fc1, &wt.fc1_bias, o, rows, quant, h)?;
            k.gelu_erf(h);
            linear(run, &wt.fc2, &wt.fc2_bias, h, rows, quant, y)?;
            for (xv, yv) in x.iter_mut().zip(y.iter()) {
                *xv += *yv;
            }
            Ok(k.narrow(x, E::elems_mut(dst))?)
        })?;
    }
    Ok(())
}
