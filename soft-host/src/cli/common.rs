//! What several commands share: argument types, loading blobs and checkpoints, and the
//! formatting of sizes and configs.

use std::path::Path;

use clap::ValueEnum;
use soft_core::metadata::{Channels, Interpolation, Metadata, Origin, Variant};
use soft_core::{Kernels, Model, ModelConfig, Precision};

use crate::checkpoint::read_checkpoint;
use crate::error::{Context, Error, OrFail, Result};
use crate::model_info::{Overrides, TrainingInfo};
use crate::pth::Prefer;
use crate::threads::Threads;
use crate::{build_blob, fail, infer_config, require, AlignedBlob, ArchOptions, WeightDtype};

#[derive(Clone, Copy, ValueEnum, Default)]
pub(crate) enum Activations {
    #[default]
    F16,
    F32,
}

impl From<Activations> for Precision {
    fn from(a: Activations) -> Precision {
        match a {
            Activations::F16 => Precision::F16,
            Activations::F32 => Precision::F32,
        }
    }
}

/// Kernel implementations.
#[derive(Clone, Copy, ValueEnum, Default)]
pub(crate) enum KernelsArg {
    /// The fastest this CPU runs.
    #[default]
    Auto,
    /// The portable scalar kernels (what a microcontroller runs).
    Generic,
    /// AVX2 with F16C.
    Avx2,
    /// AVX-512F.
    Avx512,
}

impl KernelsArg {
    pub(crate) fn kernels(self) -> Result<&'static Kernels> {
        let name = match self {
            KernelsArg::Auto => return Ok(Kernels::detect()),
            KernelsArg::Generic => "generic",
            KernelsArg::Avx2 => "avx2",
            KernelsArg::Avx512 => "avx512",
        };
        Kernels::by_name(name).or_fail_with(Error::Usage, || {
            format!("this CPU does not run the {name} kernels")
        })
    }
}

/// Threads for a run: `--threads`, else every core (at most 16).
pub(crate) fn threads_arg(threads: Option<usize>) -> Result<Threads> {
    Threads::new(thread_count(threads)?)
}

/// `--threads`, else every core, at most 16 either way.
pub(crate) fn thread_count(threads: Option<usize>) -> Result<usize> {
    let max = soft_core::exec::MAX_WORKERS;
    let all = std::thread::available_parallelism().map_or(1, usize::from);
    let count = threads.unwrap_or(all.min(max));
    require!(
        (1..=max).contains(&count),
        Usage,
        "--threads must be 1 to {max}, not {count}"
    );
    Ok(count)
}

