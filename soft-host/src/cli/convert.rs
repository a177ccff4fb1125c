//! `soft convert`: a checkpoint into a model blob, calibrated against f32.

use std::path::{Path, PathBuf};

use soft_core::Precision;

use super::common::{
    describe, kib, load_checkpoint, native_size, open_model, threads_arg, ArchArgs,
};
use super::warn;
use crate::error::{Error, Result};
use crate::inference::{calibration_input, infer, PeakActivation, F16_HEADROOM};
use crate::io::Output;
use crate::verify::{max_abs, max_abs_diff};
use crate::{build_blob, outln, AlignedBlob, WeightDtype};

/// Convert a PyTorch (.pth) or safetensors checkpoint into a model blob.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint: a `torch.save` file (.pth) or safetensors.
    checkpoint: PathBuf,
    /// The blob to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Weight storage: f32, f16; int8 (per-output-channel scales, computed in float:
    /// activations stay f16); w8a8 (int8 weights and int8 linear-layer inputs, integer
    /// arithmetic, for microcontrollers with a DSP extension).
    #[arg(long, value_enum, default_value = "f16")]
    dtype: WeightDtype,
    #[command(flatten)]
    arch: ArchArgs,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    convert(&args.checkpoint, &args.output, args.dtype, &args.arch)
}

fn convert(ckpt: &Path, out: &Path, dt: WeightDtype, arch: &ArchArgs) -> Result<()> {
    let output = Output::new(out, &[ckpt])?;
    let (map, cfg, notes) = load_checkpoint(ckpt, arch)?;
    for n in &notes {
        outln!("note: {n}")?;
    }
    let bytes = build_blob(&map, &cfg, dt)?;
    let blob = AlignedBlob::new(&bytes);
    let model = open_model(&blob, Path::new("the converted blob"))?;
    let side = native_size(&cfg);
    let arena = model.plan(side, side, Precision::F16)?.peak_bytes;
    let spinner = indicatif::ProgressBar::new_spinner().with_message("calibrating against f32");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    // The f32 reference is the converted model itself when the weights are f32.
    let f32_blob = match dt {
        WeightDtype::F32 => None,
        _ => Some(AlignedBlob::new(&build_blob(&map, &cfg, WeightDtype::F32)?)),
    };
    let reference = match &f32_blob {
        Some(b) => open_model(b, ckpt)?,
        None => open_model(&blob, ckpt)?,
    };
    let input = calibration_input(side, 0);
    let threads = threads_arg(None)?;
    let mut peak = PeakActivation::default();
    let want = infer(
        &reference,
        &input,
        (side, side),
        Precision::F32,
        &threads,
        &mut peak,
    )?
    .0;
    let got = infer(
        &model,
        &input,
        (side, side),
        Precision::F16,
        &threads,
        &mut (),
    );
    spinner.finish_and_clear();
    match got {
        Ok((got, ..)) if dt != WeightDtype::F32 => {
            let err = max_abs_diff(&got, &want);
            outln!(
                "calibration: max |logit error| {err:.3e} ({:.3e} of max |logit|) against f32",
                err / max_abs(&want).max(f32::MIN_POSITIVE)
            )?;
        }
        Ok(_) => {}
        // The blob is sound; runs need f32 maps.
        Err(e)
            if matches!(
                e.root(),
                Error::Engine(soft_core::Error::NonFiniteActivation(_))
            ) =>
        {
            warn(&format!("on the calibration input, {e}"));
        }
        Err(e) => return Err(e),
    }
    if peak.max_abs > F16_HEADROOM {
        warn(&format!(
            "activations reach {:.3e} after {} on the calibration input, close to the f16 \
             limit of 65504: other inputs may overflow f16 token maps (--activations f32 \
             avoids it)",
            peak.max_abs,
            peak.at
                .map_or_else(|| "a phase".into(), |at| at.to_string())
        ));
    }
    output.write(&bytes)?;
    outln!("wrote {}", out.display())?;
    outln!("  config: {}", describe(&cfg))?;
    outln!("  parameters: {}", params(&map))?;
    outln!("  blob: {}", kib(bytes.len()))?;
    outln!("  arena at {side}x{side} (f16 activations): {}", kib(arena))?;
    Ok(())
}

/// Parameters: every tensor but BatchNorm's running statistics.
fn params(map: &crate::TensorMap) -> usize {
    map.iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, t)| t.data.len())
        .sum()
}
