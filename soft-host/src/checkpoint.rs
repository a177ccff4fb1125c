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

/// The prefix `torch.nn.DataParallel` and `DistributedDataParallel` put on every key.
const WRAPPER_PREFIX: &str = "module.";

/// Whether an integer tensor under `key` is training bookkeeping that inference never
/// reads (BatchNorm's step counter). Any other integer tensor is an error: dropping it
/// would only resurface as a "missing tensor" with no hint of why.
pub(crate) fn is_bookkeeping(key: &str) -> bool {
    key.rsplit('.').next() == Some("num_batches_tracked")
}

/// The error for an integer or bool tensor that is not bookkeeping.
pub(crate) fn unsupported_integer(key: &str, dtype: &str) -> Error {
    Error::Checkpoint(format!(
        "tensor {key}: dtype {dtype} is not supported (only float tensors can be converted)"
    ))
}

/// A [`TensorMap`] being filled from a file's keys: strips the wrapper prefix and refuses
/// two keys that name one tensor, since keeping either would be a silent guess.
#[derive(Debug, Default)]
pub(crate) struct TensorMapBuilder {
    tensors: TensorMap,
    /// Model key → the key it had in the file, for the conflict message.
    file_keys: BTreeMap<String, String>,
}

impl TensorMapBuilder {
    /// Adds the tensor `make` builds under `file_key`, after checking (before building it)
    /// that no other key of the file already named the same tensor.
    pub(crate) fn insert_with(
        &mut self,
        file_key: &str,
        make: impl FnOnce() -> Result<HostTensor>,
    ) -> Result<()> {
        let key = file_key.strip_prefix(WRAPPER_PREFIX).unwrap_or(file_key);
        if let Some(earlier) = self.file_keys.get(key) {
            fail!(
                Checkpoint,
                "keys {earlier} and {file_key} both hold tensor {key}: the checkpoint is ambiguous"
            );
        }
        let tensor = make()?;
        self.file_keys.insert(key.to_string(), file_key.to_string());
        self.tensors.insert(key.to_string(), tensor);
        Ok(())
    }

    /// The tensors gathered so far.
    pub(crate) fn finish(self) -> TensorMap {
        self.tensors
    }
}

/// Reads a safetensors file. Integer tensors are refused unless they are bookkeeping
/// (BatchNorm's `num_batches_tracked`), which is skipped.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    parse_safetensors(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Little-endian values of `N` bytes each, widened to f32.
pub(crate) fn widen_le<const N: usize>(raw: &[u8], to_f32: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    raw.chunks_exact(N)
        .map(|b| to_f32(b.try_into().unwrap_or([0; N])))
        .collect()
}

/// Parses safetensors bytes.
pub fn parse_safetensors(bytes: &[u8]) -> Result<TensorMap> {
    // `deserialize` checks that every tensor's bytes match its shape and dtype.
    let st =
        SafeTensors::deserialize(bytes).or_fail(Error::Checkpoint, "not a safetensors file")?;
    let mut map = TensorMapBuilder::default();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => widen_le(raw, f32::from_le_bytes),
            Dtype::F16 => widen_le(raw, |b| half::f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => widen_le(raw, |b| half::bf16::from_le_bytes(b).to_f32()),
            Dtype::F64 => widen_le(raw, |b| f64::from_le_bytes(b) as f32),
            integer @ (Dtype::I64
            | Dtype::I32
            | Dtype::I16
            | Dtype::I8
            | Dtype::U64
            | Dtype::U32
            | Dtype::U16
            | Dtype::U8
            | Dtype::BOOL) => {
                if is_bookkeeping(&name) {
                    continue;
                }
                return Err(unsupported_integer(&name, &format!("{integer:?}")));
            }
            other => fail!(Checkpoint, "tensor {name}: unsupported dtype {other:?}"),
        };
        map.insert_with(&name, || {
            Ok(HostTensor {
                shape: view.shape().to_vec(),
                data,
            })
        })?;
    }
    Ok(map.finish())
}