/// The attention variant, which the tensor shapes cannot tell.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(crate) enum VariantArg {
    /// SOFT: `K2 + 0.01·I` before the pseudo-inverse (soft_tiny … soft_huge).
    Plain,
    /// SOFT-Norm: the symmetric normalised kernel (soft_norm_tiny … soft_norm_huge).
    Norm,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Variant {
        match v {
            VariantArg::Plain => Variant::Plain,
            VariantArg::Norm => Variant::Norm,
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct ArchArgs {
    /// Published preset (soft_tiny … soft_norm_huge) for what the shapes cannot tell;
    /// its name also says the variant.
    #[arg(long)]
    arch: Option<String>,
    /// The attention variant, where the checkpoint does not say it (timm's saved
    /// args.model, a config dict): plain SOFT or SOFT-Norm. The tensor shapes cannot tell,
    /// and the wrong one converts without error into a different model, so convert
    /// refuses to guess.
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// Same as --variant norm.
    #[arg(long, conflicts_with = "variant")]
    norm: bool,
    /// Stage-4 heads (default: stage-4 width / stage-3 head dim).
    #[arg(long)]
    stage4_heads: Option<usize>,
    /// Newton–Schulz iterations (default 20).
    #[arg(long)]
    newton_iters: Option<usize>,
    /// Take `state_dict` even where `state_dict_ema` exists.
    #[arg(long)]
    no_ema: bool,
}

pub(crate) fn preset(name: &str) -> Result<ModelConfig> {
    ModelConfig::preset(name).or_fail_with(Error::Usage, || {
        format!(
            "unknown architecture {name}; known: {}",
            ModelConfig::PRESETS.join(", ")
        )
    })
}

/// The variant, who said so and how: every statement of the checkpoint and the command
/// line must agree, and one of them must say it.
pub(crate) fn resolve_variant(
    path: &Path,
    arch: &ArchArgs,
    preset: Option<&ModelConfig>,
    info: &TrainingInfo,
) -> Result<(Variant, Origin, String)> {
    let mut claims: Vec<(Variant, Origin, String)> = info
        .variant
        .iter()
        .map(|s| (s.value, Origin::Checkpoint, s.at.clone()))
        .collect();
    if let Some(v) = arch.variant {
        let v = Variant::from(v);
        claims.push((v, Origin::User, format!("--variant {}", v.name())));
    }
    if arch.norm {
        claims.push((Variant::Norm, Origin::User, "--norm".into()));
    }
    if let (Some(name), Some(p)) = (&arch.arch, preset) {
        claims.push((Variant::of(p), Origin::User, format!("--arch {name}")));
    }
    let Some(first) = claims.first().cloned() else {
        let unknown = match &info.unknown_models[..] {
            [] => String::new(),
            [one] => format!(" ({one} is not a published model name)"),
            many => format!(" ({} are not published model names)", many.join(", ")),
        };
        fail!(
            Usage,
            "{} does not say whether the model is SOFT or SOFT-Norm{unknown}, and the tensor \
             shapes cannot tell (the wrong one converts without error into a different \
             model): pass --variant plain or --variant norm",
            path.display()
        );
    };
    if let Some(other) = claims.iter().find(|c| c.0 != first.0) {
        fail!(
            Usage,
            "{} says {} but {} says {}: the variants disagree",
            first.2,
            first.0,
            other.2,
            other.0
        );
    }
    Ok(first)
}

/// A checkpoint read for conversion.
pub(crate) struct LoadedCheckpoint {
    pub(crate) tensors: crate::TensorMap,
    pub(crate) cfg: ModelConfig,
    pub(crate) notes: Vec<String>,
    pub(crate) info: TrainingInfo,
    /// The variant, who said so and how.
    pub(crate) variant: (Variant, Origin, String),
}

/// Reads a checkpoint, settles its variant ([`resolve_variant`]) and infers its
/// config, checked against `--arch` when given.
pub(crate) fn load_checkpoint(path: &Path, arch: &ArchArgs) -> Result<LoadedCheckpoint> {
    let prefer = if arch.no_ema {
        Prefer::Raw
    } else {
        Prefer::Ema
    };
    let loaded = read_checkpoint(path, prefer)?;
    let preset = arch.arch.as_deref().map(preset).transpose()?;
    let variant = resolve_variant(path, arch, preset.as_ref(), &loaded.info)?;
    let opts = ArchOptions {
        normalized: variant.0 == Variant::Norm,
        newton_iters: arch
            .newton_iters
            .or(preset.map(|p| p.newton_iters))
            .unwrap_or(20),
        stage4_heads: arch.stage4_heads.or(preset.map(|p| p.heads[3])),
    };
    let cfg = infer_config(&loaded.tensors, &opts)?;
    if let Some(p) = preset {
        for (what, ours, theirs) in [
            ("widths", cfg.embed_dims, p.embed_dims),
            ("depths", cfg.depths, p.depths),
            ("heads", cfg.heads, p.heads),
        ] {
            require!(
                ours == theirs,
                Architecture,
                "checkpoint {what} {ours:?} do not match --arch ({theirs:?})"
            );
        }
    }
    Ok(LoadedCheckpoint {
        tensors: loaded.tensors,
        cfg,
        notes: loaded.notes,
        info: loaded.info,
        variant,
    })
}

/// A labels file: one class name a line, as many as the model has classes.
pub(crate) fn read_labels(path: &Path, classes: usize) -> Result<Vec<String>> {
    let labels: Vec<String> = std::fs::read_to_string(path)
        .map_err(|e| Error::io("reading", path, e))?
        .lines()
        .map(str::to_string)
        .collect();
    require!(
        labels.len() == classes,
        Usage,
        "{}: {} labels for a model of {classes} classes",
        path.display(),
        labels.len()
    );
    if let Some(line) = labels.iter().position(|l| l.chars().any(char::is_control)) {
        fail!(
            Usage,
            "{}: line {} holds a control character",
            path.display(),
            line + 1
        );
    }
    Ok(labels)
}

/// A blob's metadata, or `None` with a warning when it has a version this build does
/// not read (the model itself still runs).
pub(crate) fn blob_metadata<'a>(model: &Model<'a>, path: &Path) -> Option<Metadata<'a>> {
    match model.blob().metadata() {
        Ok(m) => m,
        Err(e) => {
            super::warn(&format!("{}: {e}; ignoring its metadata", path.display()));
            None
        }
    }
}

