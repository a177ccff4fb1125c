//! The model blob: one little-endian byte string a firmware keeps in flash and reads in place.
//!
//! Layout (all offsets from the blob's first byte; see `docs/FORMAT.md`):
//!
//! | bytes | what |
//! |---|---|
//! | 0..64 | header: magic `SOFTMDL\0`, version, section offsets and sizes |
//! | config | [`ModelConfig`] as 27 `u32` words |
//! | table | one 40-byte entry per tensor: id, dtype, shape, offset, size, scale offset |
//! | data | tensor bytes, each tensor 16-byte aligned |
//! | metadata | optional: name, variant, preprocessing, labels ([`crate::metadata`]) |
//! | last 4 | CRC-32 (IEEE) of every byte before it |
//!
//! Parsing never copies: tensors are borrowed from the blob, every offset and size is
//! checked before use, and nothing a corrupt blob holds can make the parser panic.

use core::fmt;

use crate::config::{ModelConfig, CONFIG_WORDS};
use crate::error::{Error, Result};
use crate::metadata::Metadata;

/// First eight bytes of every blob.
pub const MAGIC: [u8; 8] = *b"SOFTMDL\0";
/// Newest format version this build reads and writes. Version 2 adds [`Dtype::Q8`] and
/// the W8A8 config flag; a blob without them is written as version 1, so readers of
/// version 1 still load every blob they can run.
pub const VERSION: u32 = 2;
/// Oldest format version this build reads.
pub const FIRST_VERSION: u32 = 1;
/// Header bytes.
pub const HEADER_BYTES: usize = 64;
/// Header offsets of the metadata section's offset and length (0 and 0: none). Builds
/// before the metadata wrote these words zero and never read them, so they load a blob
/// with metadata as one without.
const METADATA_FIELDS: (usize, usize) = (44, 48);
/// Bytes of one tensor-table entry.
pub const ENTRY_BYTES: usize = 40;
/// Alignment of every tensor's data.
pub const TENSOR_ALIGN: usize = 16;
const CONFIG_BYTES: usize = CONFIG_WORDS * 4;
pub(crate) const MAX_RANK: usize = 4;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Dtype {
    /// IEEE binary32.
    F32 = 0,
    /// IEEE binary16 (`half::f16`).
    F16 = 1,
    /// Signed 8-bit with one `f32` scale per output channel (last dimension).
    I8 = 2,
    /// The weights of a W8A8 layer (format version 2): signed 8-bit, stored
    /// output-major (transposed from the shape's `[inputs…, outputs]`) with each output's
    /// inputs padded with zeros to a multiple of 16, one `f32` scale per output: the
    /// layout [`soft_kernels::QuantWeights`] reads in place.
    Q8 = 3,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
            Dtype::I8 | Dtype::Q8 => 1,
        }
    }

    /// Stored bytes of a tensor of `shape`, or `None` on overflow.
    pub fn stored_len(self, shape: &[usize]) -> Option<usize> {
        let (&outputs, inputs) = shape.split_last()?;
        let inputs = inputs.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
        let inputs = match self {
            Dtype::Q8 => inputs.checked_next_multiple_of(soft_kernels::quant::DEPTH_GROUP)?,
            _ => inputs,
        };
        inputs.checked_mul(outputs)?.checked_mul(self.size())
    }

    /// Whether tensors of this type carry a scale per output.
    pub const fn has_scales(self) -> bool {
        matches!(self, Dtype::I8 | Dtype::Q8)
    }

    fn from_u8(v: u8) -> Result<Dtype> {
        match v {
            0 => Ok(Dtype::F32),
            1 => Ok(Dtype::F16),
            2 => Ok(Dtype::I8),
            3 => Ok(Dtype::Q8),
            _ => Err(Error::CorruptBlob("unknown tensor dtype")),
        }
    }
}

