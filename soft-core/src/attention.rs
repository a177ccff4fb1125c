//! SOFT attention blocks (stages 1–3) and the stage-4 softmax blocks, run in place on the
//! token map with scratch independent of the token count `N` (apart from one V ring of
//! `k` token rows): the `N×m` kernel matrix `K1` is never stored, its rows are recomputed
//! from the queries in two passes (accumulate `K1ᵀV`, then emit `K1·Z`).

use crate::arena::{bytes_for, Arena};
use crate::error::{Error, Result};
use crate::format::{TensorId, TensorKind as K};
use crate::kernels::{
    axpy, gelu_erf, gelu_tanh, identity_gap, kernel_row, landmark_kernel, layer_norm, linear,
    load_row, matmul, max_row_sum, newton_schulz, store_row, TokenElem,
};
use crate::weights::{Matrix, Vector, Weights};

/// Tokens per tile: each weight row is applied to this many tokens while in cache.
pub const TILE: usize = 8;
const SOFT_EPS: f32 = 1e-5;
const STAGE4_EPS: f32 = 1e-6;

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
}

impl SoftDims {
    fn n(&self) -> usize {
        self.rows * self.cols
    }

    fn landmark_cols(&self) -> usize {
        self.cols / self.r
    }

    /// Arena bytes of one block above the token map (see [`soft_block`]).
    pub fn scratch_bytes<E>(&self) -> usize {
        let (c, m, d) = (self.c, self.m, self.d);
        let tile = bytes_for::<f32>(TILE * c);
        let landmarks = 2 * tile;
        let accumulate = 3 * tile + bytes_for::<f32>(m);
        let solve = 3 * bytes_for::<f32>(m * m) + bytes_for::<f32>(m) + bytes_for::<f32>(m * d);
        let emit = bytes_for::<E>(self.k * self.cols * c)
            + 3 * tile
            + bytes_for::<f32>(TILE * 4 * c)
            + bytes_for::<f32>(m);
        2 * bytes_for::<f32>(m * c) + landmarks.max(accumulate).max(solve).max(emit)
    }

    /// Bytes of the `m×m` Newton–Schulz buffers, the only part that grows faster than `N`.
    pub fn newton_bytes(&self) -> usize {
        3 * bytes_for::<f32>(self.m * self.m)
    }
}

/// Weights of one SOFT block, shape-checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoftBlockWeights<'a> {
    q: Matrix<'a>,
    q_bias: Vector<'a>,
    v: Matrix<'a>,
    v_bias: Vector<'a>,
    landmark: Matrix<'a>,
    landmark_norm: (Vector<'a>, Vector<'a>),
    vconv: Vector<'a>,
    out: Matrix<'a>,
    out_bias: Vector<'a>,
    norm1: (Vector<'a>, Vector<'a>),
    mlp1: Matrix<'a>,
    mlp1_bias: Vector<'a>,
    mlp2: Matrix<'a>,
    mlp2_bias: Vector<'a>,
    norm2: (Vector<'a>, Vector<'a>),
}

impl<'a> SoftBlockWeights<'a> {
    pub fn load(w: &Weights<'a>, dims: &SoftDims, stage: u8, block: u16) -> Result<Self> {
        let id = |kind| TensorId::new(kind, stage, block);
        let (c, d, r, k) = (dims.c, dims.d, dims.r, dims.k);
        let hidden = 4 * c;
        Ok(SoftBlockWeights {
            q: w.matrix(id(K::QWeight), &[c, c])?,
            q_bias: w.vector(id(K::QBias), &[c])?,
            v: w.matrix(id(K::VWeight), &[c, c])?,
            v_bias: w.vector(id(K::VBias), &[c])?,
            landmark: w.matrix(id(K::LandmarkWeight), &[r, r, d, d])?,
            landmark_norm: (
                w.vector(id(K::LandmarkNormWeight), &[d])?,
                w.vector(id(K::LandmarkNormBias), &[d])?,
            ),
            vconv: w.vector(id(K::VConvWeight), &[dims.heads, k, k])?,
            out: w.matrix(id(K::OutWeight), &[c, c])?,
            out_bias: w.vector(id(K::OutBias), &[c])?,
            norm1: (
                w.vector(id(K::Norm1Weight), &[c])?,
                w.vector(id(K::Norm1Bias), &[c])?,
            ),
            mlp1: w.matrix(id(K::Mlp1Weight), &[c, hidden])?,
            mlp1_bias: w.vector(id(K::Mlp1Bias), &[hidden])?,
            mlp2: w.matrix(id(K::Mlp2Weight), &[hidden, c])?,
            mlp2_bias: w.vector(id(K::Mlp2Bias), &[c])?,
            norm2: (
                w.vector(id(K::Norm2Weight), &[c])?,
                w.vector(id(K::Norm2Bias), &[c])?,
            ),
        })
    }
}

