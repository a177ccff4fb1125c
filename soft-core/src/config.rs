//! Model hyper-parameters: what the blob's config section holds, the published presets,
//! and the checks that keep every later size computation in range.

use crate::error::{Error, Result};

/// Number of stages in every SOFT model.
pub const STAGES: usize = 4;

/// A SOFT vision transformer's shape. Stages 1–3 are SOFT blocks, stage 4 softmax blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelConfig {
    /// Token width `C_s` of each stage.
    pub embed_dims: [usize; STAGES],
    /// Attention heads of each stage.
    pub heads: [usize; STAGES],
    /// Blocks in each stage.
    pub depths: [usize; STAGES],
    /// Landmark pooling ratio `r` of stages 1–3 (8, 4, 2 in the reference).
    pub landmark_ratios: [usize; 3],
    /// Depthwise V-convolution size `k` of stages 1–3 (9, 5, 3 in the reference).
    pub vconv_sizes: [usize; 3],
    /// Side `G` of each stage's square position-embedding grid.
    pub pos_grids: [usize; STAGES],
    /// Channels of the stem's first two convolutions (32 in the reference).
    pub stem_width: usize,
    /// Hidden width of the stage-4 MLPs (stage 1–3 MLPs are always `4·C`).
    pub stage4_mlp_hidden: usize,
    /// Classes the head predicts.
    pub num_classes: usize,
    /// Newton–Schulz iterations of the pseudo-inverse (20 in every published config).
    pub newton_iters: usize,
    /// SOFT-Norm: symmetric normalised kernel instead of `K2 + 0.01·I`.
    pub normalized: bool,
    /// W8A8: every linear layer and convolution has int8 weights ([`Dtype::Q8`]) and
    /// quantises its input to int8 per token at run time, summing exactly in i32. Part of
    /// the config because it changes what is computed and the arena a run needs.
    ///
    /// [`Dtype::Q8`]: crate::format::Dtype::Q8
    pub w8a8: bool,
}

/// Words (`u32`) of an encoded config.
pub(crate) const CONFIG_WORDS: usize = 27;

/// Most classes a model may have.
pub const MAX_CLASSES: usize = 1 << 20;

/// Largest width, depth or grid the engine accepts; keeps every size product far from overflow.
const MAX_DIM: usize = 1 << 16;

impl ModelConfig {
    /// A published configuration by its timm name (`soft_tiny` … `soft_huge`,
    /// `soft_norm_tiny` … `soft_norm_huge`), 1000 classes, position grids for 224×224.
    pub fn preset(name: &str) -> Option<ModelConfig> {
        let (normalized, base) = match name.strip_prefix("soft_norm_") {
            Some(rest) => (true, rest),
            None => (false, name.strip_prefix("soft_")?),
        };
        let (c3, h3, depths) = match base {
            "tiny" => (320, 10, [1, 2, 3, 2]),
            "small" => (320, 10, [1, 3, 20, 4]),
            "medium" => (288, 9, [1, 3, 29, 5]),
            "large" => (320, 10, [1, 3, 40, 5]),
            "huge" => (352, 11, [1, 5, 49, 5]),
            _ => return None,
        };
        Some(ModelConfig {
            embed_dims: [64, 128, c3, 512],
            heads: [2, 4, h3, 16],
            depths,
            landmark_ratios: [8, 4, 2],
            vconv_sizes: [9, 5, 3],
            pos_grids: [56, 28, 14, 7],
            stem_width: 32,
            stage4_mlp_hidden: 4 * 512,
            num_classes: 1000,
            newton_iters: 20,
            normalized,
            w8a8: false,
        })
    }

    /// Names accepted by [`ModelConfig::preset`].
    pub const PRESETS: [&'static str; 10] = [
        "soft_tiny",
        "soft_small",
        "soft_medium",
        "soft_large",
        "soft_huge",
        "soft_norm_tiny",
        "soft_norm_small",
        "soft_norm_medium",
        "soft_norm_large",
        "soft_norm_huge",
    ];

    /// Head dimension `d = C_s / h_s` of stage `s` (0-based).
    pub fn head_dim(&self, stage: usize) -> usize {
        match (self.embed_dims.get(stage), self.heads.get(stage)) {
            (Some(&c), Some(&h)) if h > 0 => c / h,
            _ => 0,
        }
    }

