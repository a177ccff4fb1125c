//! The whole network: stem on line buffers, stages in place on one token map, head; and
//! the planner that gives the exact arena bytes of a run before it starts.
//!
//! Arena layout: the token map always sits at the arena's start, sized for the current
//! stage, so the scratch of later (smaller) stages reuses what earlier maps gave up.

use half::f16;

use crate::arena::{bytes_for, Arena, Watermark, ARENA_ALIGN};
use crate::attention::{
    soft_block, stage4_block, InverseConfig, SoftBlockWeights, SoftDims, Stage4Dims, Stage4Weights,
};
use crate::config::{ModelConfig, STAGES};
use crate::error::{Error, Result};
use crate::format::{Blob, TensorId, TensorKind as K};
use crate::input::ImageSource;
use crate::kernels::{
    add_resampled, conv3x3_relu_row, layer_norm, linear, load_row, store_row, TokenElem,
};
use crate::weights::{Matrix, Vector, Weights};

/// Element type of the token maps and line buffers in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Precision {
    /// Half precision: half the arena, about 3 significant digits per stored value.
    #[default]
    F16,
    /// Single precision: matches the reference to f32 rounding.
    F32,
}

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

/// A token map shown to a [`Probe`].
#[derive(Debug, Clone, Copy)]
pub enum Tokens<'a> {
    /// f32 map.
    F32(&'a [f32]),
    /// f16 map.
    F16(&'a [f16]),
}

/// Observes intermediate activations, e.g. to compare them with a reference.
pub trait Probe {
    /// Called with `rows × cols` tokens at each checkpoint.
    fn observe(&mut self, at: Checkpoint, tokens: Tokens<'_>, rows: usize, cols: usize);
}

/// The probe that observes nothing.
impl Probe for () {
    fn observe(&mut self, _: Checkpoint, _: Tokens<'_>, _: usize, _: usize) {}
}

trait ProbeView: TokenElem {
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

/// A part of the run, for the memory plan's breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Phase {
    /// Stem convolutions.
    Stem,
    /// Patch embedding into stage 2–4.
    Embed(u8),
    /// Position embedding of stage 1–4.
    Position(u8),
    /// The blocks of stage 1–4.
    Blocks(u8),
    /// Final norm and head.
    Head,
}

/// Phases in run order: stem, then per stage (embedding for stages 2–4), position
/// embedding and blocks, then the head.
pub const PHASES: usize = 1 + 3 + 4 + 4 + 1;

/// Exact arena use of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemoryPlan {
    /// Bytes the arena must hold (from a 16-byte aligned start).
    pub peak_bytes: usize,
    /// Peak bytes in use during each phase, in run order.
    pub phases: [(Phase, usize); PHASES],
}

/// What a run reports besides the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunReport {
    /// Highest arena use during the run; equals the plan's `peak_bytes`.
    pub peak_bytes: usize,
}

/// Spatial sizes of every stage for one input size.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    image: (usize, usize),
    /// Stem conv1/conv2 output size.
    stem: (usize, usize),
    /// Token grid of each stage.
    stage: [(usize, usize); STAGES],
}

/// Output size of a 3×3, pad-1, stride-2 convolution.
const fn half(x: usize) -> usize {
    x.div_ceil(2)
}

/// Largest image side accepted; keeps every size product far from overflow on 32-bit targets.
const MAX_SIDE: usize = 8192;

impl Geometry {
    fn new(cfg: &ModelConfig, height: usize, width: usize) -> Result<Geometry> {
        let bad = Error::InputShape { height, width };
        if height == 0 || width == 0 || height > MAX_SIDE || width > MAX_SIDE {
            return Err(bad);
        }
        let stem = (half(height), half(width));
        let mut stage = [(half(stem.0), half(stem.1)); STAGES];
        for s in 1..STAGES {
            stage[s] = (half(stage[s - 1].0), half(stage[s - 1].1));
        }
        for (s, &r) in cfg.landmark_ratios.iter().enumerate() {
            if stage[s].0 < r || stage[s].1 < r {
                return Err(bad);
            }
        }
        Ok(Geometry {
            image: (height, width),
            stem,
            stage,
        })
    }

