//! `soft-tests`: the workspace's integration tests (`tests/tests/*.rs`) and the helpers
//! they share, each written once here:
//!
//! - [`data`] and [`repo`]: paths to the test data under `tests/` and to the repository's
//!   files, wherever the test runs from.
//! - [`golden`]: the golden cases of the reference PyTorch code (`tests/golden/*/`): their
//!   names, files, `meta.json`, checkpoint and configuration.
//! - [`models`]: small synthetic models and inputs, and runs in the planned arena.
//! - [`pinned`]: FNV-1a digests and the pinned lists that outputs are compared with, bit
//!   for bit.
//! - [`json`]: reading JSON files and lists from them.
//!
//! Helpers that unit tests inside the lower crates need as well live in the lowest crate
//! that needs them, and are used from there: `soft_kernels::rng` (the one random
//! generator), `soft_kernels::reference` (f64 reference operations, behind its
//! `test-support` feature), `soft_host::testing` (the micro model, synthetic blobs;
//! re-exported by [`models`]) and `soft_host::verify::{max_abs, max_abs_diff}` (comparing
//! logits). soft-host's command-line tests (`soft-host/tests/`) use this crate too, and
//! keep in `soft-host/tests/common/` only what needs the `soft` binary.

use std::path::{Path, PathBuf};

pub mod golden;
pub mod json;
pub mod models;
pub mod pinned;

/// A file or directory under the workspace's `tests/` directory (golden cases, fixtures,
/// resampling cases), by its path relative to it.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A file or directory of the repository, by its path relative to the root
/// (`models/presets.json`).
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
