//! `soft convert`: a checkpoint into a model blob, calibrated against f32.

use std::path::{Path, PathBuf};

use soft_core::Precision;

use soft_core::metadata::Resize;

use super::common::{
    describe, kib, load_checkpoint, native_size, open_model, parse_size, read_labels, threads_arg,
    ArchArgs, LoadedCheckpoint, PreprocessArgs,
};
use super::warn;
use crate::error::{Error, Result};
use crate::image_input::DEFAULT_CROP_PCT;
use crate::inference::{calibration_input, infer, PeakActivation, F16_HEADROOM};
use crate::io::Output;
use crate::model_info::{Description, Said};
use crate::verify::{max_abs, max_abs_diff};
use crate::{build_blob, build_blob_with, fail, outln, require, AlignedBlob, WeightDtype};

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
    /// Class names, one per line, as many as the model has classes; stored in the blob,
    /// so `soft run` and `soft eval` name the classes.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Input size the model was trained at, N or HxW (default: the checkpoint's
    /// training arguments, input_size or img_size, if it has them); `soft run --image`
    /// crops to it.
    #[arg(long)]
    input_size: Option<String>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Model name, stored in the blob.
    #[arg(long)]
    name: Option<String>,
    /// Licence of the weights (an SPDX identifier, say), stored in the blob.
    #[arg(long, alias = "license")]
    licence: Option<String>,
    /// Where the weights come from, stored in the blob.
    #[arg(long)]
    source: Option<String>,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let mut inputs = vec![args.checkpoint.as_path()];
    inputs.extend(args.labels.as_deref());
    let output = Output::new(&args.output, &inputs)?;
    let loaded = load_checkpoint(&args.checkpoint, &args.arch)?;
    for n in &loaded.notes {
        outln!("note: {n}")?;
    }
    let (description, notes) = describe_model(&args, &loaded)?;
    for n in &notes {
        outln!("note: {n}")?;
    }
    convert(&args, output, &loaded, &description)
}

/// The blob's metadata: each field from its flag, else from the checkpoint; with notes
/// on what came from the checkpoint and what it said that could not be used.
fn describe_model(args: &Args, loaded: &LoadedCheckpoint) -> Result<(Description, Vec<String>)> {
    let info = &loaded.info;
    let flags = args.preprocess.overrides(None)?;
    let mut from_checkpoint: Vec<String> = Vec::new();
    fn take<T: Copy>(said: &Option<Said<T>>, used: &mut Vec<String>) -> Option<T> {
        let s = said.as_ref()?;
        used.push(s.at.clone());
        Some(s.value)
    }
    for (flag, text) in [
        ("--name", &args.name),
        ("--licence", &args.licence),
        ("--source", &args.source),
    ] {
        if text
            .as_ref()
            .is_some_and(|t| t.chars().any(char::is_control))
        {
            fail!(Usage, "{flag} holds a control character");
        }
    }
    let input_size = match &args.input_size {
        Some(s) => {
            let (h, w) = parse_size(s)?;
            let ok = |v: usize| (1..=65536).contains(&v);
            require!(ok(h) && ok(w), Usage, "--input-size {s} is out of range");
            Some([h as u32, w as u32])
        }
        None => take(&info.input_size, &mut from_checkpoint),
    };
    let both_sides = flags
        .both_sides
        .or_else(|| take(&info.both_sides, &mut from_checkpoint));
    let crop_pct = flags
        .crop_pct
        .or_else(|| take(&info.crop_pct, &mut from_checkpoint));
    let mut notes = Vec::new();
    let resize = match (both_sides, crop_pct) {
        (None, None) => None,
        (both, pct) => {
            if pct.is_none() {
                notes.push(format!(
                    "the resize rule is known but not the crop fraction: recorded                      {DEFAULT_CROP_PCT} (--crop-pct sets it)"
                ));
            }
            let crop_pct = pct.unwrap_or(DEFAULT_CROP_PCT);
            Some(if both == Some(true) {
                Resize::BothSides { crop_pct }
            } else {
                Resize::ShorterSide { crop_pct }
            })
        }
    };
    let interpolation = flags
        .interpolation
        .or_else(|| take(&info.interpolation, &mut from_checkpoint));
    let mean = flags
        .mean
        .or_else(|| take(&info.mean, &mut from_checkpoint));
    let std = flags.std.or_else(|| take(&info.std, &mut from_checkpoint));
    let labels = args
        .labels
        .as_deref()
        .map(|l| read_labels(l, loaded.cfg.num_classes))
        .transpose()?;
    if !from_checkpoint.is_empty() {
        notes.push(format!(
            "recorded from the checkpoint: {}",
            from_checkpoint.join(", ")
        ));
    }
    notes.extend(info.ignored.iter().map(|i| format!("ignored {i}")));
    let description = Description {
        name: args.name.clone(),
        licence: args.licence.clone(),
        source: args.source.clone(),
        variant: Some(loaded.variant.clone()),
        input_size,
        resize,
        interpolation,
        channels: flags.channels,
        value_range: flags.value_range,
        mean,
        std,
        labels,
    };
    Ok((description, notes))
}