/// How the pseudo-inverse of `K2` is formed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InverseConfig {
    pub normalized: bool,
    pub iters: usize,
    pub stage: u8,
    pub block: u16,
}

/// Scaled queries of a tile: `(x·Wq + b) / d^(1/4)`, as the reference divides.
fn queries(wt: &SoftBlockWeights<'_>, d: usize, x: &[f32], q: &mut [f32]) {
    linear(&wt.q, Some(&wt.q_bias), x, q);
    let scale = libm::sqrt(libm::sqrt(d as f64)) as f32;
    for v in q.iter_mut() {
        *v /= scale;
    }
}

/// Loads tokens `first..first + out.len()/c` of the map into `out`.
fn load_tokens<E: TokenElem>(map: &[E], first: usize, c: usize, out: &mut [f32]) {
    if let Some(src) = map.get(first * c..first * c + out.len()) {
        load_row(src, out);
    }
}

/// One SOFT block over the `rows×cols×c` token map, in place.
pub(crate) fn soft_block<E: TokenElem>(
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    inv: &InverseConfig,
) -> Result<()> {
    let mut ar = ar.scope();
    let lm = ar.alloc::<f32>(dims.m * dims.c)?;
    let z = ar.alloc::<f32>(dims.m * dims.c)?;
    landmarks(&mut ar.scope(), map, dims, wt, lm)?;
    accumulate_kv(&mut ar.scope(), map, dims, wt, lm, z)?;
    solve(&mut ar.scope(), dims, lm, z, inv)?;
    emit(&mut ar.scope(), map, dims, wt, lm, z)
}

