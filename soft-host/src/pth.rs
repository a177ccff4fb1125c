//! PyTorch `torch.save` zip checkpoints, read without Python: `archive/data.pkl` is
//! unpickled into a value tree, tensors (`torch._utils._rebuild_tensor_v2`) are rebuilt
//! from their storages `archive/data/<key>`, and the state dict is found in whichever
//! wrapper holds it.

use std::collections::hash_map::{Entry, HashMap};
use std::io::{Cursor, Read};

use crate::error::{Context, Error, OrFail, Result};
use crate::{fail, require};

use crate::checkpoint::{
    is_bookkeeping, unsupported_integer, widen_le, HostTensor, TensorMap, TensorMapBuilder,
};
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
    /// What the checkpoint says about its model besides the tensors (training `args`,
    /// a `config`): the variant, the preprocessing.
    pub info: crate::model_info::TrainingInfo,
}

/// A storage reference: which archive entry, of what type and how many elements.
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
    /// Integer and bool storages: only bookkeeping such as `num_batches_tracked` may use
    /// them.
    Integer {
        /// Bytes an element.
        size: usize,
        /// The torch dtype, for messages.
        dtype: &'static str,
    },
}

impl StorageType {
    fn from_name(name: &str) -> Result<StorageType> {
        Ok(match name {
            "FloatStorage" => StorageType::F32,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::Bf16,
            "DoubleStorage" => StorageType::F64,
            "LongStorage" => StorageType::integer(8, "torch.int64"),
            "IntStorage" => StorageType::integer(4, "torch.int32"),
            "ShortStorage" => StorageType::integer(2, "torch.int16"),
            "CharStorage" => StorageType::integer(1, "torch.int8"),
            "ByteStorage" => StorageType::integer(1, "torch.uint8"),
            "BoolStorage" => StorageType::integer(1, "torch.bool"),
            other => fail!(Checkpoint, "unsupported tensor storage type torch.{other}"),
        })
    }

    fn integer(size: usize, dtype: &'static str) -> StorageType {
        StorageType::Integer { size, dtype }
    }

    fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F16 | StorageType::Bf16 => 2,
            StorageType::F64 => 8,
            StorageType::Integer { size, .. } => size,
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

/// Most dimensions torch allows a tensor; bounds the work per element and the length of
/// any message that prints a shape.
const MAX_RANK: usize = 64;

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
    require!(
        shape.len() <= MAX_RANK,
        Checkpoint,
        "tensor has {} dimensions, more than torch's {MAX_RANK}",
        shape.len()
    );
    Ok(TensorRef {
        storage: storage_of(pickle, pid)?,
        offset: usize_of(&args[1], "storage offset")?,
        shape,
        stride,
    })
}

/// Whether `items` hold a tensor. A malformed tensor counts: reading it then names the
/// fault, where skipping it would report only that no state dict was found.
fn is_state_dict(pickle: &Pickle, items: &[(Value, Value)]) -> bool {
    items
        .iter()
        .any(|(_, v)| !matches!(tensor_ref(pickle, v), Ok(None)))
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
        StorageType::F32 => widen_le(bytes, f32::from_le_bytes),
        StorageType::F16 => widen_le(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
        StorageType::Bf16 => widen_le(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
        StorageType::F64 => widen_le(bytes, |b| f64::from_le_bytes(b) as f32),
        StorageType::Integer { .. } => Vec::new(),
    }
}

/// The element count of a view, once every index it reaches (`offset + Σ (size_i - 1) ·
/// stride_i`) is known to fall inside a storage of `storage_len` elements. A view with a
/// zero-size dimension reaches nothing. Checked before anything is allocated for it.
fn view_elements(
    offset: usize,
    shape: &[usize],
    stride: &[usize],
    storage_len: usize,
) -> Result<usize> {
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .or_fail_with(Error::Checkpoint, || {
            format!("tensor size {shape:?} overflows")
        })?;
    if numel == 0 {
        return Ok(0);
    }
    let last = shape
        .iter()
        .zip(stride)
        .try_fold(offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?));
    require!(
        last.is_some_and(|l| l < storage_len),
        Checkpoint,
        "tensor view (offset {offset}, size {shape:?}, stride {stride:?}) reaches past its \
         storage of {storage_len} elements"
    );
    Ok(numel)
}

