//! The one error type of `soft-core`: every bad input becomes one of these, never a panic.

use core::fmt;

use crate::format::TensorId;

/// Everything that can go wrong while loading a model blob or running it.
///
/// Small and `Copy` so firmware can log it and carry on; every variant says
/// enough to find the cause without a debugger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The blob is shorter than its header or than the length it declares.
    BlobTruncated {
        /// Bytes the blob needs.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The blob does not start with the `SOFTMDL\0` magic.
    BadMagic,
    /// The blob's format version is not one this build reads.
    UnsupportedVersion(u32),
    /// The CRC-32 trailer does not match the blob's bytes.
    ChecksumMismatch {
        /// CRC stored in the blob.
        stored: u32,
        /// CRC computed over the blob.
        computed: u32,
    },
    /// A header, config or tensor-table field is out of range.
    CorruptBlob(&'static str),
    /// The blob's bytes are not 4-byte aligned, so tensors cannot be read in place.
    BlobMisaligned,
    /// The blob's metadata section is malformed (a record out of range, text that is not
    /// UTF-8, a value out of range). The checksum matched: the writer made it so.
    CorruptMetadata(&'static str),
    /// A class label in the blob's metadata is malformed.
    CorruptLabel {
        /// Class index.
        index: u32,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The blob's metadata section has a version this build does not read. The model
    /// itself loads; only its metadata cannot be read.
    UnsupportedMetadataVersion(u32),
    /// A tensor the model needs is absent from the blob.
    MissingTensor(TensorId),
    /// A tensor has the wrong shape or element type for the model's config.
    TensorMismatch(TensorId),
    /// A weight tensor holds a NaN or infinity (a broken checkpoint, or f16 overflow).
    NonFiniteWeight(TensorId),
    /// The model configuration is outside what the engine supports.
    UnsupportedConfig(&'static str),
    /// The input image size cannot go through the model (too small, too large).
    InputShape {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// The input holds a NaN or infinity.
    NonFiniteInput {
        /// Row of the offending value.
        row: usize,
    },
    /// The image source could not deliver a row.
    InputSource,
    /// The arena (with two memories, the fast one's) is smaller than the plan for this
    /// model and input.
    ArenaTooSmall {
        /// Bytes the run needs (16-byte aligned start).
        needed: usize,
        /// Bytes available after aligning the arena's start.
        available: usize,
    },
    /// The large memory's arena (a run with two) is smaller than the plan.
    LargeArenaTooSmall {
        /// Bytes the run needs there (16-byte aligned start).
        needed: usize,
        /// Bytes available after aligning its start.
        available: usize,
    },
    /// The attention's Newton–Schulz step produced a NaN or infinity.
    NonFiniteAttention {
        /// Stage (1–3).
        stage: u8,
        /// Block within the stage.
        block: u16,
    },
    /// A token map or the logits hold a NaN or infinity after a phase. With f16 token
    /// maps this is an activation beyond f16's range (±65504), which f32 maps may hold;
    /// with f32 maps, an overflow of f32 itself.
    NonFiniteActivation(Site),
    /// A kernel refused its operands' shapes: a bug in the engine, reported rather than
    /// a panic.
    Kernel(soft_kernels::Error),
    /// The logits buffer does not have one slot per class.
    LogitsLength {
        /// Classes in the model.
        expected: usize,
        /// Slots given.
        got: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BlobTruncated { needed, got } => {
                write!(f, "model blob truncated: needs {needed} bytes, got {got}")
            }
            Error::BadMagic => f.write_str("not a soft model blob (bad magic)"),
            Error::UnsupportedVersion(v) => write!(f, "unsupported model blob version {v}"),
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "model blob checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Error::CorruptBlob(what) => write!(f, "corrupt model blob: {what}"),
            Error::CorruptMetadata(what) => write!(f, "corrupt model metadata: {what}"),
            Error::CorruptLabel { index, what } => {
                write!(f, "corrupt model metadata: label {index} {what}")
            }
            Error::UnsupportedMetadataVersion(v) => {
                write!(f, "unsupported model metadata version {v}")
            }
            Error::BlobMisaligned => {
                f.write_str("model blob must start at a 4-byte aligned address")
            }
            Error::MissingTensor(id) => write!(f, "model blob lacks tensor {id}"),
            Error::TensorMismatch(id) => {
                write!(f, "tensor {id} has the wrong shape or element type")
            }
            Error::NonFiniteWeight(id) => {
                write!(f, "model blob tensor {id} holds a NaN or infinity")
            }
            Error::UnsupportedConfig(what) => write!(f, "unsupported model configuration: {what}"),
            Error::InputShape { height, width } => {
                write!(
                    f,
                    "input of {height}x{width} pixels cannot go through this model"
                )
            }
            Error::NonFiniteInput { row } => write!(f, "input row {row} holds a NaN or infinity"),
            Error::InputSource => f.write_str("the image source failed to deliver a row"),
            Error::ArenaTooSmall { needed, available } => write!(
                f,
                "arena too small: needs {needed} bytes, {available} available"
            ),
            Error::LargeArenaTooSmall { needed, available } => write!(
                f,
                "large-memory arena too small: needs {needed} bytes, {available} available"
            ),
            Error::NonFiniteAttention { stage, block } => write!(
                f,
                "attention in stage {stage} block {block} produced a non-finite value"
            ),
            Error::NonFiniteActivation(site) => write!(f, "{site} produced a NaN or infinity"),
            Error::Kernel(e) => write!(f, "internal error: {e}"),
            Error::LogitsLength { expected, got } => {
                write!(
                    f,
                    "logits buffer has {got} slots, the model has {expected} classes"
                )
            }
        }
    }
}

impl core::error::Error for Error {}

impl From<soft_kernels::Error> for Error {
    fn from(e: soft_kernels::Error) -> Self {
        Error::Kernel(e)
    }
}

/// Where a run checks that its activations are finite: after every phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Site {
    /// The stem's convolutions.
    Stem,
    /// The patch and position embeddings into stage 1–4.
    Embedding {
        /// Stage, 1–4.
        stage: u8,
    },
    /// A transformer block.
    Block {
        /// Stage, 1–4.
        stage: u8,
        /// Block within the stage, from 0.
        block: u16,
    },
    /// The final LayerNorm.
    FinalNorm,
    /// The classifier head.
    Head,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Site::Stem => f.write_str("the stem"),
            Site::Embedding { stage } => write!(f, "the embedding into stage {stage}"),
            Site::Block { stage, block } => write!(f, "stage {stage} block {block}"),
            Site::FinalNorm => f.write_str("the final LayerNorm"),
            Site::Head => f.write_str("the classifier head"),
        }
    }
}

/// Result with the crate's error.
pub type Result<T> = core::result::Result<T, Error>;
