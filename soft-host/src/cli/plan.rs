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
    /// With --arch: plan the preset converted with --dtype w8a8 (its linear layers
    /// quantise their inputs into scratch the plan counts).
    #[arg(long, requires = "arch")]
    w8a8: bool,
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
    /// Also draw the plan as an SVG chart: a bar per phase, stacked by what occupies
    /// the arena (token map, V ring, landmarks, Newton–Schulz matrices, tiles, …).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print one JSON object: model, image_size, activations, schedule, threads,
    /// arena_bytes, phases (phase, bytes, peak, buffers: name, category, bytes, copies),
    /// config.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    plan(
        args.model.as_deref(),
        args.arch.as_deref().map(|a| (a, args.w8a8)),
        &args.image_size,
        args.activations.into(),
        args.threads.map(Threads::new).transpose()?.as_ref(),
        args.svg.as_deref(),
        args.json,
    )
}

fn plan(
    model: Option<&Path>,
    arch: Option<(&str, bool)>,
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
        (None, Some((a, w8a8))) => {
            let cfg = soft_core::ModelConfig { w8a8, ..preset(a)? };
            let name = if w8a8 {
                format!("{a} (w8a8)")
            } else {
                a.to_string()
            };
            (cfg, name)
        }
        (None, None) => fail!(Usage, "give a model blob or --arch NAME"),
    };
    let (schedule, described) = match threads {
        Some(t) => {
            let n = t.count();
            (
                t.options(p).schedule,
                format!(", whole maps on {n} thread{}", plural(n)),
            )
        }
        None => (soft_core::Schedule::COMPACT, String::new()),
    };
    let plan = soft_core::plan_with(&cfg, h, w, p, &schedule)?;
    let phases = crate::plan::breakdown(&cfg, (h, w), p, &schedule)?;
    if let Some(output) = &svg_out {
        let title = format!("{name} {h}x{w} {p:?}{described}");
        output.write(svg::plan_svg(&phases, &title).as_bytes())?;
    }
    if json {
        let v = serde_json::json!({
            "model": name,
            "image_size": [h, w],
            "activations": precision_name(p),
            "schedule": if threads.is_some() { "whole maps" } else { "compact" },
            "threads": threads.map(Threads::count),
            "arena_bytes": plan.peak_bytes,
            "phases": phases.iter().map(|ph| serde_json::json!({
                "phase": svg::phase_name(ph.phase),
                "bytes": ph.bytes(),
                "peak": ph.bytes() == plan.peak_bytes,
                "buffers": ph.parts.iter().map(|b| serde_json::json!({
                    "name": b.name, "category": b.category, "bytes": b.bytes, "copies": b.copies,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "config": config_json(&cfg),
        });
        return outln!("{v}");
    }
    outln!(
        "{name} at {h}x{w}, {p:?} activations{described}: arena {}",
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
    if let Some(peak) = phases.iter().find(|ph| ph.bytes() == plan.peak_bytes) {
        outln!(
            "at the peak ({}), from the arena's start:",
            svg::phase_name(peak.phase)
        )?;
        for b in &peak.parts {
            let copies = match b.copies {
                1 => String::new(),
                n => format!(" ({n} copies)"),
            };
            outln!(
                "  {:<28} {:>12}  {}{copies}",
                b.name,
                kib(b.bytes),
                b.category
            )?;
        }
    }
    if let Some(output) = svg_out {
        outln!("wrote {}", output.path().display())?;
    }
    Ok(())
}
