//! The pseudo-inverse of `K2` by Newton–Schulz, and `Z = pinv(K2)·K1ᵀV`.
//!
//! Both products of every step are computed in full. Every iterate is a polynomial in `K2`
//! (or `K2 + 0.01·I`), so `V·P` and `V·P·V` are symmetric in exact arithmetic, but not in
//! f32, and their rounding must go on as it is: mirroring `V·P` leaves a first-order error
//! term (`E − sym(E·P)·P⁻¹` instead of `−E·P·E`) that diverges on an ill-conditioned `K2`
//! (see `ill_conditioned_kernel_needs_whole_products`), and mirroring only `V·P·V`, a
//! quarter of the multiply-adds saved, made 400 random blocks' outputs 10–20× less
//! accurate against an f64 evaluation (p99 7.2e-4 instead of 3.8e-5). The iteration count
//! is the reference's.
//!
//! `P` is stored only where that costs no peak byte (another step of the block is larger,
//! as everywhere in soft_tiny at 224²). Else `V·P` forms it again, [`PANEL`] columns at a
//! time, at every step: it is a function of the landmarks, which stay alive. A head then
//! keeps two `m×m` matrices instead of three (a third less at soft_tiny's 448² peak), for
//! `m²·d` more Gaussian terms per step, as much again as a product with `m = d`. Each
//! output still sums over the whole depth in order, so the panels change no bit.

use core::ops::Range;

use soft_kernels::{Kernels, Lhs, Out, Rhs, Start, Strided};

use crate::arena::Arena;
use crate::error::{Error, Result};
use crate::exec::{carve, carve_ref, per_worker, split, Parts, Run, Schedule};
use crate::scratch::{emit_copies, scratch, Emit};
use crate::soft_block::SoftDims;

/// Most rows of the second product per kernel call (each worker's block scratch).
const BLOCK_ROWS: usize = 48;

/// Columns of `P` formed at a time: two AVX-512 register blocks wide; with heads of 32
/// (every published config) the panel takes no byte beyond what `Z` needs.
const PANEL: usize = 32;

/// Rows of the second product per kernel call: the schedule's chunk, up to [`BLOCK_ROWS`].
fn block_rows(s: &Schedule) -> usize {
    s.chunk.clamp(1, BLOCK_ROWS)
}

/// Columns of the panels of an `m×m` product.
fn panel_cols(m: usize) -> usize {
    PANEL.min(m).max(1)
}

/// How the pseudo-inverse of `K2` is formed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InverseConfig {
    pub normalized: bool,
    pub iters: usize,
    pub stage: u8,
    pub block: u16,
    /// Keep `P` whole rather than form it again at every step: the planner's choice
    /// (`MemoryPlan::newton_keeps_p`), the bits are the same either way.
    pub keeps_p: bool,
}

/// How a block's heads are split among the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Whole heads per worker, each worker with its own scratch (enough heads).
    Heads(usize),
    /// One head at a time, its products split by rows among this many workers.
    Rows(usize),
}

impl Split {
    fn of(heads: usize, m: usize, s: &Schedule) -> Split {
        if s.workers > 1 && heads >= s.workers {
            Split::Heads(s.workers)
        } else {
            Split::Rows(s.workers.min(m).max(1))
        }
    }

    /// Scratch copies.
    fn copies(self) -> usize {
        match self {
            Split::Heads(w) => w,
            Split::Rows(_) => 1,
        }
    }

    /// Workers splitting one product by rows.
    fn row_workers(self) -> usize {
        match self {
            Split::Heads(_) => 1,
            Split::Rows(w) => w,
        }
    }
}

/// Values of the buffer that holds a panel of `P`, each row worker's rows of the second
/// product, then `Z`.
fn work_len(m: usize, d: usize, row_workers: usize, s: &Schedule) -> usize {
    (m * d)
        .max(row_workers * block_rows(s) * m)
        .max(m * panel_cols(m))
}

/// The scratch of the pseudo-inverse step of a block with `heads` heads, with `P` kept
/// whole or formed in panels.
pub(crate) fn scratch_buffers(
    m: usize,
    d: usize,
    heads: usize,
    s: &Schedule,
    keeps_p: bool,
    emit: Emit<'_, '_>,
) {
    let split = Split::of(heads, m, s);
    let work = work_len(m, d, split.row_workers(), s);
    emit_copies(
        emit,
        split.copies(),
        &NewtonScratch::<f32>::layout(m, keeps_p, work),
    );
}

/// Bytes of one copy of [`NewtonScratch`] with `P` formed in panels, but its `work`
/// (which is `O(m·d)`): the two `m×m` matrices and the `m` scale values.
pub(crate) fn matrix_bytes(m: usize) -> usize {
    NewtonScratch::<f32>::bytes(m, false, 0)
}

