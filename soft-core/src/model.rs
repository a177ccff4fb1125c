//! The whole network: stem on line buffers, stages in place on one token map, head; and
//! the planner that gives the exact arena bytes of a run before it starts.
//!
//! Arena layout: the token map always sits at the start of the arena it is placed in,
//! sized for the current stage, so the scratch of later (smaller) stages reuses what
//! earlier maps gave up. Every step's scratch is declared once (the `scratch!` macro), each
//! buffer with its [`Class`]; the planner adds up the same declarations the run allocates,
//! for each memory the [`Placement`] uses.

use half::f16;
use soft_kernels::{Kernels, Lhs, Out, Start, Strided, TokenElem};

use crate::arena::{bytes_for, Arena, Watermark, ARENA_ALIGN};
use crate::config::{ModelConfig, STAGES};
use crate::conv::{conv_row, Conv, ConvLens, ConvScratch, ConvShape};
use crate::error::{Error, Result, Site};
use crate::exec::{carve, per_worker, split, Executor, Inline, Parts, Run, Schedule};
use crate::format::{Blob, TensorId, TensorKind as K};
use crate::input::ImageSource;
use crate::linear::{apply, quant_len, Weight};
use crate::newton::InverseConfig;
use crate::placement::{Class, Memory, Placement};
use crate::probe::{Activity, Checkpoint, Probe, ProbeView, Step, Tokens};
use crate::schema;
use crate::scratch::{emit_copies, scratch, Buffer, Emit, Sink};
use crate::soft_block::{soft_block, SoftBlockWeights, SoftDims};
use crate::stage4::{stage4_block, Stage4Dims, Stage4Weights, STAGE4_EPS};
use crate::weights::{Vector, Weights};

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

/// Exact arena use of a run: of its one arena, or of each of its two memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemoryPlan {
    /// Bytes the (fast) arena must hold (from a 16-byte aligned start).
    pub peak_bytes: usize,
    /// Peak bytes in use in it during each phase, in run order.
    pub phases: [(Phase, usize); PHASES],
    /// Bytes the large memory's arena must hold (0 with one arena).
    pub large_bytes: usize,
    /// Peak bytes in use in it during each phase.
    pub large_phases: [(Phase, usize); PHASES],
    /// Whether each of stages 1–3's pseudo-inverses keeps `P = K2 (+ 0.01·I)` whole, or
    /// forms it again at every Newton–Schulz step (the bits are the same): it keeps it
    /// wherever that raises no memory's peak, so the extra work stays where it saves bytes.
    pub newton_keeps_p: [bool; 3],
}

/// What a run reports besides the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunReport {
    /// Highest use of the (fast) arena during the run; equals the plan's `peak_bytes`.
    pub peak_bytes: usize,
    /// Highest use of the large memory's arena; equals the plan's `large_bytes`.
    pub large_peak_bytes: usize,
}

/// A run's two memories: the buffers `placement` puts in [`Memory::Large`] go to
/// `large`, the others to `fast`.
#[derive(Debug)]
pub struct Arenas<'x> {
    /// The fast memory (SRAM).
    pub fast: &'x mut [u8],
    /// The large memory (PSRAM).
    pub large: &'x mut [u8],
    /// Which buffers go where.
    pub placement: Placement,
}

/// How to run a model: token precision, schedule, kernels and executor. None of them
/// but the precision changes a result bit.
#[derive(Clone, Copy)]
pub struct RunOptions<'r> {
    /// Element type of the token maps.
    pub precision: Precision,
    /// Chunk size, kept projections, worker split (and so the arena the run needs).
    pub schedule: Schedule,
    /// The kernel implementations.
    pub kernels: &'static Kernels,
    /// Runs the workers of each step.
    pub executor: &'r dyn Executor,
}

static INLINE: Inline = Inline;

impl RunOptions<'static> {
    /// The compact schedule, the fastest kernels this build can detect, on the calling
    /// thread: what [`Model::run`] uses.
    pub fn new(precision: Precision) -> Self {
        RunOptions {
            precision,
            schedule: Schedule::COMPACT,
            kernels: Kernels::detect(),
            executor: &INLINE,
        }
    }
}

impl<'r> RunOptions<'r> {
    /// With another schedule.
    pub fn with_schedule(self, schedule: Schedule) -> Self {
        RunOptions { schedule, ..self }
    }

    /// With other kernels.
    pub fn with_kernels(self, kernels: &'static Kernels) -> Self {
        RunOptions { kernels, ..self }
    }

    /// With another executor.
    pub fn with_executor<'x>(self, executor: &'x dyn Executor) -> RunOptions<'x> {
        RunOptions {
            precision: self.precision,
            schedule: self.schedule,
            kernels: self.kernels,
            executor,
        }
    }
}

