//! How a run is laid out: the kernels, the worker split, the chunk size; and the executor
//! seam through which a host runs the workers on threads (a device runs them inline).
//!
//! Work is only ever split across independent outputs (tokens, heads, matrix rows), never
//! inside a sum, so the result bits do not depend on the number of workers.

use core::ops::Range;

use soft_kernels::Kernels;

use crate::error::{Error, Result};

/// Most workers a run can be split into.
pub const MAX_WORKERS: usize = 16;
/// Most tokens per chunk.
pub const MAX_CHUNK: usize = 1024;

/// Runs a step's tasks, each exactly once, possibly at the same time on several threads.
/// The core is `no_std`; a host implements this with a thread pool.
pub trait Executor: Sync {
    /// Runs every task once and returns when all are done.
    fn run(&self, tasks: &mut [&mut (dyn FnMut() + Send)]);
}

/// Runs tasks one after another on the calling thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inline;

impl Executor for Inline {
    fn run(&self, tasks: &mut [&mut (dyn FnMut() + Send)]) {
        for task in tasks.iter_mut() {
            task();
        }
    }
}

/// How a run is laid out in its arena (or arenas) and across workers. No field changes a result bit;
/// each changes speed and the arena bytes [`plan`](crate::plan) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Schedule {
    /// Tokens per chunk: the rows each kernel call works on (1..=[`MAX_CHUNK`]). Larger
    /// chunks run faster and cost arena bytes in proportion.
    pub chunk: usize,
    /// Keep whole-map intermediates instead of streaming them through line buffers:
    /// the input image, and each SOFT block's queries and values (f32), computed once
    /// instead of in every pass (about 12 % fewer multiply-accumulates). With no
    /// row-by-row dependencies left, each step splits into one part per worker. Costs
    /// the image plus about two f32 copies of the largest token map.
    pub whole_maps: bool,
    /// Parts each step is split into (1..=[`MAX_WORKERS`]), run by the [`Executor`].
    /// Per-worker scratch is in the plan.
    pub workers: usize,
    /// Fewest multiply-accumulates worth giving a worker: a step with less work per part
    /// runs in fewer parts (handing work to another core and collecting its results
    /// costs microseconds).
    pub min_split_macs: usize,
}

impl Schedule {
    /// The smallest arena: 8-token chunks, streamed maps, one worker. The default, and
    /// what a microcontroller runs.
    pub const COMPACT: Schedule = Schedule {
        chunk: 8,
        whole_maps: false,
        workers: 1,
        min_split_macs: 0,
    };

    /// For hosts: 64-token chunks, whole maps, `workers` parts of at least half a million
    /// multiply-accumulates each.
    pub const fn fast(workers: usize) -> Schedule {
        Schedule {
            chunk: 64,
            whole_maps: true,
            workers,
            min_split_macs: 500_000,
        }
    }

    /// Checks the fields' ranges.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_CHUNK).contains(&self.chunk) {
            return Err(Error::UnsupportedConfig("schedule chunk outside 1..=1024"));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(Error::UnsupportedConfig("schedule workers outside 1..=16"));
        }
        Ok(())
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::COMPACT
    }
}

/// Everything a run's steps need besides their data.
#[derive(Clone, Copy)]
pub(crate) struct Run<'r> {
    pub kernels: &'static Kernels,
    pub executor: &'r dyn Executor,
    pub schedule: Schedule,
}

impl<'r> Run<'r> {
    /// Runs `work` once per part, the parts possibly at the same time.
    pub fn parallel<T: Send>(&self, parts: &mut [T], work: impl Fn(&mut T) + Sync) {
        if parts.len() <= 1 {
            parts.iter_mut().for_each(&work);
            return;
        }
        let work = &work;
        let mut closures: heapless::Vec<_, MAX_WORKERS> = heapless::Vec::new();
        for part in parts.iter_mut() {
            // At most MAX_WORKERS parts are ever built (see `split`); extra ones run here.
            if let Err(mut extra) = closures.push(move || work(part)) {
                extra();
            }
        }
        let mut tasks: heapless::Vec<&mut (dyn FnMut() + Send), MAX_WORKERS> = heapless::Vec::new();
        for c in closures.iter_mut() {
            // Same capacity as `closures`: never full.
            let _ = tasks.push(c);
        }
        self.executor.run(&mut tasks);
    }