scratch! {
    /// The pseudo-inverse of one head at a time (one copy per head worker).
    pub(crate) struct NewtonScratch(m: usize, keep: bool, work: usize) {
        /// `P = K2 (+ 0.01·I)`, where it is kept.
        p: [f32; usize::from(keep) * m * m] in Landmarks,
        /// `K2` (unless `P` is kept), then the iterate `V`.
        v: [f32; m * m] in Landmarks,
        /// `V·P`, then the next iterate (SOFT-Norm's search: `alpha·K2`).
        t: [f32; m * m] in Landmarks,
        /// SOFT-Norm's `1/√(row sums of K2)`.
        scale: [f32; m] in Landmarks,
        /// A column panel of `P` (or of `K2·V`); each row worker's block of rows of
        /// `(V·P)·V`; then one head's `Z` before it replaces `K1ᵀV`.
        work: [f32; work] in Landmarks,
    }
}

/// A matrix formed a block at a time where a product needs it, unless it is stored.
trait Columns: Sync {
    /// The whole row-major matrix, if it is stored.
    fn stored(&self) -> Option<&[f32]> {
        None
    }

    /// Rows `rows`, columns `cols`, row-major into `out` (`cols.len()` values a row).
    fn block(
        &self,
        k: &Kernels,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<()>;
}

/// `K2` of one head, the Gaussian kernel of its landmarks against themselves, plus
/// `0.01·I` with `ridge` (plain SOFT's `P`).
struct Kernel<'a> {
    /// The landmarks, transposed: `d × m`.
    lt: Strided<'a>,
    ridge: bool,
}

impl<'a> Kernel<'a> {
    /// Head `h` of the landmarks `lm` (`[head][d][m]`).
    fn of(lm: &'a [f32], dims: &SoftDims, h: usize, ridge: bool) -> Result<Self> {
        let (d, m) = (dims.d, dims.m);
        let lt = Strided::rows_of(lm.get(h * d * m..).unwrap_or_default(), d, m, m)?;
        Ok(Kernel { lt, ridge })
    }

    /// The whole `m×m` matrix into `out`.
    fn whole(&self, k: &Kernels, out: &mut [f32]) -> Result<()> {
        let m = self.lt.cols();
        self.block(k, 0..m, 0..m, out)
    }
}

impl Columns for Kernel<'_> {
    fn block(
        &self,
        k: &Kernels,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let (d, m, w) = (self.lt.rows(), self.lt.cols(), cols.len());
        // The landmarks as rows: L[a][i] = lt[i·m + a].
        let q = Strided::new(self.lt.data(), m, d, 1, m)?.row_range(rows.start, rows.len());
        let lt = self.lt.col_range(cols.start, w);
        k.gaussian(&q, &lt, &mut Out::new(out, rows.len(), w, w)?)?;
        if self.ridge {
            for i in rows.clone().filter(|i| cols.contains(i)) {
                if let Some(diag) = out.get_mut((i - rows.start) * w + (i - cols.start)) {
                    *diag += 0.01;
                }
            }
        }
        Ok(())
    }
}

/// A stored matrix (`block` copies from it).
struct Stored<'a>(&'a [f32], usize);

impl Columns for Stored<'_> {
    fn stored(&self) -> Option<&[f32]> {
        Some(self.0)
    }

    fn block(
        &self,
        _: &Kernels,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let (p, m, w) = (self.0, self.1, cols.len());
        for (i, row) in rows.zip(out.chunks_exact_mut(w.max(1))) {
            row.copy_from_slice(
                p.get(i * m + cols.start..i * m + cols.end)
                    .unwrap_or_default(),
            );
        }
        Ok(())
    }
}

