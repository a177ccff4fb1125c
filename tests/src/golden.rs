//! The golden cases: checkpoints, inputs, stage outputs and logits of the reference
//! PyTorch code, one directory a case under `tests/golden/`, described by its `meta.json`.

use std::path::PathBuf;

use soft_core::ModelConfig;
use soft_host::checkpoint::read_safetensors;
use soft_host::npy::{self, NpyArray};
use soft_host::{infer_config, ArchOptions, TensorMap};

/// Every golden case.
pub const CASES: [&str; 3] = ["micro_64", "norm_micro_64", "deep_96_timm"];

/// The case's directory.
pub fn dir(case: &str) -> PathBuf {
    crate::data("golden").join(case)
}

/// The case's `meta.json`.
pub fn meta(case: &str) -> serde_json::Value {
    crate::json::read(&dir(case).join("meta.json"))
}

/// What the case's `meta.json` says of its architecture beyond the checkpoint's shapes:
/// SOFT-Norm or not, and the Newton–Schulz iterations.
pub fn arch_options(case: &str) -> ArchOptions {
    let config = &meta(case)["config"];
    ArchOptions {
        normalized: config["normalized_attention"].as_bool().unwrap(),
        newton_iters: config["newton_maxiter"].as_u64().unwrap() as usize,
        stage4_heads: None,
    }
}

/// The case's checkpoint (`ckpt.safetensors`) and the configuration inferred from it
/// with [`arch_options`].
pub fn checkpoint(case: &str) -> (TensorMap, ModelConfig) {
    let map = read_safetensors(&dir(case).join("ckpt.safetensors")).unwrap();
    let cfg = infer_config(&map, &arch_options(case)).unwrap();
    (map, cfg)
}

/// One of the case's `.npy` files (`input.npy`, `logits.npy`, `stage1.npy`, …).
pub fn npy(case: &str, file: &str) -> NpyArray {
    npy::read(&dir(case).join(file)).unwrap()
}
