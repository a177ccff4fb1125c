//! `soft run`: one input through a blob, the top classes printed.

use std::path::PathBuf;

use soft_core::Precision;

use super::common::{
    blob_metadata, kib, load_blob, native_size, open_model, plural, read_labels, threads_arg,
    Activations, PreprocessArgs,
};
use crate::error::Result;
use crate::inference::{infer, precision_name, read_input_npy, BlockProgress};
use crate::io::Output;
use crate::model_info::{
    describe_preprocess, has_preprocessing, preprocess, preprocess_json, Provenance,
};
use crate::{fail, image_input, npy, outln, require};

/// Run a blob on an input and print the top classes.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
    /// f32 .npy input, (1,3,H,W) or (3,H,W), already normalised.
    #[arg(long, conflicts_with = "image")]
    input_npy: Option<PathBuf>,
    /// PNG or JPEG image, preprocessed as the blob's metadata says (resize, crop,
    /// filter, channels, mean and std; each flag below overrides it), or where the blob
    /// does not say, as torchvision's ImageNet evaluation does.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Crop size for --image (default: the size the blob was trained at, else the
    /// model's native size, its stage-1 position grid × 4).
    #[arg(long)]
    image_size: Option<usize>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Token maps in f16 (the default, what a microcontroller runs) or f32.
    #[arg(long, value_enum, default_value = "f16")]
    activations: Activations,
    /// Write the logits as a (1, classes) .npy file.
    #[arg(long)]
    logits_out: Option<PathBuf>,
    /// Classes to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Class names, one per line (default: the blob's labels, if it has them).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Threads (default: every core). The logits do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object: model, image_size, preprocessing (null for .npy input),
    /// activations, threads, ms, arena_high_water_bytes, logits, top (class, label,
    /// logit, p).
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let threads = threads_arg(args.threads)?;
    let p: Precision = args.activations.into();
    let path = args.model.as_path();
    let inputs = [
        Some(path),
        args.input_npy.as_deref(),
        args.image.as_deref(),
        args.labels.as_deref(),
    ];
    let logits_out = Output::optional(args.logits_out.as_deref(), &inputs)?;
    let blob = load_blob(path)?;
    let model = open_model(&blob, path)?;
    let classes = model.config().num_classes;
    let metadata = blob_metadata(&model, path);
    let labels: Vec<String> = match &args.labels {
        Some(l) => read_labels(l, classes)?,
        None => metadata
            .and_then(|m| m.labels)
            .map(|l| l.iter().map(str::to_string).collect())
            .unwrap_or_default(),
    };
    let mut shown_preprocess = None;
    let (input, h, w) = match (&args.input_npy, &args.image) {
        (Some(n), _) => {
            require!(
                args.image_size.is_none() && !args.preprocess.any(),
                Usage,
                "--image-size and the preprocessing flags go with --image; a .npy input is \
                 already preprocessed"
            );
            read_input_npy(n)?
        }
        (None, Some(i)) => {
            let flags = args.preprocess.overrides(args.image_size)?;
            let native = native_size(model.config());
            let (pre, from) = preprocess(metadata.as_ref(), &flags, native)?;
            let input = image_input::load_with(i, &pre)?;
            shown_preprocess = Some((pre, from));
            (input, pre.size, pre.size)
        }
        (None, None) => fail!(Usage, "give --input-npy X.npy or --image FILE"),
    };
    // A large input takes minutes: show the blocks as they pass, on a terminal.
    let mut progress = BlockProgress::new(model.config());
    let result = infer(&model, &input, (h, w), p, &threads, &mut progress);
    progress.finish();
    let (logits, ms, peak) = result?;
    if let Some(out) = logits_out {
        out.write(&npy::to_bytes(&[1, logits.len()], &logits))?;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f32 = logits.iter().map(|&l| (l - m).exp()).sum();
    let probability = |c: usize| (logits[c] - m).exp() / sum;
    if args.json {
        let v = serde_json::json!({
            "model": path.display().to_string(),
            "image_size": [h, w],
            "preprocessing": shown_preprocess.map(|(p, _)| preprocess_json(&p)),
            "activations": precision_name(p),
            "threads": threads.count(),
            "ms": ms,
            "arena_high_water_bytes": peak,
            "logits": logits,
            "top": order.iter().take(args.top).map(|&c| serde_json::json!({
                "class": c,
                "label": labels.get(c),
                "logit": logits[c],
                "p": probability(c),
            })).collect::<Vec<_>>(),
        });
        return outln!("{v}");
    }
    if let Some((pre, from)) = &shown_preprocess {
        let whose = match from {
            Provenance::Blob => "the blob's, with any flags over it",
            Provenance::Flag => "as given",
            Provenance::Default if metadata.as_ref().is_some_and(has_preprocessing) => {
                "the blob's and flags, ImageNet's evaluation where neither says"
            }
            Provenance::Default => {
                "the blob records no preprocessing: ImageNet's evaluation, with any flags over it"
            }
        };
        outln!("image: {} ({whose})", describe_preprocess(pre))?;
    }
    for (rank, &c) in order.iter().take(args.top).enumerate() {
        let name = labels.get(c).map_or(String::new(), |l| {
            format!(" {}", crate::console::one_line(l))
        });
        outln!(
            "{:>2}. class {c}{name}: logit {:.4}, p {:.4}",
            rank + 1,
            logits[c],
            probability(c)
        )?;
    }
    outln!(
        "{h}x{w}, {p:?} activations: {ms:.2} ms on {} thread{}, arena high-water mark {}",
        threads.count(),
        plural(threads.count()),
        kib(peak)
    )
}
