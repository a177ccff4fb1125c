//! Small synthetic models for tests: the golden `micro_64` case's shape, and blobs of
//! random weights. Shared by this crate's unit tests, xtask's tests and the workspace's
//! integration tests (`soft-tests` re-exports them); not part of the tool.

use soft_core::ModelConfig;

use crate::{build_blob, synthetic_checkpoint, AlignedBlob, WeightDtype};

/// The golden `micro_64` case's configuration: soft_tiny's with widths 16/32/48/64,
/// heads 1/2/3/4, one block a stage, a 256-wide stage-4 MLP, 10 classes and position
/// grids for 64×64 inputs.
pub fn micro_config() -> ModelConfig {
    let mut cfg = ModelConfig::preset("soft_tiny").unwrap();
    cfg.embed_dims = [16, 32, 48, 64];
    cfg.heads = [1, 2, 3, 4];
    cfg.depths = [1, 1, 1, 1];
    cfg.stage4_mlp_hidden = 256;
    cfg.num_classes = 10;
    cfg.pos_grids = [16, 8, 4, 2];
    cfg
}

/// `cfg` with the random weights of [`synthetic_checkpoint`]`(cfg, seed)`, converted
/// to `dtype`.
pub fn synthetic_blob(cfg: &ModelConfig, seed: u64, dtype: WeightDtype) -> AlignedBlob {
    AlignedBlob::new(&build_blob(&synthetic_checkpoint(cfg, seed), cfg, dtype).unwrap())
}