macro_rules! tensor_kinds {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// What a tensor is; with a stage and block index it names one tensor of the model.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        #[repr(u16)]
        #[allow(missing_docs)]
        pub enum TensorKind { $($(#[$doc])* $name = $code,)* }

        impl TensorKind {
            fn from_u16(v: u16) -> Option<TensorKind> {
                match v { $($code => Some(TensorKind::$name),)* _ => None }
            }
        }
    };
}

tensor_kinds! {
    /// 3×3 convolution with BatchNorm folded in, `[3, 3, C_in, C_out]`. Stage 0 is the stem
    /// (block = its conv 0..2), stages 2–4 the patch embeddings.
    ConvWeight = 1,
    /// Bias of a folded convolution, `[C_out]`.
    ConvBias = 2,
    /// Position embedding, `[G·G, C]` (stage 4: `[1 + G·G, C]`, row 0 for the cls token).
    PosEmbed = 3,
    /// Stage-4 class token, `[C]`.
    ClsToken = 4,
    /// Query projection, `[C_in, C_out]` (linear weights are stored input-major).
    QWeight = 10,
    QBias = 11,
    /// SOFT value projection.
    VWeight = 12,
    VBias = 13,
    /// Landmark convolution, `[r, r, d, d]` (`[ky, kx, in, out]`), shared by all heads.
    LandmarkWeight = 14,
    LandmarkNormWeight = 15,
    LandmarkNormBias = 16,
    /// Depthwise V convolution, `[h, k, k]`.
    VConvWeight = 17,
    /// Attention output projection (SOFT `mha.ff`, stage-4 `attn.proj`).
    OutWeight = 18,
    OutBias = 19,
    Norm1Weight = 20,
    Norm1Bias = 21,
    Norm2Weight = 22,
    Norm2Bias = 23,
    /// First MLP layer (SOFT `ff1`, stage-4 `mlp.fc1`).
    Mlp1Weight = 24,
    Mlp1Bias = 25,
    /// Second MLP layer (SOFT `ff2`, stage-4 `mlp.fc2`).
    Mlp2Weight = 26,
    Mlp2Bias = 27,
    /// Stage-4 key and value projection, `[C, 2C]` (keys first).
    KvWeight = 28,
    KvBias = 29,
    FinalNormWeight = 40,
    FinalNormBias = 41,
    HeadWeight = 42,
    HeadBias = 43,
}

/// One tensor of a model: what it is, in which stage (1–4; 0 for stem and head) and block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorId {
    /// What the tensor is.
    pub kind: TensorKind,
    /// Stage 1–4, or 0 for the stem and the head.
    pub stage: u8,
    /// Block within the stage (stem: conv index).
    pub block: u16,
}

impl TensorId {
    /// Builds an id.
    pub const fn new(kind: TensorKind, stage: u8, block: u16) -> TensorId {
        TensorId { kind, stage, block }
    }
}

/// Prints the reference checkpoint's key for the tensor ([`crate::schema`]), so errors
/// point at the checkpoint; an id the schema does not have prints its parts.
impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::schema::Key::of(*self) {
            Some(key) => key.fmt(f),
            None => write!(
                f,
                "{:?} of stage {} block {}",
                self.kind, self.stage, self.block
            ),
        }
    }
}

/// A tensor borrowed from a parsed blob.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Which tensor.
    pub id: TensorId,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions; only the first `rank` are meaningful.
    pub shape: [usize; MAX_RANK],
    /// Number of dimensions.
    pub rank: usize,
    /// The elements, little-endian, 16-byte aligned within the blob.
    pub data: &'a [u8],
    /// Per-output-channel scales (`I8`, `Q8`), one `f32` per last-dimension index.
    pub scales: Option<&'a [u8]>,
}

impl TensorRef<'_> {
    /// The meaningful dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.get(..self.rank).unwrap_or(&[])
    }

    /// Whether every float value (elements, and int8 scales) is finite.
    pub fn is_finite(&self) -> bool {
        let f32s_finite = |bytes: &[u8]| {
            bytes
                .chunks_exact(4)
                .all(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 != 0x7f80_0000)
        };
        let data_finite = match self.dtype {
            Dtype::F32 => f32s_finite(self.data),
            Dtype::F16 => self
                .data
                .chunks_exact(2)
                .all(|b| half::f16::from_le_bytes([b[0], b[1]]).is_finite()),
            Dtype::I8 | Dtype::Q8 => true,
        };
        data_finite && self.scales.is_none_or(f32s_finite)
    }

    /// Whether a `Q8` tensor's padding (each output's inputs past the shape's) is zero,
    /// as the integer kernels assume; true for every other type.
    pub fn padding_is_zero(&self) -> bool {
        let Some((_, inputs)) = self.dims().split_last() else {
            return true;
        };
        let depth: usize = inputs.iter().product();
        let padded = depth.next_multiple_of(soft_kernels::quant::DEPTH_GROUP);
        self.dtype != Dtype::Q8
            || padded == 0
            || self
                .data
                .chunks_exact(padded)
                .all(|row| row.get(depth..).unwrap_or_default().iter().all(|&b| b == 0))
    }
}

