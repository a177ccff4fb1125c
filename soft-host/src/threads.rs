//! Threads for the engine: an [`Executor`] that runs a step's worker tasks on a rayon
//! pool, and the options that go with it. The bits never depend on the thread count; the
//! engine splits work only across independent outputs.

use rayon::{ThreadPool, ThreadPoolBuilder};
use soft_core::{Executor, Kernels, Precision, RunOptions, Schedule};

use crate::error::{Error, Result};

/// Runs tasks on a pool of `threads` threads. Run the whole inference inside
/// [`Threads::install`]: then each step's tasks go to the running thread's own work
/// queue and the pool's idle threads take them within a microsecond or so; from outside
/// the pool every step pays a thread wake-up (about 8 µs here).
pub struct Threads {
    pool: Option<ThreadPool>,
    threads: usize,
}

impl Threads {
    /// A pool for `threads` threads in all (1..=[`soft_core::exec::MAX_WORKERS`]).
    pub fn new(threads: usize) -> Result<Threads> {
        if !(1..=soft_core::exec::MAX_WORKERS).contains(&threads) {
            return Err(Error::Usage(format!(
                "--threads must be 1 to {}, not {threads}",
                soft_core::exec::MAX_WORKERS
            )));
        }
        let pool = if threads > 1 {
            let pool = ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("soft-worker-{i}"))
                .build()
                .map_err(|e| Error::Usage(format!("cannot start {threads} threads: {e}")))?;
            Some(pool)
        } else {
            None
        };
        Ok(Threads { pool, threads })
    }

    /// Threads in all.
    pub fn count(&self) -> usize {
        self.threads
    }

    /// Runs `f` on one of the pool's threads (on this thread for a single thread).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Options for a run on these threads: the fast schedule split into one part per
    /// thread, the fastest kernels this CPU runs.
    pub fn options(&self, precision: Precision) -> RunOptions<'_> {
        RunOptions::new(precision)
            .with_schedule(Schedule::fast(self.threads))
            .with_kernels(Kernels::detect())
            .with_executor(self)
    }
}

impl Executor for Threads {
    fn run(&self, tasks: &mut [&mut (dyn FnMut() + Send)]) {
        let Some(pool) = &self.pool else {
            tasks.iter_mut().for_each(|task| task());
            return;
        };
        let Some((mine, rest)) = tasks.split_first_mut() else {
            return;
        };
        pool.in_place_scope(|scope| {
            for task in rest.iter_mut() {
                scope.spawn(move |_| task());
            }
            mine();
        });
    }
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("threads", &self.threads)
            .finish()
    }
}
