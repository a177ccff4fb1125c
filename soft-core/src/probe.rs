//! Watching a run: the token map at checkpoints (for comparing activations with a
//! reference or for progress) and the start of every step (for profilers).

use half::f16;
use soft_kernels::TokenElem;

/// Where a [`Probe`] is shown the token map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Checkpoint {
    /// Stem output before the position embedding, `[N1, C1]`.
    Stem,
    /// After block `block` (from 0) of stage 1–4: per-layer progress for long runs.
    Block {
        /// Stage, 1–4.
        stage: u8,
        /// Block within the stage.
        block: u16,
    },
    /// After the last block of stage 1–4 (stage 4 includes the class token at row 0).
    Stage(u8),
    /// After the final LayerNorm, `[1 + N4, C4]`.
    FinalNorm,
}

impl core::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Checkpoint::Stem => f.write_str("the stem"),
            Checkpoint::Block { stage, block } => write!(f, "stage {stage} block {block}"),
            Checkpoint::Stage(stage) => write!(f, "stage {stage}"),
            Checkpoint::FinalNorm => f.write_str("the final LayerNorm"),
        }
    }
}

/// A token map shown to a [`Probe`].
#[derive(Debug, Clone, Copy)]
pub enum Tokens<'a> {
    /// f32 map.
    F32(&'a [f32]),
    /// f16 map.
    F16(&'a [f16]),
}

impl Tokens<'_> {
    /// Whether every value is finite. Branch-free over the whole map (it vectorises), so
    /// checking after every phase costs a read of the map.
    pub fn all_finite(&self) -> bool {
        match self {
            Tokens::F32(values) => values
                .iter()
                .fold(true, |finite, value| finite & value.is_finite()),
            Tokens::F16(values) => values
                .iter()
                .fold(true, |finite, value| finite & value.is_finite()),
        }
    }
}

/// What a run is doing; a profiler times the span from one step's start to the next's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Step {
    /// The stem's three convolutions.
    Stem,
    /// A stride-2 patch embedding into the stage.
    PatchEmbed,
    /// Adding the position embedding (and the class token in stage 4).
    Position,
    /// Queries and values of the whole map, when the schedule keeps them.
    Projections,
    /// SOFT landmarks: pooled queries, convolution, LayerNorm, GELU.
    Landmarks,
    /// SOFT pass 1: `K1ᵀV` over every token.
    KeyValue,
    /// Newton–Schulz pseudo-inverse of `K2` and `Z = pinv(K2)·K1ᵀV`.
    Newton,
    /// Attention output per token (SOFT pass 2, or softmax attention in stage 4) with the
    /// output projection and first residual.
    Attention,
    /// The MLP with its LayerNorm and residual.
    Mlp,
    /// Final LayerNorm and the classifier head.
    Head,
}

/// A step of a stage (stage 0: stem and head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Activity {
    /// Stage 1–4, or 0 for the stem and the head.
    pub stage: u8,
    /// The step.
    pub step: Step,
}

/// Observes a run.
pub trait Probe {
    /// Called with `rows × cols` tokens at each checkpoint.
    fn observe(&mut self, at: Checkpoint, tokens: Tokens<'_>, rows: usize, cols: usize);

    /// Called when a step starts (a step may start many times, once per chunk of tokens);
    /// the run ends with a final call of [`Probe::finish`].
    fn enter(&mut self, _at: Activity) {}

    /// Called once when the run has written the logits.
    fn finish(&mut self) {}
}

/// The probe that observes nothing.
impl Probe for () {
    fn observe(&mut self, _: Checkpoint, _: Tokens<'_>, _: usize, _: usize) {}
}

/// A token type a probe can be shown.
pub(crate) trait ProbeView: TokenElem {
    fn view(s: &[Self]) -> Tokens<'_>;
}

impl ProbeView for f32 {
    fn view(s: &[f32]) -> Tokens<'_> {
        Tokens::F32(s)
    }
}

impl ProbeView for f16 {
    fn view(s: &[f16]) -> Tokens<'_> {
        Tokens::F16(s)
    }
}