/// Resize rule.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(crate) enum ResizeArg {
    /// The shorter side, keeping the aspect ratio (torchvision's Resize(int), timm's
    /// crop_mode center).
    Shorter,
    /// Both sides (timm's crop_mode squash).
    Both,
}

/// Resampling filter.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(crate) enum InterpolationArg {
    /// Nearest sample.
    Nearest,
    /// Antialiased bilinear.
    Bilinear,
    /// Antialiased bicubic.
    Bicubic,
}

/// Channel order.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(crate) enum ChannelsArg {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
    /// Luminance (PIL's convert("L")) in all three channels.
    #[value(alias = "gray")]
    Grey,
}

/// One number for all three channels, or three separated by commas.
fn parse_triple(s: &str) -> std::result::Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|t| t.trim().parse::<f32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("{s:?} is not R,G,B or one number"))?;
    match v[..] {
        [a] => Ok([a; 3]),
        [a, b, c] => Ok([a, b, c]),
        _ => Err(format!("{s:?} is not R,G,B or one number")),
    }
}

/// How an image becomes the model's input. `convert` records these in the blob; `run
/// --image` and `eval` on a folder take them over the blob's.
#[derive(clap::Args, Default)]
pub(crate) struct PreprocessArgs {
    /// Resize the shorter side (keeping the aspect ratio) or both sides to
    /// ⌊size / crop-pct⌋, then crop the centre. Recorded by convert; run and eval take
    /// it over the blob's (which else is shorter).
    #[arg(long, value_enum)]
    resize: Option<ResizeArg>,
    /// Fraction of the resized side the centre crop keeps, in (0, 1]: 0.875 crops 224
    /// from 256, 1 crops nothing off a square. Recorded by convert (default: the
    /// checkpoint's crop_pct); run and eval take it over the blob's (else 0.875).
    #[arg(long)]
    crop_pct: Option<f64>,
    /// Resampling filter, Pillow's (what torchvision applies to images). Recorded by
    /// convert (default: the checkpoint's interpolation); run and eval take it over the
    /// blob's (else bilinear).
    #[arg(long, value_enum)]
    interpolation: Option<InterpolationArg>,
    /// Input channels. Recorded by convert; run and eval take it over the blob's (else
    /// rgb).
    #[arg(long, value_enum)]
    channels: Option<ChannelsArg>,
    /// What an 8-bit sample of 255 becomes before the mean and std: 1 (torchvision's
    /// ToTensor) or 255. Recorded by convert; run and eval take it over the blob's
    /// (else 1).
    #[arg(long, allow_hyphen_values = true)]
    value_range: Option<f32>,
    /// Per-channel mean, R,G,B or one number. Recorded by convert (default: the
    /// checkpoint's mean); run and eval take it over the blob's (else ImageNet's).
    #[arg(long, value_parser = parse_triple, allow_hyphen_values = true)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation, R,G,B or one number. Recorded by convert
    /// (default: the checkpoint's std); run and eval take it over the blob's (else
    /// ImageNet's).
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
}

impl PreprocessArgs {
    /// Whether any flag is given.
    pub(crate) fn any(&self) -> bool {
        self.resize.is_some()
            || self.crop_pct.is_some()
            || self.interpolation.is_some()
            || self.channels.is_some()
            || self.value_range.is_some()
            || self.mean.is_some()
            || self.std.is_some()
    }

    /// The flags, checked, with `size` as the input side.
    pub(crate) fn overrides(&self, size: Option<usize>) -> Result<Overrides> {
        if let Some(p) = self.crop_pct {
            require!(
                p > 0.0 && p <= 1.0,
                Usage,
                "--crop-pct {p} is outside (0, 1]"
            );
        }
        if let Some(v) = self.value_range {
            require!(
                v.is_finite() && v > 0.0,
                Usage,
                "--value-range {v} is not a positive number"
            );
        }
        if let Some(m) = self.mean {
            require!(
                m.iter().all(|v| v.is_finite()),
                Usage,
                "--mean {m:?} is not finite"
            );
        }
        if let Some(s) = self.std {
            require!(
                s.iter().all(|v| v.is_finite() && *v > 0.0),
                Usage,
                "--std {s:?} is not positive"
            );
        }
        Ok(Overrides {
            size,
            both_sides: self.resize.map(|r| r == ResizeArg::Both),
            crop_pct: self.crop_pct,
            interpolation: self.interpolation.map(|i| match i {
                InterpolationArg::Nearest => Interpolation::Nearest,
                InterpolationArg::Bilinear => Interpolation::Bilinear,
                InterpolationArg::Bicubic => Interpolation::Bicubic,
            }),
            channels: self.channels.map(|c| match c {
                ChannelsArg::Rgb => Channels::Rgb,
                ChannelsArg::Bgr => Channels::Bgr,
                ChannelsArg::Grey => Channels::Grey,
            }),
            value_range: self.value_range,
            mean: self.mean,
            std: self.std,
        })
    }
}

