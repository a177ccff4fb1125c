//! `soft bench`: a model's speed, overall and per step, measured on this machine.
//!
//! A warm-up, then timed runs on a reproducible synthetic image ([`TestPattern`]); each
//! run is timed whole, and a [`Probe`] notes when each step starts, so the per-phase
//! times are the mean over the timed runs.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;
use soft_core::{
    Activity, Checkpoint, Kernels, Model, Precision, Probe, RunOptions, Schedule, Step,
    TestPattern, Tokens,
};

use crate::cost;
use crate::error::{Error, Result};
use crate::threads::Threads;

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Input height and width.
    pub image: (usize, usize),
    /// Threads (each step split into this many parts).
    pub threads: usize,
    /// Timed runs after the warm-up.
    pub runs: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Token maps.
    pub precision: Precision,
    /// The kernels.
    pub kernels: &'static Kernels,
    /// The compact (streaming, device) schedule instead of whole maps.
    pub compact: bool,
}

/// Mean time of one step of one stage per run.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTime {
    /// Stage 1–4, or 0 for the stem and the head.
    pub stage: u8,
    /// The step.
    pub step: Step,
    /// Mean milliseconds per run.
    pub ms: f64,
    /// Share of the sum of all phases.
    pub share: f64,
}

impl PhaseTime {
    /// A name for people, e.g. `stage 2 Newton–Schulz`.
    pub fn name(&self) -> String {
        match (self.stage, self.step) {
            (0, Step::Stem) => "stem".into(),
            (0, Step::Head) => "final norm and head".into(),
            (s, step) => format!("stage {s} {}", step_label(step)),
        }
    }
}

fn step_label(step: Step) -> &'static str {
    match step {
        Step::Stem => "stem",
        Step::PatchEmbed => "patch embedding",
        Step::Position => "position embedding",
        Step::Projections => "queries and values",
        Step::Landmarks => "landmarks",
        Step::KeyValue => "K1ᵀV pass",
        Step::Newton => "Newton–Schulz",
        Step::Attention => "attention",
        Step::Mlp => "MLP",
        Step::Head => "head",
        _ => "other",
    }
}

/// The step's name in JSON.
fn step_key(step: Step) -> &'static str {
    match step {
        Step::Stem => "stem",
        Step::PatchEmbed => "patch_embed",
        Step::Position => "position",
        Step::Projections => "projections",
        Step::Landmarks => "landmarks",
        Step::KeyValue => "key_value",
        Step::Newton => "newton_schulz",
        Step::Attention => "attention",
        Step::Mlp => "mlp",
        Step::Head => "head",
        _ => "other",
    }
}

/// A finished benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Input height and width.
    pub image: (usize, usize),
    /// Threads.
    pub threads: usize,
    /// Token maps.
    pub precision: Precision,
    /// The kernels' name.
    pub kernels: &'static str,
    /// The schedule.
    pub schedule: Schedule,
    /// Multiply-accumulates per inference ([`cost::macs_for`]).
    pub macs: u64,
    /// Arena bytes (the plan; every run hit it).
    pub arena_bytes: usize,
    /// Each timed run, milliseconds, in run order.
    pub times_ms: Vec<f64>,
    /// Steps in run order, mean per run.
    pub phases: Vec<PhaseTime>,
}

impl BenchReport {
    fn sorted(&self) -> Vec<f64> {
        let mut t = self.times_ms.clone();
        t.sort_by(f64::total_cmp);
        t
    }

    /// Median of the timed runs.
    pub fn median_ms(&self) -> f64 {
        let t = self.sorted();
        match t.len() {
            0 => 0.0,
            n if n % 2 == 1 => t[n / 2],
            n => (t[n / 2 - 1] + t[n / 2]) / 2.0,
        }
    }

    /// 90th percentile of the timed runs (nearest rank).
    pub fn p90_ms(&self) -> f64 {
        let t = self.sorted();
        let rank = (t.len() * 9).div_ceil(10).max(1);
        t.get(rank - 1).copied().unwrap_or(0.0)
    }