    fn tokens(&self, s: usize) -> usize {
        self.stage[s].0 * self.stage[s].1
    }

    /// Elements of stage `s`'s map (stage 4 includes the class token).
    fn map_elems(&self, cfg: &ModelConfig, s: usize) -> usize {
        (self.tokens(s) + usize::from(s == 3)) * cfg.embed_dims[s]
    }

    fn soft_dims(&self, cfg: &ModelConfig, s: usize) -> SoftDims {
        let (rows, cols) = self.stage[s];
        let r = cfg.landmark_ratios[s];
        SoftDims {
            rows,
            cols,
            c: cfg.embed_dims[s],
            heads: cfg.heads[s],
            d: cfg.head_dim(s),
            r,
            k: cfg.vconv_sizes[s],
            m: (rows / r) * (cols / r),
        }
    }

    fn stage4_dims(&self, cfg: &ModelConfig) -> Stage4Dims {
        Stage4Dims {
            n: self.tokens(3) + 1,
            c: cfg.embed_dims[3],
            heads: cfg.heads[3],
            hidden: cfg.stage4_mlp_hidden,
        }
    }

    /// Patch embedding `s-1 → s` (s = 1..3, 0-based target) as
    /// `(rows_in, cols_in, c_in, rows_out, cols_out, c_out, first output token)`.
    fn embed(&self, cfg: &ModelConfig, s: usize) -> EmbedDims {
        let (rows_in, cols_in) = self.stage[s - 1];
        let (rows_out, cols_out) = self.stage[s];
        EmbedDims {
            rows_in,
            cols_in,
            c_in: cfg.embed_dims[s - 1],
            rows_out,
            cols_out,
            c_out: cfg.embed_dims[s],
            first: usize::from(s == 3),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct EmbedDims {
    rows_in: usize,
    cols_in: usize,
    c_in: usize,
    rows_out: usize,
    cols_out: usize,
    c_out: usize,
    /// Output tokens start here (1 in stage 4: slot 0 is the class token).
    first: usize,
}

impl EmbedDims {
    fn in_elems(&self) -> usize {
        self.rows_in * self.cols_in * self.c_in
    }

    fn out_elems(&self) -> usize {
        (self.first + self.rows_out * self.cols_out) * self.c_out
    }

    /// Whether output row `j` can always be written before input rows past `2j+1` are
    /// read, so the map is rewritten in place.
    fn in_place(&self) -> bool {
        (0..self.rows_out).all(|j| {
            2 * j + 2 >= self.rows_in
                || (self.first + (j + 1) * self.cols_out) * self.c_out
                    <= (2 * j + 2) * self.cols_in * self.c_in
        })
    }

    fn map_elems(&self) -> usize {
        self.in_elems().max(self.out_elems())
    }

    fn scratch_bytes<E>(&self) -> usize {
        bytes_for::<E>(3 * self.cols_in * self.c_in)
            + bytes_for::<f32>(self.cols_out * self.c_out)
            + if self.in_place() {
                0
            } else {
                bytes_for::<E>(self.out_elems())
            }
    }
}

/// Stem, embedding, head and position weights.
#[derive(Debug, Clone, Copy)]
struct Conv<'a> {
    w: Matrix<'a>,
    b: Vector<'a>,
}

fn conv<'a>(w: &Weights<'a>, stage: u8, block: u16, cin: usize, cout: usize) -> Result<Conv<'a>> {
    Ok(Conv {
        w: w.matrix(
            TensorId::new(K::ConvWeight, stage, block),
            &[3, 3, cin, cout],
        )?,
        b: w.vector(TensorId::new(K::ConvBias, stage, block), &[cout])?,
    })
}

/// A SOFT model read from a blob, ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    weights: Weights<'a>,
    config: ModelConfig,
}

