//! PyTorch `torch.save` zip checkpoints, read without Python: `archive/data.pkl` is
//! unpickled into a value tree, tensors (`torch._utils._rebuild_tensor_v2`) are rebuilt
//! from their storages `archive/data/<key>`, and the state dict is found in whichever
//! wrapper holds it.

use std::io::{Cursor, Read};

use crate::error::{Context, Error, OrFail, Result};
use crate::{fail, require};

use crate::checkpoint::{HostTensor, TensorMap};
use crate::pickle::{self, Pickle, Value};

/// Which state dict to take from a training checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefer {
    /// `state_dict_ema` when present (what the reference's evaluation loads).
    #[default]
    Ema,
    /// Always `state_dict`.
    Raw,
}

/// A checkpoint's tensors and what was decided on the way.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Key → tensor (float tensors only, `module.` stripped).
    pub tensors: TensorMap,
    /// Lines worth telling the user (which state dict was taken, what was skipped).
    pub notes: Vec<String>,
}

struct Storage {
    dtype: StorageType,
    key: String,
    numel: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StorageType {
    F32,
    F16,
    Bf16,
    F64,
    /// Integer and bool storages: counters such as `num_batches_tracked`, skipped.
    Other(usize),
}

impl StorageType {
    fn from_name(name: &str) -> Result<StorageType> {
        Ok(match name {
            "FloatStorage" => StorageType::F32,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::Bf16,
            "DoubleStorage" => StorageType::F64,
            "LongStorage" => StorageType::Other(8),
            "IntStorage" => StorageType::Other(4),
            "ShortStorage" => StorageType::Other(2),
            "CharStorage" | "ByteStorage" | "BoolStorage" => StorageType::Other(1),
            other => fail!(Checkpoint, "unsupported tensor storage type torch.{other}"),
        })
    }

    fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F16 | StorageType::Bf16 => 2,
            StorageType::F64 => 8,
            StorageType::Other(n) => n,
        }
    }
}

