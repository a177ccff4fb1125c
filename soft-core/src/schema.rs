//! The checkpoint schema, declared once: for each block type, its tensors as (kind,
//! reference checkpoint key, layout, shape as a function of the config).
//!
//! Everything that names or sizes a tensor reads these tables: the blob's
//! [`TensorId`] prints its checkpoint key from them, the engine's loaders take their
//! expected dimensions from them, [`tensors`] lists every tensor a config needs (the
//! order of the blob's table, and the completeness check of `Model::from_blob`), and the
//! host's converter and synthetic checkpoints take from them which key to read, which
//! shape to expect and how to lay the values out.

use core::fmt;

use crate::config::ModelConfig;
use crate::format::{TensorId, TensorKind as K};

use crate::format::MAX_RANK;

/// Dimensions of a tensor (at most four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// A shape of the given dimensions (at most four; more are dropped).
    pub const fn new(dims: &[usize]) -> Shape {
        let mut out = [0; MAX_RANK];
        let mut i = 0;
        while i < dims.len() && i < MAX_RANK {
            out[i] = dims[i];
            i += 1;
        }
        Shape { dims: out, rank: i }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.dims.get(..self.rank).unwrap_or(&[])
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Product of every dimension but the last: a matrix's inputs, a convolution's fan-in.
    pub fn inputs(&self) -> usize {
        self.dims()
            .split_last()
            .map_or(0, |(_, d)| d.iter().product())
    }

    /// The last dimension: a matrix's outputs.
    pub fn outputs(&self) -> usize {
        self.dims().last().copied().unwrap_or(0)
    }
}

/// How a checkpoint tensor becomes a blob tensor, and how the engine reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `nn.Linear` weight: `[out, in]` in the checkpoint, transposed to `[in, out]`.
    /// A matrix.
    Linear,
    /// 3×3 `nn.Conv2d` weight followed by a BatchNorm ([`Key::batch_norm`]) folded into
    /// it: `[co, ci, k, k]` → `[k, k, ci, co]`. A matrix.
    FoldedConv,
    /// Bias of a [`Layout::FoldedConv`], folded with the same BatchNorm: `[co]`.
    FoldedConvBias,
    /// `nn.Conv2d` weight without bias or norm (the landmark pooling):
    /// `[co, ci, k, k]` → `[k, k, ci, co]`. A matrix.
    Conv,
    /// Depthwise `nn.Conv2d` weight, `[h, 1, k, k]` → `[h, k, k]`, values unchanged.
    Depthwise,
    /// An `nn.Parameter` stored with leading unit dimensions (`[1, n, c]`, `[1, 1, c]`),
    /// kept without them, values unchanged.
    Parameter,
    /// A bias (linear or norm), values unchanged.
    Bias,
    /// A norm's scale, values unchanged.
    NormWeight,
}

impl Layout {
    /// Whether the blob tensor is a weight matrix (input-major, may be quantised) rather
    /// than a float vector.
    pub const fn is_matrix(self) -> bool {
        matches!(self, Layout::Linear | Layout::FoldedConv | Layout::Conv)
    }

    /// The checkpoint's shape of a tensor whose blob shape is `blob`.
    pub fn torch_shape(self, blob: Shape) -> Shape {
        let d = blob.dims();
        match (self, d) {
            (Layout::Linear, &[i, o]) => Shape::new(&[o, i]),
            (Layout::FoldedConv | Layout::Conv, &[kh, kw, ci, co]) => Shape::new(&[co, ci, kh, kw]),
            (Layout::Depthwise, &[h, k1, k2]) => Shape::new(&[h, 1, k1, k2]),
            (Layout::Parameter, &[n, c]) => Shape::new(&[1, n, c]),
            (Layout::Parameter, &[c]) => Shape::new(&[1, 1, c]),
            _ => blob,
        }
    }
}

/// A block type: a group of tensors under one key prefix, repeated per stage or block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The stem's three convolutions (stage 0, block = conv 0..2).
    Stem,
    /// The patch embedding of stages 2–4.
    PatchEmbed,
    /// The position embedding of stages 1–4.
    Position,
    /// The stage-4 class token.
    ClassToken,
    /// A SOFT block of stages 1–3.
    Soft,
    /// A stage-4 (softmax attention) block.
    Stage4,
    /// The final norm and the classifier (stage 0).
    Head,
}