/// A parsed, checksum-verified blob.
#[derive(Debug, Clone, Copy)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    version: u32,
    config: ModelConfig,
    table: &'a [u8],
    data_start: usize,
    data_end: usize,
    /// The metadata section, empty if there is none.
    metadata: &'a [u8],
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(Error::CorruptBlob("field beyond the end"))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(Error::CorruptBlob("field beyond the end"))
}

/// `bytes[start..start+len]` if it lies inside `bytes`, without overflow.
fn section(bytes: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    bytes.get(start..start.checked_add(len)?)
}

impl<'a> Blob<'a> {
    /// The length the header of the blob at the start of `bytes` declares, checking only
    /// the magic and version: how much of a larger memory region (a PSRAM, a flash
    /// partition) the blob takes, without the CRC pass of [`Blob::parse`].
    pub fn declared_len(bytes: &[u8]) -> Result<usize> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(Error::BlobTruncated {
                needed: HEADER_BYTES + 4,
                got: bytes.len(),
            });
        }
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(Error::BadMagic);
        }
        let version = u32_at(bytes, 8)?;
        if !(FIRST_VERSION..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        Ok(u32_at(bytes, 40)? as usize)
    }

    /// The CRC-32 the blob at the start of `bytes` ends with, at the length its header
    /// declares, unverified: what names a blob in a device log. `None` if `bytes` is too
    /// short to hold it.
    pub fn stored_crc32(bytes: &[u8]) -> Option<u32> {
        let total = Blob::declared_len(bytes).ok()?;
        u32_at(bytes, total.checked_sub(4)?).ok()
    }

    /// Parses and verifies a blob (magic, version, sizes, CRC-32, config).
    pub fn parse(bytes: &'a [u8]) -> Result<Blob<'a>> {
        let total = Blob::declared_len(bytes)?;
        let version = u32_at(bytes, 8)?;
        let field = |at: usize| u32_at(bytes, at).map(|v| v as usize);
        if total > bytes.len() {
            return Err(Error::BlobTruncated {
                needed: total,
                got: bytes.len(),
            });
        }
        if total < HEADER_BYTES + 4 {
            return Err(Error::CorruptBlob(
                "declared length shorter than the header",
            ));
        }
        let body = bytes.get(..total - 4).ok_or(Error::CorruptBlob("length"))?;
        let stored = u32_at(bytes, total - 4)?;
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        if field(12)? != HEADER_BYTES {
            return Err(Error::CorruptBlob("header size"));
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(4) {
            return Err(Error::BlobMisaligned);
        }
        let (config_at, config_len) = (field(16)?, field(20)?);
        if config_len != CONFIG_BYTES {
            return Err(Error::CorruptBlob("config size"));
        }
        let config_bytes = section(body, config_at, config_len)
            .ok_or(Error::CorruptBlob("config out of range"))?;
        let mut words = [0u32; CONFIG_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u32_at(config_bytes, 4 * i)?;
        }
        let config = ModelConfig::decode(&words)?;
        if config.w8a8 && version < 2 {
            return Err(Error::CorruptBlob("W8A8 flag in a version-1 blob"));
        }

        let (table_at, count) = (field(24)?, field(28)?);
        let table_len = count
            .checked_mul(ENTRY_BYTES)
            .ok_or(Error::CorruptBlob("tensor count"))?;
        let table =
            section(body, table_at, table_len).ok_or(Error::CorruptBlob("table out of range"))?;
        let (data_start, data_len) = (field(32)?, field(36)?);
        let data_end = data_start
            .checked_add(data_len)
            .filter(|&end| end <= body.len())
            .ok_or(Error::CorruptBlob("data section out of range"))?;
        let metadata = metadata_section(
            body,
            &[
                (0, HEADER_BYTES),
                (config_at, config_len),
                (table_at, table_len),
                (data_start, data_len),
            ],
        )?;
        // Checked now like the tensors; a metadata version this build does not know
        // leaves the model loadable (`metadata()` reports it).
        if !metadata.is_empty() {
            match Metadata::parse(metadata, &config) {
                Ok(_) | Err(Error::UnsupportedMetadataVersion(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let blob = Blob {
            bytes: body,
            version,
            config,
            table,
            data_start,
            data_end,
            metadata,
        };
        // Check every entry now, so a corrupt table fails the load rather than a run, and
        // the kernels may assume finite weights (see `weights::widen_finite`).
        for index in 0..blob.tensor_count() {
            let t = blob.tensor_at(index)?;
            if !t.is_finite() {
                return Err(Error::NonFiniteWeight(t.id));
            }
            if t.dtype == Dtype::Q8 && version < 2 {
                return Err(Error::CorruptBlob("W8A8 weights in a version-1 blob"));
            }
            if !t.padding_is_zero() {
                return Err(Error::CorruptBlob("W8A8 weights with nonzero padding"));
            }
        }
        Ok(blob)
    }

    /// The blob's metadata: `Ok(None)` if it has none, an error if its metadata version
    /// is newer than this build reads. The section was checked when the blob was parsed.
    pub fn metadata(&self) -> Result<Option<Metadata<'a>>> {
        if self.metadata.is_empty() {
            return Ok(None);
        }
        Metadata::parse(self.metadata, &self.config).map(Some)
    }

    /// The format version the blob was written in.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Number of tensors in the table.
    pub fn tensor_count(&self) -> usize {
        self.table.len() / ENTRY_BYTES
    }

    /// Bytes of the whole blob, checksum included.
    pub fn len(&self) -> usize {
        self.bytes.len() + 4
    }

    /// Always false: a parsed blob has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `index`-th table entry, checked.
    pub fn tensor_at(&self, index: usize) -> Result<TensorRef<'a>> {
        let at = index
            .checked_mul(ENTRY_BYTES)
            .ok_or(Error::CorruptBlob("tensor index"))?;
        let e = section(self.table, at, ENTRY_BYTES).ok_or(Error::CorruptBlob("tensor index"))?;
        let kind =
            TensorKind::from_u16(u16_at(e, 0)?).ok_or(Error::CorruptBlob("unknown tensor kind"))?;
        let stage = *e.get(2).ok_or(Error::CorruptBlob("entry"))?;
        let dtype = Dtype::from_u8(*e.get(3).ok_or(Error::CorruptBlob("entry"))?)?;
        let block = u16_at(e, 4)?;
        let id = TensorId { kind, stage, block };
        let rank = usize::from(u16_at(e, 6)?);
        if !(1..=MAX_RANK).contains(&rank) {
            return Err(Error::CorruptBlob("tensor rank"));
        }
        let mut shape = [1usize; MAX_RANK];
        let mut numel: usize = 1;
        for (i, dim) in shape.iter_mut().enumerate().take(rank) {
            *dim = u32_at(e, 8 + 4 * i)? as usize;
            numel = numel
                .checked_mul(*dim)
                .ok_or(Error::CorruptBlob("tensor size"))?;
        }
        let offset = u32_at(e, 24)? as usize;
        let len = u32_at(e, 28)? as usize;
        if Some(len) != dtype.stored_len(shape.get(..rank).unwrap_or(&[])) {
            return Err(Error::CorruptBlob(
                "tensor byte length disagrees with its shape",
            ));
        }
        let data = self.data_slice(offset, len)?;
        let scale_offset = u32_at(e, 32)? as usize;
        let scales = match dtype {
            Dtype::I8 | Dtype::Q8 => {
                let channels = shape.get(rank - 1).copied().unwrap_or(0);
                Some(self.data_slice(scale_offset, channels * 4)?)
            }
            _ if scale_offset != 0 => return Err(Error::CorruptBlob("scales on a float tensor")),
            _ => None,
        };
        Ok(TensorRef {
            id,
            dtype,
            shape,
            rank,
            data,
            scales,
        })
    }

    fn data_slice(&self, offset: usize, len: usize) -> Result<&'a [u8]> {
        if !offset.is_multiple_of(TENSOR_ALIGN) || offset < self.data_start {
            return Err(Error::CorruptBlob(
                "tensor offset misaligned or outside data",
            ));
        }
        let end = offset
            .checked_add(len)
            .ok_or(Error::CorruptBlob("tensor size"))?;
        if end > self.data_end {
            return Err(Error::CorruptBlob("tensor extends past the data section"));
        }
        self.bytes
            .get(offset..end)
            .ok_or(Error::CorruptBlob("tensor range"))
    }

    /// Finds a tensor by id.
    pub fn tensor(&self, id: TensorId) -> Result<TensorRef<'a>> {
        for i in 0..self.tensor_count() {
            let t = self.tensor_at(i)?;
            if t.id == id {
                return Ok(t);
            }
        }
        Err(Error::MissingTensor(id))
    }
}

/// The metadata section the header locates: empty if it has none; otherwise it must
/// be 4-byte aligned, inside `body` and clear of every range of `taken` (start, length).
fn metadata_section<'a>(body: &'a [u8], taken: &[(usize, usize)]) -> Result<&'a [u8]> {
    let (at, len) = (
        u32_at(body, METADATA_FIELDS.0)? as usize,
        u32_at(body, METADATA_FIELDS.1)? as usize,
    );
    match (at, len) {
        (0, 0) => return Ok(&[]),
        (0, _) | (_, 0) => {
            return Err(Error::CorruptMetadata(
                "header gives a metadata offset or length without the other",
            ))
        }
        _ => {}
    }
    if !at.is_multiple_of(4) {
        return Err(Error::CorruptMetadata("section misaligned"));
    }
    let end =
        at.checked_add(len)
            .filter(|&end| end <= body.len())
            .ok_or(Error::CorruptMetadata(
                "section runs past the end of the blob",
            ))?;
    let overlaps = taken
        .iter()
        .any(|&(start, n)| n > 0 && start < end && at < start.saturating_add(n));
    if overlaps {
        return Err(Error::CorruptMetadata(
            "section overlaps the header, config, tensor table or data",
        ));
    }
    body.get(at..end)
        .ok_or(Error::CorruptMetadata("section out of range"))
}