/// The f32 blob built from `checkpoint`, the checkpoint a blob of config `cfg` was
/// converted from (what `verify` compares against, and `eval --against` with a
/// checkpoint): its architecture must be `cfg`'s (W8A8 or not).
pub(crate) fn reference_blob(
    checkpoint: &Path,
    cfg: &ModelConfig,
    no_ema: bool,
) -> Result<AlignedBlob> {
    let loaded = read_checkpoint(checkpoint, if no_ema { Prefer::Raw } else { Prefer::Ema })?;
    // A blob converted as the other variant (by a build that guessed) is not this
    // checkpoint's model, however well it agrees with a reference built the same way.
    let blob_variant = Variant::of(cfg);
    if let Some(said) = loaded.info.variant.iter().find(|s| s.value != blob_variant) {
        fail!(
            Architecture,
            "the blob is {blob_variant} but {} says {}: it was converted as the wrong variant",
            said.at,
            said.value
        );
    }
    let opts = ArchOptions {
        normalized: cfg.normalized,
        newton_iters: cfg.newton_iters,
        stage4_heads: Some(cfg.heads[3]),
    };
    let ref_cfg = infer_config(&loaded.tensors, &opts)?;
    // W8A8 is how a blob computes, not its architecture: the reference is plain f32.
    require!(
        ref_cfg
            == ModelConfig {
                w8a8: false,
                ..*cfg
            },
        Architecture,
        "the reference checkpoint's architecture differs from the blob's"
    );
    Ok(AlignedBlob::new(&build_blob(
        &loaded.tensors,
        cfg,
        WeightDtype::F32,
    )?))
}

pub(crate) fn load_blob(path: &Path) -> Result<AlignedBlob> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    Ok(AlignedBlob::new(&bytes))
}

pub(crate) fn open_model<'a>(blob: &'a AlignedBlob, path: &Path) -> Result<Model<'a>> {
    Model::from_blob(blob.as_bytes()).with_context(|| path.display().to_string())
}

/// The input size a model was trained for: stage-1 grid × 4.
pub(crate) fn native_size(cfg: &ModelConfig) -> usize {
    cfg.pos_grids[0] * 4
}

/// Bytes for people: `N B (x.y KiB)`, or MiB where the KiB would run to six digits.
pub(crate) fn kib(b: usize) -> String {
    let k = b as f64 / 1024.0;
    if k >= 10_000.0 {
        format!("{b} B ({:.1} MiB)", k / 1024.0)
    } else {
        format!("{b} B ({k:.1} KiB)")
    }
}

/// A config as JSON (the schema of `"config"` in `inspect --json` and `plan --json`).
pub(crate) fn config_json(c: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "embed_dims": c.embed_dims,
        "heads": c.heads,
        "depths": c.depths,
        "landmark_ratios": c.landmark_ratios,
        "vconv_sizes": c.vconv_sizes,
        "num_classes": c.num_classes,
        "newton_iters": c.newton_iters,
        "normalized": c.normalized,
        "pos_grids": c.pos_grids,
        "stem_width": c.stem_width,
        "stage4_mlp_hidden": c.stage4_mlp_hidden,
    })
}

pub(crate) fn describe(c: &ModelConfig) -> String {
    format!(
        "widths {:?}, heads {:?}, depths {:?}, landmark ratios {:?}, V-conv {:?}, {} classes, {} Newton steps{}",
        c.embed_dims,
        c.heads,
        c.depths,
        c.landmark_ratios,
        c.vconv_sizes,
        c.num_classes,
        c.newton_iters,
        if c.normalized { ", SOFT-Norm" } else { "" }
    )
}

pub(crate) fn parse_size(s: &str) -> Result<(usize, usize)> {
    let parse = |t: &str| {
        t.trim().parse::<usize>().or_fail_with(Error::Usage, || {
            format!("bad image size {s:?}; use 224 or HxW")
        })
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

/// "s" unless `n` is 1.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