/// One tensor of a block type.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// What it is.
    pub kind: K,
    /// Its checkpoint key after the block's prefix.
    pub suffix: &'static str,
    /// How it is converted and read.
    pub layout: Layout,
    /// Its blob shape, from the config, the stage (1–4, 0 for stem and head) and block.
    pub shape: fn(&ModelConfig, u8, u16) -> Shape,
}

const fn entry(
    kind: K,
    suffix: &'static str,
    layout: Layout,
    shape: fn(&ModelConfig, u8, u16) -> Shape,
) -> Entry {
    Entry {
        kind,
        suffix,
        layout,
        shape,
    }
}

/// 0-based index of stage `s` (1–4) into the config's arrays.
fn at(s: u8) -> usize {
    usize::from(s).clamp(1, 4) - 1
}

fn width(cfg: &ModelConfig, s: u8) -> usize {
    cfg.embed_dims[at(s)]
}

/// Input and output channels of stem conv `b`.
fn stem_channels(cfg: &ModelConfig, b: u16) -> (usize, usize) {
    let sw = cfg.stem_width;
    match b {
        0 => (3, sw),
        1 => (sw, sw),
        _ => (sw, cfg.embed_dims[0]),
    }
}

/// Input and output channels of the patch embedding into stage `s` (2–4).
fn embed_channels(cfg: &ModelConfig, s: u8) -> (usize, usize) {
    (cfg.embed_dims[at(s).saturating_sub(1)], width(cfg, s))
}

const STEM: &[Entry] = &[
    entry(K::ConvWeight, "weight", Layout::FoldedConv, |c, _, b| {
        let (ci, co) = stem_channels(c, b);
        Shape::new(&[3, 3, ci, co])
    }),
    entry(K::ConvBias, "bias", Layout::FoldedConvBias, |c, _, b| {
        Shape::new(&[stem_channels(c, b).1])
    }),
];

const PATCH_EMBED: &[Entry] = &[
    entry(K::ConvWeight, "weight", Layout::FoldedConv, |c, s, _| {
        let (ci, co) = embed_channels(c, s);
        Shape::new(&[3, 3, ci, co])
    }),
    entry(K::ConvBias, "bias", Layout::FoldedConvBias, |c, s, _| {
        Shape::new(&[embed_channels(c, s).1])
    }),
];

const POSITION: &[Entry] = &[entry(K::PosEmbed, "", Layout::Parameter, |c, s, _| {
    let g = c.pos_grids[at(s)];
    Shape::new(&[g * g + usize::from(s == 4), width(c, s)])
})];

const CLASS_TOKEN: &[Entry] = &[entry(
    K::ClsToken,
    "cls_token",
    Layout::Parameter,
    |c, _, _| Shape::new(&[c.embed_dims[3]]),
)];

fn square(c: &ModelConfig, s: u8) -> Shape {
    let w = width(c, s);
    Shape::new(&[w, w])
}

fn vector(c: &ModelConfig, s: u8) -> Shape {
    Shape::new(&[width(c, s)])
}

fn soft_hidden(c: &ModelConfig, s: u8) -> usize {
    4 * width(c, s)
}