/// Largest row sum of an `m×m` matrix (the reference scales its first step by it); each
/// row sums in order.
fn max_row_sum(k2: &[f32], m: usize) -> f32 {
    k2.chunks_exact(m)
        .map(|row| row.iter().fold(0.0f32, |a, v| a + v))
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Max column sum of `|I − A·B|` (the reference's convergence test for SOFT-Norm); each
/// column sums in row order. `A·B` is formed a column panel at a time in `panel`.
fn identity_gap(run: &Run<'_>, a: &[f32], b: &[f32], panel: &mut [f32], m: usize) -> Result<f32> {
    let lhs = Lhs::new(Strided::rows_of(a, m, m, m)?);
    let rhs = Rhs::f32(Strided::rows_of(b, m, m, m)?)?;
    let width = panel_cols(m);
    let mut worst = f32::NEG_INFINITY;
    for c0 in (0..m).step_by(width) {
        let w = width.min(m - c0);
        let prod = panel.get_mut(..m * w).unwrap_or_default();
        let mut out = Out::new(prod, m, w, w)?;
        run.kernels
            .gemm(&lhs, &rhs.col_range(c0, w), Start::Zero, &mut out)?;
        for j in 0..w {
            let sum = out
                .data()
                .chunks_exact(w)
                .enumerate()
                .fold(0.0f32, |acc, (i, row)| {
                    let e = if i == c0 + j { 1.0 } else { 0.0 };
                    acc + libm::fabsf(e - row.get(j).copied().unwrap_or(0.0))
                });
            worst = worst.max(sum);
        }
    }
    Ok(worst)
}

/// Per head: `Z_h = pinv(K2_h) · S_h`, written over `S_h` (`[head][m][d]`).
pub(crate) fn solve(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    dims: &SoftDims,
    lm: &[f32],
    s: &mut [f32],
    inv: &InverseConfig,
) -> Result<()> {
    let (d, m, heads) = (dims.d, dims.m, dims.heads);
    let how = Split::of(heads, m, &run.schedule);
    let work = work_len(m, d, how.row_workers(), &run.schedule);
    let mut copies = per_worker(how.copies(), || {
        NewtonScratch::<f32>::alloc(ar, m, inv.keeps_p, work)
    })?;
    // SOFT-Norm scales all heads by one alpha, halved until the first step contracts.
    let mut alpha = None;
    if inv.normalized {
        let Some(ns) = copies.first_mut() else {
            return Ok(());
        };
        let mut max_sum = f32::NEG_INFINITY;
        for h in 0..heads {
            Kernel::of(lm, dims, h, false)?.whole(run.kernels, ns.v)?;
            max_sum = max_sum.max(max_row_sum(ns.v, m));
        }
        let mut a = 2.0 / (max_sum * max_sum);
        let mut gap = |alpha: f32| -> Result<f32> {
            let mut worst = f32::NEG_INFINITY;
            for h in 0..heads {
                Kernel::of(lm, dims, h, false)?.whole(run.kernels, ns.v)?;
                for (tv, &kv) in ns.t.iter_mut().zip(ns.v.iter()) {
                    *tv = alpha * kv;
                }
                worst = worst.max(identity_gap(run, ns.v, ns.t, ns.work, m)?);
            }
            Ok(worst)
        };
        let mut pnorm = gap(a)?;
        let mut halvings = 0;
        while pnorm > 1.01 && halvings < 10 {
            a *= 0.5;
            pnorm = gap(a)?;
            halvings += 1;
        }
        alpha = Some(a);
    }

    match how {
        Split::Rows(_) => {
            let Some(ns) = copies.first_mut() else {
                return Ok(());
            };
            for (h, sh) in s.chunks_exact_mut(m * d).enumerate().take(heads) {
                invert_head(run, ns, lm, dims, h, alpha, inv, sh)?;
            }
            Ok(())
        }
        Split::Heads(workers) => {
            // Each worker inverts whole heads with its own scratch; inside, one thread.
            let inner = Run {
                schedule: Schedule {
                    workers: 1,
                    ..run.schedule
                },
                ..*run
            };
            let parts: Parts<_> = copies
                .iter_mut()
                .zip(carve(s, m * d, heads, workers))
                .enumerate()
                .map(|(w, parts)| (split(heads, workers, w), parts))
                .collect();
            run.try_parallel(parts, |(range, (ns, s))| {
                for (h, sh) in range.clone().zip(s.chunks_exact_mut(m * d)) {
                    invert_head(&inner, ns, lm, dims, h, alpha, inv, sh)?;
                }
                Ok(())
            })
        }
    }
}

/// Head `h`: `K2`, its pseudo-inverse (`alpha`: SOFT-Norm's shared scale), and
/// `Z_h = pinv · S_h` over `sh`.
#[allow(clippy::too_many_arguments)]
fn invert_head(
    run: &Run<'_>,
    ns: &mut NewtonScratch<'_, f32>,
    lm: &[f32],
    dims: &SoftDims,
    h: usize,
    alpha: Option<f32>,
    inv: &InverseConfig,
    sh: &mut [f32],
) -> Result<()> {
    let (d, m) = (dims.d, dims.m);
    // K2 where P is kept, else where V0 = alpha·P is formed in place.
    let keep = !ns.p.is_empty();
    let k2 = if keep { &mut *ns.p } else { &mut *ns.v };
    Kernel::of(lm, dims, h, false)?.whole(run.kernels, k2)?;
    let first = match alpha {
        Some(alpha) => {
            // SOFT-Norm's s = 1/sqrt(row sums of K2), while K2 is at hand.
            for (si, row) in ns.scale.iter_mut().zip(k2.chunks_exact(m)) {
                *si = 1.0 / libm::sqrtf(row.iter().fold(0.0f32, |a, x| a + x));
            }
            alpha
        }
        None => {
            let max_sum = max_row_sum(k2, m);
            for (i, row) in k2.chunks_exact_mut(m).enumerate() {
                if let Some(diag) = row.get_mut(i) {
                    *diag += 0.01;
                }
            }
            1.8 / (max_sum * max_sum)
        }
    };
    if keep {
        for (vv, &pv) in ns.v.iter_mut().zip(ns.p.iter()) {
            *vv = first * pv;
        }
        newton_schulz(run, ns.v, &Stored(ns.p, m), ns.t, ns.work, m, inv.iters)?;
    } else {
        for vv in ns.v.iter_mut() {
            *vv *= first;
        }
        let p = Kernel::of(lm, dims, h, alpha.is_none())?;
        newton_schulz(run, ns.v, &p, ns.t, ns.work, m, inv.iters)?;
    }
    if alpha.is_some() {
        // Kinv = diag(s)·V·diag(s).
        for (vrow, &sa) in ns.v.chunks_exact_mut(m).zip(ns.scale.iter()) {
            for (vv, &sb) in vrow.iter_mut().zip(ns.scale.iter()) {
                *vv = sa * *vv * sb;
            }
        }
    }
    if !ns.v.iter().all(|x| x.is_finite()) {
        return Err(Error::NonFiniteAttention {
            stage: inv.stage,
            block: inv.block,
        });
    }
    // Z_h = V · S_h, split by rows.
    let workers = run.workers_for(m, m * m * d);
    let lhs = Lhs::new(Strided::rows_of(ns.v, m, m, m)?);
    let rhs = Rhs::f32(Strided::rows_of(sh, m, d, d)?)?;
    let zt = ns.work.get_mut(..m * d).unwrap_or_default();
    product_rows(run, &lhs, &rhs, zt, d, 0, workers)?;
    sh.copy_from_slice(ns.work.get(..m * d).unwrap_or_default());
    Ok(())
}

/// `t = v·P` for `m×m` matrices, split by rows among `workers`. Unless `P` is stored it
/// is formed [`PANEL`] columns at a time in `panel`, each sum still over the whole depth.
fn times_p(
    run: &Run<'_>,
    v: &[f32],
    p: &impl Columns,
    t: &mut [f32],
    panel: &mut [f32],
    m: usize,
    workers: usize,
) -> Result<()> {
    let k = run.kernels;
    let lhs = Lhs::new(Strided::rows_of(v, m, m, m)?);
    let width = if p.stored().is_some() {
        m.max(1)
    } else {
        panel_cols(m)
    };
    for c0 in (0..m).step_by(width) {
        let cols = c0..(c0 + width).min(m);
        let w = cols.len();
        let rhs = match p.stored() {
            Some(whole) => Rhs::f32(Strided::rows_of(whole, m, m, m)?)?.col_range(c0, w),
            None => {
                let panel = panel.get_mut(..m * w).unwrap_or_default();
                p.block(k, 0..m, cols.clone(), panel)?;
                Rhs::f32(Strided::rows_of(panel, m, w, w)?)?
            }
        };
        product_rows(run, &lhs, &rhs, t, m, c0, workers)?;
    }
    Ok(())
}

/// `lhs · rhs` into columns `c0..` of `out` (rows `stride` apart), split by rows among
/// `workers`. Inlined: out of line, its frame added 290 bytes to the M4's stack peak.
#[inline(always)]
fn product_rows(
    run: &Run<'_>,
    lhs: &Lhs<'_>,
    rhs: &Rhs<'_>,
    out: &mut [f32],
    stride: usize,
    c0: usize,
    workers: usize,
) -> Result<()> {
    let rows = lhs.rows();
    let parts: Parts<_> = carve(out, stride, rows, workers)
        .into_iter()
        .enumerate()
        .map(|(i, out)| (split(rows, workers, i), out))
        .collect();
    run.try_parallel(parts, |(range, out)| {
        let out = out.get_mut(c0..).unwrap_or_default();
        let mut out = Out::new(out, range.len(), rhs.cols(), stride)?;
        let lhs = lhs.row_range(range.start, range.len());
        Ok(run.kernels.gemm(&lhs, rhs, Start::Zero, &mut out)?)
    })
}

/// Newton–Schulz: `iters` times `V = 2V − (V·P)·V`, exactly the reference's count and
/// order. `t` is scratch the size of `V`; `work` holds a panel of `P` (unless it is
/// stored), then a block of rows per worker.
fn newton_schulz(
    run: &Run<'_>,
    v: &mut [f32],
    p: &impl Columns,
    t: &mut [f32],
    work: &mut [f32],
    m: usize,
    iters: usize,
) -> Result<()> {
    let workers = run.workers_for(m, m * m * m);
    let rows = block_rows(&run.schedule);
    let k = run.kernels;
    for _ in 0..iters {
        times_p(run, v, p, t, work, m, workers)?;
        // V' = 2V − T·V; row i of T·V needs only row i of T, so each block of rows is
        // overwritten as soon as it is done.
        let rhs = Rhs::f32(Strided::rows_of(v, m, m, m)?)?;
        let parts: Parts<_> = carve(t, m, m, workers)
            .into_iter()
            .zip(carve(work, rows * m, workers, workers))
            .zip(carve_ref(v, m, m, workers))
            .collect();
        run.try_parallel(parts, |((t, block), v)| {
            for (t, v) in t.chunks_mut(rows * m).zip(v.chunks(rows * m)) {
                let rows = t.len() / m.max(1);
                {
                    let lhs = Lhs::new(Strided::rows_of(t, rows, m, m)?);
                    let mut out = Out::new(block, rows, m, m)?;
                    k.gemm(&lhs, &rhs, Start::Zero, &mut out)?;
                }
                for ((tv, &vv), &r) in t.iter_mut().zip(v).zip(block.iter()) {
                    *tv = 2.0 * vv - r;
                }
            }
            Ok(())
        })?;
        v.swap_with_slice(t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::Watermark;
    use crate::exec::Inline;
    use proptest::prelude::*;
    use soft_kernels::rng::XorShift64;

    /// Copies the upper triangle of an `m × m` matrix onto its lower triangle.
    fn mirror_upper(a: &mut [f32], m: usize) {
        for i in 1..m {
            for j in 0..i {
                a[i * m + j] = a[j * m + i];
            }
        }
    }

    fn run_on(kernels: &'static Kernels, workers: usize, chunk: usize) -> Run<'static> {
        Run {
            kernels,
            executor: &Inline,
            schedule: Schedule {
                workers,
                chunk,
                min_split_macs: 0,
                ..Schedule::COMPACT
            },
        }
    }

    fn run(workers: usize) -> Run<'static> {
        run_on(Kernels::generic(), workers, Schedule::COMPACT.chunk)
    }

    /// A stored `m×m` matrix handed out a block at a time, as a formed `P` is: [`Stored`]
    /// that does not say it is stored, so products take the panel path.
    struct Dense<'a>(&'a [f32], usize);

    impl Columns for Dense<'_> {
        fn block(
            &self,
            k: &Kernels,
            rows: Range<usize>,
            cols: Range<usize>,
            out: &mut [f32],
        ) -> Result<()> {
            Stored(self.0, self.1).block(k, rows, cols, out)
        }
    }

    /// `out = a · b` for `m×m` matrices, one whole product.
    fn product(k: &Kernels, a: &[f32], b: &[f32], out: &mut [f32], m: usize) -> Result<()> {
        let lhs = Lhs::new(Strided::rows_of(a, m, m, m)?);
        let rhs = Rhs::f32(Strided::rows_of(b, m, m, m)?)?;
        let mut out = Out::new(out, m, m, m)?;
        Ok(k.gemm(&lhs, &rhs, Start::Zero, &mut out)?)
    }

    /// `K2` of head `h` as one Gaussian call over the whole matrix.
    fn whole_kernel(k: &Kernels, lm: &[f32], d: usize, m: usize, h: usize) -> Vec<f32> {
        let lt = Strided::rows_of(&lm[h * d * m..], d, m, m).unwrap();
        let rows = Strided::new(lt.data(), m, d, 1, m).unwrap();
        let mut k2 = vec![0.0; m * m];
        k.gaussian(&rows, &lt, &mut Out::new(&mut k2, m, m, m).unwrap())
            .unwrap();
        k2
    }

    /// Newton–Schulz with `P` stored and both products whole.
    fn whole_newton_schulz(k: &Kernels, v: &mut [f32], p: &[f32], m: usize, iters: usize) {
        let (mut t, mut r) = (vec![0.0; m * m], vec![0.0; m * m]);
        for _ in 0..iters {
            product(k, v, p, &mut t, m).unwrap();
            product(k, &t, v, &mut r, m).unwrap();
            for (vv, &rv) in v.iter_mut().zip(&r) {
                *vv = 2.0 * *vv - rv;
            }
        }
    }

    /// Max column sum of `|I − A·B|` from the whole product.
    fn whole_gap(k: &Kernels, a: &[f32], b: &[f32], m: usize) -> f32 {
        let mut prod = vec![0.0; m * m];
        product(k, a, b, &mut prod, m).unwrap();
        (0..m)
            .map(|j| {
                (0..m).fold(0.0f32, |acc, i| {
                    let e = if i == j { 1.0 } else { 0.0 };
                    acc + libm::fabsf(e - prod[i * m + j])
                })
            })
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// [`solve`] as it was with `P` stored: three whole `m×m` matrices per head, every
    /// product whole. The reference for every bit.
    fn whole_solve(
        k: &Kernels,
        dims: &SoftDims,
        lm: &[f32],
        s: &mut [f32],
        inv: &InverseConfig,
    ) -> Result<()> {
        let (d, m, heads) = (dims.d, dims.m, dims.heads);
        let mut alpha = None;
        if inv.normalized {
            let mut max_sum = f32::NEG_INFINITY;
            for h in 0..heads {
                max_sum = max_sum.max(max_row_sum(&whole_kernel(k, lm, d, m, h), m));
            }
            let mut a = 2.0 / (max_sum * max_sum);
            let gap = |alpha: f32| {
                let mut worst = f32::NEG_INFINITY;
                for h in 0..heads {
                    let p = whole_kernel(k, lm, d, m, h);
                    let v: Vec<f32> = p.iter().map(|x| alpha * x).collect();
                    worst = worst.max(whole_gap(k, &p, &v, m));
                }
                worst
            };
            let mut pnorm = gap(a);
            let mut halvings = 0;
            while pnorm > 1.01 && halvings < 10 {
                a *= 0.5;
                pnorm = gap(a);
                halvings += 1;
            }
            alpha = Some(a);
        }
        for (h, sh) in s.chunks_exact_mut(m * d).enumerate().take(heads) {
            let mut p = whole_kernel(k, lm, d, m, h);
            let mut v = match alpha {
                Some(alpha) => p.iter().map(|x| alpha * x).collect::<Vec<_>>(),
                None => {
                    let max_sum = max_row_sum(&p, m);
                    let alpha = 1.8 / (max_sum * max_sum);
                    for i in 0..m {
                        p[i * m + i] += 0.01;
                    }
                    p.iter().map(|x| alpha * x).collect()
                }
            };
            whole_newton_schulz(k, &mut v, &p, m, inv.iters);
            if alpha.is_some() {
                let scale: Vec<f32> = p
                    .chunks_exact(m)
                    .map(|row| 1.0 / libm::sqrtf(row.iter().fold(0.0f32, |a, x| a + x)))
                    .collect();
                for (i, vrow) in v.chunks_exact_mut(m).enumerate() {
                    for (j, vv) in vrow.iter_mut().enumerate() {
                        *vv = scale[i] * *vv * scale[j];
                    }
                }
            }
            if !v.iter().all(|x| x.is_finite()) {
                return Err(Error::NonFiniteAttention {
                    stage: inv.stage,
                    block: inv.block,
                });
            }
            let mut z = vec![0.0; m * d];
            let lhs = Lhs::new(Strided::rows_of(&v, m, m, m)?);
            let rhs = Rhs::f32(Strided::rows_of(sh, m, d, d)?)?;
            k.gemm(&lhs, &rhs, Start::Zero, &mut Out::new(&mut z, m, d, d)?)?;
            sh.copy_from_slice(&z);
        }
        Ok(())
    }

    /// Landmarks `[head][d][m]` about as spread as a block's (Gaussian entries between
    /// 0.05 and 1), with `twins` pairs nearly coinciding (ill-conditioned `K2`).
    fn landmarks(heads: usize, d: usize, m: usize, twins: usize, seed: u64) -> Vec<f32> {
        let mut r = XorShift64::new(seed | 1);
        let spread = 2.0 / (d as f32).sqrt();
        let mut lm: Vec<f32> = (0..heads * d * m)
            .map(|_| r.unit() * spread - 0.1)
            .collect();
        for _ in 0..twins.min(m / 2) {
            let (h, a, b) = (r.below(heads), r.below(m), r.below(m));
            for i in 0..d {
                let x = lm[(h * d + i) * m + a];
                lm[(h * d + i) * m + b] = x + 1e-3 * r.signed();
            }
        }
        lm
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// `V·P` panel by panel gives the whole product's bits, and a block of `K2` is the
    /// same block of the whole matrix, on every kernel set and worker split, `m` on and
    /// off the panel width.
    #[test]
    fn panels_give_the_whole_products_bits() {
        for k in Kernels::available() {
            for (m, d) in [
                (1, 4),
                (2, 32),
                (5, 8),
                (31, 32),
                (32, 32),
                (33, 8),
                (49, 32),
                (65, 3),
                (196, 32),
            ] {
                let lm = landmarks(1, d, m, 1, (m * 31 + d) as u64);
                let mut r = XorShift64::new(m as u64 + 5);
                let v: Vec<f32> = (0..m * m).map(|_| r.signed()).collect();
                let dims = SoftDims {
                    rows: m,
                    cols: 1,
                    c: d,
                    heads: 1,
                    d,
                    r: 1,
                    k: 1,
                    m,
                    w8a8: false,
                };
                for ridge in [false, true] {
                    let mut want_p = whole_kernel(k, &lm, d, m, 0);
                    if ridge {
                        for i in 0..m {
                            want_p[i * m + i] += 0.01;
                        }
                    }
                    let p = Kernel::of(&lm, &dims, 0, ridge).unwrap();
                    let mut got = vec![0.0; m * m];
                    p.whole(k, &mut got).unwrap();
                    assert_eq!(
                        bits(&got),
                        bits(&want_p),
                        "{} m {m} ridge {ridge}",
                        k.name()
                    );
                    let (rows, cols) = (m / 3..m, m / 2..m);
                    let mut block = vec![0.0; rows.len() * cols.len()];
                    p.block(k, rows.clone(), cols.clone(), &mut block).unwrap();
                    for (i, row) in rows.zip(block.chunks_exact(cols.len())) {
                        assert_eq!(bits(row), bits(&want_p[i * m + cols.start..(i + 1) * m]));
                    }
                    let scaled: Vec<f32> = want_p.iter().map(|x| 0.3 * x).collect();
                    let mut panel = vec![0.0; m * panel_cols(m)];
                    let gap = identity_gap(&run_on(k, 1, 8), &want_p, &scaled, &mut panel, m);
                    assert_eq!(
                        gap.unwrap().to_bits(),
                        whole_gap(k, &want_p, &scaled, m).to_bits()
                    );
                    let mut want = vec![0.0; m * m];
                    product(k, &v, &want_p, &mut want, m).unwrap();
                    for workers in 1..=3 {
                        let run = run_on(k, workers, 8);
                        let mut panel = vec![0.0; m * panel_cols(m)];
                        let mut t = vec![0.0; m * m];
                        times_p(&run, &v, &p, &mut t, &mut panel, m, workers.min(m)).unwrap();
                        assert_eq!(
                            bits(&t),
                            bits(&want),
                            "{} m {m} workers {workers}",
                            k.name()
                        );
                        let mut t = vec![0.0; m * m];
                        let stored = Stored(&want_p, m);
                        times_p(&run, &v, &stored, &mut t, &mut [], m, workers.min(m)).unwrap();
                        assert_eq!(bits(&t), bits(&want), "{} m {m} stored", k.name());
                        let mut t = vec![0.0; m * m];
                        let dense = Dense(&want_p, m);
                        times_p(&run, &v, &dense, &mut t, &mut panel, m, workers.min(m)).unwrap();
                        assert_eq!(bits(&t), bits(&want), "{} m {m} dense", k.name());
                    }
                }
            }
        }
    }

    /// [`solve`] gives the bits of the whole-matrix algorithm, the error included, for
    /// both variants, `P` formed in panels or kept, every kernel set and worker split (by
    /// heads and by rows), and its arena peak is its declared scratch.
    #[test]
    fn solve_gives_the_whole_matrix_bits() {
        let mut finite = [0, 0];
        for (m, heads, d) in [(1, 1, 4), (4, 3, 8), (33, 2, 8), (49, 3, 32), (70, 1, 32)] {
            for normalized in [false, true] {
                let inv = InverseConfig {
                    normalized,
                    iters: 20,
                    stage: 2,
                    block: 1,
                    keeps_p: false,
                };
                let dims = SoftDims {
                    rows: m,
                    cols: 1,
                    c: heads * d,
                    heads,
                    d,
                    r: 1,
                    k: 1,
                    m,
                    w8a8: false,
                };
                for twins in [0, 1] {
                    let seed = (m * 7 + heads * 3 + d + twins) as u64;
                    let lm = landmarks(heads, d, m, twins, seed);
                    let mut r = XorShift64::new(seed + 11);
                    let s0: Vec<f32> = (0..heads * m * d).map(|_| r.signed()).collect();
                    let mut want = s0.clone();
                    let want_result = whole_solve(Kernels::generic(), &dims, &lm, &mut want, &inv);
                    finite[usize::from(normalized)] += usize::from(want_result.is_ok());
                    for k in Kernels::available() {
                        // P formed in panels, then kept whole.
                        for ((workers, chunk), keeps_p) in [(1, 8), (2, 5), (3, 64), (4, 1)]
                            .into_iter()
                            .flat_map(|w| [(w, false), (w, true)])
                        {
                            let inv = InverseConfig { keeps_p, ..inv };
                            let run = run_on(k, workers, chunk);
                            let planned = crate::scratch::total(&|e| {
                                scratch_buffers(m, d, heads, &run.schedule, keeps_p, e)
                            });
                            let mut buf = vec![0u8; planned + 16];
                            let mark = Watermark::new();
                            let mut ar = Arena::new(&mut buf, &mark);
                            let mut got = s0.clone();
                            let result = solve(&run, &mut ar, &dims, &lm, &mut got, &inv);
                            let at = format!("{} m {m} heads {heads} d {d} norm {normalized} twins {twins} workers {workers} keeps P {keeps_p}", k.name());
                            assert_eq!(result, want_result, "{at}");
                            if result.is_ok() {
                                assert_eq!(bits(&got), bits(&want), "{at}");
                            }
                            assert_eq!(mark.peak(), planned, "{at}");
                        }
                    }
                }
            }
        }
        // Both variants compared on finite results, not only on errors.
        assert!(finite.iter().all(|&n| n >= 5), "{finite:?}");
    }

    /// Runs [`newton_schulz`] from `V0 = alpha·P`.
    fn iterate(p: &[f32], alpha: f32, m: usize, workers: usize) -> Vec<f32> {
        let mut v: Vec<f32> = p.iter().map(|x| alpha * x).collect();
        let mut t = vec![0.0; m * m];
        let mut work = vec![0.0; (workers * BLOCK_ROWS * m).max(m * panel_cols(m))];
        newton_schulz(
            &run(workers),
            &mut v,
            &Dense(p, m),
            &mut t,
            &mut work,
            m,
            20,
        )
        .unwrap();
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// On well-conditioned symmetric matrices, 20 steps from `V0 = P / max_row_sum²`
        /// reach the exact inverse, and the worker split changes no bit.
        #[test]
        fn newton_schulz_inverts_well_conditioned_symmetric(m in 1usize..40, seed in any::<u64>()) {
            let mut r = soft_kernels::rng::XorShift64::new(seed | 1);
            let mut rnd = || r.unit();
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
            let v = iterate(&p, 1.0 / (max_sum * max_sum), m, 1);
            let exact = soft_kernels::reference::inverse(&soft_kernels::reference::widen(&p), m);
            let scale = exact.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            for (got, want) in v.iter().zip(&exact) {
                prop_assert!((f64::from(*got) - want).abs() <= 1e-5 * scale, "{} vs {}", got, want);
            }
            for workers in [2, 3] {
                let split = iterate(&p, 1.0 / (max_sum * max_sum), m, workers);
                prop_assert!(v.iter().zip(&split).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    /// `K2 + 0.01·I` of a SOFT block whose landmarks 1 and 2 nearly coincide (condition
    /// number about 40): found by the dense-evaluation proptest.
    const ILL_CONDITIONED: [f32; 16] = [
        1.01, 0.15353628, 0.09868525, 0.43640745, 0.15353628, 1.01, 0.9503373, 0.52274054,
        0.09868525, 0.9503373, 1.01, 0.43888444, 0.43640745, 0.52274054, 0.43888444, 1.01,
    ];

    #[test]
    fn ill_conditioned_kernel_needs_whole_products() {
        let (p, m) = (&ILL_CONDITIONED, 4);
        let max_sum = max_row_sum(p, m) - 0.01;
        let alpha = 1.8 / (max_sum * max_sum);
        let exact = soft_kernels::reference::inverse(&soft_kernels::reference::widen(p), m);
        // The engine: both products whole.
        let v = iterate(p, alpha, m, 1);
        for (got, want) in v.iter().zip(&exact) {
            assert!(
                (f64::from(*got) - want).abs() < 1e-4 * 9.0,
                "{got} vs {want}"
            );
        }
        // Mirroring V·P as well: the same iteration in exact arithmetic, but it diverges.
        let mut v: Vec<f32> = p.iter().map(|x| alpha * x).collect();
        let product = |a: &[f32], b: &[f32]| -> Vec<f32> {
            (0..m * m)
                .map(|ij| (0..m).fold(0.0f32, |s, k| s + a[ij / m * m + k] * b[k * m + ij % m]))
                .collect()
        };
        for _ in 0..20 {
            let mut t = product(&v, p);
            mirror_upper(&mut t, m);
            let mut r = product(&t, &v);
            mirror_upper(&mut r, m);
            v = v.iter().zip(&r).map(|(a, b)| 2.0 * a - b).collect();
        }
        let worst = v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        assert!(worst > 1e3, "symmetrised V·P stayed bounded: {worst}");
    }
}