/// A tensor reference found in the pickle, before its data is read.
struct TensorRef {
    storage: Storage,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn usize_of(v: &Value, what: &str) -> Result<usize> {
    let i = v
        .as_int()
        .or_fail_with(Error::Checkpoint, || format!("{what} is not an integer"))?;
    usize::try_from(i).or_fail_with(Error::Checkpoint, || format!("{what} is negative ({i})"))
}

fn storage_of(pickle: &Pickle, pid: &Value) -> Result<Storage> {
    let items = pickle
        .items(pid)
        .or_fail(Error::Checkpoint, "storage reference is not a tuple")?;
    require!(
        items.len() >= 5 && items[0].as_str() == Some("storage"),
        Checkpoint,
        "unexpected storage reference"
    );
    let (_, name) = items[1]
        .global()
        .or_fail(Error::Checkpoint, "storage type is not a class")?;
    let key = match &items[2] {
        Value::Str(s) => s.to_string(),
        other => fail!(Checkpoint, "storage key {other:?} is not text"),
    };
    require!(
        key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
        Checkpoint,
        "storage key {key:?} is not a plain name"
    );
    Ok(Storage {
        dtype: StorageType::from_name(name)?,
        key,
        numel: usize_of(&items[4], "storage size")?,
    })
}

/// How many `_rebuild_parameter` wrappers a tensor may sit in (torch writes one); a
/// hostile pickle can make the chain circular.
const MAX_PARAMETER_NESTING: usize = 4;

/// Recognises `_rebuild_tensor_v2(storage, offset, size, stride, ...)` and
/// `_rebuild_parameter(tensor, ...)`.
fn tensor_ref(pickle: &Pickle, v: &Value) -> Result<Option<TensorRef>> {
    let mut v = v;
    for _ in 0..=MAX_PARAMETER_NESTING {
        let Some((callable, args)) = pickle.call(v) else {
            return Ok(None);
        };
        let args = pickle.items(args).unwrap_or_default();
        match callable.global() {
            Some(("torch._utils", "_rebuild_parameter")) => match args.first() {
                Some(t) => v = t,
                None => fail!(Checkpoint, "_rebuild_parameter without a tensor"),
            },
            Some(("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor")) => {
                return rebuilt_tensor(pickle, args).map(Some)
            }
            _ => return Ok(None),
        }
    }
    fail!(
        Checkpoint,
        "tensor nested in more than {MAX_PARAMETER_NESTING} _rebuild_parameter calls"
    )
}

/// The arguments of `_rebuild_tensor_v2`: storage, offset, size, stride, ...
fn rebuilt_tensor(pickle: &Pickle, args: &[Value]) -> Result<TensorRef> {
    require!(
        args.len() >= 4,
        Checkpoint,
        "_rebuild_tensor_v2 with {} arguments",
        args.len()
    );
    let pid = pickle
        .persistent_id(&args[0])
        .or_fail(Error::Checkpoint, "tensor without a storage reference")?;
    let dims = |v: &Value, what: &str| -> Result<Vec<usize>> {
        pickle
            .items(v)
            .or_fail_with(Error::Checkpoint, || {
                format!("tensor {what} is not a tuple")
            })?
            .iter()
            .map(|d| usize_of(d, what))
            .collect()
    };
    let shape = dims(&args[2], "size")?;
    let stride = dims(&args[3], "stride")?;
    require!(
        shape.len() == stride.len(),
        Checkpoint,
        "tensor size and stride differ in rank"
    );
    Ok(TensorRef {
        storage: storage_of(pickle, pid)?,
        offset: usize_of(&args[1], "storage offset")?,
        shape,
        stride,
    })
}

fn is_state_dict(pickle: &Pickle, items: &[(Value, Value)]) -> bool {
    items
        .iter()
        .any(|(_, v)| matches!(tensor_ref(pickle, v), Ok(Some(_))))
}

/// Picks the state dict out of the known wrappers.
fn select_state_dict<'p>(
    pickle: &'p Pickle,
    prefer: Prefer,
    notes: &mut Vec<String>,
) -> Result<&'p [(Value, Value)]> {
    let items = pickle
        .dict(pickle.root())
        .or_fail(Error::Checkpoint, "checkpoint does not hold a dict")?;
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| pickle.dict(v))
    };
    if is_state_dict(pickle, items) {
        return Ok(items);
    }
    let (ema, raw) = (get("state_dict_ema"), get("state_dict"));
    match (prefer, ema, raw) {
        (Prefer::Ema, Some(ema), raw) if is_state_dict(pickle, ema) => {
            if raw.is_some() {
                notes.push(
                    "took state_dict_ema (what the reference evaluates); --no-ema takes state_dict"
                        .into(),
                );
            } else {
                notes.push("took state_dict_ema".into());
            }
            Ok(ema)
        }
        (_, _, Some(raw)) if is_state_dict(pickle, raw) => {
            notes.push("took state_dict".into());
            Ok(raw)
        }
        (Prefer::Raw, Some(_), None) => {
            fail!(
                Checkpoint,
                "checkpoint has state_dict_ema but no state_dict (drop --no-ema)"
            )
        }
        _ => match get("model") {
            Some(model) if is_state_dict(pickle, model) => {
                notes.push("took the 'model' entry".into());
                Ok(model)
            }
            _ => {
                let keys: Vec<String> = items
                    .iter()
                    .filter_map(|(k, _)| k.as_str().map(str::to_string))
                    .collect();
                fail!(
                    Checkpoint,
                    "no state dict found in the checkpoint (top-level keys: {})",
                    keys.join(", ")
                )
            }
        },
    }
}

fn widen(dtype: StorageType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        StorageType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        StorageType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        StorageType::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        StorageType::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as f32)
            .collect(),
        StorageType::Other(_) => Vec::new(),
    }
}

/// Gathers a (possibly strided) view of `storage` into a row-major vector.
fn gather(storage: &[f32], offset: usize, shape: &[usize], stride: &[usize]) -> Result<Vec<f32>> {
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .or_fail(Error::Checkpoint, "tensor size overflows")?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let last = shape
        .iter()
        .zip(stride)
        .try_fold(offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?));
    require!(
        last.is_some_and(|l| l < storage.len()),
        Checkpoint,
        "tensor view reaches past its storage"
    );
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(storage[at]);
        for (i, &d) in index.iter_mut().zip(shape).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    Ok(out)
}

