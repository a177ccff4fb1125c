//! `soft run`: one input through a blob, the top classes printed.

use std::path::{Path, PathBuf};

use soft_core::Precision;

use super::common::{kib, load_blob, native_size, open_model, plural, threads_arg, Activations};
use crate::error::{Error, Result};
use crate::inference::{infer, read_input_npy};
use crate::io::Output;
use crate::threads::Threads;
use crate::{fail, image_input, npy, outln};

/// Run a blob on an input and print the top classes.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
    /// f32 .npy input, (1,3,H,W) or (3,H,W), already normalised.
    #[arg(long, conflicts_with = "image")]
    input_npy: Option<PathBuf>,
    /// PNG or JPEG image (resized, centre-cropped, ImageNet-normalised).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Crop size for --image (default: the model's native size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Token maps in f16 (the default, what a microcontroller runs) or f32.
    #[arg(long, value_enum, default_value = "f16")]
    activations: Activations,
    /// Write the logits as a (1, classes) .npy file.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// Classes to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Class names, one per line.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Threads (default: every core). The logits do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    run_model(
        &args.model,
        args.input_npy.as_deref(),
        args.image.as_deref(),
        args.image_size,
        args.activations.into(),
        args.logits_out.as_deref(),
        args.top,
        args.labels.as_deref(),
        &threads_arg(args.threads)?,
    )
}

#[allow(clippy::too_many_arguments)]
fn run_model(
    path: &Path,
    input_npy: Option<&Path>,
    image: Option<&Path>,
    image_size: Option<usize>,
    p: Precision,
    logits_out: Option<&Path>,
    top: usize,
    labels: Option<&Path>,
    threads: &Threads,
) -> Result<()> {
    let inputs: Vec<&Path> = [Some(path), input_npy, image, labels]
        .into_iter()
        .flatten()
        .collect();
    let logits_out = logits_out
        .map(|out| Output::new(out, &inputs))
        .transpose()?;
    let blob = load_blob(path)?;
    let model = open_model(&blob, path)?;
    let (input, h, w) = match (input_npy, image) {
        (Some(n), _) => read_input_npy(n)?,
        (None, Some(i)) => {
            let side = image_size.unwrap_or_else(|| native_size(model.config()));
            (image_input::load(i, side)?, side, side)
        }
        (None, None) => fail!(Usage, "give --input-npy X.npy or --image FILE"),
    };
    let labels: Vec<String> = match labels {
        Some(l) => std::fs::read_to_string(l)
            .map_err(|e| Error::io("reading", l, e))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    let (logits, ms, peak) = infer(&model, &input, (h, w), p, threads, &mut ())?;
    if let Some(out) = logits_out {
        out.write(&npy::to_bytes(&[1, logits.len()], &logits))?;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f32 = logits.iter().map(|&l| (l - m).exp()).sum();
    for (rank, &c) in order.iter().take(top).enumerate() {
        let name = labels.get(c).map_or(String::new(), |l| format!(" {l}"));
        outln!(
            "{:>2}. class {c}{name}: logit {:.4}, p {:.4}",
            rank + 1,
            logits[c],
            (logits[c] - m).exp() / sum
        )?;
    }
    outln!(
        "{h}x{w}, {p:?} activations: {ms:.2} ms on {} thread{}, arena high-water mark {}",
        threads.count(),
        plural(threads.count()),
        kib(peak)
    )?;
    Ok(())
}