impl<'a> Model<'a> {
    /// Parses the blob and checks that every tensor the config needs is present with the
    /// right shape, so a run cannot fail on a missing weight.
    pub fn from_blob(bytes: &'a [u8]) -> Result<Model<'a>> {
        let blob = Blob::parse(bytes)?;
        let model = Model {
            weights: Weights::new(blob),
            config: *blob.config(),
        };
        model.check_tensors()?;
        Ok(model)
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parsed blob.
    pub fn blob(&self) -> &Blob<'a> {
        self.weights.blob()
    }

    fn check_tensors(&self) -> Result<()> {
        let cfg = &self.config;
        let w = &self.weights;
        // Any input large enough gives the same tensor shapes; use the smallest valid one.
        let side = 4 * 2 * cfg.landmark_ratios.iter().copied().max().unwrap_or(2);
        let geo = Geometry::new(cfg, side, side)?;
        self.stem_convs()?;
        for s in 0..STAGES {
            if s > 0 {
                conv(w, s as u8 + 1, 0, cfg.embed_dims[s - 1], cfg.embed_dims[s])?;
            }
            self.pos_embed(s)?;
        }
        w.vector(TensorId::new(K::ClsToken, 4, 0), &[cfg.embed_dims[3]])?;
        for s in 0..3 {
            let dims = geo.soft_dims(cfg, s);
            for b in 0..cfg.depths[s] {
                SoftBlockWeights::load(w, &dims, s as u8 + 1, b as u16)?;
            }
        }
        let d4 = geo.stage4_dims(cfg);
        for b in 0..cfg.depths[3] {
            Stage4Weights::load(w, &d4, b as u16)?;
        }
        self.head()?;
        Ok(())
    }

    fn stem_convs(&self) -> Result<[Conv<'a>; 3]> {
        let (w, sw, c1) = (
            &self.weights,
            self.config.stem_width,
            self.config.embed_dims[0],
        );
        Ok([
            conv(w, 0, 0, 3, sw)?,
            conv(w, 0, 1, sw, sw)?,
            conv(w, 0, 2, sw, c1)?,
        ])
    }

    fn pos_embed(&self, s: usize) -> Result<Vector<'a>> {
        let g = self.config.pos_grids[s];
        let rows = g * g + usize::from(s == 3);
        let id = TensorId::new(K::PosEmbed, s as u8 + 1, 0);
        self.weights.vector(id, &[rows, self.config.embed_dims[s]])
    }

    fn head(&self) -> Result<(Vector<'a>, Vector<'a>, Matrix<'a>, Vector<'a>)> {
        let (w, c, n) = (
            &self.weights,
            self.config.embed_dims[3],
            self.config.num_classes,
        );
        Ok((
            w.vector(TensorId::new(K::FinalNormWeight, 0, 0), &[c])?,
            w.vector(TensorId::new(K::FinalNormBias, 0, 0), &[c])?,
            w.matrix(TensorId::new(K::HeadWeight, 0, 0), &[c, n])?,
            w.vector(TensorId::new(K::HeadBias, 0, 0), &[n])?,
        ))
    }

    /// Exact arena bytes for an input of `height × width` with token maps in `precision`.
    pub fn plan(&self, height: usize, width: usize, precision: Precision) -> Result<MemoryPlan> {
        plan(&self.config, height, width, precision)
    }