/// Gathers a (possibly strided) view of `storage` into a row-major vector.
fn gather(storage: &[f32], offset: usize, shape: &[usize], stride: &[usize]) -> Result<Vec<f32>> {
    let numel = view_elements(offset, shape, stride, storage.len())?;
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

/// The zip archive `torch.save` writes.
struct Archive<'b> {
    zip: zip::ZipArchive<Cursor<&'b [u8]>>,
    /// `<name>/`, the folder every entry sits in.
    prefix: String,
    /// The whole file's size: no honest entry is larger.
    file_len: usize,
}

impl<'b> Archive<'b> {
    /// Opens the archive and checks it is a little-endian `torch.save` file.
    fn open(bytes: &'b [u8]) -> Result<Archive<'b>> {
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
        Ok(Archive {
            zip,
            prefix,
            file_len: bytes.len(),
        })
    }

    /// The bytes of entry `<prefix><name>`, which must hold at least `expect` bytes.
    fn entry(&mut self, name: &str, expect: usize) -> Result<Vec<u8>> {
        let name = format!("{}{name}", self.prefix);
        let f = self
            .zip
            .by_name(&name)
            .or_fail_with(Error::Checkpoint, || {
                format!("checkpoint archive lacks {name}")
            })?;
        let size = usize::try_from(f.size()).or_fail(Error::Checkpoint, "archive entry size")?;
        // torch stores entries uncompressed; a size beyond the archive's is a lie or a bomb.
        require!(
            size <= self.file_len,
            Checkpoint,
            "{name} claims {size} bytes, more than the whole file"
        );
        require!(
            size >= expect,
            Checkpoint,
            "{name} holds {size} bytes, its tensors need {expect}"
        );
        let mut out = Vec::with_capacity(size);
        f.take(size as u64)
            .read_to_end(&mut out)
            .or_fail_with(Error::Checkpoint, || format!("reading {name}"))?;
        require!(out.len() == size, Checkpoint, "{name} is truncated");
        Ok(out)
    }
}

/// A float storage widened to f32, as first described.
struct Widened {
    dtype: StorageType,
    numel: usize,
    values: Vec<f32>,
}

/// Float storages by key, each read and widened once however many tensors view it (a
/// checkpoint may hold tens of thousands of views of one storage), and dropped after its
/// last view, so at most the storages still to be viewed are held beside the tensors.
struct Storages {
    by_key: HashMap<String, Widened>,
    /// Views not yet gathered, per storage key.
    views_left: HashMap<String, usize>,
}

impl Storages {
    /// Storages for `views`, each gathered exactly once.
    fn for_views<'r>(views: impl Iterator<Item = &'r TensorRef>) -> Storages {
        let mut views_left = HashMap::new();
        for view in views {
            *views_left.entry(view.storage.key.clone()).or_insert(0) += 1;
        }
        Storages {
            by_key: HashMap::new(),
            views_left,
        }
    }

    /// Records that one view of `key` has been gathered; drops the storage after its last.
    fn release(&mut self, key: &str) {
        if let Some(left) = self.views_left.get_mut(key) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.by_key.remove(key);
            }
        }
    }

    /// The widened values of `storage`, exactly `storage.numel` of them.
    fn get(&mut self, archive: &mut Archive<'_>, storage: &Storage) -> Result<&[f32]> {
        let widened = match self.by_key.entry(storage.key.clone()) {
            Entry::Occupied(seen) => seen.into_mut(),
            Entry::Vacant(slot) => {
                let bytes = storage
                    .numel
                    .checked_mul(storage.dtype.size())
                    .or_fail(Error::Checkpoint, "storage size overflows")?;
                let raw = archive.entry(&format!("data/{}", storage.key), bytes)?;
                slot.insert(Widened {
                    dtype: storage.dtype,
                    numel: storage.numel,
                    values: widen(storage.dtype, &raw[..bytes]),
                })
            }
        };
        require!(
            widened.dtype == storage.dtype && widened.numel == storage.numel,
            Checkpoint,
            "storage {} is described twice, with different types or sizes",
            storage.key
        );
        Ok(&widened.values)
    }
}

