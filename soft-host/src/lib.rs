//! Host side of `soft`: read checkpoints, convert them to model blobs, and run them.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod console;
pub mod convert;
pub mod cost;
pub mod crosscheck;
pub mod demo;
pub mod error;
pub mod eval;
pub mod image_input;
pub mod inference;
pub mod io;
pub mod model_info;
pub mod npy;
pub mod pickle;
pub mod plan;
pub mod pth;
pub mod svg;
#[doc(hidden)]
pub mod testing;
pub mod threads;
pub mod verify;

pub use checkpoint::{HostTensor, TensorMap};
pub use convert::{
    build_blob, build_blob_with, infer_config, synthetic_checkpoint, AlignedBlob, ArchOptions,
    WeightDtype,
};
pub use error::{Context, Error, Result};
