//! The pseudo-inverse of `K2` by Newton–Schulz, and `Z = pinv(K2)·K1ᵀV`.
//!
//! Both products of every step are computed whole. Every iterate is a polynomial in `K2`
//! (or `K2 + 0.01·I`), so `V·P` and `V·P·V` are symmetric in exact arithmetic, but not in
//! f32, and their rounding must go on as it is: mirroring `V·P` leaves a first-order error
//! term (`E − sym(E·P)·P⁻¹` instead of `−E·P·E`) that diverges on an ill-conditioned `K2`
//! (see `ill_conditioned_kernel_needs_whole_products`), and mirroring only `V·P·V`, a
//! quarter of the multiply-adds saved, made 400 random blocks' outputs 10–20× less
//! accurate against an f64 evaluation (p99 7.2e-4 instead of 3.8e-5). The iteration count
//! is the reference's.

use soft_kernels::{Lhs, Out, Rhs, Start, Strided};

use crate::arena::{bytes_for, Arena};
use crate::error::{Error, Result};
use crate::exec::{carve, carve_ref, per_worker, split, Parts, Run, Schedule};
use crate::scratch::{emit_copies, scratch, Emit};
use crate::soft_block::SoftDims;

/// Most rows of the second product per kernel call (each worker's block scratch).
const BLOCK_ROWS: usize = 48;

/// Rows of the second product per kernel call: the schedule's chunk, up to [`BLOCK_ROWS`].
fn block_rows(s: &Schedule) -> usize {
    s.chunk.clamp(1, BLOCK_ROWS)
}

/// How the pseudo-inverse of `K2` is formed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InverseConfig {
    pub normalized: bool,
    pub iters: usize,
    pub stage: u8,
    pub block: u16,
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

/// Values of the buffer that holds each row worker's rows of the second product, then `Z`.
fn work_len(m: usize, d: usize, row_workers: usize, s: &Schedule) -> usize {
    (m * d).max(row_workers * block_rows(s) * m)
}

/// The scratch of the pseudo-inverse step of a block with `heads` heads.
pub(crate) fn scratch_buffers(m: usize, d: usize, heads: usize, s: &Schedule, emit: Emit<'_, '_>) {
    let split = Split::of(heads, m, s);
    let layout = NewtonScratch::<f32>::layout(m, work_len(m, d, split.row_workers(), s));
    emit_copies(emit, split.copies(), &layout);
}

/// Bytes of the three `m×m` matrices.
pub(crate) fn matrix_bytes(m: usize) -> usize {
    3 * bytes_for::<f32>(m * m)
}

scratch! {
    /// The pseudo-inverse of one head at a time (one copy per head worker).
    pub(crate) struct NewtonScratch(m: usize, work: usize) {
        /// `K2`, then `P = K2 + 0.01·I`.
        p: [f32; m * m] in Landmarks,
        /// The iterate `V`.
        v: [f32; m * m] in Landmarks,
        /// `V·P`, then the next iterate.
        t: [f32; m * m] in Landmarks,
        /// SOFT-Norm's `1/√(row sums of K2)`.
        scale: [f32; m] in Landmarks,
        /// Each row worker's block of rows of `(V·P)·V`; then one head's `Z` before it
        /// replaces `K1ᵀV`.
        work: [f32; work] in Landmarks,
    }
}