/// Elements all tensors of a checkpoint may hold together: as many as the file has bytes,
/// and at least this many. Stored densely an element takes 2 to 8 bytes, so a real
/// checkpoint stays below the budget even if every tensor were viewed twice; only views
/// that repeat their storage (stride 0, or many views of one storage) can exceed it, and
/// they are refused before anything is allocated for them.
const MIN_ELEMENT_BUDGET: usize = 1 << 24;

/// What remains of the element budget while tensors are gathered.
struct ElementBudget {
    limit: usize,
    spent: usize,
}

impl ElementBudget {
    fn for_file(file_len: usize) -> ElementBudget {
        ElementBudget {
            limit: file_len.max(MIN_ELEMENT_BUDGET),
            spent: 0,
        }
    }

    /// Takes `numel` elements for a view of `shape`, or says why not.
    fn spend(&mut self, numel: usize, shape: &[usize]) -> Result<()> {
        let spent = self.spent.checked_add(numel).filter(|&s| s <= self.limit);
        self.spent = spent.or_fail_with(Error::Checkpoint, || {
            format!(
                "view of size {shape:?} ({numel} elements) takes the checkpoint's tensors past \
                 {} elements, more than the file can hold (a stride-0 or repeated view)",
                self.limit
            )
        })?;
        Ok(())
    }
}

/// Reads one float tensor: its view is checked against its storage and the element
/// budget before anything is allocated for it.
fn read_tensor(
    archive: &mut Archive<'_>,
    storages: &mut Storages,
    budget: &mut ElementBudget,
    t: TensorRef,
) -> Result<HostTensor> {
    let numel = view_elements(t.offset, &t.shape, &t.stride, t.storage.numel)?;
    budget.spend(numel, &t.shape)?;
    let storage = storages.get(archive, &t.storage)?;
    let data = gather(storage, t.offset, &t.shape, &t.stride)?;
    storages.release(&t.storage.key);
    Ok(HostTensor {
        data,
        shape: t.shape,
    })
}

