//! `soft plan`: the exact arena bytes of a model at an input size, per phase.

use std::path::{Path, PathBuf};

use soft_core::Precision;

use super::common::{
    config_json, kib, load_blob, open_model, parse_size, plural, preset, Activations,
};
use crate::error::Result;
use crate::inference::precision_name;
use crate::io::Output;
use crate::threads::Threads;
use crate::{fail, outln, svg};

/// Exact arena bytes for an input size, per phase.
#[derive(clap::Args)]
pub struct Args {
    /// The model blob (or --arch).
    model: Option<PathBuf>,
    /// Plan a published preset instead of a blob.
    #[arg(long, conflicts_with = "model")]
    arch: Option<String>,
    /// Input size: 224 or HxW.
    #[arg(long, default_value = "224")]
    image_size: String,
    /// Token maps in f16 (what runs by default) or f32.
    #[arg(long, value_enum, default_value = "f16")]
    activations: Activations,
    /// Plan the host schedule on this many threads (whole maps, what `soft run` and
    /// `soft bench` use); without it, the compact schedule a microcontroller runs.
    #[arg(long)]
    threads: Option<usize>,
    /// Also draw the plan as an SVG bar chart.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print one JSON object: model, image_size, activations, schedule, threads,
    /// arena_bytes, phases (phase, bytes, peak), config.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    plan(
        args.model.as_deref(),
        args.arch.as_deref(),
        &args.image_size,
        args.activations.into(),
        args.threads.map(Threads::new).transpose()?.as_ref(),
        args.svg.as_deref(),
        args.json,
    )
}

fn plan(
    model: Option<&Path>,
    arch: Option<&str>,
    size: &str,
    p: Precision,
    threads: Option<&Threads>,
    svg_out: Option<&Path>,
    json: bool,
) -> Result<()> {
    let (h, w) = parse_size(size)?;
    let svg_out = svg_out
        .map(|path| Output::new(path, &model.into_iter().collect::<Vec<_>>()))
        .transpose()?;
    let (cfg, name) = match (model, arch) {
        (Some(m), _) => {
            let blob = load_blob(m)?;
            let model = open_model(&blob, m)?;
            (*model.config(), m.display().to_string())
        }
        (None, Some(a)) => (preset(a)?, a.to_string()),
        (None, None) => fail!(Usage, "give a model blob or --arch NAME"),
    };
    let (plan, schedule) = match threads {
        Some(t) => {
            let options = t.options(p);
            let plan = soft_core::plan_with(&cfg, h, w, p, &options.schedule)?;
            let n = t.count();
            (plan, format!(", whole maps on {n} thread{}", plural(n)))
        }
        None => (soft_core::plan(&cfg, h, w, p)?, String::new()),
    };
    if let Some(output) = &svg_out {
        output.write(svg::plan_svg(&plan, &format!("{name} {h}x{w} {p:?}")).as_bytes())?;
    }
    if json {
        let v = serde_json::json!({
            "model": name,
            "image_size": [h, w],
            "activations": precision_name(p),
            "schedule": if threads.is_some() { "whole maps" } else { "compact" },
            "threads": threads.map(Threads::count),
            "arena_bytes": plan.peak_bytes,
            "phases": plan.phases.iter().map(|&(phase, bytes)| serde_json::json!({
                "phase": svg::phase_name(phase),
                "bytes": bytes,
                "peak": bytes == plan.peak_bytes,
            })).collect::<Vec<_>>(),
            "config": config_json(&cfg),
        });
        return outln!("{v}");
    }
    outln!(
        "{name} at {h}x{w}, {p:?} activations{schedule}: arena {}",
        kib(plan.peak_bytes)
    )?;
    for (phase, bytes) in plan.phases {
        let mark = if bytes == plan.peak_bytes {
            "  <- peak"
        } else {
            ""
        };
        outln!("  {:<10} {:>12}{mark}", svg::phase_name(phase), kib(bytes))?;
    }
    if let Some(output) = svg_out {
        outln!("wrote {}", output.path().display())?;
    }
    Ok(())
}