/// Largest row sum of an `m×m` matrix (the reference scales its first step by it); each
/// row sums in order.
fn max_row_sum(k2: &[f32], m: usize) -> f32 {
    k2.chunks_exact(m)
        .map(|row| row.iter().fold(0.0f32, |a, v| a + v))
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `out = a · b` for `m×m` matrices.
fn product(run: &Run<'_>, a: &[f32], b: &[f32], out: &mut [f32], m: usize) -> Result<()> {
    let lhs = Lhs::new(Strided::rows_of(a, m, m, m)?);
    let rhs = Rhs::f32(Strided::rows_of(b, m, m, m)?)?;
    let mut out = Out::new(out, m, m, m)?;
    Ok(run.kernels.gemm(&lhs, &rhs, Start::Zero, &mut out)?)
}

/// Max column sum of `|I − A·B|` (the reference's convergence test for SOFT-Norm); each
/// column sums in row order.
fn identity_gap(run: &Run<'_>, a: &[f32], b: &[f32], prod: &mut [f32], m: usize) -> Result<f32> {
    product(run, a, b, prod, m)?;
    Ok((0..m)
        .map(|j| {
            prod.chunks_exact(m)
                .enumerate()
                .fold(0.0f32, |acc, (i, row)| {
                    let e = if i == j { 1.0 } else { 0.0 };
                    acc + libm::fabsf(e - row.get(j).copied().unwrap_or(0.0))
                })
        })
        .fold(f32::NEG_INFINITY, f32::max))
}

/// `K2` of head `h`: the Gaussian kernel of its landmarks against themselves.
fn landmark_kernel(
    run: &Run<'_>,
    lm: &[f32],
    dims: &SoftDims,
    h: usize,
    k2: &mut [f32],
) -> Result<()> {
    let (d, m) = (dims.d, dims.m);
    let lt = Strided::rows_of(lm.get(h * d * m..).unwrap_or_default(), d, m, m)?;
    // The landmarks as rows: L[a][i] = lt[i·m + a].
    let rows = Strided::new(lt.data(), m, d, 1, m)?;
    Ok(run
        .kernels
        .gaussian(&rows, &lt, &mut Out::new(k2, m, m, m)?)?)
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
    let mut copies = per_worker(how.copies(), || NewtonScratch::<f32>::alloc(ar, m, work))?;
    // SOFT-Norm scales all heads by one alpha, halved until the first step contracts.
    let mut alpha = None;
    if inv.normalized {
        let Some(ns) = copies.first_mut() else {
            return Ok(());
        };
        let mut max_sum = f32::NEG_INFINITY;
        for h in 0..heads {
            landmark_kernel(run, lm, dims, h, ns.p)?;
            max_sum = max_sum.max(max_row_sum(ns.p, m));
        }
        let mut a = 2.0 / (max_sum * max_sum);
        let mut gap = |alpha: f32| -> Result<f32> {
            let mut worst = f32::NEG_INFINITY;
            for h in 0..heads {
                landmark_kernel(run, lm, dims, h, ns.p)?;
                for (vv, &pv) in ns.v.iter_mut().zip(ns.p.iter()) {
                    *vv = alpha * pv;
                }
                worst = worst.max(identity_gap(run, ns.p, ns.v, ns.t, m)?);
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
    landmark_kernel(run, lm, dims, h, ns.p)?;
    match alpha {
        Some(alpha) => {
            for (vv, &pv) in ns.v.iter_mut().zip(ns.p.iter()) {
                *vv = alpha * pv;
            }
        }
        None => {
            let max_sum = max_row_sum(ns.p, m);
            let alpha = 1.8 / (max_sum * max_sum);
            for (i, prow) in ns.p.chunks_exact_mut(m).enumerate() {
                if let Some(diag) = prow.get_mut(i) {
                    *diag += 0.01;
                }
            }
            for (vv, &pv) in ns.v.iter_mut().zip(ns.p.iter()) {
                *vv = alpha * pv;
            }
        }
    }
    newton_schulz(run, ns.v, ns.p, ns.t, ns.work, m, inv.iters)?;
    if alpha.is_some() {
        // Kinv = diag(s)·V·diag(s), s = 1/sqrt(row sums of K2).
        for (si, prow) in ns.scale.iter_mut().zip(ns.p.chunks_exact(m)) {
            *si = 1.0 / libm::sqrtf(prow.iter().fold(0.0f32, |a, x| a + x));
        }
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
    let parts: Parts<_> = carve(zt, d, m, workers)
        .into_iter()
        .enumerate()
        .map(|(w, zt)| (split(m, workers, w), zt))
        .collect();
    run.try_parallel(parts, |(range, zt)| {
        let mut out = Out::new(zt, range.len(), d, d)?;
        let lhs = lhs.row_range(range.start, range.len());
        Ok(run.kernels.gemm(&lhs, &rhs, Start::Zero, &mut out)?)
    })?;
    sh.copy_from_slice(ns.work.get(..m * d).unwrap_or_default());
    Ok(())
}

/// Newton–Schulz: `iters` times `V = 2V − (V·P)·V`, exactly the reference's count and
/// order. `t` is scratch the size of `V`; `block` holds a block of rows per worker.
pub(crate) fn newton_schulz(
    run: &Run<'_>,
    v: &mut [f32],
    p: &[f32],
    t: &mut [f32],
    block: &mut [f32],
    m: usize,
    iters: usize,
) -> Result<()> {
    let workers = run.workers_for(m, m * m * m);
    let rows = block_rows(&run.schedule);
    let k = run.kernels;
    for _ in 0..iters {
        {
            // T = V·P.
            let lhs = Lhs::new(Strided::rows_of(v, m, m, m)?);
            let rhs = Rhs::f32(Strided::rows_of(p, m, m, m)?)?;
            let parts: Parts<_> = carve(t, m, m, workers)
                .into_iter()
                .enumerate()
                .map(|(w, t)| (split(m, workers, w), t))
                .collect();
            run.try_parallel(parts, |(range, t)| {
                let mut out = Out::new(t, range.len(), m, m)?;
                let lhs = lhs.row_range(range.start, range.len());
                Ok(k.gemm(&lhs, &rhs, Start::Zero, &mut out)?)
            })?;
        }
        // V' = 2V − T·V; row i of T·V needs only row i of T, so each block of rows is
        // overwritten as soon as it is done.
        let rhs = Rhs::f32(Strided::rows_of(v, m, m, m)?)?;
        let parts: Parts<_> = carve(t, m, m, workers)
            .into_iter()
            .zip(carve(block, rows * m, workers, workers))
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
    use crate::exec::Inline;
    use proptest::prelude::*;
    use soft_kernels::Kernels;

    /// Copies the upper triangle of an `m × m` matrix onto its lower triangle.
    fn mirror_upper(a: &mut [f32], m: usize) {
        for i in 1..m {
            for j in 0..i {
                a[i * m + j] = a[j * m + i];
            }
        }
    }

    fn run(workers: usize) -> Run<'static> {
        Run {
            kernels: Kernels::generic(),
            executor: &Inline,
            schedule: Schedule {
                workers,
                ..Schedule::COMPACT
            },
        }
    }

    /// Runs [`newton_schulz`] from `V0 = alpha·P`.
    fn iterate(p: &[f32], alpha: f32, m: usize, workers: usize) -> Vec<f32> {
        let mut v: Vec<f32> = p.iter().map(|x| alpha * x).collect();
        let mut t = vec![0.0; m * m];
        let mut block = vec![0.0; workers * BLOCK_ROWS * m];
        newton_schulz(&run(workers), &mut v, p, &mut t, &mut block, m, 20).unwrap();
        v
    }

    /// Inverse by Gauss–Jordan elimination with partial pivoting, in f64.
    fn inverse_f64(a: &[f64], m: usize) -> Vec<f64> {
        let w = 2 * m;
        let mut aug = vec![0.0; m * w];
        for i in 0..m {
            aug[i * w..i * w + m].copy_from_slice(&a[i * m..(i + 1) * m]);
            aug[i * w + m + i] = 1.0;
        }
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
            for r in (0..m).filter(|&r| r != col) {
                let f = aug[r * w + col];
                for j in 0..w {
                    aug[r * w + j] -= f * aug[col * w + j];
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
            let exact = inverse_f64(&p.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), m);
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
        let exact = inverse_f64(&p.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(), m);
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
