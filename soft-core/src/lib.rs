#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod arena;
pub mod config;
mod conv;
pub mod error;
pub mod exec;
pub mod format;
pub mod input;
mod linear;
pub mod logits;
pub mod metadata;
pub mod model;
mod newton;
pub mod placement;
pub mod probe;
pub mod schema;
mod scratch;
mod soft_block;
mod stage4;
pub mod weights;

/// The kernel layer (`soft-kernels`): the contract, the generic kernels, SIMD versions.
pub use soft_kernels as kernels;

pub use arena::{ArenaBuffer, ARENA_ALIGN};
pub use config::ModelConfig;
pub use error::{Error, Result, Site};
pub use exec::{Executor, Inline, Schedule};
pub use format::Blob;
pub use input::{ChwImage, ImageSource, InputName, TestPattern};
pub use logits::argmax;
pub use metadata::Metadata;
pub use model::{
    plan, plan_buffers, plan_placed, plan_with, Arenas, MemoryPlan, Model, Phase, Precision,
    RunOptions, RunReport,
};
pub use placement::{Class, Memory, Placement};
pub use probe::{Activity, Checkpoint, Probe, Step, Tokens};
pub use scratch::Buffer;
pub use soft_kernels::Kernels;
pub use weights::quantize_q8;