/// One tensor to encode with [`encode`].
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec<'a> {
    /// Which tensor.
    pub id: TensorId,
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Dimensions (1 to 4).
    pub shape: &'a [usize],
    /// Little-endian elements.
    pub data: &'a [u8],
    /// `I8` and `Q8` only: little-endian `f32` scale per last-dimension index.
    pub scales: Option<&'a [u8]>,
}

const fn align_up(n: usize) -> usize {
    n.div_ceil(TENSOR_ALIGN) * TENSOR_ALIGN
}

/// Offsets of the table and the data, and the end of the data.
fn layout(tensors: &[TensorSpec<'_>]) -> (usize, usize, usize) {
    let table_at = HEADER_BYTES + CONFIG_BYTES;
    let data_at = align_up(table_at + tensors.len() * ENTRY_BYTES);
    let mut end = data_at;
    for t in tensors {
        end = align_up(end) + t.data.len();
        if let Some(s) = t.scales {
            end = align_up(end) + s.len();
        }
    }
    (table_at, data_at, end)
}

/// Bytes [`encode`] writes for these tensors.
pub fn encoded_len(tensors: &[TensorSpec<'_>]) -> usize {
    layout(tensors).2 + 4
}

/// Where [`encode_with_metadata`] puts the metadata section (after the data, 16-byte
/// aligned) and the blob's total bytes; `None` if the metadata is too long.
fn metadata_layout(
    tensors: &[TensorSpec<'_>],
    metadata: Option<&Metadata<'_>>,
) -> Option<(usize, usize, usize)> {
    let end = layout(tensors).2;
    match metadata {
        None => Some((0, 0, end + 4)),
        Some(m) => {
            let at = align_up(end);
            let len = m.encoded_len()?;
            Some((at, len, at.checked_add(len)?.checked_add(4)?))
        }
    }
}

/// Bytes [`encode_with_metadata`] writes, or `None` if the metadata is too long.
pub fn encoded_len_with_metadata(
    tensors: &[TensorSpec<'_>],
    metadata: Option<&Metadata<'_>>,
) -> Option<usize> {
    metadata_layout(tensors, metadata).map(|(.., total)| total)
}

/// Writes a blob into `out` (which must be exactly [`encoded_len`] bytes). Without
/// metadata: the blob [`encode_with_metadata`] writes given `None`.
pub fn encode(config: &ModelConfig, tensors: &[TensorSpec<'_>], out: &mut [u8]) -> Result<()> {
    encode_with_metadata(config, tensors, None, out)
}

/// Writes a blob with an optional metadata section into `out` (which must be exactly
/// [`encoded_len_with_metadata`] bytes). The tensors lie where [`encode`] puts them; the
/// metadata follows the data, and with `None` the blob is byte for byte [`encode`]'s.
pub fn encode_with_metadata(
    config: &ModelConfig,
    tensors: &[TensorSpec<'_>],
    metadata: Option<&Metadata<'_>>,
    out: &mut [u8],
) -> Result<()> {
    config.validate()?;
    let (table_at, data_at, end) = layout(tensors);
    let (meta_at, meta_len, total) = metadata_layout(tensors, metadata)
        .ok_or(Error::CorruptBlob("output buffer size or blob over 4 GiB"))?;
    if out.len() != total || u32::try_from(total).is_err() {
        return Err(Error::CorruptBlob("output buffer size or blob over 4 GiB"));
    }
    out.fill(0);
    let put = |out: &mut [u8], at: usize, v: u32| {
        if let Some(dst) = out.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    };
    if let Some(m) = out.get_mut(..8) {
        m.copy_from_slice(&MAGIC);
    }
    let header = [
        (8, if config.w8a8 { VERSION } else { FIRST_VERSION }),
        (12, HEADER_BYTES as u32),
        (16, HEADER_BYTES as u32),
        (20, CONFIG_BYTES as u32),
        (24, table_at as u32),
        (28, tensors.len() as u32),
        (32, data_at as u32),
        (36, (end - data_at) as u32),
        (40, total as u32),
        (METADATA_FIELDS.0, meta_at as u32),
        (METADATA_FIELDS.1, meta_len as u32),
    ];
    for (at, v) in header {
        put(out, at, v);
    }
    for (i, w) in config.encode().iter().enumerate() {
        put(out, HEADER_BYTES + 4 * i, *w);
    }
    let mut cursor = data_at;
    for (i, t) in tensors.iter().enumerate() {
        if t.shape.is_empty() || t.shape.len() > MAX_RANK {
            return Err(Error::TensorMismatch(t.id));
        }
        if t.dtype.stored_len(t.shape) != Some(t.data.len())
            || t.dtype.has_scales() != t.scales.is_some()
            || (t.dtype == Dtype::Q8 && !config.w8a8)
        {
            return Err(Error::TensorMismatch(t.id));
        }
        let e = table_at + i * ENTRY_BYTES;
        if let Some(dst) = out.get_mut(e..e + 8) {
            dst[..2].copy_from_slice(&(t.id.kind as u16).to_le_bytes());
            dst[2] = t.id.stage;
            dst[3] = t.dtype as u8;
            dst[4..6].copy_from_slice(&t.id.block.to_le_bytes());
            dst[6..8].copy_from_slice(&(t.shape.len() as u16).to_le_bytes());
        }
        for (d, &dim) in t.shape.iter().enumerate() {
            put(
                out,
                e + 8 + 4 * d,
                u32::try_from(dim).map_err(|_| Error::TensorMismatch(t.id))?,
            );
        }
        cursor = align_up(cursor);
        put(out, e + 24, cursor as u32);
        put(out, e + 28, t.data.len() as u32);
        if let Some(dst) = out.get_mut(cursor..cursor + t.data.len()) {
            dst.copy_from_slice(t.data);
        }
        cursor += t.data.len();
        if let Some(s) = t.scales {
            cursor = align_up(cursor);
            put(out, e + 32, cursor as u32);
            if let Some(dst) = out.get_mut(cursor..cursor + s.len()) {
                dst.copy_from_slice(s);
            }
            cursor += s.len();
        }
    }
    if let Some(m) = metadata {
        let section = out
            .get_mut(meta_at..meta_at + meta_len)
            .ok_or(Error::CorruptBlob("output buffer size"))?;
        m.encode(config, section)?;
    }
    let crc = crc32fast::hash(out.get(..total - 4).unwrap_or(&[]));
    put(out, total - 4, crc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Labels, Resize};

    fn config() -> ModelConfig {
        ModelConfig {
            num_classes: 2,
            ..ModelConfig::preset("soft_tiny").unwrap()
        }
    }

    const ONE: [u8; 4] = 1.0f32.to_le_bytes();

    fn tensors() -> [TensorSpec<'static>; 1] {
        [TensorSpec {
            id: TensorId::new(TensorKind::HeadBias, 0, 0),
            dtype: Dtype::F32,
            shape: &[1],
            data: &ONE,
            scales: None,
        }]
    }

    fn blob(metadata: Option<&Metadata<'_>>) -> Vec<u32> {
        let t = tensors();
        let len = encoded_len_with_metadata(&t, metadata).unwrap();
        let mut words = vec![0u32; len.div_ceil(4)];
        let out = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..len];
        encode_with_metadata(&config(), &t, metadata, out).unwrap();
        words
    }

    fn bytes(words: &[u32]) -> &[u8] {
        let b: &[u8] = bytemuck::cast_slice(words);
        let total = u32::from_le_bytes(b[40..44].try_into().unwrap()) as usize;
        &b[..total]
    }

    /// Rewrites header word `at` and the CRC, as a hostile writer would.
    fn patched(words: &[u32], at: usize, value: u32) -> Vec<u32> {
        let mut w = words.to_vec();
        let len = bytes(words).len();
        let b = bytemuck::cast_slice_mut::<u32, u8>(&mut w);
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let crc = crc32fast::hash(&b[..len - 4]);
        b[len - 4..len].copy_from_slice(&crc.to_le_bytes());
        w
    }

    const LABELS: [&str; 2] = ["cat", "dog"];

    fn meta() -> Metadata<'static> {
        Metadata {
            name: Some("pets"),
            resize: Some(Resize::ShorterSide { crop_pct: 0.875 }),
            labels: Some(Labels::from_strs(&LABELS)),
            ..Metadata::default()
        }
    }

    #[test]
    fn without_metadata_the_blob_is_encode_s_and_has_none() {
        let t = tensors();
        let mut plain = vec![0u8; encoded_len(&t)];
        encode(&config(), &t, &mut plain).unwrap();
        let words = blob(None);
        assert_eq!(bytes(&words), &plain[..]);
        assert!(plain[44..64].iter().all(|&b| b == 0));
        assert_eq!(Blob::parse(bytes(&words)).unwrap().metadata(), Ok(None));
    }

    #[test]
    fn metadata_follows_the_data_and_leaves_the_tensors_in_place() {
        let with = blob(Some(&meta()));
        let without = blob(None);
        let parsed = Blob::parse(bytes(&with)).unwrap();
        let m = parsed.metadata().unwrap().unwrap();
        assert_eq!(m.name, Some("pets"));
        assert_eq!(m.label(1), Some("dog"));
        assert_eq!(m.label(2), None);
        let old = Blob::parse(bytes(&without)).unwrap();
        assert_eq!(
            parsed.tensor_at(0).unwrap().data,
            old.tensor_at(0).unwrap().data
        );
        // Everything before the metadata is the blob without it, but for the header's
        // metadata words and total length: what an older reader reads is unchanged.
        let (a, b) = (bytes(&with), bytes(&without));
        let data_end = b.len() - 4;
        assert_eq!(a[..40], b[..40]);
        assert_eq!(a[64..data_end], b[64..data_end]);
        assert_eq!(
            &a[44..48],
            &(data_end.next_multiple_of(16) as u32).to_le_bytes()
        );
    }

    #[test]
    fn a_misplaced_metadata_section_is_one_error() {
        let words = blob(Some(&meta()));
        let total = bytes(&words).len() as u32;
        let at = u32::from_le_bytes(bytes(&words)[44..48].try_into().unwrap());
        let meta_len = u32::from_le_bytes(bytes(&words)[48..52].try_into().unwrap());
        let cases = [
            (44, 0, "offset or length without the other"),
            (48, 0, "offset or length without the other"),
            (44, at + 2, "misaligned"),
            (48, total, "runs past the end of the blob"),
            (44, 64, "overlaps"),
            (44, 48, "overlaps"),
            (44, at - 16, "overlaps"),
            (48, meta_len - 8, "record runs past the end of the section"),
        ];
        for (field, value, want) in cases {
            let e = Blob::parse(bytes(&patched(&words, field, value))).unwrap_err();
            assert!(
                e.to_string().contains(want),
                "word {field} = {value}: {e} lacks {want:?}"
            );
        }
    }

    #[test]
    fn a_newer_metadata_version_leaves_the_model_loadable() {
        let words = blob(Some(&meta()));
        let at = u32::from_le_bytes(bytes(&words)[44..48].try_into().unwrap()) as usize;
        let newer = patched(&words, at + 4, 7);
        let parsed = Blob::parse(bytes(&newer)).unwrap();
        assert_eq!(parsed.metadata(), Err(Error::UnsupportedMetadataVersion(7)));
        // A malformed section of a known version fails the load.
        let fewer = patched(&words, at + 4, 1 | 2 << 16);
        let e = Blob::parse(bytes(&fewer)).unwrap_err();
        assert_eq!(e, Error::CorruptMetadata("bytes after the last record"));
    }
}
