//! The demo: the bundled digits model converted to f32, f16, int8 and W8A8 blobs and run
//! over its held-out test split, with the accuracy floors the product promises.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::eval;
use crate::io::Output;
use crate::{fail, require};
use soft_core::metadata::{
    Channels, Interpolation, Labels, Metadata, Origin, Resize, Variant, VariantNote,
};
use soft_core::{argmax, Model, Precision, Schedule};

use crate::checkpoint::read_checkpoint;
use crate::pth::Prefer;
use crate::{build_blob_with, infer_config, npy, AlignedBlob, ArchOptions, WeightDtype};

/// The configurations the demo converts, runs and writes, in this order.
pub const CONFIGURATIONS: [(WeightDtype, Precision); 4] = [
    (WeightDtype::F32, Precision::F32),
    (WeightDtype::F16, Precision::F16),
    (WeightDtype::I8, Precision::F16),
    (WeightDtype::W8A8, Precision::F16),
];

/// Side of the demo's input images (8×8 digits upsampled ×8).
pub const SIDE: usize = 64;

/// Where the bundled model and split live in the source tree.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits")
}

/// One configuration's results.
#[derive(Debug, Clone)]
pub struct Row {
    /// Weight storage.
    pub weights: WeightDtype,
    /// Activation storage.
    pub activations: Precision,
    /// The blob.
    pub blob: Vec<u8>,
    /// Arena bytes at 64×64.
    pub arena_bytes: usize,
    /// Predicted class per test image.
    pub predictions: Vec<usize>,
    /// Logits per test image.
    pub logits: Vec<Vec<f32>>,
    /// Fraction of the split classified correctly.
    pub accuracy: f64,
    /// Fraction whose top-1 equals the f32 configuration's.
    pub agreement: f64,
    /// Wall-clock milliseconds per image (measured, single thread).
    pub ms_per_image: f64,
}

/// The held-out split: raw 8×8 digits (values 0..16) and labels.
pub struct Split {
    /// `[N][64]` pixels.
    pub images: Vec<Vec<f32>>,
    /// Labels 0..9.
    pub labels: Vec<usize>,
}

/// Reads `test_images.npy` and `test_labels.npy`.
pub fn load_split(dir: &Path) -> Result<Split> {
    let [_, images, labels] = inputs(dir);
    let images = npy::read(&images)?;
    let labels = npy::read(&labels)?;
    require!(
        images.shape.len() == 3 && images.shape[1..] == [8, 8],
        Npy,
        "test images must be [N, 8, 8]"
    );
    require!(labels.shape == images.shape[..1], Npy, "labels must be [N]");
    Ok(Split {
        images: images.data.chunks_exact(64).map(<[f32]>::to_vec).collect(),
        labels: labels.data.iter().map(|&l| l as usize).collect(),
    })
}

/// The class names: the digits.
pub const LABELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// What the demo's blobs say about themselves: the digits' labels and [`preprocess`] as
/// an image path does it. An 8×8 (or 64×64) grey PNG of a digit, its 0..16 levels stored
/// as `round(v · 255 / 16)`, goes nearest ×8 to 64×64, `v / 255` (so within 0.002 of
/// `v / 16`), `(x − 0.5) / 0.5`, in all three channels; a colour image is taken as its
/// luminance.
pub fn metadata() -> Metadata<'static> {
    Metadata {
        name: Some("SOFT digits demo"),
        licence: Some("MIT OR Apache-2.0"),
        source: Some("models/train_digits.py, on scikit-learn's 8x8 handwritten digits"),
        variant: Some(VariantNote {
            variant: Variant::Plain,
            origin: Origin::Writer,
            detail: "models/train_digits.py trains plain SOFT",
        }),
        input_size: Some([SIDE as u32; 2]),
        resize: Some(Resize::ShorterSide { crop_pct: 1.0 }),
        interpolation: Some(Interpolation::Nearest),
        channels: Some(Channels::Grey),
        value_range: Some(1.0),
        mean: Some([0.5; 3]),
        std: Some([0.5; 3]),
        labels: Some(Labels::from_strs(&LABELS)),
    }
}

/// 8×8 digit → normalised `[3, 64, 64]`: `/16`, nearest ×8, `(x - 0.5) / 0.5`, as in training.
pub fn preprocess(digit: &[f32]) -> Vec<f32> {
    let plane: Vec<f32> = (0..SIDE * SIDE)
        .map(|i| {
            let v = digit
                .get((i / SIDE / 8) * 8 + (i % SIDE) / 8)
                .copied()
                .unwrap_or(0.0)
                / 16.0;
            (v - 0.5) / 0.5
        })
        .collect();
    plane.repeat(3)
}

impl eval::Dataset for Split {
    fn samples(&self) -> usize {
        self.images.len()
    }

    fn sample(&self, index: usize) -> Result<eval::Sample> {
        let (Some(digit), Some(&label)) = (self.images.get(index), self.labels.get(index)) else {
            fail!(Npy, "the test split has no image {index}");
        };
        Ok(eval::Sample {
            input: preprocess(digit),
            size: (SIDE, SIDE),
            label,
        })
    }

    fn describe(&self, index: usize) -> String {
        format!("test image {index}")
    }
}