/// Reads a `torch.save` zip archive from memory.
pub fn parse(bytes: &[u8], prefer: Prefer) -> Result<Loaded> {
    let mut archive = Archive::open(bytes)?;
    let pkl = archive.entry("data.pkl", 0)?;
    let graph = pickle::parse(&pkl).context("unpickling data.pkl")?;
    let mut notes = Vec::new();
    let items = select_state_dict(&graph, prefer, &mut notes)?;
    let mut views = Vec::new();
    let mut skipped = 0;
    for (k, v) in items {
        let key = k.as_str();
        let t = tensor_ref(&graph, v)
            .with_context(|| format!("tensor {}", key.unwrap_or("under a key that is not text")))?;
        let Some(t) = t else {
            skipped += 1;
            continue;
        };
        let key = key.or_fail(Error::Checkpoint, "a tensor's state dict key is not text")?;
        if let StorageType::Integer { dtype, .. } = t.storage.dtype {
            if is_bookkeeping(key) {
                continue;
            }
            return Err(unsupported_integer(key, dtype));
        }
        views.push((key, t));
    }
    let mut tensors = TensorMapBuilder::default();
    let mut storages = Storages::for_views(views.iter().map(|(_, t)| t));
    let mut budget = ElementBudget::for_file(bytes.len());
    for (key, t) in views {
        tensors.insert_with(key, || {
            read_tensor(&mut archive, &mut storages, &mut budget, t)
                .with_context(|| format!("tensor {key}"))
        })?;
    }
    if skipped > 0 {
        notes.push(format!("skipped {skipped} non-tensor entries"));
    }
    let tensors: TensorMap = tensors.finish();
    require!(
        !tensors.is_empty(),
        Checkpoint,
        "the checkpoint's state dict holds no float tensors"
    );
    let info = crate::model_info::from_pickle(&graph);
    Ok(Loaded {
        tensors,
        notes,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// One `_rebuild_tensor_v2` entry of a hand-written state dict.
    struct View<'a> {
        key: &'a str,
        class: &'a str,
        storage: &'a str,
        storage_len: u64,
        offset: u64,
        shape: &'a [u64],
        stride: &'a [u64],
    }

    impl<'a> View<'a> {
        /// A dense float view of the whole storage `storage`.
        fn dense(key: &'a str, storage: &'a str, shape: &'a [u64], stride: &'a [u64]) -> Self {
            View {
                key,
                class: "FloatStorage",
                storage,
                storage_len: shape.iter().fold(1, |a, &d| a.wrapping_mul(d)),
                offset: 0,
                shape,
                stride,
            }
        }
    }

    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn int(out: &mut Vec<u8>, v: u64) {
        out.extend([0x8a, 8]);
        out.extend(v.to_le_bytes());
    }

    /// The pickle `torch.save` writes for an `OrderedDict` of these views.
    fn state_dict_pickle(views: &[View<'_>]) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
        for v in views {
            text(&mut p, v.key);
            p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            text(&mut p, "storage");
            p.extend(format!("ctorch\n{}\n", v.class).as_bytes());
            text(&mut p, v.storage);
            text(&mut p, "cpu");
            int(&mut p, v.storage_len);
            p.extend(b"tQ");
            int(&mut p, v.offset);
            for dims in [v.shape, v.stride] {
                p.push(b'(');
                dims.iter().for_each(|&d| int(&mut p, d));
                p.push(b't');
            }
            p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        }
        p.extend(b"u.");
        p
    }

    /// A `torch.save` archive of `views`, with storages `(key, bytes)`.
    fn torch_zip(views: &[View<'_>], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut put = |name: &str, bytes: &[u8]| {
            out.start_file(format!("archive/{name}"), stored).unwrap();
            out.write_all(bytes).unwrap();
        };
        put("data.pkl", &state_dict_pickle(views));
        put("byteorder", b"little");
        for (key, bytes) in storages {
            put(&format!("data/{key}"), bytes);
        }
        out.finish().unwrap().into_inner()
    }

    fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values.into_iter().flat_map(f32::to_le_bytes).collect()
    }

    fn parse_err(views: &[View<'_>], storages: &[(&str, Vec<u8>)]) -> Error {
        parse(&torch_zip(views, storages), Prefer::Ema).unwrap_err()
    }

    #[test]
    fn the_hand_written_archive_reads_back() {
        let views = [
            View::dense("module.w", "0", &[2, 3], &[3, 1]),
            View::dense("b", "1", &[3], &[1]),
        ];
        let zip = torch_zip(
            &views,
            &[
                ("0", floats((0..6).map(|x| x as f32))),
                ("1", floats([7.0; 3])),
            ],
        );
        let loaded = parse(&zip, Prefer::Ema).unwrap();
        assert_eq!(loaded.tensors["w"].shape, vec![2, 3]);
        assert_eq!(loaded.tensors["w"].data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(loaded.tensors["b"].data, vec![7.0; 3]);
    }

    #[test]
    fn stride_zero_views_hit_the_element_budget_before_allocating() {
        // torch.zeros(1).expand(n): in bounds (every index is 0), but n elements.
        for n in [1u64 << 62, 2_000_000_000, (MIN_ELEMENT_BUDGET + 1) as u64] {
            let shape = [n];
            let view = View {
                storage_len: 1,
                ..View::dense("big.weight", "0", &shape, &[0])
            };
            let e = parse_err(&[view], &[("0", floats([0.0]))]);
            let message = e.to_string();
            assert!(matches!(e.root(), Error::Checkpoint(_)), "{message}");
            assert!(
                message.starts_with(&format!("tensor big.weight: view of size [{n}]"))
                    && message.contains("more than the file can hold"),
                "{message}"
            );
        }
        // Within the budget, an expansion is gathered like any view.
        let view = View {
            storage_len: 1,
            ..View::dense("small", "0", &[1000], &[0])
        };
        let loaded = parse(&torch_zip(&[view], &[("0", floats([2.5]))]), Prefer::Ema).unwrap();
        assert_eq!(loaded.tensors["small"].data, vec![2.5; 1000]);
    }

    #[test]
    fn the_budget_is_for_all_tensors_together() {
        let half = MIN_ELEMENT_BUDGET as u64 / 2 + 1;
        let expand = |key| View {
            storage_len: 1,
            ..View::dense(key, "0", &[], &[])
        };
        let shape = [half];
        let views = [
            View {
                shape: &shape,
                stride: &[0],
                ..expand("first")
            },
            View {
                shape: &shape,
                stride: &[0],
                ..expand("second")
            },
        ];
        let e = parse_err(&views, &[("0", floats([1.0]))]);
        assert!(
            e.to_string().starts_with("tensor second: view of size"),
            "{e}"
        );
    }

    #[test]
    fn views_reaching_past_their_storage_are_refused() {
        let storage = [("0", floats([0.0; 6]))];
        let check = |offset: u64, shape: &[u64], stride: &[u64], want: &str| {
            let view = View {
                storage_len: 6,
                offset,
                ..View::dense("v", "0", shape, stride)
            };
            let e = parse_err(&[view], &storage);
            assert!(
                e.to_string().contains(want),
                "{offset} {shape:?} {stride:?}: {e}"
            );
        };
        let past = "reaches past its storage of 6 elements";
        check(0, &[7], &[1], past);
        check(6, &[1], &[1], past);
        check(1, &[3, 2], &[2, 1], past);
        check(0, &[2, 2], &[5, 1], past);
        // Overflowing arithmetic: (size - 1) · stride, offset + reach, the element count.
        // (Pickled ints are i64: i64::MAX is the largest a hostile file can write.)
        let max = i64::MAX as u64;
        check(0, &[4], &[max], past);
        check(max, &[1], &[1], past);
        check(max, &[3], &[max], past);
        check(1, &[2], &[max], past);
        check(0, &[1 << 32, 1 << 32], &[0, 0], "overflows");
        check(0, &[1; MAX_RANK + 1], &[0; MAX_RANK + 1], "65 dimensions");
        // A storage claiming more elements than its entry holds.
        let view = View {
            storage_len: 7,
            ..View::dense("v", "0", &[7], &[1])
        };
        assert!(parse_err(&[view], &storage)
            .to_string()
            .contains("its tensors need 28"));
    }

    #[test]
    fn a_view_with_a_zero_size_dimension_reaches_nothing() {
        let view = View {
            storage_len: 1,
            offset: i64::MAX as u64,
            ..View::dense("empty", "0", &[0, 1 << 62], &[i64::MAX as u64, 1])
        };
        let zip = torch_zip(
            &[view, View::dense("x", "0", &[1], &[1])],
            &[("0", floats([1.0]))],
        );
        let loaded = parse(&zip, Prefer::Ema).unwrap();
        assert!(loaded.tensors["empty"].data.is_empty());
    }

    #[test]
    fn a_storage_is_read_once_however_many_views_it_has() {
        let zip = torch_zip(
            &[View::dense("w", "0", &[2], &[1])],
            &[("0", floats([1.0, 2.0]))],
        );
        let mut archive = Archive::open(&zip).unwrap();
        let storage = |numel| Storage {
            dtype: StorageType::F32,
            key: "0".into(),
            numel,
        };
        let two_views = [0, 1].map(|_| TensorRef {
            storage: storage(2),
            offset: 0,
            shape: vec![2],
            stride: vec![1],
        });
        let mut storages = Storages::for_views(two_views.iter());
        let first = storages.get(&mut archive, &storage(2)).unwrap().as_ptr();
        storages.release("0");
        let again = storages.get(&mut archive, &storage(2)).unwrap().as_ptr();
        assert_eq!(first, again);
        // A second description that disagrees with the first is refused.
        let e = storages.get(&mut archive, &storage(1)).unwrap_err();
        assert!(e.to_string().contains("described twice"), "{e}");
        // After its last view the storage is dropped.
        storages.release("0");
        assert!(storages.by_key.is_empty());

        // Tens of thousands of one-element views of one storage: linear, not quadratic.
        const VIEWS: usize = 30_000;
        let keys: Vec<String> = (0..VIEWS).map(|i| format!("v{i}")).collect();
        let offsets: Vec<u64> = (0..VIEWS as u64).collect();
        let views: Vec<View<'_>> = keys
            .iter()
            .zip(&offsets)
            .map(|(key, &offset)| View {
                storage_len: VIEWS as u64,
                offset,
                ..View::dense(key, "0", &[1], &[1])
            })
            .collect();
        let zip = torch_zip(&views, &[("0", floats((0..VIEWS).map(|x| x as f32)))]);
        let loaded = parse(&zip, Prefer::Ema).unwrap();
        assert_eq!(loaded.tensors.len(), VIEWS);
        assert_eq!(loaded.tensors["v29999"].data, vec![29999.0]);
    }

    #[test]
    fn two_keys_for_one_tensor_are_refused_naming_both() {
        let storages = [("0", floats([1.0])), ("1", floats([2.0]))];
        for (a, b) in [
            ("module.head.weight", "head.weight"),
            ("head.weight", "module.head.weight"),
            ("head.weight", "head.weight"),
        ] {
            let views = [
                View::dense(a, "0", &[1], &[1]),
                View::dense(b, "1", &[1], &[1]),
            ];
            let e = parse_err(&views, &storages);
            assert!(matches!(e.root(), Error::Checkpoint(_)), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "keys {a} and {b} both hold tensor head.weight: the checkpoint is ambiguous"
                )
            );
        }
        // Only one wrapper prefix is removed: module.module.x is not module.x.
        let views = [
            View::dense("module.module.x", "0", &[1], &[1]),
            View::dense("module.x", "1", &[1], &[1]),
        ];
        let loaded = parse(&torch_zip(&views, &storages), Prefer::Ema).unwrap();
        assert_eq!(loaded.tensors.len(), 2);
    }

    #[test]
    fn integer_tensors_are_refused_unless_they_are_bookkeeping() {
        let int8 = |key| View {
            class: "CharStorage",
            ..View::dense(key, "1", &[4], &[1])
        };
        let float = View::dense("head.bias", "0", &[1], &[1]);
        let storages = [("0", floats([1.0])), ("1", vec![1u8; 4])];
        let e = parse_err(&[float, int8("module.head.weight")], &storages);
        assert!(matches!(e.root(), Error::Checkpoint(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "tensor module.head.weight: dtype torch.int8 is not supported (only float \
             tensors can be converted)"
        );
        for key in [
            "num_batches_tracked_not",
            "x.num_batches_tracked.weight",
            "mask",
        ] {
            let float = View::dense("head.bias", "0", &[1], &[1]);
            let e = parse_err(&[float, int8(key)], &storages);
            assert!(e.to_string().contains("is not supported"), "{key}: {e}");
        }
        // BatchNorm's step counter is skipped, with or without the wrapper prefix.
        let counter = |key| View {
            class: "LongStorage",
            storage_len: 1,
            ..View::dense(key, "2", &[], &[])
        };
        let views = [
            View::dense("bn.weight", "0", &[1], &[1]),
            counter("bn.num_batches_tracked"),
            counter("module.bn2.num_batches_tracked"),
        ];
        let storages = [("0", floats([1.0])), ("2", vec![0u8; 8])];
        let loaded = parse(&torch_zip(&views, &storages), Prefer::Ema).unwrap();
        assert_eq!(loaded.tensors.keys().collect::<Vec<_>>(), ["bn.weight"]);
    }

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