const SOFT: &[Entry] = &[
    entry(K::QWeight, "mha.W_q.weight", Layout::Linear, |c, s, _| {
        square(c, s)
    }),
    entry(K::QBias, "mha.W_q.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(K::VWeight, "mha.W_v.weight", Layout::Linear, |c, s, _| {
        square(c, s)
    }),
    entry(K::VBias, "mha.W_v.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(
        K::LandmarkWeight,
        "mha.attn.Qlandmark_op.weight",
        Layout::Conv,
        |c, s, _| {
            let (d, r) = (c.head_dim(at(s)), c.landmark_ratios[at(s)]);
            Shape::new(&[r, r, d, d])
        },
    ),
    entry(
        K::LandmarkNormWeight,
        "mha.attn.Qnorm_act.0.weight",
        Layout::NormWeight,
        |c, s, _| Shape::new(&[c.head_dim(at(s))]),
    ),
    entry(
        K::LandmarkNormBias,
        "mha.attn.Qnorm_act.0.bias",
        Layout::Bias,
        |c, s, _| Shape::new(&[c.head_dim(at(s))]),
    ),
    entry(
        K::VConvWeight,
        "mha.attn.conv.weight",
        Layout::Depthwise,
        |c, s, _| {
            let k = c.vconv_sizes[at(s)];
            Shape::new(&[c.heads[at(s)], k, k])
        },
    ),
    entry(K::OutWeight, "mha.ff.weight", Layout::Linear, |c, s, _| {
        square(c, s)
    }),
    entry(K::OutBias, "mha.ff.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(
        K::Norm1Weight,
        "norm1.weight",
        Layout::NormWeight,
        |c, s, _| vector(c, s),
    ),
    entry(K::Norm1Bias, "norm1.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(K::Mlp1Weight, "ff1.weight", Layout::Linear, |c, s, _| {
        Shape::new(&[width(c, s), soft_hidden(c, s)])
    }),
    entry(K::Mlp1Bias, "ff1.bias", Layout::Bias, |c, s, _| {
        Shape::new(&[soft_hidden(c, s)])
    }),
    entry(K::Mlp2Weight, "ff2.weight", Layout::Linear, |c, s, _| {
        Shape::new(&[soft_hidden(c, s), width(c, s)])
    }),
    entry(K::Mlp2Bias, "ff2.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(
        K::Norm2Weight,
        "norm2.weight",
        Layout::NormWeight,
        |c, s, _| vector(c, s),
    ),
    entry(K::Norm2Bias, "norm2.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
];

const STAGE4: &[Entry] = &[
    entry(
        K::Norm1Weight,
        "norm1.weight",
        Layout::NormWeight,
        |c, s, _| vector(c, s),
    ),
    entry(K::Norm1Bias, "norm1.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(K::QWeight, "attn.q.weight", Layout::Linear, |c, s, _| {
        square(c, s)
    }),
    entry(K::QBias, "attn.q.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(K::KvWeight, "attn.kv.weight", Layout::Linear, |c, s, _| {
        Shape::new(&[width(c, s), 2 * width(c, s)])
    }),
    entry(K::KvBias, "attn.kv.bias", Layout::Bias, |c, s, _| {
        Shape::new(&[2 * width(c, s)])
    }),
    entry(
        K::OutWeight,
        "attn.proj.weight",
        Layout::Linear,
        |c, s, _| square(c, s),
    ),
    entry(K::OutBias, "attn.proj.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(
        K::Norm2Weight,
        "norm2.weight",
        Layout::NormWeight,
        |c, s, _| vector(c, s),
    ),
    entry(K::Norm2Bias, "norm2.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
    entry(
        K::Mlp1Weight,
        "mlp.fc1.weight",
        Layout::Linear,
        |c, s, _| Shape::new(&[width(c, s), c.stage4_mlp_hidden]),
    ),
    entry(K::Mlp1Bias, "mlp.fc1.bias", Layout::Bias, |c, _, _| {
        Shape::new(&[c.stage4_mlp_hidden])
    }),
    entry(
        K::Mlp2Weight,
        "mlp.fc2.weight",
        Layout::Linear,
        |c, s, _| Shape::new(&[c.stage4_mlp_hidden, width(c, s)]),
    ),
    entry(K::Mlp2Bias, "mlp.fc2.bias", Layout::Bias, |c, s, _| {
        vector(c, s)
    }),
];

const HEAD: &[Entry] = &[
    entry(
        K::FinalNormWeight,
        "norm.weight",
        Layout::NormWeight,
        |c, _, _| Shape::new(&[c.embed_dims[3]]),
    ),
    entry(K::FinalNormBias, "norm.bias", Layout::Bias, |c, _, _| {
        Shape::new(&[c.embed_dims[3]])
    }),
    entry(K::HeadWeight, "head.weight", Layout::Linear, |c, _, _| {
        Shape::new(&[c.embed_dims[3], c.num_classes])
    }),
    entry(K::HeadBias, "head.bias", Layout::Bias, |c, _, _| {
        Shape::new(&[c.num_classes])
    }),
];