/// Reads a `torch.save` zip archive from memory.
pub fn parse(bytes: &[u8], prefer: Prefer) -> Result<Loaded> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .or_fail(Error::Checkpoint, "not a readable zip archive")?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .or_fail(
            Error::Checkpoint,
            "zip archive has no <name>/data.pkl: not a torch.save checkpoint",
        )?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        f.take(16)
            .read_to_string(&mut order)
            .or_fail(Error::Checkpoint, "reading the byteorder entry")?;
        require!(
            order.trim() != "big",
            Checkpoint,
            "big-endian checkpoints are not supported"
        );
    }
    let read_entry = |zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
                      name: &str,
                      expect: Option<usize>|
     -> Result<Vec<u8>> {
        let f = zip.by_name(name).or_fail_with(Error::Checkpoint, || {
            format!("checkpoint archive lacks {name}")
        })?;
        let size = usize::try_from(f.size()).or_fail(Error::Checkpoint, "archive entry size")?;
        // torch stores entries uncompressed; a size beyond the archive's is a lie or a bomb.
        require!(
            size <= bytes.len(),
            Checkpoint,
            "{name} claims {size} bytes, more than the whole file"
        );
        if let Some(want) = expect {
            require!(
                size >= want,
                Checkpoint,
                "{name} holds {size} bytes, its tensors need {want}"
            );
        }
        let mut out = Vec::with_capacity(size);
        f.take(size as u64)
            .read_to_end(&mut out)
            .or_fail_with(Error::Checkpoint, || format!("reading {name}"))?;
        require!(out.len() == size, Checkpoint, "{name} is truncated");
        Ok(out)
    };
    let pkl = read_entry(&mut zip, &pkl_name, None)?;
    let graph = pickle::parse(&pkl).context("unpickling data.pkl")?;
    let mut notes = Vec::new();
    let items = select_state_dict(&graph, prefer, &mut notes)?;
    let mut tensors = TensorMap::new();
    let mut skipped = 0;
    for (k, v) in items {
        let Some(key) = k.as_str() else { continue };
        let Some(t) = tensor_ref(&graph, v).with_context(|| format!("tensor {key}"))? else {
            skipped += 1;
            continue;
        };
        if let StorageType::Other(_) = t.storage.dtype {
            continue;
        }
        let want = t
            .storage
            .numel
            .checked_mul(t.storage.dtype.size())
            .or_fail(Error::Checkpoint, "storage size overflows")?;
        let raw = read_entry(
            &mut zip,
            &format!("{prefix}data/{}", t.storage.key),
            Some(want),
        )?;
        let storage = widen(t.storage.dtype, &raw[..want]);
        let data = gather(&storage, t.offset, &t.shape, &t.stride)
            .with_context(|| format!("tensor {key}"))?;
        let key = key.strip_prefix("module.").unwrap_or(key).to_string();
        tensors.insert(
            key,
            HostTensor {
                shape: t.shape,
                data,
            },
        );
    }
    if skipped > 0 {
        notes.push(format!("skipped {skipped} non-tensor entries"));
    }
    require!(
        !tensors.is_empty(),
        Checkpoint,
        "the checkpoint's state dict holds no float tensors"
    );
    Ok(Loaded { tensors, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_follows_strides() {
        let s: Vec<f32> = (0..6).map(|x| x as f32).collect();
        // A transposed 2x3 view: shape (3, 2), stride (1, 3).
        assert_eq!(
            gather(&s, 0, &[3, 2], &[1, 3]).unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        assert!(gather(&s, 1, &[3, 2], &[1, 3]).is_err());
        assert!(gather(&s, 0, &[usize::MAX, 2], &[1, 1]).is_err());
    }

    #[test]
    fn a_circular_parameter_chain_is_an_error() {
        // L = []; C = _rebuild_parameter(*L); L.append(C): C wraps itself.
        let graph = pickle::parse(b"]q\x00ctorch._utils\n_rebuild_parameter\nh\x00Ra.").unwrap();
        let call = &graph.items(graph.root()).unwrap()[0];
        let err = tensor_ref(&graph, call).err().unwrap().to_string();
        assert!(err.contains("_rebuild_parameter calls"), "{err}");
    }
}
