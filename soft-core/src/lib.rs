#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod arena;
mod attention;
pub mod config;
pub mod error;
pub mod format;
pub mod input;
pub mod kernels;
pub mod model;
pub mod weights;

pub use arena::{ArenaBuffer, ARENA_ALIGN};
pub use config::ModelConfig;
pub use error::{Error, Result};
pub use format::Blob;
pub use input::{ChwImage, ImageSource, TestPattern};
pub use model::{plan, Checkpoint, MemoryPlan, Model, Phase, Precision, Probe, RunReport, Tokens};