/// Every block type.
pub const BLOCKS: [Block; 7] = [
    Block::Stem,
    Block::PatchEmbed,
    Block::Position,
    Block::ClassToken,
    Block::Soft,
    Block::Stage4,
    Block::Head,
];

/// The suffixes of a BatchNorm's tensors, in the order the converter reads them:
/// scale, shift, running mean, running variance.
pub const BATCH_NORM_SUFFIXES: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

impl Block {
    /// The block type's tensors, in blob order.
    pub const fn entries(self) -> &'static [Entry] {
        match self {
            Block::Stem => STEM,
            Block::PatchEmbed => PATCH_EMBED,
            Block::Position => POSITION,
            Block::ClassToken => CLASS_TOKEN,
            Block::Soft => SOFT,
            Block::Stage4 => STAGE4,
            Block::Head => HEAD,
        }
    }

    /// Whether the block type occurs in stage `s` (0 for stem and head).
    pub const fn in_stage(self, s: u8) -> bool {
        match self {
            Block::Stem | Block::Head => s == 0,
            Block::PatchEmbed => matches!(s, 2..=4),
            Block::Position => matches!(s, 1..=4),
            Block::ClassToken | Block::Stage4 => s == 4,
            Block::Soft => matches!(s, 1..=3),
        }
    }

    /// The key prefix of the block at `stage`, `block`.
    const fn prefix(self, stage: u8, block: u16) -> Prefix {
        match self {
            Block::Stem => Prefix::Proj {
                stage: 1,
                index: 3 * block,
            },
            Block::PatchEmbed => Prefix::Proj { stage, index: 0 },
            Block::Position => Prefix::Position(stage),
            Block::ClassToken | Block::Head => Prefix::None,
            Block::Soft => Prefix::Block {
                stage,
                block,
                attention: true,
            },
            Block::Stage4 => Prefix::Block {
                stage,
                block,
                attention: false,
            },
        }
    }

    /// The block type and table entry of tensor `id`, if the schema has it.
    pub fn locate(id: TensorId) -> Option<(Block, &'static Entry)> {
        BLOCKS.iter().find_map(|&b| {
            let e = b.entries().iter().find(|e| e.kind == id.kind)?;
            b.in_stage(id.stage).then_some((b, e))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    None,
    /// `patch_embed{stage}.proj.{index}` (a module of a `Sequential`).
    Proj {
        stage: u8,
        index: u16,
    },
    /// `pos_embed{stage}`.
    Position(u8),
    /// `block{stage}.{block}`, then `.att` for a SOFT block.
    Block {
        stage: u8,
        block: u16,
        attention: bool,
    },
}

/// A reference checkpoint key (or module path), printed by `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    prefix: Prefix,
    suffix: &'static str,
}

impl Key {
    /// The key of tensor `id`, if the schema has it.
    pub fn of(id: TensorId) -> Option<Key> {
        let (block, e) = Block::locate(id)?;
        Some(Key {
            prefix: block.prefix(id.stage, id.block),
            suffix: e.suffix,
        })
    }

    /// The same module's tensor `suffix`.
    pub const fn with_suffix(self, suffix: &'static str) -> Key {
        Key {
            prefix: self.prefix,
            suffix,
        }
    }

    /// The module path alone (a folded convolution: `patch_embed2.proj.0`).
    pub const fn module(self) -> Key {
        self.with_suffix("")
    }

    /// The BatchNorm folded into this convolution: the next module of its `Sequential`
    /// (`patch_embed2.proj.1`); `None` for keys of other block types.
    pub const fn batch_norm(self) -> Option<Key> {
        match self.prefix {
            Prefix::Proj { stage, index } => Some(Key {
                prefix: Prefix::Proj {
                    stage,
                    index: index + 1,
                },
                suffix: "",
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wrote_prefix = match self.prefix {
            Prefix::None => false,
            Prefix::Proj { stage, index } => {
                write!(f, "patch_embed{stage}.proj.{index}")?;
                true
            }
            Prefix::Position(s) => {
                write!(f, "pos_embed{s}")?;
                true
            }
            Prefix::Block {
                stage,
                block,
                attention,
            } => {
                write!(f, "block{stage}.{block}")?;
                if attention {
                    f.write_str(".att")?;
                }
                true
            }
        };
        if wrote_prefix && !self.suffix.is_empty() {
            f.write_str(".")?;
        }
        f.write_str(self.suffix)
    }
}

/// The block index of a checkpoint key inside stage `stage`'s blocks (`block2.5.…` → 5
/// for stage 2), or `None`.
pub fn block_index(key: &str, stage: u8) -> Option<usize> {
    let rest = key.strip_prefix("block")?;
    let (s, rest) = rest.split_once('.')?;
    if s.parse::<u8>().ok()? != stage {
        return None;
    }
    rest.split('.').next()?.parse().ok()
}

/// One tensor of a model: its id, block type and table entry.
#[derive(Debug, Clone, Copy)]
pub struct Tensor {
    /// Which tensor.
    pub id: TensorId,
    /// Its block type.
    pub block: Block,
    /// Its table entry.
    pub entry: &'static Entry,
}

impl Tensor {
    /// Its checkpoint key.
    pub fn key(&self) -> Key {
        Key {
            prefix: self.block.prefix(self.id.stage, self.id.block),
            suffix: self.entry.suffix,
        }
    }

    /// Its blob shape under `cfg`.
    pub fn shape(&self, cfg: &ModelConfig) -> Shape {
        (self.entry.shape)(cfg, self.id.stage, self.id.block)
    }
}

/// The blob shape of tensor `id` under `cfg`, if the schema has it.
pub fn shape(cfg: &ModelConfig, id: TensorId) -> Option<Shape> {
    let (_, e) = Block::locate(id)?;
    Some((e.shape)(cfg, id.stage, id.block))
}

/// Every tensor a model of `cfg` holds, in blob order: the stem; per stage its patch
/// embedding (stages 2–4) and position embedding; the class token; the SOFT blocks of
/// stages 1–3; the stage-4 blocks; the head.
pub fn tensors(cfg: &ModelConfig) -> impl Iterator<Item = Tensor> + '_ {
    let stem = (0..3).map(|b| (Block::Stem, 0u8, b as u16));
    let embeddings = (1u8..=4).flat_map(|s| {
        (s > 1)
            .then_some((Block::PatchEmbed, s, 0))
            .into_iter()
            .chain(core::iter::once((Block::Position, s, 0)))
    });
    let class_token = core::iter::once((Block::ClassToken, 4, 0));
    let soft = (1u8..=3).flat_map(move |s| {
        (0..cfg.depths[usize::from(s) - 1]).map(move |b| (Block::Soft, s, b as u16))
    });
    let stage4 = (0..cfg.depths[3]).map(|b| (Block::Stage4, 4, b as u16));
    let head = core::iter::once((Block::Head, 0, 0));
    stem.chain(embeddings)
        .chain(class_token)
        .chain(soft)
        .chain(stage4)
        .chain(head)
        .flat_map(|(block, stage, b)| {
            block.entries().iter().map(move |entry| Tensor {
                id: TensorId::new(entry.kind, stage, b),
                block,
                entry,
            })
        })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeSet;
    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::*;

    fn configs() -> Vec<ModelConfig> {
        ["soft_tiny", "soft_small", "soft_medium"]
            .iter()
            .map(|n| ModelConfig::preset(n).unwrap())
            .collect()
    }

    #[test]
    fn every_tensor_kind_has_an_entry_and_appears_in_a_model() {
        let all = [
            K::ConvWeight,
            K::ConvBias,
            K::PosEmbed,
            K::ClsToken,
            K::QWeight,
            K::QBias,
            K::VWeight,
            K::VBias,
            K::LandmarkWeight,
            K::LandmarkNormWeight,
            K::LandmarkNormBias,
            K::VConvWeight,
            K::OutWeight,
            K::OutBias,
            K::Norm1Weight,
            K::Norm1Bias,
            K::Norm2Weight,
            K::Norm2Bias,
            K::Mlp1Weight,
            K::Mlp1Bias,
            K::Mlp2Weight,
            K::Mlp2Bias,
            K::KvWeight,
            K::KvBias,
            K::FinalNormWeight,
            K::FinalNormBias,
            K::HeadWeight,
            K::HeadBias,
        ];
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let used: Vec<K> = tensors(&cfg).map(|t| t.id.kind).collect();
        for kind in all {
            assert!(used.contains(&kind), "{kind:?}");
            assert!(
                BLOCKS
                    .iter()
                    .any(|b| b.entries().iter().any(|e| e.kind == kind)),
                "{kind:?}"
            );
        }
        // No kind twice within a block type: an id names one entry.
        for b in BLOCKS {
            let kinds: Vec<K> = b.entries().iter().map(|e| e.kind).collect();
            for (i, k) in kinds.iter().enumerate() {
                assert!(!kinds[..i].contains(k), "{b:?} {k:?}");
            }
        }
    }

    #[test]
    fn keys_are_unique_and_round_trip_through_the_ids() {
        for cfg in configs() {
            let mut keys = BTreeSet::new();
            let mut count = 0;
            for t in tensors(&cfg) {
                let (block, entry) = Block::locate(t.id).unwrap();
                assert_eq!(block, t.block);
                assert_eq!(entry.kind, t.entry.kind);
                let key = t.key().to_string();
                assert_eq!(t.id.to_string(), key);
                assert_eq!(Key::of(t.id), Some(t.key()));
                assert_eq!(shape(&cfg, t.id), Some(t.shape(&cfg)));
                let (stage, block) = (t.id.stage, usize::from(t.id.block));
                let in_blocks = matches!(t.block, Block::Soft | Block::Stage4);
                assert_eq!(
                    block_index(&key, stage),
                    in_blocks.then_some(block),
                    "{key}"
                );
                assert_eq!(block_index(&key, stage % 4 + 1), None, "{key}");
                assert!(keys.insert(key.clone()), "{key} twice");
                count += 1;
            }
            let blocks: usize = cfg.depths[..3].iter().map(|d| d * SOFT.len()).sum();
            let expected = 3 * 2 + 3 * 2 + 4 + 1 + blocks + cfg.depths[3] * STAGE4.len() + 4;
            assert_eq!(count, expected);
        }
    }

    #[test]
    fn keys_are_the_reference_checkpoint_keys() {
        let key = |kind, stage, block| TensorId::new(kind, stage, block).to_string();
        let expect: [(String, &str); 14] = [
            (key(K::ConvWeight, 0, 0), "patch_embed1.proj.0.weight"),
            (key(K::ConvBias, 0, 2), "patch_embed1.proj.6.bias"),
            (key(K::ConvWeight, 3, 0), "patch_embed3.proj.0.weight"),
            (key(K::PosEmbed, 4, 0), "pos_embed4"),
            (key(K::ClsToken, 4, 0), "cls_token"),
            (key(K::QWeight, 1, 2), "block1.2.att.mha.W_q.weight"),
            (
                key(K::LandmarkWeight, 2, 0),
                "block2.0.att.mha.attn.Qlandmark_op.weight",
            ),
            (
                key(K::LandmarkNormBias, 3, 1),
                "block3.1.att.mha.attn.Qnorm_act.0.bias",
            ),
            (
                key(K::VConvWeight, 3, 0),
                "block3.0.att.mha.attn.conv.weight",
            ),
            (key(K::Mlp2Bias, 2, 5), "block2.5.att.ff2.bias"),
            (key(K::KvWeight, 4, 1), "block4.1.attn.kv.weight"),
            (key(K::Mlp1Weight, 4, 0), "block4.0.mlp.fc1.weight"),
            (key(K::FinalNormBias, 0, 0), "norm.bias"),
            (key(K::HeadWeight, 0, 0), "head.weight"),
        ];
        for (got, want) in &expect {
            assert_eq!(got, want);
        }
        let conv = Key::of(TensorId::new(K::ConvWeight, 0, 1)).unwrap();
        assert_eq!(conv.module().to_string(), "patch_embed1.proj.3");
        let bn = conv.batch_norm().unwrap();
        assert_eq!(bn.to_string(), "patch_embed1.proj.4");
        assert_eq!(
            bn.with_suffix("running_var").to_string(),
            "patch_embed1.proj.4.running_var"
        );
        assert!(Key::of(TensorId::new(K::QWeight, 4, 0))
            .unwrap()
            .batch_norm()
            .is_none());
        // Ids outside the schema print their parts.
        assert!(Key::of(TensorId::new(K::LandmarkWeight, 4, 0)).is_none());
        assert_eq!(
            TensorId::new(K::KvBias, 2, 1).to_string(),
            "KvBias of stage 2 block 1"
        );
    }

    #[test]
    // The stage index addresses several parallel config arrays at once.
    #[allow(clippy::needless_range_loop)]
    fn soft_tiny_shapes_are_the_engines() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let (sw, c) = (cfg.stem_width, cfg.embed_dims);
        let dims = |kind, stage, block| {
            shape(&cfg, TensorId::new(kind, stage, block))
                .unwrap()
                .dims()
                .to_vec()
        };
        assert_eq!(dims(K::ConvWeight, 0, 0), [3, 3, 3, sw]);
        assert_eq!(dims(K::ConvWeight, 0, 1), [3, 3, sw, sw]);
        assert_eq!(dims(K::ConvWeight, 0, 2), [3, 3, sw, c[0]]);
        assert_eq!(dims(K::ConvBias, 0, 2), [c[0]]);
        assert_eq!(dims(K::ConvWeight, 3, 0), [3, 3, c[1], c[2]]);
        let g = cfg.pos_grids;
        assert_eq!(dims(K::PosEmbed, 1, 0), [g[0] * g[0], c[0]]);
        assert_eq!(dims(K::PosEmbed, 4, 0), [g[3] * g[3] + 1, c[3]]);
        assert_eq!(dims(K::ClsToken, 4, 0), [c[3]]);
        for s in 0..3 {
            let st = s as u8 + 1;
            let (cs, d, r, k, h) = (
                c[s],
                cfg.head_dim(s),
                cfg.landmark_ratios[s],
                cfg.vconv_sizes[s],
                cfg.heads[s],
            );
            assert_eq!(dims(K::QWeight, st, 0), [cs, cs]);
            assert_eq!(dims(K::VBias, st, 0), [cs]);
            assert_eq!(dims(K::LandmarkWeight, st, 0), [r, r, d, d]);
            assert_eq!(dims(K::LandmarkNormWeight, st, 0), [d]);
            assert_eq!(dims(K::VConvWeight, st, 0), [h, k, k]);
            assert_eq!(dims(K::OutWeight, st, 0), [cs, cs]);
            assert_eq!(dims(K::Mlp1Weight, st, 0), [cs, 4 * cs]);
            assert_eq!(dims(K::Mlp2Weight, st, 0), [4 * cs, cs]);
            assert_eq!(dims(K::Norm2Bias, st, 0), [cs]);
        }
        let hid = cfg.stage4_mlp_hidden;
        assert_eq!(dims(K::KvWeight, 4, 0), [c[3], 2 * c[3]]);
        assert_eq!(dims(K::Mlp1Weight, 4, 0), [c[3], hid]);
        assert_eq!(dims(K::Mlp2Bias, 4, 0), [c[3]]);
        assert_eq!(dims(K::HeadWeight, 0, 0), [c[3], cfg.num_classes]);
        // The checkpoint's layouts.
        let torch = |kind, stage| {
            let (_, e) = Block::locate(TensorId::new(kind, stage, 0)).unwrap();
            e.layout
                .torch_shape(shape(&cfg, TensorId::new(kind, stage, 0)).unwrap())
                .dims()
                .to_vec()
        };
        assert_eq!(torch(K::ConvWeight, 2), [c[1], c[0], 3, 3]);
        assert_eq!(torch(K::Mlp1Weight, 1), [4 * c[0], c[0]]);
        assert_eq!(torch(K::PosEmbed, 4), [1, g[3] * g[3] + 1, c[3]]);
        assert_eq!(torch(K::ClsToken, 4), [1, 1, c[3]]);
        let d = cfg.head_dim(0);
        let r = cfg.landmark_ratios[0];
        assert_eq!(torch(K::LandmarkWeight, 1), [d, d, r, r]);
        let k = cfg.vconv_sizes[0];
        assert_eq!(torch(K::VConvWeight, 1), [cfg.heads[0], 1, k, k]);
    }
}
