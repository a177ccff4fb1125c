//! What several commands share: argument types, loading blobs and checkpoints, and the
//! formatting of sizes and configs.

use std::path::Path;

use clap::ValueEnum;
use soft_core::{Kernels, Model, ModelConfig, Precision};

use crate::checkpoint::read_checkpoint;
use crate::error::{Context, Error, OrFail, Result};
use crate::pth::Prefer;
use crate::threads::Threads;
use crate::{build_blob, infer_config, require, AlignedBlob, ArchOptions, WeightDtype};

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

#[derive(clap::Args)]
pub(crate) struct ArchArgs {
    /// Published preset (soft_tiny … soft_norm_huge) for what the shapes cannot tell.
    #[arg(long)]
    arch: Option<String>,
    /// Normalised (SOFT-Norm) attention.
    #[arg(long)]
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

pub(crate) fn arch_options(arch: &ArchArgs) -> Result<(ArchOptions, Option<ModelConfig>)> {
    let preset = arch.arch.as_deref().map(preset).transpose()?;
    let opts = ArchOptions {
        normalized: arch.norm || preset.is_some_and(|p| p.normalized),
        newton_iters: arch
            .newton_iters
            .or(preset.map(|p| p.newton_iters))
            .unwrap_or(20),
        stage4_heads: arch.stage4_heads.or(preset.map(|p| p.heads[3])),
    };
    Ok((opts, preset))
}

/// Reads a checkpoint and infers its config, checked against `--arch` when given.
pub(crate) fn load_checkpoint(
    path: &Path,
    arch: &ArchArgs,
) -> Result<(crate::TensorMap, ModelConfig, Vec<String>)> {
    let prefer = if arch.no_ema {
        Prefer::Raw
    } else {
        Prefer::Ema
    };
    let loaded = read_checkpoint(path, prefer)?;
    let (opts, preset) = arch_options(arch)?;
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
    Ok((loaded.tensors, cfg, loaded.notes))
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