/// Landmarks per head, `[head][m][d]`: `r×r` stride-`r` conv of the head's queries
/// (weights shared by all heads), LayerNorm, exact GELU.
fn landmarks<E: TokenElem>(
    ar: &mut Arena<'_>,
    map: &[E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    lm: &mut [f32],
) -> Result<()> {
    let (c, d, r, m) = (dims.c, dims.d, dims.r, dims.m);
    let xt = ar.alloc::<f32>(TILE * c)?;
    let qt = ar.alloc::<f32>(TILE * c)?;
    let lw = dims.landmark_cols();
    for l in 0..m {
        let (ly, lx) = (l / lw, l % lw);
        for head in lm.chunks_exact_mut(m * d) {
            if let Some(row) = head.get_mut(l * d..l * d + d) {
                wt.landmark.begin(None, row);
            }
        }
        // Patch positions p = ky·r + kx, in tiles.
        for p0 in (0..r * r).step_by(TILE) {
            let count = TILE.min(r * r - p0);
            for i in 0..count {
                let (ky, kx) = ((p0 + i) / r, (p0 + i) % r);
                let t = (ly * r + ky) * dims.cols + lx * r + kx;
                load_tokens(map, t, c, xt.get_mut(i * c..i * c + c).unwrap_or_default());
            }
            let (x, q) = (&xt[..count * c], &mut qt[..count * c]);
            queries(wt, d, x, q);
            for (i, qtok) in q.chunks_exact(c).enumerate() {
                for (qh, head) in qtok.chunks_exact(d).zip(lm.chunks_exact_mut(m * d)) {
                    let Some(row) = head.get_mut(l * d..l * d + d) else {
                        continue;
                    };
                    for (ci, &v) in qh.iter().enumerate() {
                        wt.landmark.accumulate((p0 + i) * d + ci, v, row);
                    }
                }
            }
        }
        for head in lm.chunks_exact_mut(m * d) {
            if let Some(row) = head.get_mut(l * d..l * d + d) {
                wt.landmark.finish(None, row);
                layer_norm(row, &wt.landmark_norm.0, &wt.landmark_norm.1, SOFT_EPS);
                for v in row.iter_mut() {
                    *v = gelu_erf(*v);
                }
            }
        }
    }
    Ok(())
}

/// Pass 1: `S_h = K1_hᵀ · V_h` (`[head][m][d]`), one token row of `K1` at a time.
fn accumulate_kv<E: TokenElem>(
    ar: &mut Arena<'_>,
    map: &[E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    lm: &[f32],
    s: &mut [f32],
) -> Result<()> {
    let (c, d, m, n) = (dims.c, dims.d, dims.m, dims.n());
    let xt = ar.alloc::<f32>(TILE * c)?;
    let qt = ar.alloc::<f32>(TILE * c)?;
    let vt = ar.alloc::<f32>(TILE * c)?;
    let k1 = ar.alloc::<f32>(m)?;
    s.fill(0.0);
    for t0 in (0..n).step_by(TILE) {
        let len = TILE.min(n - t0) * c;
        let (x, q, v) = (&mut xt[..len], &mut qt[..len], &mut vt[..len]);
        load_tokens(map, t0, c, x);
        queries(wt, d, x, q);
        linear(&wt.v, Some(&wt.v_bias), x, v);
        for (qtok, vtok) in q.chunks_exact(c).zip(v.chunks_exact(c)) {
            let heads = qtok.chunks_exact(d).zip(vtok.chunks_exact(d));
            for ((qh, vh), (lh, sh)) in
                heads.zip(lm.chunks_exact(m * d).zip(s.chunks_exact_mut(m * d)))
            {
                kernel_row(qh, lh, d, k1);
                for (&kl, srow) in k1.iter().zip(sh.chunks_exact_mut(d)) {
                    axpy(srow, kl, vh);
                }
            }
        }
    }
    Ok(())
}

/// Per head: `Z_h = pinv(K2_h) · S_h`, written over `S_h`.
fn solve(
    ar: &mut Arena<'_>,
    dims: &SoftDims,
    lm: &[f32],
    s: &mut [f32],
    inv: &InverseConfig,
) -> Result<()> {
    let (d, m) = (dims.d, dims.m);
    let p = ar.alloc::<f32>(m * m)?;
    let v = ar.alloc::<f32>(m * m)?;
    let t = ar.alloc::<f32>(m * m)?;
    let row = ar.alloc::<f32>(m)?;
    let zt = ar.alloc::<f32>(m * d)?;
    let heads = || lm.chunks_exact(m * d);

    // SOFT-Norm scales all heads by one alpha, halved until the first step contracts.
    let mut alpha = 0.0f32;
    if inv.normalized {
        let mut max_sum = f32::NEG_INFINITY;
        for lh in heads() {
            landmark_kernel(lh, d, p);
            max_sum = max_sum.max(max_row_sum(p, m));
        }
        alpha = 2.0 / (max_sum * max_sum);
        let gap = |alpha: f32, p: &mut [f32], v: &mut [f32], t: &mut [f32]| {
            let mut worst = f32::NEG_INFINITY;
            for lh in heads() {
                landmark_kernel(lh, d, p);
                for (vv, &pv) in v.iter_mut().zip(p.iter()) {
                    *vv = alpha * pv;
                }
                worst = worst.max(identity_gap(p, v, t, m));
            }
            worst
        };
        let mut pnorm = gap(alpha, p, v, t);
        let mut halvings = 0;
        while pnorm > 1.01 && halvings < 10 {
            alpha *= 0.5;
            pnorm = gap(alpha, p, v, t);
            halvings += 1;
        }
    }

    for (lh, sh) in heads().zip(s.chunks_exact_mut(m * d)) {
        landmark_kernel(lh, d, p);
        if inv.normalized {
            for (vv, &pv) in v.iter_mut().zip(p.iter()) {
                *vv = alpha * pv;
            }
        } else {
            let max_sum = max_row_sum(p, m);
            let alpha = 1.8 / (max_sum * max_sum);
            for (i, prow) in p.chunks_exact_mut(m).enumerate() {
                if let Some(diag) = prow.get_mut(i) {
                    *diag += 0.01;
                }
            }
            for (vv, &pv) in v.iter_mut().zip(p.iter()) {
                *vv = alpha * pv;
            }
        }
        newton_schulz(v, p, t, row, m, inv.iters);
        if inv.normalized {
            // Kinv = diag(s)·V·diag(s), s = 1/sqrt(row sums of K2).
            for (ri, prow) in row.iter_mut().zip(p.chunks_exact(m)) {
                *ri = 1.0 / libm::sqrtf(prow.iter().fold(0.0f32, |a, x| a + x));
            }
            for (vrow, &sa) in v.chunks_exact_mut(m).zip(row.iter()) {
                for (vv, &sb) in vrow.iter_mut().zip(row.iter()) {
                    *vv = sa * *vv * sb;
                }
            }
        }
        if !v.iter().all(|x| x.is_finite()) {
            return Err(Error::NonFiniteAttention {
                stage: inv.stage,
                block: inv.block,
            });
        }
        matmul(v, sh, zt, m, d);
        sh.copy_from_slice(zt);
    }
    Ok(())
}

/// Pass 2, in token order: attention output `K1·Z + vconv(V)`, projection, post-norm MLP,
/// written over each token. V of the original map is kept for the `k` rows the
/// depthwise conv can still reach, computed once as each row enters the window.
fn emit<E: TokenElem>(
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &SoftDims,
    wt: &SoftBlockWeights<'_>,
    lm: &[f32],
    z: &[f32],
) -> Result<()> {
    let (c, d, m, k) = (dims.c, dims.d, dims.m, dims.k);
    let (rows, cols) = (dims.rows, dims.cols);
    let row_len = cols * c;
    let ring = ar.alloc::<E>(k * row_len)?;
    let xt = ar.alloc::<f32>(TILE * c)?;
    let qt = ar.alloc::<f32>(TILE * c)?;
    let at = ar.alloc::<f32>(TILE * c)?;
    let ht = ar.alloc::<f32>(TILE * 4 * c)?;
    let k1 = ar.alloc::<f32>(m)?;
    let pad = k / 2;

    let fill_ring = |map: &[E], ring: &mut [E], y: usize, xt: &mut [f32], vt: &mut [f32]| {
        let slot = (y % k) * row_len;
        for x0 in (0..cols).step_by(TILE) {
            let len = TILE.min(cols - x0) * c;
            load_tokens(map, y * cols + x0, c, &mut xt[..len]);
            linear(&wt.v, Some(&wt.v_bias), &xt[..len], &mut vt[..len]);
            if let Some(dst) = ring.get_mut(slot + x0 * c..slot + x0 * c + len) {
                store_row(&vt[..len], dst);
            }
        }
    };
    for y in 0..pad.min(rows) {
        fill_ring(map, ring, y, xt, qt);
    }
    for y in 0..rows {
        if y + pad < rows {
            fill_ring(map, ring, y + pad, xt, qt);
        }
        for x0 in (0..cols).step_by(TILE) {
            let count = TILE.min(cols - x0);
            let len = count * c;
            let (x, q, a, h) = (
                &mut xt[..len],
                &mut qt[..len],
                &mut at[..len],
                &mut ht[..4 * len],
            );
            load_tokens(map, y * cols + x0, c, x);
            queries(wt, d, x, q);
            for (i, (qtok, atok)) in q.chunks_exact_mut(c).zip(a.chunks_exact_mut(c)).enumerate() {
                // K1 row times Z, per head.
                for ((qh, ah), (lh, zh)) in qtok
                    .chunks_exact(d)
                    .zip(atok.chunks_exact_mut(d))
                    .zip(lm.chunks_exact(m * d).zip(z.chunks_exact(m * d)))
                {
                    kernel_row(qh, lh, d, k1);
                    ah.fill(0.0);
                    for (&kl, zrow) in k1.iter().zip(zh.chunks_exact(d)) {
                        axpy(ah, kl, zrow);
                    }
                }
                // Depthwise conv of V, one kernel per head; the query row is free now.
                let conv = qtok;
                conv.fill(0.0);
                let xx = x0 + i;
                for dy in 0..k {
                    let Some(yy) = (y + dy).checked_sub(pad).filter(|&v| v < rows) else {
                        continue;
                    };
                    let slot = (yy % k) * row_len;
                    for dx in 0..k {
                        let Some(xs) = (xx + dx).checked_sub(pad).filter(|&v| v < cols) else {
                            continue;
                        };
                        let Some(vtok) = ring.get(slot + xs * c..slot + xs * c + c) else {
                            continue;
                        };
                        for (head, (ch, vh)) in conv
                            .chunks_exact_mut(d)
                            .zip(vtok.chunks_exact(d))
                            .enumerate()
                        {
                            let w = wt.vconv.get((head * k + dy) * k + dx);
                            for (o, v) in ch.iter_mut().zip(vh) {
                                *o += w * v.load();
                            }
                        }
                    }
                }
                for (o, cv) in atok.iter_mut().zip(conv.iter()) {
                    *o += *cv;
                }
            }
            // Projection, residual, norm1; MLP (tanh GELU), residual, norm2.
            linear(&wt.out, Some(&wt.out_bias), a, q);
            for (xtok, otok) in x.chunks_exact_mut(c).zip(q.chunks_exact(c)) {
                for (xv, ov) in xtok.iter_mut().zip(otok) {
                    *xv += *ov;
                }
                layer_norm(xtok, &wt.norm1.0, &wt.norm1.1, SOFT_EPS);
            }
            linear(&wt.mlp1, Some(&wt.mlp1_bias), x, h);
            for v in h.iter_mut() {
                *v = gelu_tanh(*v);
            }
            linear(&wt.mlp2, Some(&wt.mlp2_bias), h, q);
            for (xtok, ftok) in x.chunks_exact_mut(c).zip(q.chunks_exact(c)) {
                for (xv, fv) in xtok.iter_mut().zip(ftok) {
                    *xv += *fv;
                }
                layer_norm(xtok, &wt.norm2.0, &wt.norm2.1, SOFT_EPS);
            }
            let first = (y * cols + x0) * c;
            if let Some(dst) = map.get_mut(first..first + len) {
                store_row(x, dst);
            }
        }
    }
    Ok(())
}

/// Shape of the stage-4 softmax blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage4Dims {
    /// Tokens including the class token.
    pub n: usize,
    pub c: usize,
    pub heads: usize,
    pub hidden: usize,
}

impl Stage4Dims {
    pub fn scratch_bytes<E>(&self) -> usize {
        let (n, c) = (self.n, self.c);
        2 * bytes_for::<E>(n * c)
            + 4 * bytes_for::<f32>(TILE * c)
            + bytes_for::<f32>(TILE * 2 * c)
            + bytes_for::<f32>(TILE * self.hidden)
            + bytes_for::<f32>(n)
    }
}

/// Weights of one stage-4 block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stage4Weights<'a> {
    norm1: (Vector<'a>, Vector<'a>),
    q: Matrix<'a>,
    q_bias: Vector<'a>,
    kv: Matrix<'a>,
    kv_bias: Vector<'a>,
    proj: Matrix<'a>,
    proj_bias: Vector<'a>,
    norm2: (Vector<'a>, Vector<'a>),
    fc1: Matrix<'a>,
    fc1_bias: Vector<'a>,
    fc2: Matrix<'a>,
    fc2_bias: Vector<'a>,
}

