//! Small synthetic models and inputs, and runs in the arena the plan asks for.

use soft_core::{ChwImage, Model, Precision, Probe};
use soft_host::WeightDtype;

pub use soft_host::testing::{micro_config, synthetic_blob};

/// Every weight type a blob can store, in `--dtype`'s order.
pub const DTYPES: [WeightDtype; 4] = [
    WeightDtype::F32,
    WeightDtype::F16,
    WeightDtype::I8,
    WeightDtype::W8A8,
];

/// A deterministic `3 × h × w` CHW image with values in `[-1, 1)`.
pub fn pixels(h: usize, w: usize) -> Vec<f32> {
    (0..3 * h * w)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

/// What [`run_planned`] returns.
pub struct Planned {
    /// The logits.
    pub logits: Vec<f32>,
    /// The arena's high-water mark during the run.
    pub peak: usize,
    /// The plan's peak, the arena size the run was given (plus 16 bytes of slack).
    pub planned: usize,
}

/// Runs `model` on the CHW image `input` (`h × w`) with `precision` and `probe`, in an
/// arena of the size `Model::plan` gives.
pub fn run_planned(
    model: &Model<'_>,
    input: &[f32],
    h: usize,
    w: usize,
    precision: Precision,
    probe: &mut impl Probe,
) -> Planned {
    let plan = model.plan(h, w, precision).unwrap();
    let mut arena = vec![0u8; plan.peak_bytes + 16];
    let mut logits = vec![0.0; model.config().num_classes];
    let mut image = ChwImage::new(input, h, w).unwrap();
    let report = model
        .run(&mut image, &mut arena, precision, &mut logits, probe)
        .unwrap();
    Planned {
        logits,
        peak: report.peak_bytes,
        planned: plan.peak_bytes,
    }
}
