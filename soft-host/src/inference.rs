//! Running a blob on the host the way the tool does: whole maps on a thread pool, the
//! fastest kernels; the synthetic inputs `convert` calibrates and `verify` compares on;
//! a probe that watches activations against f16's range.

use std::path::Path;
use std::time::Instant;

use soft_core::{Checkpoint, ChwImage, Model, Precision, Probe, Tokens};

use crate::error::{Context, Result};
use crate::threads::Threads;
use crate::verify::max_abs;
use crate::{fail, npy};

/// A precision's name as `--activations` spells it (and every `--json` reports it).
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        _ => "f16",
    }
}

/// A reproducible `3 × side × side` input, uniform in [-2, 2): what `convert` calibrates
/// on (seed 0) and `verify` compares on (seeds 1, 2, …).
pub fn calibration_input(side: usize, seed: u64) -> Vec<f32> {
    let mut r = soft_kernels::rng::XorShift64::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..3 * side * side).map(|_| r.unit() * 4.0 - 2.0).collect()
}

/// Runs once on `threads` (whole maps, the fastest kernels); returns logits,
/// milliseconds and the arena high-water mark.
pub fn infer(
    model: &Model<'_>,
    input: &[f32],
    (h, w): (usize, usize),
    p: Precision,
    threads: &Threads,
    probe: &mut (impl Probe + Send),
) -> Result<(Vec<f32>, f64, usize)> {
    let options = threads.options(p);
    let plan = model.plan_with(h, w, &options)?;
    let mut arena = vec![0u8; plan.peak_bytes + soft_core::ARENA_ALIGN];
    let mut logits = vec![0.0; model.config().num_classes];
    let start = Instant::now();
    let report = threads.install(|| {
        let mut image = ChwImage::new(input, h, w)?;
        model.run_with(&options, &mut image, &mut arena, &mut logits, probe)
    });
    let report = explain_overflow(report, p)?;
    Ok((
        logits,
        start.elapsed().as_secs_f64() * 1e3,
        report.peak_bytes,
    ))
}

/// A run's result, where f16 token maps overflowed with a pointer to `--activations f32`.
pub fn explain_overflow<T>(result: soft_core::Result<T>, p: Precision) -> Result<T> {
    match result {
        Err(e @ soft_core::Error::NonFiniteActivation(_)) if p == Precision::F16 => Err(e).context(
            "f16 token maps overflow (they hold at most \u{b1}65504; --activations f32 may not)",
        ),
        other => Ok(other?),
    }
}

/// An f32 `.npy` input of shape (1,3,H,W) or (3,H,W): its values, H and W.
pub fn read_input_npy(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let a = npy::read(path)?;
    let (h, w) = match a.shape.as_slice() {
        [1, 3, h, w] | [3, h, w] => (*h, *w),
        s => fail!(
            Usage,
            "{}: input shape {s:?}; expected (1,3,H,W) or (3,H,W)",
            path.display()
        ),
    };
    Ok((a.data, h, w))
}

/// Counts a run's blocks on a progress bar (the stem counts as one): for a long run on
/// a terminal; a hidden bar (not a terminal) only keeps count.
pub struct BlockProgress {
    bar: indicatif::ProgressBar,
}

impl BlockProgress {
    /// A bar for `config`'s blocks, drawn on standard error if it is a terminal.
    pub fn new(config: &soft_core::ModelConfig) -> BlockProgress {
        let blocks = 1 + config.depths.iter().sum::<usize>() as u64;
        let bar = indicatif::ProgressBar::new(blocks);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} blocks, {elapsed}")
        {
            bar.set_style(style);
        }
        BlockProgress { bar }
    }

    /// A bar that is never drawn, for tests.
    pub fn hidden(config: &soft_core::ModelConfig) -> BlockProgress {
        let progress = BlockProgress::new(config);
        progress
            .bar
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        progress
    }

    /// Blocks done so far.
    pub fn done(&self) -> u64 {
        self.bar.position()
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Probe for BlockProgress {
    fn observe(&mut self, at: Checkpoint, _tokens: Tokens<'_>, _rows: usize, _cols: usize) {
        if matches!(at, Checkpoint::Stem | Checkpoint::Block { .. }) {
            self.bar.inc(1);
        }
    }
}

/// Activations beyond this on the calibration input leave f16 maps less than 8×
/// headroom: `convert` warns.
pub const F16_HEADROOM: f32 = 65504.0 / 8.0;

/// The largest |activation| a run's probe saw, and where.
#[derive(Default)]
pub struct PeakActivation {
    /// The largest |value| seen.
    pub max_abs: f32,
    /// Where.
    pub at: Option<Checkpoint>,
}

impl Probe for PeakActivation {
    fn observe(&mut self, at: Checkpoint, tokens: Tokens<'_>, _rows: usize, _cols: usize) {
        let max_abs = match tokens {
            Tokens::F32(v) => max_abs(v),
            Tokens::F16(v) => v.iter().fold(0.0f32, |m, x| m.max(x.to_f32().abs())),
        };
        if max_abs > self.max_abs {
            self.max_abs = max_abs;
            self.at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_progress_counts_the_stem_and_every_block() {
        let mut cfg = crate::testing::micro_config();
        cfg.depths = [1, 2, 1, 1];
        let blob = crate::testing::synthetic_blob(&cfg, 1, crate::WeightDtype::F16);
        let model = Model::from_blob(blob.as_bytes()).unwrap();
        let threads = Threads::new(1).unwrap();
        let mut progress = BlockProgress::hidden(&cfg);
        let input = calibration_input(64, 1);
        infer(
            &model,
            &input,
            (64, 64),
            Precision::F16,
            &threads,
            &mut progress,
        )
        .unwrap();
        assert_eq!(progress.done(), 1 + 5);
    }
}