/// What a safetensors file's `__metadata__` says about its model (nothing if the header
/// does not parse; the tensors have been read from it by then).
fn safetensors_info(bytes: &[u8]) -> crate::model_info::TrainingInfo {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .map(|m| crate::model_info::from_safetensors_metadata(&m))
        .unwrap_or_default()
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
            info: safetensors_info(&bytes),
        })
    };
    loaded.with_context(|| format!("reading checkpoint {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{serialize, TensorView};

    /// A safetensors file of `(key, dtype, shape, bytes)`.
    fn safetensors(tensors: &[(&str, Dtype, &[usize], &[u8])]) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|&(key, dtype, shape, bytes)| {
                let view = TensorView::new(dtype, shape.to_vec(), bytes).unwrap();
                (key.to_string(), view)
            })
            .collect();
        serialize(views, &None).unwrap()
    }

    const ONE_F32: &[u8] = &[0, 0, 0x80, 0x3f];

    #[test]
    fn float_dtypes_widen_and_the_wrapper_prefix_goes() {
        let f64_two = 2.0f64.to_le_bytes();
        let f16_three = half::f16::from_f32(3.0).to_le_bytes();
        let bf16_four = half::bf16::from_f32(4.0).to_le_bytes();
        let map = parse_safetensors(&safetensors(&[
            ("module.a", Dtype::F32, &[1], ONE_F32),
            ("b", Dtype::F64, &[1], &f64_two),
            ("c", Dtype::F16, &[1, 1], &f16_three),
            ("d", Dtype::BF16, &[], &bf16_four),
        ]))
        .unwrap();
        let values: Vec<(&str, f32)> = map.iter().map(|(k, t)| (&k[..], t.data[0])).collect();
        assert_eq!(values, [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]);
        assert_eq!(map["c"].shape, vec![1, 1]);
    }

    #[test]
    fn two_keys_for_one_tensor_are_refused_naming_both() {
        let e = parse_safetensors(&safetensors(&[
            ("module.head.weight", Dtype::F32, &[1], ONE_F32),
            ("head.weight", Dtype::F32, &[1], ONE_F32),
        ]))
        .unwrap_err();
        assert!(matches!(e.root(), Error::Checkpoint(_)), "{e}");
        let message = e.to_string();
        let tail = "both hold tensor head.weight: the checkpoint is ambiguous";
        assert!(
            [
                format!("keys module.head.weight and head.weight {tail}"),
                format!("keys head.weight and module.head.weight {tail}"),
            ]
            .contains(&message),
            "{message}"
        );
    }

    #[test]
    fn integer_tensors_are_refused_unless_they_are_bookkeeping() {
        for (dtype, bytes) in [
            (Dtype::I8, &[1u8][..]),
            (Dtype::U8, &[1]),
            (Dtype::BOOL, &[1]),
            (Dtype::I64, &[0; 8]),
            (Dtype::U16, &[0; 2]),
        ] {
            for key in ["head.weight", "module.head.weight", "num_batches_tracked.x"] {
                let e = parse_safetensors(&safetensors(&[
                    ("norm.weight", Dtype::F32, &[1], ONE_F32),
                    (key, dtype, &[1], bytes),
                ]))
                .unwrap_err();
                assert!(matches!(e.root(), Error::Checkpoint(_)), "{e}");
                assert_eq!(
                    e.to_string(),
                    format!(
                        "tensor {key}: dtype {dtype:?} is not supported (only float tensors \
                         can be converted)"
                    )
                );
            }
        }
        let map = parse_safetensors(&safetensors(&[
            ("bn.weight", Dtype::F32, &[1], ONE_F32),
            ("bn.num_batches_tracked", Dtype::I64, &[], &[0; 8]),
            ("module.bn2.num_batches_tracked", Dtype::I64, &[], &[0; 8]),
        ]))
        .unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["bn.weight"]);
    }

    #[test]
    fn other_dtypes_are_named() {
        let e = parse_safetensors(&safetensors(&[("q", Dtype::F8_E4M3, &[1], &[0])])).unwrap_err();
        assert_eq!(e.to_string(), "tensor q: unsupported dtype F8_E4M3");
    }
}