    /// Checks every field is in the range the engine supports.
    pub fn validate(&self) -> Result<()> {
        let dims_ok = |v: &[usize]| v.iter().all(|&x| (1..=MAX_DIM).contains(&x));
        if !dims_ok(&self.embed_dims) || !dims_ok(&self.heads) || !dims_ok(&self.pos_grids) {
            return Err(Error::UnsupportedConfig(
                "widths, heads and grids must be 1..=65536",
            ));
        }
        if self.depths.iter().any(|&d| d > 1024) {
            return Err(Error::UnsupportedConfig("more than 1024 blocks in a stage"));
        }
        for s in 0..STAGES {
            if !self.embed_dims[s].is_multiple_of(self.heads[s]) {
                return Err(Error::UnsupportedConfig(
                    "stage width is not a multiple of its heads",
                ));
            }
        }
        if self.landmark_ratios.contains(&1) {
            return Err(Error::UnsupportedConfig(
                "landmark ratio 1 (token-level landmarks) is not supported",
            ));
        }
        if self.landmark_ratios.iter().any(|&r| !(2..=64).contains(&r)) {
            return Err(Error::UnsupportedConfig("landmark ratio must be 2..=64"));
        }
        if self.vconv_sizes.iter().any(|&k| k % 2 == 0 || k > 31) {
            return Err(Error::UnsupportedConfig(
                "V-conv size must be odd and at most 31",
            ));
        }
        if !(1..=MAX_DIM).contains(&self.stem_width)
            || !(1..=4 * MAX_DIM).contains(&self.stage4_mlp_hidden)
        {
            return Err(Error::UnsupportedConfig(
                "stem width or stage-4 MLP width out of range",
            ));
        }
        if !(1..=MAX_CLASSES).contains(&self.num_classes) {
            return Err(Error::UnsupportedConfig("class count must be 1..=1048576"));
        }
        if self.newton_iters > 1000 {
            return Err(Error::UnsupportedConfig(
                "more than 1000 Newton–Schulz iterations",
            ));
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> [u32; CONFIG_WORDS] {
        let mut w = [0u32; CONFIG_WORDS];
        let flags = usize::from(self.normalized) | usize::from(self.w8a8) << 1;
        let fields = self
            .embed_dims
            .iter()
            .chain(&self.heads)
            .chain(&self.depths)
            .chain(&self.landmark_ratios)
            .chain(&self.vconv_sizes)
            .chain(&self.pos_grids)
            .chain([
                &self.stem_width,
                &self.stage4_mlp_hidden,
                &self.num_classes,
                &self.newton_iters,
                &flags,
            ]);
        for (slot, &v) in w.iter_mut().zip(fields) {
            *slot = u32::try_from(v).unwrap_or(u32::MAX);
        }
        w
    }

    pub(crate) fn decode(w: &[u32; CONFIG_WORDS]) -> Result<ModelConfig> {
        let mut it = w.iter().map(|&x| x as usize);
        let mut take = || it.next().unwrap_or(0);
        let mut arr4 = || [take(), take(), take(), take()];
        let embed_dims = arr4();
        let heads = arr4();
        let depths = arr4();
        let mut take = || it.next().unwrap_or(0);
        let landmark_ratios = [take(), take(), take()];
        let vconv_sizes = [take(), take(), take()];
        let pos_grids = [take(), take(), take(), take()];
        let stem_width = take();
        let stage4_mlp_hidden = take();
        let num_classes = take();
        let newton_iters = take();
        let flags = take();
        if flags > 3 {
            return Err(Error::CorruptBlob("unknown config flags"));
        }
        let cfg = ModelConfig {
            embed_dims,
            heads,
            depths,
            landmark_ratios,
            vconv_sizes,
            pos_grids,
            stem_width,
            stage4_mlp_hidden,
            num_classes,
            newton_iters,
            normalized: flags & 1 == 1,
            w8a8: flags & 2 == 2,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip() {
        for name in ModelConfig::PRESETS {
            let cfg = ModelConfig::preset(name).unwrap();
            cfg.validate().unwrap();
            assert_eq!(ModelConfig::decode(&cfg.encode()).unwrap(), cfg);
            let w8a8 = ModelConfig { w8a8: true, ..cfg };
            assert_eq!(ModelConfig::decode(&w8a8.encode()).unwrap(), w8a8);
            assert_eq!(cfg.head_dim(0), 32);
            assert_eq!(cfg.normalized, name.starts_with("soft_norm_"));
        }
        assert!(ModelConfig::preset("soft_giant").is_none());
    }

    #[test]
    fn landmark_ratio_one_is_rejected() {
        let mut cfg = ModelConfig::preset("soft_tiny").unwrap();
        cfg.landmark_ratios[2] = 1;
        assert!(matches!(cfg.validate(), Err(Error::UnsupportedConfig(_))));
    }

    #[test]
    fn heads_must_divide_width() {
        let mut cfg = ModelConfig::preset("soft_tiny").unwrap();
        cfg.heads[1] = 3;
        assert!(cfg.validate().is_err());
    }
}
