//! `soft bench`: a model timed on a synthetic image, phase by phase.

use std::path::{Path, PathBuf};

use soft_core::{Kernels, Precision};

use super::common::{
    describe, load_blob, native_size, open_model, parse_size, threads_arg, Activations, KernelsArg,
};
use crate::error::Result;
use crate::{out, outln};

/// Time a model: warm-up, then timed runs on a synthetic image; median, p90, GMAC/s
/// and the time of every phase.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
    /// Input size: 224 or HxW (default: the model's native size).
    #[arg(long)]
    image_size: Option<String>,
    /// Threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed runs first (two, as peers.py gives PyTorch and ONNX Runtime: on a
    /// virtual machine the first run on several threads can take one thread's time).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Token maps in f16 or f32.
    #[arg(long, value_enum, default_value = "f16")]
    activations: Activations,
    /// Kernel implementations to time.
    #[arg(long, value_enum, default_value = "auto")]
    kernels: KernelsArg,
    /// Time the compact schedule (streamed maps, what a microcontroller runs) instead
    /// of whole maps.
    #[arg(long)]
    compact: bool,
    /// Print one JSON object (median_ms, p90_ms, gmac_per_s, phases, …) instead of the
    /// table.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    bench(
        &args.model,
        args.image_size.as_deref(),
        args.threads,
        args.runs,
        args.warmup,
        args.activations.into(),
        args.kernels.kernels()?,
        args.compact,
        args.json,
    )
}

#[allow(clippy::too_many_arguments)]
fn bench(
    path: &Path,
    size: Option<&str>,
    threads: Option<usize>,
    runs: usize,
    warmup: usize,
    p: Precision,
    kernels: &'static Kernels,
    compact: bool,
    json: bool,
) -> Result<()> {
    let blob = load_blob(path)?;
    let model = open_model(&blob, path)?;
    let image = match size {
        Some(s) => parse_size(s)?,
        None => {
            let side = native_size(model.config());
            (side, side)
        }
    };
    let threads = threads.unwrap_or_else(|| threads_arg(None).map_or(1, |t| t.count()));
    let options = crate::bench::BenchOptions {
        image,
        threads,
        runs,
        warmup,
        precision: p,
        kernels,
        compact,
    };
    let report = crate::bench::bench(&model, &options)?;
    if json {
        let mut v = report.json();
        v["model"] = serde_json::Value::String(path.display().to_string());
        outln!("{v}")?;
    } else {
        outln!("{}: {}", path.display(), describe(model.config()))?;
        out!("{}", report.table())?;
    }
    Ok(())
}
