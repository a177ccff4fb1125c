//! `soft inspect`: a blob's config, tensors and checksum.

use std::path::{Path, PathBuf};

use soft_core::format::Dtype;
use soft_core::{Blob, Model};

use super::common::{describe, load_blob};
use crate::error::{Context, Result};
use crate::outln;

/// Show a blob's config, tensors and checksum.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob.
    model: PathBuf,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    inspect(&args.model)
}

fn inspect(path: &Path) -> Result<()> {
    let blob = load_blob(path)?;
    let parsed = Blob::parse(blob.as_bytes()).with_context(|| path.display().to_string())?;
    // Blob::parse has checked the trailer is there and matches.
    let bytes = blob.as_bytes();
    let crc = bytes
        .get(bytes.len().saturating_sub(4)..)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes);
    outln!(
        "{}: {} bytes, format v{}, CRC-32 {crc:#010x} ok",
        path.display(),
        parsed.len(),
        soft_core::format::VERSION
    )?;
    let cfg = parsed.config();
    outln!("config: {}", describe(cfg))?;
    outln!(
        "position grids {:?}, stem width {}, stage-4 MLP {}",
        cfg.pos_grids,
        cfg.stem_width,
        cfg.stage4_mlp_hidden
    )?;
    match Model::from_blob(blob.as_bytes()) {
        Ok(_) => outln!("tensors: complete for the config")?,
        Err(e) => outln!("tensors: NOT usable: {e}")?,
    }
    outln!(
        "{:<48} {:>5} {:>20} {:>10}",
        "tensor",
        "dtype",
        "shape",
        "bytes"
    )?;
    for i in 0..parsed.tensor_count() {
        let t = parsed.tensor_at(i)?;
        let dtype = match t.dtype {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::I8 => "int8",
        };
        let shape = format!("{:?}", t.dims());
        let bytes = t.data.len() + t.scales.map_or(0, <[u8]>::len);
        outln!(
            "{:<48} {dtype:>5} {shape:>20} {bytes:>10}",
            t.id.to_string()
        )?;
    }
    Ok(())
}