impl core::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunOptions")
            .field("precision", &self.precision)
            .field("schedule", &self.schedule)
            .field("kernels", &self.kernels.name())
            .finish()
    }
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
            w8a8: cfg.w8a8,
        }
    }

    /// The stem's three convolutions.
    fn stem_shapes(&self, cfg: &ModelConfig) -> [ConvShape; 3] {
        let (w, w1, sw) = (self.image.1, self.stem.1, cfg.stem_width);
        [
            ConvShape {
                in_w: w,
                cin: 3,
                cout: sw,
                stride: 2,
                w8a8: cfg.w8a8,
            },
            ConvShape {
                in_w: w1,
                cin: sw,
                cout: sw,
                stride: 1,
                w8a8: cfg.w8a8,
            },
            ConvShape {
                in_w: w1,
                cin: sw,
                cout: cfg.embed_dims[0],
                stride: 2,
                w8a8: cfg.w8a8,
            },
        ]
    }

    fn stage4_dims(&self, cfg: &ModelConfig) -> Stage4Dims {
        Stage4Dims {
            n: self.tokens(3) + 1,
            c: cfg.embed_dims[3],
            heads: cfg.heads[3],
            hidden: cfg.stage4_mlp_hidden,
            w8a8: cfg.w8a8,
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
            w8a8: cfg.w8a8,
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
    /// W8A8 convolution.
    w8a8: bool,
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

    /// The patch embedding's convolution.
    fn shape(&self) -> ConvShape {
        ConvShape {
            in_w: self.cols_in,
            cin: self.c_in,
            cout: self.c_out,
            stride: 2,
            w8a8: self.w8a8,
        }
    }

    /// Values of the separate output map, when it cannot be written in place.
    fn separate_elems(&self) -> usize {
        if self.in_place() {
            0
        } else {
            self.out_elems()
        }
    }
}

scratch! {
    /// Streaming stem: the three image rows the next conv1 row reads, `[row][x][rgb]`.
    struct ImageRing(geo: &Geometry) {
        rows: [f32; 3 * 3 * geo.image.1],
    }
}

scratch! {
    /// Whole-map stem: the whole image, `[y][x][rgb]`.
    struct WholeImage(geo: &Geometry) {
        pixels: [f32; geo.image.0 * 3 * geo.image.1] in Tokens,
    }
}

scratch! {
    /// The stem's line buffers (one per worker).
    struct StemLines(geo: &Geometry, cfg: &ModelConfig) {
        /// Three rows of conv1's output.
        ring1: [E; 3 * geo.stem.1 * cfg.stem_width],
        /// Three rows of conv2's output.
        ring2: [E; 3 * geo.stem.1 * cfg.stem_width],
    }
}

scratch! {
    /// A patch embedding's line buffers.
    struct EmbedScratch(dims: &EmbedDims, whole: bool) {
        /// Streaming: copies of the three input rows the next output row reads (the map
        /// is overwritten in place).
        ring: [E; if whole { 0 } else { 3 * dims.cols_in * dims.c_in }],
        /// The output map, when it is not written in place.
        separate: [E; if whole { dims.out_elems() } else { dims.separate_elems() }] in Tokens,
    }
}

/// Workers of the stem (bands of stage-1 rows) and of the patch embeddings (bands of
/// output rows): whole maps only, streaming rows depend on their predecessors.
fn band_workers(s: &Schedule, rows: usize) -> usize {
    if s.whole_maps {
        s.workers.min(rows).max(1)
    } else {
        1
    }
}

/// The stem's buffers above its output map.
fn stem_buffers<E: TokenElem>(geo: &Geometry, cfg: &ModelConfig, s: &Schedule, emit: Emit<'_, '_>) {
    if s.whole_maps {
        emit_copies(emit, 1, &WholeImage::<E>::layout(geo));
    } else {
        emit_copies(emit, 1, &ImageRing::<E>::layout(geo));
    }
    let lens = ConvLens::of(&geo.stem_shapes(cfg), s.chunk);
    for _ in 0..band_workers(s, geo.stage[0].0) {
        emit_copies(emit, 1, &StemLines::<E>::layout(geo, cfg));
        emit_copies(emit, 1, &ConvScratch::<E>::layout(lens));
    }
}

/// A patch embedding's buffers above its map.
fn embed_buffers<E: TokenElem>(dims: &EmbedDims, s: &Schedule, emit: Emit<'_, '_>) {
    emit_copies(emit, 1, &EmbedScratch::<E>::layout(dims, s.whole_maps));
    let layout = ConvScratch::<E>::layout(ConvLens::of(&[dims.shape()], s.chunk));
    emit_copies(emit, band_workers(s, dims.rows_out), &layout);
}

/// Where the stem reads image rows.
trait ImageRows {
    /// Makes rows up to `y` readable.
    fn ensure(&mut self, y: usize) -> Result<()>;
    /// Rows `center − 1 ..= center + 1` (`None` outside the image).
    fn rows(&self, center: usize) -> [Option<&[f32]>; 3];
}

/// Rows pulled from the source into a ring of three, in order, each checked finite.
struct StreamedImage<'a, I> {
    ring: &'a mut [f32],
    source: &'a mut I,
    next: usize,
    height: usize,
    row_len: usize,
}

impl<I: ImageSource> ImageRows for StreamedImage<'_, I> {
    fn ensure(&mut self, y: usize) -> Result<()> {
        while self.next <= y.min(self.height - 1) {
            let row = ring_row_mut(self.ring, self.next, self.row_len);
            self.source.read_row(self.next, row)?;
            if !row.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteInput { row: self.next });
            }
            self.next += 1;
        }
        Ok(())
    }

    fn rows(&self, center: usize) -> [Option<&[f32]>; 3] {
        ring_rows(self.ring, center, self.height, self.row_len)
    }
}

/// The whole image, read (and checked) before the stem starts.
struct BufferedImage<'a> {
    pixels: &'a [f32],
    height: usize,
    row_len: usize,
}

impl ImageRows for BufferedImage<'_> {
    fn ensure(&mut self, _: usize) -> Result<()> {
        Ok(())
    }

    fn rows(&self, center: usize) -> [Option<&[f32]>; 3] {
        core::array::from_fn(|i| {
            let r = (center + i).checked_sub(1).filter(|&r| r < self.height)?;
            self.pixels.get(r * self.row_len..(r + 1) * self.row_len)
        })
    }
}