impl<'a> Stage4Weights<'a> {
    pub fn load(w: &Weights<'a>, dims: &Stage4Dims, block: u16) -> Result<Self> {
        let id = |kind| TensorId::new(kind, 4, block);
        let (c, hid) = (dims.c, dims.hidden);
        Ok(Stage4Weights {
            norm1: (
                w.vector(id(K::Norm1Weight), &[c])?,
                w.vector(id(K::Norm1Bias), &[c])?,
            ),
            q: w.matrix(id(K::QWeight), &[c, c])?,
            q_bias: w.vector(id(K::QBias), &[c])?,
            kv: w.matrix(id(K::KvWeight), &[c, 2 * c])?,
            kv_bias: w.vector(id(K::KvBias), &[2 * c])?,
            proj: w.matrix(id(K::OutWeight), &[c, c])?,
            proj_bias: w.vector(id(K::OutBias), &[c])?,
            norm2: (
                w.vector(id(K::Norm2Weight), &[c])?,
                w.vector(id(K::Norm2Bias), &[c])?,
            ),
            fc1: w.matrix(id(K::Mlp1Weight), &[c, hid])?,
            fc1_bias: w.vector(id(K::Mlp1Bias), &[hid])?,
            fc2: w.matrix(id(K::Mlp2Weight), &[hid, c])?,
            fc2_bias: w.vector(id(K::Mlp2Bias), &[c])?,
        })
    }
}

