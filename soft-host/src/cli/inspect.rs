//! `soft inspect`: a blob's config, tensors and checksum.

use std::path::{Path, PathBuf};

use soft_core::format::Dtype;
use soft_core::{Blob, Model};

use super::common::{config_json, describe, load_blob, native_size};
use crate::error::{Context, Result};
use crate::model_info::{metadata_json, metadata_lines};
use crate::{console, outln};

/// Show a blob's config, tensors and checksum.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
    /// Print one JSON object: path, bytes, format_version, crc32, config, metadata
    /// (null, or name, licence, source, variant, input_size, resize, interpolation,
    /// channels, value_range, mean, std, labels: each null where the blob does not say),
    /// metadata_problem, usable, problem, tensors (name, dtype, shape, bytes).
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    inspect(&args.model, args.json)
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let blob = load_blob(path)?;
    let parsed = Blob::parse(blob.as_bytes()).with_context(|| path.display().to_string())?;
    // Blob::parse has checked the trailer is there and matches.
    let bytes = blob.as_bytes();
    let crc = bytes
        .get(bytes.len().saturating_sub(4)..)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes);
    let cfg = parsed.config();
    let metadata = parsed.metadata();
    let usable = Model::from_blob(blob.as_bytes()).err();
    let tensors = (0..parsed.tensor_count())
        .map(|i| {
            let t = parsed.tensor_at(i)?;
            let dtype = match t.dtype {
                Dtype::F32 => "f32",
                Dtype::F16 => "f16",
                Dtype::I8 => "int8",
                Dtype::Q8 => "w8a8",
            };
            let bytes = t.data.len() + t.scales.map_or(0, <[u8]>::len);
            Ok((t.id.to_string(), dtype, t.dims().to_vec(), bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    if json {
        let v = serde_json::json!({
            "path": path.display().to_string(),
            "bytes": parsed.len(),
            "format_version": parsed.version(),
            "crc32": crc,
            "config": config_json(cfg),
            "metadata": metadata.as_ref().ok().and_then(|m| m.as_ref()).map(metadata_json),
            "metadata_problem": metadata.as_ref().err().map(ToString::to_string),
            "usable": usable.is_none(),
            "problem": usable.map(|e| e.to_string()),
            "tensors": tensors.iter().map(|(name, dtype, shape, bytes)| serde_json::json!({
                "name": name, "dtype": dtype, "shape": shape, "bytes": bytes,
            })).collect::<Vec<_>>(),
        });
        return outln!("{v}");
    }
    outln!(
        "{}: {} bytes, format v{}, CRC-32 {crc:#010x} ok",
        path.display(),
        parsed.len(),
        parsed.version()
    )?;
    outln!("config: {}", describe(cfg))?;
    outln!(
        "position grids {:?}, stem width {}, stage-4 MLP {}",
        cfg.pos_grids,
        cfg.stem_width,
        cfg.stage4_mlp_hidden
    )?;
    match &metadata {
        Ok(Some(m)) => {
            outln!("metadata:")?;
            for (key, text) in metadata_lines(m) {
                outln!("  {key}: {}", console::one_line(&text))?;
            }
        }
        Ok(None) => {
            let side = native_size(cfg);
            outln!(
                "metadata: none (soft run --image preprocesses as ImageNet's evaluation at \
                 {side}x{side})"
            )?
        }
        Err(e) => outln!("metadata: unreadable: {e}")?,
    }
    match usable {
        None => outln!("tensors: complete for the config")?,
        Some(e) => outln!("tensors: NOT usable: {e}")?,
    }
    outln!(
        "{:<48} {:>5} {:>20} {:>10}",
        "tensor",
        "dtype",
        "shape",
        "bytes"
    )?;
    for (name, dtype, shape, bytes) in &tensors {
        let shape = format!("{shape:?}");
        outln!("{name:<48} {dtype:>5} {shape:>20} {bytes:>10}")?;
    }
    Ok(())
}