/// Converts the bundled checkpoint each way and runs the split through each, with
/// `soft eval`'s code path in the schedule a microcontroller runs (compact, one thread).
pub fn evaluate(dir: &Path, mut progress: impl FnMut()) -> Result<Vec<Row>> {
    let [ckpt, ..] = inputs(dir);
    let loaded = read_checkpoint(&ckpt, Prefer::Ema)?;
    let cfg = infer_config(&loaded.tensors, &ArchOptions::default())?;
    let split = load_split(dir)?;
    let images = split.images.len();
    require!(images > 0, Npy, "the test split is empty");
    let mut rows: Vec<Row> = Vec::new();
    for (weights, activations) in CONFIGURATIONS {
        let blob = build_blob_with(&loaded.tensors, &cfg, weights, Some(&metadata()))?;
        let aligned = AlignedBlob::new(&blob);
        let model = Model::from_blob(aligned.as_bytes())?;
        let options = eval::Options {
            precision: activations,
            schedule: Schedule::COMPACT,
            workers: 1,
            limit: None,
        };
        let mut logits = vec![Vec::new(); images];
        let report = eval::evaluate(&model, None, &split, &options, |outcome| {
            if let Some(l) = logits.get_mut(outcome.index) {
                l.clone_from(&outcome.logits);
            }
            progress();
        })?;
        let predictions: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
        let reference = rows.first().map_or(&predictions, |r| &r.predictions);
        let agree = predictions
            .iter()
            .zip(reference)
            .filter(|(a, b)| a == b)
            .count();
        rows.push(Row {
            weights,
            activations,
            arena_bytes: report.arena_bytes,
            accuracy: report.tally.top1_accuracy(),
            agreement: eval::fraction(agree, images),
            predictions,
            logits,
            blob,
            ms_per_image: report.seconds * 1e3 / images as f64,
        });
    }
    Ok(rows)
}

/// The floors: f32 ≥ 97 %, f16 top-1 equal to f32 on ≥ 99.5 %, int8 within 0.5 points,
/// W8A8 within 0.5 points and top-1 equal to f32 on ≥ 99 %.
pub fn check(rows: &[Row]) -> Result<()> {
    let [f32_row, f16_row, i8_row, w8a8_row] = rows else {
        fail!(Check, "expected four configurations")
    };
    require!(
        f32_row.accuracy >= 0.97,
        Check,
        "f32 accuracy {:.2} % is below 97 %",
        100.0 * f32_row.accuracy
    );
    require!(
        f16_row.agreement >= 0.995,
        Check,
        "f16 agrees with f32 on only {:.2} %",
        100.0 * f16_row.agreement
    );
    require!(
        i8_row.accuracy >= f32_row.accuracy - 0.005,
        Check,
        "int8 accuracy {:.2} % is more than 0.5 points below f32",
        100.0 * i8_row.accuracy
    );
    require!(
        w8a8_row.accuracy >= f32_row.accuracy - 0.005,
        Check,
        "W8A8 accuracy {:.2} % is more than 0.5 points below f32",
        100.0 * w8a8_row.accuracy
    );
    require!(
        w8a8_row.agreement >= 0.99,
        Check,
        "W8A8 agrees with f32 on only {:.2} %",
        100.0 * w8a8_row.agreement
    );
    Ok(())
}

/// The table `soft demo` prints.
pub fn table(rows: &[Row], images: usize) -> String {
    let mut s = format!(
        "SOFT digits demo: {images} held-out 8x8 digits at {SIDE}x{SIDE}\n\
         | weights | activations | accuracy | top-1 = f32 | blob bytes | arena bytes | ms / image |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s += &format!(
            "| {} | {:?} | {:.2} % | {:.2} % | {} | {} | {:.2} |\n",
            r.weights.name(),
            r.activations,
            100.0 * r.accuracy,
            100.0 * r.agreement,
            r.blob.len(),
            r.arena_bytes,
            r.ms_per_image
        );
    }
    s
}

/// The demo's inputs in `dir`: the checkpoint and the test split.
pub fn inputs(dir: &Path) -> [PathBuf; 3] {
    ["soft_digits.pth", "test_images.npy", "test_labels.npy"].map(|name| dir.join(name))
}

/// The blob outputs in `out` (`soft_digits_{f32,f16,int8,w8a8}.soft`, created if need
/// be), checked against the demo's inputs in `dir` before any work.
pub fn blob_outputs(dir: &Path, out: &Path) -> Result<Vec<Output>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let paths = CONFIGURATIONS.map(|(w, _)| out.join(format!("soft_digits_{}.soft", w.name())));
    let inputs = inputs(dir);
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    crate::io::outputs(&paths.each_ref().map(PathBuf::as_path), &inputs)
}

/// Writes each row's blob to its output from [`blob_outputs`]: all are staged
/// before any is renamed into place.
pub fn write_blobs(rows: &[Row], outputs: &[Output]) -> Result<()> {
    require!(
        rows.len() == outputs.len(),
        Check,
        "{} configurations for {} outputs",
        rows.len(),
        outputs.len()
    );
    let staged = outputs
        .iter()
        .zip(rows)
        .map(|(o, r)| o.stage(&r.blob))
        .collect::<Result<Vec<_>>>()?;
    for s in staged {
        s.commit()?;
    }
    Ok(())
}