scratch! {
    /// One token in f32 (final norm and head).
    struct TokenScratch(c: usize, w8a8: bool) {
        token: [f32; c],
        /// The class token quantised for the head (W8A8).
        quant: [f32; quant_len(w8a8, 1, c)],
    }
}

scratch! {
    /// Adding the position embedding to one token at a time.
    struct PositionScratch(c: usize) {
        /// The token, f32.
        token: [f32; c],
        /// The four grid rows its bilinear resampling reads.
        taps: [f32; 4 * c],
    }
}

/// Convolution `block` of `stage` (0: the stem) with the shape the schema gives it.
fn conv<'a>(w: &Weights<'a>, stage: u8, block: u16) -> Result<Conv<'a>> {
    Ok(Conv {
        w: w.schema_matrix(TensorId::new(K::ConvWeight, stage, block))?,
        b: w.schema_vector(TensorId::new(K::ConvBias, stage, block))?,
    })
}

/// A SOFT model read from a blob, ready to run.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    weights: Weights<'a>,
    config: ModelConfig,
}

/// The final norm and the classifier.
struct Head<'a> {
    norm: (Vector<'a>, Vector<'a>),
    w: Weight<'a>,
    b: Vector<'a>,
}

/// Fails naming `site` if the token map holds a NaN or infinity: an f16 map overflows
/// silently, and every later phase would carry the NaN to the logits.
fn finite<E: ProbeView>(map: &[E], site: Site) -> Result<()> {
    if E::view(map).all_finite() {
        Ok(())
    } else {
        Err(Error::NonFiniteActivation(site))
    }
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

    /// Loads every tensor [`schema::tensors`] lists for the config, as the run reads it.
    fn check_tensors(&self) -> Result<()> {
        let cfg = &self.config;
        // The config must give a geometry: any input large enough does, so the smallest.
        let side = 4 * 2 * cfg.landmark_ratios.iter().copied().max().unwrap_or(2);
        Geometry::new(cfg, side, side)?;
        let w = &self.weights;
        for t in schema::tensors(cfg) {
            if t.entry.layout.is_matrix() {
                w.schema_matrix(t.id)?.weight()?;
            } else {
                w.schema_vector(t.id)?;
            }
        }
        Ok(())
    }

    fn stem_convs(&self) -> Result<[Conv<'a>; 3]> {
        let w = &self.weights;
        Ok([conv(w, 0, 0)?, conv(w, 0, 1)?, conv(w, 0, 2)?])
    }

    fn pos_embed(&self, s: usize) -> Result<Vector<'a>> {
        let id = TensorId::new(K::PosEmbed, s as u8 + 1, 0);
        self.weights.schema_vector(id)
    }

    fn head(&self) -> Result<Head<'a>> {
        let w = &self.weights;
        let id = |kind| TensorId::new(kind, 0, 0);
        Ok(Head {
            norm: (
                w.schema_vector(id(K::FinalNormWeight))?,
                w.schema_vector(id(K::FinalNormBias))?,
            ),
            w: w.schema_matrix(id(K::HeadWeight))?.weight()?,
            b: w.schema_vector(id(K::HeadBias))?,
        })
    }

    /// Exact arena bytes for an input of `height × width` with token maps in `precision`,
    /// on the compact schedule ([`Model::run`]'s).
    pub fn plan(&self, height: usize, width: usize, precision: Precision) -> Result<MemoryPlan> {
        plan(&self.config, height, width, precision)
    }

    /// Exact arena bytes for a run with `options`.
    pub fn plan_with(
        &self,
        height: usize,
        width: usize,
        options: &RunOptions<'_>,
    ) -> Result<MemoryPlan> {
        self.plan_placed(height, width, options, Placement::ONE)
    }

    /// Exact bytes of each memory for a run with `options` on two memories, buffers
    /// placed by `placement` ([`Model::run_split`]).
    pub fn plan_placed(
        &self,
        height: usize,
        width: usize,
        options: &RunOptions<'_>,
        placement: Placement,
    ) -> Result<MemoryPlan> {
        plan_placed(
            &self.config,
            height,
            width,
            options.precision,
            &options.schedule,
            placement,
        )
    }

    /// Runs the model on `input`, writing one logit per class into `logits`, on the
    /// compact schedule with the fastest kernels this build detects, on this thread.
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
        self.run_with(&RunOptions::new(precision), input, arena, logits, probe)
    }

    /// Runs the model with `options`. The result bits depend only on the blob, the input
    /// and the precision.
    ///
    /// Fails before any work if the arena is smaller than [`Model::plan_with`] says.
    pub fn run_with(
        &self,
        options: &RunOptions<'_>,
        input: &mut impl ImageSource,
        arena: &mut [u8],
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<RunReport> {
        self.run_in(options, input, arena, None, logits, probe)
    }

    /// Runs the model with `options` on two memories: the buffers `arenas.placement`
    /// puts in the large memory go to `arenas.large` (with [`Placement::ONE`], nothing
    /// does and it may be empty). The result bits are those of [`Model::run_with`].
    ///
    /// Fails before any work if either arena is smaller than [`Model::plan_placed`] says.
    pub fn run_split(
        &self,
        options: &RunOptions<'_>,
        input: &mut impl ImageSource,
        arenas: Arenas<'_>,
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<RunReport> {
        let large = Some((arenas.large, arenas.placement));
        self.run_in(options, input, arenas.fast, large, logits, probe)
    }

    // Out of line: `run_with` and `run_split` both call it, and a caller that inlined both
    // copies would carry both frames through the inference (about 4 KB more stack on the M4).
    #[inline(never)]
    fn run_in(
        &self,
        options: &RunOptions<'_>,
        input: &mut impl ImageSource,
        fast: &mut [u8],
        large: Option<(&mut [u8], Placement)>,
        logits: &mut [f32],
        probe: &mut impl Probe,
    ) -> Result<RunReport> {
        options.schedule.validate()?;
        let run = Run {
            kernels: options.kernels,
            executor: options.executor,
            schedule: options.schedule,
        };
        let report = match options.precision {
            Precision::F16 => {
                self.run_as::<f16>(&run, options.precision, input, fast, large, logits, probe)
            }
            Precision::F32 => {
                self.run_as::<f32>(&run, options.precision, input, fast, large, logits, probe)
            }
        }?;
        probe.finish();
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_as<E: ProbeView>(
        &self,
        run: &Run<'_>,
        precision: Precision,
        input: &mut impl ImageSource,
        fast: &mut [u8],
        large: Option<(&mut [u8], Placement)>,
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
        let placement = large.as_ref().map_or(Placement::ONE, |l| l.1);
        let plan = plan_placed(cfg, height, width, precision, &run.schedule, placement)?;
        let mark = Watermark::new();
        let mut root = match large {
            Some((large, placement)) => Arena::split(fast, large, placement, &mark),
            None => Arena::new(fast, &mark),
        };
        if root.available() < plan.peak_bytes {
            return Err(Error::ArenaTooSmall {
                needed: plan.peak_bytes,
                available: root.available(),
            });
        }
        if root.large_available() < plan.large_bytes {
            return Err(Error::LargeArenaTooSmall {
                needed: plan.large_bytes,
                available: root.large_available(),
            });
        }
        {
            let mut ar = root.scope();
            let map = ar.alloc_class::<E>(Class::Tokens, geo.map_elems(cfg, 0))?;
            probe.enter(Activity {
                stage: 0,
                step: Step::Stem,
            });
            self.stem(run, &mut ar, input, &geo, map)?;
            finite(map, Site::Stem)?;
            probe.observe(
                Checkpoint::Stem,
                E::view(map),
                geo.tokens(0),
                cfg.embed_dims[0],
            );
        }
        for s in 0..STAGES {
            let stage = s as u8 + 1;
            if s > 0 {
                let dims = geo.embed(cfg, s);
                let mut ar = root.scope();
                let map = ar.alloc_class::<E>(Class::Tokens, dims.map_elems())?;
                let c = conv(&self.weights, stage, 0)?;
                probe.enter(Activity {
                    stage,
                    step: Step::PatchEmbed,
                });
                patch_embed(run, &mut ar, map, &dims, &c)?;
            }
            let mut ar = root.scope();
            let map = ar.alloc_class::<E>(Class::Tokens, geo.map_elems(cfg, s))?;
            probe.enter(Activity {
                stage,
                step: Step::Position,
            });
            self.add_position(run, &mut ar.scope(), map, &geo, s)?;
            finite(map, Site::Embedding { stage })?;
            if s < 3 {
                let dims = geo.soft_dims(cfg, s);
                for b in 0..cfg.depths[s] {
                    let block = b as u16;
                    let wt = SoftBlockWeights::load(&self.weights, &dims, stage, block)?;
                    let inv = InverseConfig {
                        normalized: cfg.normalized,
                        iters: cfg.newton_iters,
                        stage,
                        block,
                        // `s < 3` here: one of stages 1–3.
                        keeps_p: plan.newton_keeps_p.get(s).copied().unwrap_or(false),
                    };
                    soft_block(run, &mut ar, map, &dims, &wt, &inv, probe)?;
                    finite(map, Site::Block { stage, block })?;
                    let (rows, cols) = (geo.tokens(s), cfg.embed_dims[s]);
                    probe.observe(Checkpoint::Block { stage, block }, E::view(map), rows, cols);
                }
            } else {
                let dims = geo.stage4_dims(cfg);
                for b in 0..cfg.depths[3] {
                    let wt = Stage4Weights::load(&self.weights, b as u16)?;
                    stage4_block(run, &mut ar, map, &dims, &wt, probe)?;
                    let block = b as u16;
                    finite(map, Site::Block { stage: 4, block })?;
                    let (rows, cols) = (geo.tokens(3) + 1, cfg.embed_dims[3]);
                    let at = Checkpoint::Block { stage: 4, block };
                    probe.observe(at, E::view(map), rows, cols);
                }
            }
            let (rows, cols) = (geo.map_elems(cfg, s) / cfg.embed_dims[s], cfg.embed_dims[s]);
            probe.observe(Checkpoint::Stage(stage), E::view(map), rows, cols);
        }
        probe.enter(Activity {
            stage: 0,
            step: Step::Head,
        });
        let mut ar = root.scope();
        let c = cfg.embed_dims[3];
        let map = ar.alloc_class::<E>(Class::Tokens, geo.map_elems(cfg, 3))?;
        let scratch = TokenScratch::<E>::alloc(&mut ar, c, cfg.w8a8)?;
        let head = self.head()?;
        let k = run.kernels;
        for row in map.chunks_exact_mut(c) {
            k.widen(E::elems(row), scratch.token)?;
            k.layer_norm(scratch.token, c, &head.norm.0, &head.norm.1, STAGE4_EPS)?;
            k.narrow(scratch.token, E::elems_mut(row))?;
        }
        finite(map, Site::FinalNorm)?;
        probe.observe(Checkpoint::FinalNorm, E::view(map), geo.tokens(3) + 1, c);
        k.widen(E::elems(map.get(..c).unwrap_or_default()), scratch.token)?;
        let lhs = Lhs::new(Strided::rows_of(scratch.token, 1, c, c)?);
        let mut out = Out::new(logits, 1, cfg.num_classes, cfg.num_classes)?;
        apply(
            run,
            &head.w,
            &lhs,
            Start::Bias(head.b),
            scratch.quant,
            &mut out,
        )?;
        if !Tokens::F32(logits).all_finite() {
            return Err(Error::NonFiniteActivation(Site::Head));
        }
        Ok(RunReport {
            peak_bytes: mark.peak(),
            large_peak_bytes: mark.large_peak(),
        })
    }

    /// The stem's three convolutions on rings of three rows each. Streaming, image rows
    /// are pulled from the source only when the next output row needs them; with whole
    /// maps the image is read first, then each worker runs the rings over a band of
    /// stage-1 rows (recomputing the one or two conv rows at a band's edge).
    fn stem<E: TokenElem>(
        &self,
        run: &Run<'_>,
        ar: &mut Arena<'_>,
        input: &mut impl ImageSource,
        geo: &Geometry,
        map: &mut [E],
    ) -> Result<()> {
        let convs = self.stem_convs()?;
        let shapes = geo.stem_shapes(&self.config);
        let (h, w) = geo.image;
        let (h2, w2) = geo.stage[0];
        let cout = self.config.embed_dims[0];
        let cfg = &self.config;
        let lens = ConvLens::of(&shapes, run.schedule.chunk);
        if !run.schedule.whole_maps {
            let ring = ImageRing::<E>::alloc(ar, geo)?.rows;
            let mut lines = StemLines::<E>::alloc(ar, geo, cfg)?;
            let mut scratch = ConvScratch::<E>::alloc(ar, lens)?;
            let mut image = StreamedImage {
                ring,
                source: input,
                next: 0,
                height: h,
                row_len: 3 * w,
            };
            return stem_band(
                run,
                &convs,
                &shapes,
                geo,
                &mut image,
                &mut lines,
                &mut scratch,
                0..h2,
                map,
            );
        }
        let pixels = WholeImage::<E>::alloc(ar, geo)?.pixels;
        for (y, row) in pixels.chunks_exact_mut(3 * w).enumerate() {
            input.read_row(y, row)?;
            if !row.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFiniteInput { row: y });
            }
        }
        let workers = band_workers(&run.schedule, h2);
        let lines = per_worker(workers, || StemLines::<E>::alloc(ar, geo, cfg))?;
        let scratch = per_worker(workers, || ConvScratch::<E>::alloc(ar, lens))?;
        let pixels = &*pixels;
        let inner = run.single();
        let parts: Parts<_> = lines
            .into_iter()
            .zip(scratch)
            .zip(carve(map, w2 * cout, h2, workers))
            .enumerate()
            .map(|(i, parts)| (split(h2, workers, i), parts))
            .collect();
        run.try_parallel(parts, |(band, ((lines, scratch), out))| {
            let mut image = BufferedImage {
                pixels,
                height: h,
                row_len: 3 * w,
            };
            stem_band(
                &inner,
                &convs,
                &shapes,
                geo,
                &mut image,
                lines,
                scratch,
                band.clone(),
                out,
            )
        })
    }

    /// Adds the stage's position embedding, bilinearly resampled to its grid (stage 4:
    /// also the class token, with the embedding's row 0).
    fn add_position<E: TokenElem>(
        &self,
        run: &Run<'_>,
        ar: &mut Arena<'_>,
        map: &mut [E],
        geo: &Geometry,
        s: usize,
    ) -> Result<()> {
        let c = self.config.embed_dims[s];
        let g = self.config.pos_grids[s];
        let pos = self.pos_embed(s)?;
        let (rows, cols) = geo.stage[s];
        let scratch = PositionScratch::<E>::alloc(ar, c)?;
        let tok = scratch.token;
        let k = run.kernels;
        let mut tokens = map.chunks_exact_mut(c);
        let first = if s == 3 {
            let cls = self
                .weights
                .schema_vector(TensorId::new(K::ClsToken, 4, 0))?;
            if let Some(row) = tokens.next() {
                cls.read_into(0, tok);
                pos.add_into(0, tok);
                k.narrow(tok, E::elems_mut(row))?;
            }
            1
        } else {
            0
        };
        for (t, row) in tokens.enumerate().take(rows * cols) {
            k.widen(E::elems(row), tok)?;
            add_resampled(
                run,
                &pos,
                first,
                g,
                (rows, cols),
                (t / cols, t % cols),
                scratch.taps,
                tok,
            )?;
            k.narrow(tok, E::elems_mut(row))?;
        }
        Ok(())
    }
}