    /// Runs the model on `input`, writing one logit per class into `logits`.
    ///
    /// Fails before any work if the arena is smaller than [`Model::plan`] says.
    pub fn run(
        &self,
        input: &mut impl ImageSource,
        arena: &mut [u8],
        precision: Precision,
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<RunReport> {
        match precision {
            Precision::F16 => self.run_as::<f16>(input, arena, precision, logits, probe),
            Precision::F32 => self.run_as::<f32>(input, arena, precision, logits, probe),
        }
    }

    fn run_as<E: ProbeView>(
        &self,
        input: &mut impl ImageSource,
        arena: &mut [u8],
        precision: Precision,
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<RunReport> {
        let cfg = &self.config;
        if logits.len() != cfg.num_classes {
            return Err(Error::LogitsLength {
                expected: cfg.num_classes,
                got: logits.len(),
            });
        }
        let (height, width) = (input.height(), input.width());
        let geo = Geometry::new(cfg, height, width)?;
        let plan = plan(cfg, height, width, precision)?;
        let mark = Watermark::new();
        let mut root = Arena::new(arena, &mark);
        if root.available() < plan.peak_bytes {
            return Err(Error::ArenaTooSmall {
                needed: plan.peak_bytes,
                available: root.available(),
            });
        }
        {
            let mut ar = root.scope();
            let map = ar.alloc::<E>(geo.map_elems(cfg, 0))?;
            self.stem(&mut ar, input, &geo, map)?;
            probe.observe(
                Checkpoint::Stem,
                E::view(map),
                geo.tokens(0),
                cfg.embed_dims[0],
            );
        }
        for s in 0..STAGES {
            if s > 0 {
                let dims = geo.embed(cfg, s);
                let mut ar = root.scope();
                let map = ar.alloc::<E>(dims.map_elems())?;
                let c = conv(&self.weights, s as u8 + 1, 0, dims.c_in, dims.c_out)?;
                patch_embed(&mut ar, map, &dims, &c)?;
            }
            let mut ar = root.scope();
            let map = ar.alloc::<E>(geo.map_elems(cfg, s))?;
            self.add_position(&mut ar.scope(), map, &geo, s)?;
            if s < 3 {
                let dims = geo.soft_dims(cfg, s);
                for b in 0..cfg.depths[s] {
                    let (stage, block) = (s as u8 + 1, b as u16);
                    let wt = SoftBlockWeights::load(&self.weights, &dims, stage, block)?;
                    let inv = InverseConfig {
                        normalized: cfg.normalized,
                        iters: cfg.newton_iters,
                        stage,
                        block,
                    };
                    soft_block(&mut ar, map, &dims, &wt, &inv)?;
                    let (rows, cols) = (geo.tokens(s), cfg.embed_dims[s]);
                    probe.observe(Checkpoint::Block { stage, block }, E::view(map), rows, cols);
                }
            } else {
                let dims = geo.stage4_dims(cfg);
                for b in 0..cfg.depths[3] {
                    let wt = Stage4Weights::load(&self.weights, &dims, b as u16)?;
                    stage4_block(&mut ar, map, &dims, &wt)?;
                    let (rows, cols) = (geo.tokens(3) + 1, cfg.embed_dims[3]);
                    let at = Checkpoint::Block {
                        stage: 4,
                        block: b as u16,
                    };
                    probe.observe(at, E::view(map), rows, cols);
                }
            }
            let (rows, cols) = (geo.map_elems(cfg, s) / cfg.embed_dims[s], cfg.embed_dims[s]);
            probe.observe(Checkpoint::Stage(s as u8 + 1), E::view(map), rows, cols);
        }
        let mut ar = root.scope();
        let map = ar.alloc::<E>(geo.map_elems(cfg, 3))?;
        let tok = ar.alloc::<f32>(cfg.embed_dims[3])?;
        let (norm_w, norm_b, head_w, head_b) = self.head()?;
        for row in map.chunks_exact_mut(cfg.embed_dims[3]) {
            load_row(row, tok);
            layer_norm(tok, &norm_w, &norm_b, 1e-6);
            store_row(tok, row);
        }
        probe.observe(
            Checkpoint::FinalNorm,
            E::view(map),
            geo.tokens(3) + 1,
            cfg.embed_dims[3],
        );
        load_row(map, tok);
        linear(&head_w, Some(&head_b), tok, logits);
        Ok(RunReport {
            peak_bytes: mark.peak(),
        })
    }

    /// The stem's three convolutions on rings of three rows each; rows are pulled from
    /// the source only when the next output row needs them.
    fn stem<E: TokenElem>(
        &self,
        ar: &mut Arena<'_>,
        input: &mut impl ImageSource,
        geo: &Geometry,
        map: &mut [E],
    ) -> Result<()> {
        let [c0, c1, c2] = self.stem_convs()?;
        let (h, w) = geo.image;
        let (h1, w1) = geo.stem;
        let (h2, w2) = geo.stage[0];
        let (sw, cout) = (self.config.stem_width, self.config.embed_dims[0]);
        let image = ar.alloc::<f32>(3 * w * 3)?;
        let ring1 = ar.alloc::<E>(3 * w1 * sw)?;
        let ring2 = ar.alloc::<E>(3 * w1 * sw)?;
        let out = ar.alloc::<f32>((w1 * sw).max(w2 * cout))?;
        let (mut next0, mut next1, mut next2) = (0, 0, 0);
        for j in 0..h2 {
            while next2 <= (2 * j + 1).min(h1 - 1) {
                while next1 <= (next2 + 1).min(h1 - 1) {
                    while next0 <= (2 * next1 + 1).min(h - 1) {
                        let row = ring_row_mut(image, next0, 3 * w);
                        input.read_row(next0, row)?;
                        if !row.iter().all(|v| v.is_finite()) {
                            return Err(Error::NonFiniteInput { row: next0 });
                        }
                        next0 += 1;
                    }
                    let rows = ring_rows(image, 2 * next1, h, 3 * w);
                    let o = &mut out[..w1 * sw];
                    conv3x3_relu_row(rows, 3, 2, &c0.w, &c0.b, o);
                    store_row(o, ring_row_mut(ring1, next1, w1 * sw));
                    next1 += 1;
                }
                let rows = ring_rows(ring1, next2, h1, w1 * sw);
                let o = &mut out[..w1 * sw];
                conv3x3_relu_row(rows, sw, 1, &c1.w, &c1.b, o);
                store_row(o, ring_row_mut(ring2, next2, w1 * sw));
                next2 += 1;
            }
            let rows = ring_rows(ring2, 2 * j, h1, w1 * sw);
            let o = &mut out[..w2 * cout];
            conv3x3_relu_row(rows, sw, 2, &c2.w, &c2.b, o);
            if let Some(dst) = map.get_mut(j * w2 * cout..(j + 1) * w2 * cout) {
                store_row(o, dst);
            }
        }
        Ok(())
    }

    /// Adds the stage's position embedding, bilinearly resampled to its grid (stage 4:
    /// also the class token, with the embedding's row 0).
    fn add_position<E: TokenElem>(
        &self,
        ar: &mut Arena<'_>,
        map: &mut [E],
        geo: &Geometry,
        s: usize,
    ) -> Result<()> {
        let c = self.config.embed_dims[s];
        let g = self.config.pos_grids[s];
        let pos = self.pos_embed(s)?;
        let (rows, cols) = geo.stage[s];
        let tok = ar.alloc::<f32>(c)?;
        let mut tokens = map.chunks_exact_mut(c);
        let first = if s == 3 {
            let cls = self
                .weights
                .vector(TensorId::new(K::ClsToken, 4, 0), &[c])?;
            if let Some(row) = tokens.next() {
                cls.read_into(0, tok);
                pos.add_into(0, tok);
                store_row(tok, row);
            }
            1
        } else {
            0
        };
        for (t, row) in tokens.enumerate().take(rows * cols) {
            load_row(row, tok);
            add_resampled(&pos, first, g, rows, cols, t / cols, t % cols, tok);
            store_row(tok, row);
        }
        Ok(())
    }
}

/// Row `r` of a ring of three rows of `len` values.
fn ring_row_mut<T>(ring: &mut [T], r: usize, len: usize) -> &mut [T] {
    ring.get_mut((r % 3) * len..(r % 3 + 1) * len)
        .unwrap_or_default()
}

/// Rows `center-1 ..= center+1` of a ring of three rows (`None` outside `0..total`).
fn ring_rows<T>(ring: &[T], center: usize, total: usize, len: usize) -> [Option<&[T]>; 3] {
    core::array::from_fn(|i| {
        let r = (center + i).checked_sub(1).filter(|&r| r < total)?;
        ring.get((r % 3) * len..(r % 3 + 1) * len)
    })
}

/// Stride-2 patch embedding over the map, in place when [`EmbedDims::in_place`] allows,
/// else through a second map that is copied back.
fn patch_embed<E: TokenElem>(
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &EmbedDims,
    conv: &Conv<'_>,
) -> Result<()> {
    let (row_in, row_out) = (dims.cols_in * dims.c_in, dims.cols_out * dims.c_out);
    let ring = ar.alloc::<E>(3 * row_in)?;
    let out = ar.alloc::<f32>(row_out)?;
    let mut separate = if dims.in_place() {
        None
    } else {
        Some(ar.alloc::<E>(dims.out_elems())?)
    };
    let mut next = 0;
    for j in 0..dims.rows_out {
        while next <= (2 * j + 1).min(dims.rows_in - 1) {
            if let Some(src) = map.get(next * row_in..(next + 1) * row_in) {
                ring_row_mut(ring, next, row_in).copy_from_slice(src);
            }
            next += 1;
        }
        conv3x3_relu_row(
            ring_rows(ring, 2 * j, dims.rows_in, row_in),
            dims.c_in,
            2,
            &conv.w,
            &conv.b,
            out,
        );
        let at = dims.first * dims.c_out + j * row_out;
        let dst = match separate.as_deref_mut() {
            Some(buf) => buf.get_mut(at..at + row_out),
            None => map.get_mut(at..at + row_out),
        };
        if let Some(dst) = dst {
            store_row(out, dst);
        }
    }
    if let Some(buf) = separate {
        let start = dims.first * dims.c_out;
        if let (Some(dst), Some(src)) = (map.get_mut(start..dims.out_elems()), buf.get(start..)) {
            dst.copy_from_slice(src);
        }
    }
    Ok(())
}

/// Exact arena bytes for running a model of `cfg` on a `height × width` input.
pub fn plan(
    cfg: &ModelConfig,
    height: usize,
    width: usize,
    precision: Precision,
) -> Result<MemoryPlan> {
    cfg.validate()?;
    match precision {
        Precision::F16 => plan_as::<f16>(cfg, height, width),
        Precision::F32 => plan_as::<f32>(cfg, height, width),
    }
}

fn plan_as<E>(cfg: &ModelConfig, height: usize, width: usize) -> Result<MemoryPlan> {
    let geo = Geometry::new(cfg, height, width)?;
    let map = |s: usize| bytes_for::<E>(geo.map_elems(cfg, s));
    let (w, (_, w1), (_, w2)) = (geo.image.1, geo.stem, geo.stage[0]);
    let sw = cfg.stem_width;
    let stem = map(0)
        + bytes_for::<f32>(9 * w)
        + 2 * bytes_for::<E>(3 * w1 * sw)
        + bytes_for::<f32>((w1 * sw).max(w2 * cfg.embed_dims[0]));
    let mut phases = [(Phase::Stem, stem); PHASES];
    let mut i = 1;
    for s in 0..STAGES {
        let stage = s as u8 + 1;
        if s > 0 {
            let dims = geo.embed(cfg, s);
            phases[i] = (
                Phase::Embed(stage),
                bytes_for::<E>(dims.map_elems()) + dims.scratch_bytes::<E>(),
            );
            i += 1;
        }
        phases[i] = (
            Phase::Position(stage),
            map(s) + bytes_for::<f32>(cfg.embed_dims[s]),
        );
        let blocks = if cfg.depths[s] == 0 {
            0
        } else if s < 3 {
            geo.soft_dims(cfg, s).scratch_bytes::<E>()
        } else {
            geo.stage4_dims(cfg).scratch_bytes::<E>()
        };
        phases[i + 1] = (Phase::Blocks(stage), map(s) + blocks);
        i += 2;
    }
    phases[PHASES - 1] = (Phase::Head, map(3) + bytes_for::<f32>(cfg.embed_dims[3]));
    let peak_bytes = phases.iter().map(|p| p.1).max().unwrap_or(0);
    Ok(MemoryPlan { peak_bytes, phases })
}

/// Bytes of the `m×m` Newton–Schulz buffers of stage `s` (0-based, 0..3) — the only part
/// of the plan that grows faster than the token count.
pub fn newton_bytes(cfg: &ModelConfig, height: usize, width: usize, s: usize) -> Result<usize> {
    let geo = Geometry::new(cfg, height, width)?;
    Ok(if s < 3 {
        geo.soft_dims(cfg, s).newton_bytes()
    } else {
        0
    })
}

const _: () = assert!(ARENA_ALIGN % 4 == 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_lists_every_phase_once_in_run_order() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let p = plan(&cfg, 224, 224, Precision::F16).unwrap();
        let mut want = vec![Phase::Stem];
        for s in 1..=4u8 {
            if s > 1 {
                want.push(Phase::Embed(s));
            }
            want.push(Phase::Position(s));
            want.push(Phase::Blocks(s));
        }
        want.push(Phase::Head);
        assert_eq!(
            p.phases.iter().map(|x| x.0).collect::<std::vec::Vec<_>>(),
            want
        );
    }
}