fn convert(
    args: &Args,
    output: Output,
    loaded: &LoadedCheckpoint,
    description: &Description,
) -> Result<()> {
    let (ckpt, out, dt) = (args.checkpoint.as_path(), args.output.as_path(), args.dtype);
    let (map, cfg) = (&loaded.tensors, loaded.cfg);
    let bytes = description.with_metadata(|m| build_blob_with(map, &cfg, dt, Some(m)))?;
    let blob = AlignedBlob::new(&bytes);
    let model = open_model(&blob, Path::new("the converted blob"))?;
    // At the size the model was trained at: the metadata's square size, else the grid's.
    let side = match description.input_size {
        Some([h, w]) if h == w => h as usize,
        _ => native_size(&cfg),
    };
    let arena = model.plan(side, side, Precision::F16)?.peak_bytes;
    let spinner = indicatif::ProgressBar::new_spinner().with_message("calibrating against f32");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    // The f32 reference is the converted model itself when the weights are f32.
    let f32_blob = match dt {
        WeightDtype::F32 => None,
        _ => Some(AlignedBlob::new(&build_blob(map, &cfg, WeightDtype::F32)?)),
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
    let (variant, _, how) = &loaded.variant;
    outln!("  variant: {variant} ({how})")?;
    outln!("  metadata: {}", recorded(description))?;
    outln!("  parameters: {}", params(map))?;
    outln!("  blob: {}", kib(bytes.len()))?;
    outln!("  arena at {side}x{side} (f16 activations): {}", kib(arena))?;
    Ok(())
}

/// The metadata fields the blob records besides the variant, for the summary.
fn recorded(d: &Description) -> String {
    let mut fields = Vec::new();
    for (name, set) in [
        ("name", d.name.is_some()),
        ("licence", d.licence.is_some()),
        ("source", d.source.is_some()),
        ("input size", d.input_size.is_some()),
        ("resize", d.resize.is_some()),
        ("interpolation", d.interpolation.is_some()),
        ("channels", d.channels.is_some()),
        ("value range", d.value_range.is_some()),
        ("mean", d.mean.is_some()),
        ("std", d.std.is_some()),
    ] {
        if set {
            fields.push(name.to_string());
        }
    }
    if let Some(l) = &d.labels {
        fields.push(format!("{} labels", l.len()));
    }
    if fields.is_empty() {
        "the variant only (soft run --image will use ImageNet's preprocessing)".into()
    } else {
        fields.join(", ")
    }
}

/// Parameters: every tensor but BatchNorm's running statistics.
fn params(map: &crate::TensorMap) -> usize {
    map.iter()
        .filter(|(k, _)| !k.contains("running_"))
        .map(|(_, t)| t.data.len())
        .sum()
}