/// Stage-1 rows `band` of the stem into `out` (those rows of the map): conv1 and conv2
/// rows on the worker's rings, from the first each output row needs.
#[allow(clippy::too_many_arguments)]
fn stem_band<E: TokenElem>(
    run: &Run<'_>,
    convs: &[Conv<'_>; 3],
    shapes: &[ConvShape; 3],
    geo: &Geometry,
    image: &mut impl ImageRows,
    lines: &mut StemLines<'_, E>,
    scratch: &mut ConvScratch<'_, E>,
    band: core::ops::Range<usize>,
    out: &mut [E],
) -> Result<()> {
    let h1 = geo.stem.0;
    let row1 = shapes[0].out_w() * shapes[0].cout;
    let row3 = shapes[2].out_w() * shapes[2].cout;
    // Conv2 rows from 2·j0 − 1, conv1 rows from one before that.
    let mut next2 = (2 * band.start).saturating_sub(1);
    let mut next1 = next2.saturating_sub(1);
    for (i, j) in band.enumerate() {
        while next2 <= (2 * j + 1).min(h1 - 1) {
            while next1 <= (next2 + 1).min(h1 - 1) {
                image.ensure(2 * next1 + 1)?;
                let dst = ring_row_mut(lines.ring1, next1, row1);
                conv_row(
                    run,
                    &convs[0],
                    &shapes[0],
                    image.rows(2 * next1),
                    scratch,
                    dst,
                )?;
                next1 += 1;
            }
            let rows = ring_rows(&*lines.ring1, next2, h1, row1);
            let dst = ring_row_mut(lines.ring2, next2, row1);
            conv_row(run, &convs[1], &shapes[1], rows, scratch, dst)?;
            next2 += 1;
        }
        let rows = ring_rows(&*lines.ring2, 2 * j, h1, row1);
        let dst = out.get_mut(i * row3..(i + 1) * row3).unwrap_or_default();
        conv_row(run, &convs[2], &shapes[2], rows, scratch, dst)?;
    }
    Ok(())
}

/// Source taps of PyTorch's bilinear resize (`align_corners=False`) along one axis:
/// `(i0, i1, w0, w1)` with `out = w0·in[i0] + w1·in[i1]`.
fn bilinear_taps(dst: usize, src_len: usize, dst_len: usize) -> (usize, usize, f32, f32) {
    let scale = src_len as f32 / dst_len as f32;
    let real = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (real as usize).min(src_len.saturating_sub(1));
    let i1 = if i0 + 1 < src_len { i0 + 1 } else { i0 };
    let w1 = real - i0 as f32;
    (i0, i1, 1.0 - w1, w1)
}

/// `out += ` the `G×G` grid `grid` (rows of `out.len()` channels starting at grid row
/// `first_row`) bilinearly resampled at token `(y, x)` of a `rows × cols` map, through the
/// four grid rows it reads (`taps`, 4 × channels):
/// `out += wy0·(wx0·g[y0][x0] + wx1·g[y0][x1]) + wy1·(wx0·g[y1][x0] + wx1·g[y1][x1])`.
#[allow(clippy::too_many_arguments)]
fn add_resampled(
    run: &Run<'_>,
    grid: &Vector<'_>,
    first_row: usize,
    g: usize,
    (rows, cols): (usize, usize),
    (y, x): (usize, usize),
    taps: &mut [f32],
    out: &mut [f32],
) -> Result<()> {
    let c = out.len();
    let (y0, y1, wy0, wy1) = bilinear_taps(y, g, rows);
    let (x0, x1, wx0, wx1) = bilinear_taps(x, g, cols);
    let mut quads = taps.chunks_exact_mut(c.max(1));
    for (gy, gx) in [(y0, x0), (y0, x1), (y1, x0), (y1, x1)] {
        if let Some(tap) = quads.next() {
            let at = (first_row + gy * g + gx) * c;
            // The embedding's shape was checked against the grid when the model loaded.
            let row = grid
                .elems(at..at + c)
                .ok_or(Error::CorruptBlob("position grid"))?;
            run.kernels.widen(row, tap)?;
        }
    }
    let (a, rest) = taps.split_at(c.min(taps.len()));
    let (b, rest) = rest.split_at(c.min(rest.len()));
    let (cc, d) = rest.split_at(c.min(rest.len()));
    for ((((o, a), b), cc), d) in out.iter_mut().zip(a).zip(b).zip(cc).zip(d) {
        let top = wx0 * a + wx1 * b;
        let bottom = wx0 * cc + wx1 * d;
        *o += wy0 * top + wy1 * bottom;
    }
    Ok(())
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

/// Stride-2 patch embedding over the map. Streaming: in place when
/// [`EmbedDims::in_place`] allows, else through a second map that is copied back. Whole
/// maps: into a second map in bands of output rows, one per worker, then copied back.
fn patch_embed<E: TokenElem>(
    run: &Run<'_>,
    ar: &mut Arena<'_>,
    map: &mut [E],
    dims: &EmbedDims,
    conv: &Conv<'_>,
) -> Result<()> {
    let (row_in, row_out) = (dims.cols_in * dims.c_in, dims.cols_out * dims.c_out);
    let shape = dims.shape();
    let whole = run.schedule.whole_maps;
    let lines = EmbedScratch::<E>::alloc(ar, dims, whole)?;
    let lens = ConvLens::of(&[shape], run.schedule.chunk);
    let start = dims.first * dims.c_out;
    if whole {
        let workers = band_workers(&run.schedule, dims.rows_out);
        let scratch = per_worker(workers, || ConvScratch::<E>::alloc(ar, lens))?;
        let input = &*map;
        let inner = run.single();
        let separate = lines.separate.get_mut(start..).unwrap_or_default();
        let parts: Parts<_> = scratch
            .into_iter()
            .zip(carve(separate, row_out, dims.rows_out, workers))
            .enumerate()
            .map(|(i, parts)| (split(dims.rows_out, workers, i), parts))
            .collect();
        run.try_parallel(parts, |(band, (scratch, out))| {
            for (i, j) in band.clone().enumerate() {
                let rows = core::array::from_fn(|t| {
                    let r = (2 * j + t).checked_sub(1).filter(|&r| r < dims.rows_in)?;
                    input.get(r * row_in..(r + 1) * row_in)
                });
                let dst = out
                    .get_mut(i * row_out..(i + 1) * row_out)
                    .unwrap_or_default();
                conv_row(&inner, conv, &shape, rows, scratch, dst)?;
            }
            Ok(())
        })?;
    } else {
        let mut scratch = ConvScratch::<E>::alloc(ar, lens)?;
        let in_place = dims.in_place();
        let mut next = 0;
        for j in 0..dims.rows_out {
            while next <= (2 * j + 1).min(dims.rows_in - 1) {
                if let Some(src) = map.get(next * row_in..(next + 1) * row_in) {
                    ring_row_mut(lines.ring, next, row_in).copy_from_slice(src);
                }
                next += 1;
            }
            let at = start + j * row_out;
            let dst = if in_place {
                map.get_mut(at..at + row_out)
            } else {
                lines.separate.get_mut(at..at + row_out)
            };
            let rows = ring_rows(&*lines.ring, 2 * j, dims.rows_in, row_in);
            conv_row(
                run,
                conv,
                &shape,
                rows,
                &mut scratch,
                dst.unwrap_or_default(),
            )?;
        }
        if in_place {
            return Ok(());
        }
    }
    if let (Some(dst), Some(src)) = (
        map.get_mut(start..dims.out_elems()),
        lines.separate.get(start..),
    ) {
        dst.copy_from_slice(src);
    }
    Ok(())
}

/// Exact arena bytes for running a model of `cfg` on a `height × width` input, on the
/// compact schedule.
pub fn plan(
    cfg: &ModelConfig,
    height: usize,
    width: usize,
    precision: Precision,
) -> Result<MemoryPlan> {
    plan_with(cfg, height, width, precision, &Schedule::COMPACT)
}

/// Exact arena bytes for running a model of `cfg` on a `height × width` input with
/// `schedule`.
pub fn plan_with(
    cfg: &ModelConfig,
    height: usize,
    width: usize,
    precision: Precision,
    schedule: &Schedule,
) -> Result<MemoryPlan> {
    plan_placed(cfg, height, width, precision, schedule, Placement::ONE)
}

/// Exact bytes of each memory for running a model of `cfg` on a `height × width` input
/// with `schedule` on two memories, buffers placed by `placement` (with
/// [`Placement::ONE`], one arena: [`plan_with`]).
// Out of line: `Model::run_as` calls it once before the inference; inlined, its locals
// would sit in that frame for the whole inference.
#[inline(never)]
pub fn plan_placed(
    cfg: &ModelConfig,
    height: usize,
    width: usize,
    precision: Precision,
    schedule: &Schedule,
    placement: Placement,
) -> Result<MemoryPlan> {
    let order = phase_order();
    let (mut fast, mut large) = (order.map(|p| (p, 0)), order.map(|p| (p, 0)));
    let newton_keeps_p = Plan::with(cfg, (height, width), schedule, placement, |plan| {
        plan.visit(precision, &mut |memory, phase, buffer| {
            let phases = match memory {
                Memory::Fast => &mut fast,
                Memory::Large => &mut large,
            };
            if let Some(slot) = phases.iter_mut().find(|p| p.0 == phase) {
                slot.1 += buffer.bytes;
            }
        })
    })?;
    let peak = |phases: &[(Phase, usize)]| phases.iter().map(|p| p.1).max().unwrap_or(0);
    Ok(MemoryPlan {
        peak_bytes: peak(&fast),
        phases: fast,
        large_bytes: peak(&large),
        large_phases: large,
        newton_keeps_p,
    })
}

/// The phases in run order.
fn phase_order() -> [Phase; PHASES] {
    let mut order = [Phase::Stem; PHASES];
    let stages = (0..STAGES as u8).flat_map(|s| {
        let embed = (s > 0).then_some(Phase::Embed(s + 1));
        embed
            .into_iter()
            .chain([Phase::Position(s + 1), Phase::Blocks(s + 1)])
    });
    let phases = stages.chain([Phase::Head]);
    for (slot, phase) in order.iter_mut().skip(1).zip(phases) {
        *slot = phase;
    }
    order
}

/// Every buffer at each phase's peak, in run order, memory by memory (the fast one
/// first; the large one only if `placement` uses it): the memory, the phase, then its
/// buffers in that memory from the arena's start (the token map first). The plan's bytes
/// are their sums, so the two cannot differ.
pub fn plan_buffers(
    cfg: &ModelConfig,
    height: usize,
    width: usize,
    precision: Precision,
    schedule: &Schedule,
    placement: Placement,
    visit: &mut dyn FnMut(Memory, Phase, Buffer),
) -> Result<()> {
    Plan::with(cfg, (height, width), schedule, placement, |plan| {
        plan.visit(precision, visit);
    })
}

/// What the planner plans: a model at an input size, with a schedule and a placement.
struct Plan<'p> {
    cfg: &'p ModelConfig,
    geo: &'p Geometry,
    schedule: &'p Schedule,
    placement: Placement,
}

impl Plan<'_> {
    /// Checks the config, schedule and input size, then calls `f` with their plan.
    fn with<R>(
        cfg: &ModelConfig,
        (height, width): (usize, usize),
        schedule: &Schedule,
        placement: Placement,
        f: impl FnOnce(&Plan<'_>) -> R,
    ) -> Result<R> {
        cfg.validate()?;
        schedule.validate()?;
        let geo = Geometry::new(cfg, height, width)?;
        Ok(f(&Plan {
            cfg,
            geo: &geo,
            schedule,
            placement,
        }))
    }

    /// Hands `visit` every buffer of every memory the placement uses, at each phase's
    /// peak ([`plan_buffers`]); returns whether each stage keeps `P`
    /// ([`MemoryPlan::newton_keeps_p`]).
    fn visit(
        &self,
        precision: Precision,
        visit: &mut dyn FnMut(Memory, Phase, Buffer),
    ) -> [bool; 3] {
        match precision {
            Precision::F16 => self.visit_as::<f16>(visit),
            Precision::F32 => self.visit_as::<f32>(visit),
        }
    }

    fn visit_as<E: TokenElem>(&self, visit: &mut dyn FnMut(Memory, Phase, Buffer)) -> [bool; 3] {
        let keeps = self.keeps_p::<E>();
        for &memory in self.placement.memories() {
            self.phase_buffers::<E>(keeps, memory, &mut |phase, b| visit(memory, phase, b));
        }
        keeps
    }

    /// Each memory's peak with `keeps`, over all phases or only `only` (a memory the
    /// placement does not use: 0).
    fn peaks<E: TokenElem>(&self, keeps: [bool; 3], only: Option<Phase>) -> [usize; 2] {
        let mut peaks = [0; 2];
        for (i, &memory) in self.placement.memories().iter().enumerate() {
            let mut current = (Phase::Stem, 0);
            let mut most = 0;
            self.phase_buffers::<E>(keeps, memory, &mut |phase, b| {
                if only.is_some_and(|p| p != phase) {
                    return;
                }
                if phase != current.0 {
                    current = (phase, 0);
                }
                current.1 += b.bytes;
                most = most.max(current.1);
            });
            peaks[i] = most;
        }
        peaks
    }

    /// [`MemoryPlan::newton_keeps_p`] with token maps of `E`.
    fn keeps_p<E: TokenElem>(&self) -> [bool; 3] {
        let formed = [false; 3];
        let peaks = self.peaks::<E>(formed, None);
        core::array::from_fn(|s| {
            let mut keeps = formed;
            keeps[s] = true;
            let blocks = self.peaks::<E>(keeps, Some(Phase::Blocks(s as u8 + 1)));
            blocks.iter().zip(&peaks).all(|(b, p)| b <= p)
        })
    }

    /// Every buffer in `memory` at each phase's peak, in run order, the pseudo-inverses
    /// keeping `P` per `keeps`.
    fn phase_buffers<E: TokenElem>(
        &self,
        keeps: [bool; 3],
        memory: Memory,
        visit: &mut dyn FnMut(Phase, Buffer),
    ) {
        let (cfg, geo, schedule, placement) = (self.cfg, self.geo, self.schedule, self.placement);
        let map = |elems: usize| Buffer {
            group: "map",
            name: "token map",
            bytes: bytes_for::<E>(elems),
            class: Class::Tokens,
        };
        let mut phase = |p: Phase, buffers: &dyn Fn(Emit<'_, '_>)| {
            buffers(&mut Sink::new(placement, memory, &mut |b| visit(p, b)));
        };
        phase(Phase::Stem, &|e| {
            e.push(map(geo.map_elems(cfg, 0)));
            stem_buffers::<E>(geo, cfg, schedule, e);
        });
        for s in 0..STAGES {
            let stage = s as u8 + 1;
            if s > 0 {
                let dims = geo.embed(cfg, s);
                phase(Phase::Embed(stage), &|e| {
                    e.push(map(dims.map_elems()));
                    embed_buffers::<E>(&dims, schedule, e);
                });
            }
            let c = cfg.embed_dims[s];
            phase(Phase::Position(stage), &|e| {
                e.push(map(geo.map_elems(cfg, s)));
                emit_copies(e, 1, &PositionScratch::<E>::layout(c));
            });
            phase(Phase::Blocks(stage), &|e| {
                e.push(map(geo.map_elems(cfg, s)));
                match (cfg.depths[s], s) {
                    (0, _) => {}
                    (_, 0..=2) => {
                        let keeps_p = keeps.get(s).copied().unwrap_or(false);
                        geo.soft_dims(cfg, s)
                            .block_buffers::<E>(schedule, keeps_p, e)
                    }
                    _ => geo.stage4_dims(cfg).block_buffers::<E>(schedule, e),
                }
            });
        }
        phase(Phase::Head, &|e| {
            e.push(map(geo.map_elems(cfg, 3)));
            emit_copies(
                e,
                1,
                &TokenScratch::<E>::layout(cfg.embed_dims[3], cfg.w8a8),
            );
        });
    }
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

const _: () = assert!(ARENA_ALIGN.is_multiple_of(4));

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
        // The planner's walk visits exactly these phases, in this order: a phase missing
        // from `phase_order` would drop its bytes.
        let mut visited: std::vec::Vec<Phase> = std::vec::Vec::new();
        let mut bytes = 0;
        let (compact, one) = (Schedule::COMPACT, Placement::ONE);
        plan_buffers(
            &cfg,
            224,
            224,
            Precision::F16,
            &compact,
            one,
            &mut |_, phase, b| {
                if visited.last() != Some(&phase) {
                    visited.push(phase);
                }
                bytes += b.bytes;
            },
        )
        .unwrap();
        assert_eq!(visited, want);
        assert_eq!(bytes, p.phases.iter().map(|x| x.1).sum::<usize>());
    }

    #[test]
    fn bilinear_taps_follow_pytorch() {
        // Identity when sizes agree.
        assert_eq!(bilinear_taps(3, 7, 7), (3, 4, 1.0, 0.0));
        // 2 -> 4 upsampling: source coords -0.25 (clamped), 0.25, 0.75, 1.25.
        assert_eq!(bilinear_taps(0, 2, 4), (0, 1, 1.0, 0.0));
        assert_eq!(bilinear_taps(1, 2, 4), (0, 1, 0.75, 0.25));
        assert_eq!(bilinear_taps(3, 2, 4), (1, 1, 0.75, 0.25));
        // 56 -> 16 downsampling: 3.5 * 0.5 - 0.5 = 1.25.
        assert_eq!(bilinear_taps(0, 56, 16), (1, 2, 0.75, 0.25));
    }
}