    /// Runs fallible `work` once per part; the first error, if any.
    pub fn try_parallel<T: Send>(
        &self,
        mut parts: Parts<T>,
        work: impl Fn(&mut T) -> Result<()> + Sync,
    ) -> Result<()> {
        let mut slots: heapless::Vec<(&mut T, Result<()>), MAX_WORKERS> = heapless::Vec::new();
        for part in parts.iter_mut() {
            if let Err((part, _)) = slots.push((part, Ok(()))) {
                work(part)?;
            }
        }
        self.parallel(&mut slots, |(part, result)| *result = work(part));
        slots.into_iter().try_for_each(|(_, result)| result)
    }

    /// The same run on one worker: for the work inside one worker's part.
    pub fn single(&self) -> Run<'r> {
        Run {
            schedule: Schedule {
                workers: 1,
                ..self.schedule
            },
            ..*self
        }
    }

    /// Workers for `items` independent items costing `macs` multiply-accumulates in all:
    /// no more than items, and none with less than the schedule's minimum.
    pub fn workers_for(&self, items: usize, macs: usize) -> usize {
        let worth = macs / self.schedule.min_split_macs.max(1);
        self.schedule.workers.min(items).min(worth).max(1)
    }
}

/// Part `i` of `0..n` split into `parts` nearly equal ranges.
pub(crate) fn split(n: usize, parts: usize, i: usize) -> Range<usize> {
    let parts = parts.max(1);
    (n * i / parts)..(n * (i + 1) / parts)
}

/// Per-worker parts of a step.
pub(crate) type Parts<T> = heapless::Vec<T, MAX_WORKERS>;

/// The first `rows` rows (`width` values each) of `buf`, split like [`split`] into
/// `parts` consecutive pieces.
pub(crate) fn carve<T>(buf: &mut [T], width: usize, rows: usize, parts: usize) -> Parts<&mut [T]> {
    let mut out = Parts::new();
    let mut rest = buf;
    for i in 0..parts.min(MAX_WORKERS) {
        let take = (split(rows, parts, i).len() * width).min(rest.len());
        let (mine, tail) = core::mem::take(&mut rest).split_at_mut(take);
        rest = tail;
        let _ = out.push(mine);
    }
    out
}

/// `copies` allocations of one scratch declaration, one per worker.
pub(crate) fn per_worker<T>(
    copies: usize,
    mut alloc: impl FnMut() -> Result<T>,
) -> Result<Parts<T>> {
    let mut out = Parts::new();
    for _ in 0..copies {
        let _ = out.push(alloc()?);
    }
    Ok(out)
}

/// Like [`carve`], for read-only data.
pub(crate) fn carve_ref<T>(buf: &[T], width: usize, rows: usize, parts: usize) -> Parts<&[T]> {
    let mut out = Parts::new();
    let mut rest = buf;
    for i in 0..parts.min(MAX_WORKERS) {
        let take = (split(rows, parts, i).len() * width).min(rest.len());
        let (mine, tail) = rest.split_at(take);
        rest = tail;
        let _ = out.push(mine);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_index_once() {
        for n in 0..40 {
            for parts in 1..6 {
                let mut next = 0;
                for i in 0..parts {
                    let r = split(n, parts, i);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn schedules_are_checked() {
        assert!(Schedule::COMPACT.validate().is_ok());
        assert!(Schedule::fast(16).validate().is_ok());
        assert!(Schedule {
            chunk: 0,
            ..Schedule::COMPACT
        }
        .validate()
        .is_err());
        assert!(Schedule::fast(17).validate().is_err());
    }
}
