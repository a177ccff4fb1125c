//! Checkpoints as a map from PyTorch key to f32 tensor.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Context, Error, OrFail, Result};
use crate::fail;
use safetensors::{Dtype, SafeTensors};

/// One checkpoint tensor, widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Key → tensor, with any `module.` prefix removed.
pub type TensorMap = BTreeMap<String, HostTensor>;

/// Reads a safetensors file. Integer tensors (BatchNorm's `num_batches_tracked`) are skipped.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    parse_safetensors(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Parses safetensors bytes.
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorMap> {
    let st =
        SafeTensors::deserialize(bytes).or_fail(Error::Checkpoint, "not a safetensors file")?;
    let mut map = TensorMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::BOOL => continue,
            other => fail!(Checkpoint, "tensor {name}: unsupported dtype {other:?}"),
        };
        let key = name.strip_prefix("module.").unwrap_or(&name).to_string();
        map.insert(
            key,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(map)
}

/// Reads a checkpoint of either kind, by content: a zip archive is a `torch.save` file,
/// anything else must be safetensors.
pub fn read_checkpoint(path: &Path, prefer: crate::pth::Prefer) -> Result<crate::pth::Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let loaded = if bytes.starts_with(b"PK\x03\x04") {
        crate::pth::parse(&bytes, prefer)
    } else {
        parse_safetensors(&bytes).map(|tensors| crate::pth::Loaded {
            tensors,
            notes: Vec::new(),
        })
    };
    loaded.with_context(|| format!("reading checkpoint {}", path.display()))
}