/// One pre-norm softmax-attention block over `n` tokens (class token first), in place.
pub(crate) fn stage4_block<E: TokenElem>(
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &Stage4Dims,
    wt: &Stage4Weights<'_>,
) -> Result<()> {
    let (n, c, heads) = (dims.n, dims.c, dims.heads);
    let d = c / heads.max(1);
    let mut ar = ar.scope();
    let keys = ar.alloc::<E>(n * c)?;
    let values = ar.alloc::<E>(n * c)?;
    let xt = ar.alloc::<f32>(TILE * c)?;
    let yt = ar.alloc::<f32>(TILE * c)?;
    let qt = ar.alloc::<f32>(TILE * c)?;
    let ot = ar.alloc::<f32>(TILE * c)?;
    let kvt = ar.alloc::<f32>(TILE * 2 * c)?;
    let ht = ar.alloc::<f32>(TILE * dims.hidden)?;
    let scores = ar.alloc::<f32>(n)?;
    let scale = libm::pow(d as f64, -0.5) as f32;

    let normed = |map: &[E], t0: usize, len: usize, x: &mut [f32], y: &mut [f32]| {
        load_tokens(map, t0, c, &mut x[..len]);
        y[..len].copy_from_slice(&x[..len]);
        for ytok in y[..len].chunks_exact_mut(c) {
            layer_norm(ytok, &wt.norm1.0, &wt.norm1.1, STAGE4_EPS);
        }
    };
    for t0 in (0..n).step_by(TILE) {
        let count = TILE.min(n - t0);
        normed(map, t0, count * c, xt, yt);
        let kv = &mut kvt[..2 * count * c];
        linear(&wt.kv, Some(&wt.kv_bias), &yt[..count * c], kv);
        for (i, tok) in kv.chunks_exact(2 * c).enumerate() {
            let at = (t0 + i) * c;
            if let (Some(kd), Some(vd)) = (keys.get_mut(at..at + c), values.get_mut(at..at + c)) {
                store_row(&tok[..c], kd);
                store_row(&tok[c..], vd);
            }
        }
    }
    for t0 in (0..n).step_by(TILE) {
        let count = TILE.min(n - t0);
        let len = count * c;
        normed(map, t0, len, xt, yt);
        let (x, y, q, o, h) = (
            &mut xt[..len],
            &mut yt[..len],
            &mut qt[..len],
            &mut ot[..len],
            &mut ht[..count * dims.hidden],
        );
        linear(&wt.q, Some(&wt.q_bias), y, q);
        for (qtok, otok) in q.chunks_exact(c).zip(o.chunks_exact_mut(c)) {
            for (head, (qh, oh)) in qtok
                .chunks_exact(d)
                .zip(otok.chunks_exact_mut(d))
                .enumerate()
            {
                let mut max = f32::NEG_INFINITY;
                for (sc, ktok) in scores.iter_mut().zip(keys.chunks_exact(c)) {
                    let kh = ktok.get(head * d..head * d + d).unwrap_or_default();
                    let dot = qh
                        .iter()
                        .zip(kh)
                        .fold(0.0f32, |a, (qv, kv)| a + qv * kv.load());
                    *sc = dot * scale;
                    max = max.max(*sc);
                }
                let mut sum = 0.0f32;
                for sc in scores.iter_mut() {
                    *sc = libm::expf(*sc - max);
                    sum += *sc;
                }
                oh.fill(0.0);
                for (&sc, vtok) in scores.iter().zip(values.chunks_exact(c)) {
                    let p = sc / sum;
                    let vh = vtok.get(head * d..head * d + d).unwrap_or_default();
                    for (ov, vv) in oh.iter_mut().zip(vh) {
                        *ov += p * vv.load();
                    }
                }
            }
        }
        linear(&wt.proj, Some(&wt.proj_bias), o, y);
        for ((xv, yv), ov) in x.iter_mut().zip(y.iter()).zip(o.iter_mut()) {
            *xv += *yv;
            *ov = *xv;
        }
        for otok in o.chunks_exact_mut(c) {
            layer_norm(otok, &wt.norm2.0, &wt.norm2.1, STAGE4_EPS);
        }
        linear(&wt.fc1, Some(&wt.fc1_bias), o, h);
        for v in h.iter_mut() {
            *v = gelu_erf(*v);
        }
        linear(&wt.fc2, Some(&wt.fc2_bias), h, y);
        for (xv, yv) in x.iter_mut().zip(y.iter()) {
            *xv += *yv;
        }
        if let Some(dst) = map.get_mut(t0 * c..t0 * c + len) {
            store_row(x, dst);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The streaming block against a dense f64 evaluation that materialises `K1` (`N×m`)
    //! and multiplies in the reference's order, `(K1·pinv(K2))·(K1ᵀV)`.

    use super::*;
    use crate::arena::Watermark;
    use crate::config::ModelConfig;
    use crate::format::{encode, encoded_len, Blob, Dtype, TensorSpec};
    use proptest::prelude::*;

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
        let mut s = seed | 1;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
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

    fn streaming(case: &Case) -> Result<Vec<f32>> {
        let specs: Vec<TensorSpec<'_>> = case
            .tensors
            .iter()
            .map(|(kind, shape, v)| TensorSpec {
                id: TensorId::new(*kind, 1, 0),
                dtype: Dtype::F32,
                shape,
                data: bytemuck::cast_slice(v),
                scales: None,
            })
            .collect();
        let mut words = vec![0u32; encoded_len(&specs).div_ceil(4)];
        let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..encoded_len(&specs)];
        encode(&ModelConfig::preset("soft_tiny").unwrap(), &specs, bytes)?;
        let weights = Weights::new(Blob::parse(bytes)?);
        let wt = SoftBlockWeights::load(&weights, &case.dims, 1, 0)?;
        let inv = InverseConfig {
            normalized: case.normalized,
            iters: 20,
            stage: 1,
            block: 0,
        };
        let mut map = case.x.clone();
        let mut arena = vec![0u8; case.dims.scratch_bytes::<f32>() + 16];
        let mark = Watermark::new();
        soft_block(
            &mut Arena::new(&mut arena, &mark),
            &mut map,
            &case.dims,
            &wt,
            &inv,
        )?;
        assert_eq!(mark.peak(), case.dims.scratch_bytes::<f32>());
        Ok(map)
    }

    fn mat(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
        (0..n * m)
            .map(|ij| (0..k).map(|l| a[ij / m * k + l] * b[l * m + ij % m]).sum())
            .collect()
    }

    fn ln(x: &mut [f64], w: &[f32], b: &[f32]) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        for (i, v) in x.iter_mut().enumerate() {
            *v = (*v - mean) / (var + 1e-5).sqrt() * f64::from(w[i]) + f64::from(b[i]);
        }
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
            let mut y = mat(x, &wm, x.len() / ni, ni, no);
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
        let gauss = |a: &[f64], b: &[f64]| {
            (-a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / 2.0).exp()
        };
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
                ln(row, &w32(K::LandmarkNormWeight), &w32(K::LandmarkNormBias));
                for v in row.iter_mut() {
                    *v = 0.5 * *v * (1.0 + libm::erf(*v / 2f64.sqrt()));
                }
            }
        }
        let k2s: Vec<Vec<f64>> = landmarks
            .iter()
            .map(|lm| {
                (0..m * m)
                    .map(|ab| gauss(&lm[ab / m * d..][..d], &lm[ab % m * d..][..d]))
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
                let vpv = mat(&mat(&vv, p, m, m, m), &vv, m, m, m);
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
                        let prod = mat(k2, &vv, m, m, m);
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
                    let next = mat(k2, &e, m, m, 1);
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
                .map(|tl| gauss(&q[tl / m * c + j * d..][..d], &lm[tl % m * d..][..d]))
                .collect();
            let vh: Vec<f64> = (0..n * d)
                .map(|ti| v[ti / d * c + j * d + ti % d])
                .collect();
            let k1t: Vec<f64> = (0..m * n).map(|lt| k1[lt % n * m + lt / n]).collect();
            let out = mat(&mat(&k1, &kinv, n, m, m), &mat(&k1t, &vh, m, n, d), n, m, d);
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
            ln(tok, &w32(K::Norm1Weight), &w32(K::Norm1Bias));
        }
        let h: Vec<f64> = affine(&y, K::Mlp1Weight, K::Mlp1Bias, c, 4 * c)
            .iter()
            .map(|&x| {
                0.5 * x
                    * (1.0
                        + ((2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x))
                            .tanh())
            })
            .collect();
        let f = affine(&h, K::Mlp2Weight, K::Mlp2Bias, 4 * c, c);
        for (a, b) in y.iter_mut().zip(&f) {
            *a += b;
        }
        for tok in y.chunks_mut(c) {
            ln(tok, &w32(K::Norm2Weight), &w32(K::Norm2Bias));
        }
        (y, well_posed)
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
            let got = streaming(&case).unwrap();
            let err = got.iter().zip(&want).fold(0.0f64, |e, (g, w)| e.max((f64::from(*g) - w).abs()));
            prop_assert!(err < 2e-4, "max abs error {err}");
        }
    }
}