    /// Fastest timed run.
    pub fn min_ms(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    /// Multiply-accumulates per second at the median, in billions.
    pub fn gmac_per_s(&self) -> f64 {
        let ms = self.median_ms();
        if ms > 0.0 {
            self.macs as f64 / ms / 1e6
        } else {
            0.0
        }
    }

    /// The report for people: a summary and a Markdown table of phases.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{}x{}, {:?} token maps, {} thread{}, {} kernels, {} schedule (chunk {}), arena {} B\n\
             {} timed runs: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, {:.1} GMAC/s ({:.3} GMAC per inference)\n\n",
            self.image.0,
            self.image.1,
            self.precision,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.kernels,
            if self.schedule.whole_maps { "whole-map" } else { "compact" },
            self.schedule.chunk,
            self.arena_bytes,
            self.times_ms.len(),
            self.median_ms(),
            self.p90_ms(),
            self.min_ms(),
            self.gmac_per_s(),
            self.macs as f64 / 1e9,
        );
        s.push_str("| phase | ms | share |\n|---|---:|---:|\n");
        for p in &self.phases {
            s.push_str(&format!(
                "| {} | {:.2} | {:.1} % |\n",
                p.name(),
                p.ms,
                100.0 * p.share
            ));
        }
        s
    }

    /// The report for scripts (schema in `docs/CLI.md`).
    pub fn json(&self) -> serde_json::Value {
        json!({
            "image_size": [self.image.0, self.image.1],
            "threads": self.threads,
            "activations": crate::inference::precision_name(self.precision),
            "kernels": self.kernels,
            "schedule": {
                "whole_maps": self.schedule.whole_maps,
                "chunk": self.schedule.chunk,
                "workers": self.schedule.workers,
            },
            "runs": self.times_ms.len(),
            "times_ms": self.times_ms,
            "median_ms": self.median_ms(),
            "p90_ms": self.p90_ms(),
            "min_ms": self.min_ms(),
            "macs": self.macs,
            "gmac_per_s": self.gmac_per_s(),
            "arena_bytes": self.arena_bytes,
            "phases": self.phases.iter().map(|p| json!({
                "stage": p.stage,
                "step": step_key(p.step),
                "name": p.name(),
                "ms": p.ms,
                "share": p.share,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Notes when each step starts; adds up each step's time.
#[derive(Default)]
struct StepClock {
    current: Option<(Activity, Instant)>,
    totals: HashMap<Activity, f64>,
    order: Vec<Activity>,
}

impl StepClock {
    fn close(&mut self, now: Instant) {
        if let Some((at, since)) = self.current.take() {
            *self.totals.entry(at).or_insert(0.0) += (now - since).as_secs_f64() * 1e3;
        }
    }
}

impl Probe for StepClock {
    fn observe(&mut self, _: Checkpoint, _: Tokens<'_>, _: usize, _: usize) {}

    fn enter(&mut self, at: Activity) {
        let now = Instant::now();
        self.close(now);
        if !self.totals.contains_key(&at) && !self.order.contains(&at) {
            self.order.push(at);
        }
        self.current = Some((at, now));
    }

    fn finish(&mut self) {
        self.close(Instant::now());
    }
}

/// Times `model` as `options` say.
pub fn bench(model: &Model<'_>, options: &BenchOptions) -> Result<BenchReport> {
    if options.runs == 0 {
        return Err(Error::Usage("--runs must be at least 1".into()));
    }
    let threads = Threads::new(options.threads)?;
    let schedule = if options.compact {
        Schedule {
            workers: options.threads,
            ..Schedule::COMPACT
        }
    } else {
        Schedule::fast(options.threads)
    };
    let run_options = RunOptions::new(options.precision)
        .with_kernels(options.kernels)
        .with_schedule(schedule)
        .with_executor(&threads);
    let (h, w) = options.image;
    let plan = model.plan_with(h, w, &run_options)?;
    let mut arena = vec![0u8; plan.peak_bytes + soft_core::ARENA_ALIGN];
    let mut logits = vec![0.0f32; model.config().num_classes];
    let mut clock = StepClock::default();
    let mut times = Vec::with_capacity(options.runs);
    for i in 0..options.warmup + options.runs {
        let timed = i >= options.warmup;
        let mut image = TestPattern::new(h, w, 7);
        let start = Instant::now();
        let report = threads.install(|| {
            if timed {
                model.run_with(
                    &run_options,
                    &mut image,
                    &mut arena,
                    &mut logits,
                    &mut clock,
                )
            } else {
                model.run_with(&run_options, &mut image, &mut arena, &mut logits, &mut ())
            }
        })?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if report.peak_bytes != plan.peak_bytes {
            return Err(Error::Usage(format!(
                "internal error: the run used {} arena bytes, the plan said {}",
                report.peak_bytes, plan.peak_bytes
            )));
        }
        if timed {
            times.push(ms);
        }
    }
    let runs = options.runs as f64;
    let total: f64 = clock.totals.values().sum::<f64>() / runs;
    let phases = clock
        .order
        .iter()
        .map(|at| {
            let ms = clock.totals.get(at).copied().unwrap_or(0.0) / runs;
            PhaseTime {
                stage: at.stage,
                step: at.step,
                ms,
                share: if total > 0.0 { ms / total } else { 0.0 },
            }
        })
        .collect();
    Ok(BenchReport {
        image: options.image,
        threads: options.threads,
        precision: options.precision,
        kernels: options.kernels.name(),
        schedule,
        macs: cost::macs_placed(
            model.config(),
            h,
            w,
            options.precision,
            &schedule,
            soft_core::Placement::ONE,
        ),
        arena_bytes: plan.peak_bytes,
        times_ms: times,
        phases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(times: &[f64]) -> BenchReport {
        BenchReport {
            image: (64, 64),
            threads: 1,
            precision: Precision::F16,
            kernels: "generic",
            schedule: Schedule::COMPACT,
            macs: 2_000_000_000,
            arena_bytes: 0,
            times_ms: times.to_vec(),
            phases: Vec::new(),
        }
    }

    #[test]
    fn statistics() {
        let r = report(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(r.median_ms(), 3.0);
        assert_eq!(r.p90_ms(), 5.0);
        assert_eq!(r.min_ms(), 1.0);
        assert_eq!(r.gmac_per_s(), 2e9 / 3.0 / 1e6);
        let r = report(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(r.median_ms(), 2.5);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(report(&ten).p90_ms(), 9.0);
    }
}
