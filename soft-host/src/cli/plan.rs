//! `soft plan`: the exact arena bytes of a model at an input size, per phase.

use std::path::{Path, PathBuf};

use soft_core::{Memory, Placement, Precision};

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
    /// Where the buffers live: one arena, or two memories (fast SRAM and large PSRAM)
    /// with the token-sized buffers (`maps`) or everything that grows with the input
    /// (`growing`: also landmarks and Newton–Schulz matrices) in the large one.
    #[arg(long, value_parser = parse_placement, default_value = "one")]
    placement: Placement,
    /// Also draw the plan as an SVG chart: a bar per phase, stacked by what occupies
    /// the arena (token map, V ring, landmarks, Newton–Schulz matrices, tiles, …); with
    /// two memories, the fast one's (the title gives the large one's bytes).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print one JSON object: model, image_size, activations, schedule, threads,
    /// placement, arena_bytes, large_bytes, phases (phase, bytes, peak, buffers: name,
    /// category, bytes, copies), large_phases (the same for the large memory), config.
    #[arg(long)]
    json: bool,
}

/// `--placement`: one of [`Placement::NAMED`].
fn parse_placement(name: &str) -> std::result::Result<Placement, String> {
    Placement::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Placement::NAMED.iter().map(|(n, _)| *n).collect();
        format!("expected one of: {}", names.join(", "))
    })
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    plan(
        args.model.as_deref(),
        args.arch.as_deref().map(|a| (a, args.w8a8)),
        &args.image_size,
        args.activations.into(),
        args.threads.map(Threads::new).transpose()?.as_ref(),
        args.placement,
        args.svg.as_deref(),
        args.json,
    )
}

/// One memory's lines: each phase's bytes, then the buffers at its peak.
fn print_memory(
    what: &str,
    phases: &[(soft_core::Phase, usize)],
    peak_bytes: usize,
    parts: &[crate::plan::PhaseParts],
) -> Result<()> {
    for &(phase, bytes) in phases {
        let mark = if bytes == peak_bytes { "  <- peak" } else { "" };
        outln!("  {:<10} {:>12}{mark}", svg::phase_name(phase), kib(bytes))?;
    }
    if let Some(peak) = parts.iter().find(|ph| ph.bytes() == peak_bytes) {
        outln!(
            "at the peak ({}), from the {what}'s start:",
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
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn plan(
    model: Option<&Path>,
    arch: Option<(&str, bool)>,
    size: &str,
    p: Precision,
    threads: Option<&Threads>,
    placement: Placement,
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
    let plan = soft_core::plan_placed(&cfg, h, w, p, &schedule, placement)?;
    let phases = crate::plan::breakdown(&cfg, (h, w), p, &schedule, placement)?;
    let (fast, large): (Vec<_>, Vec<_>) =
        phases.into_iter().partition(|ph| ph.memory == Memory::Fast);
    if let Some(output) = &svg_out {
        let title = if placement.uses_large() {
            format!(
                "{name} {h}x{w} {p:?}{described}: fast memory (large: {})",
                kib(plan.large_bytes)
            )
        } else {
            format!("{name} {h}x{w} {p:?}{described}")
        };
        output.write(svg::plan_svg(&fast, &title).as_bytes())?;
    }
    let phases_json = |phases: &[crate::plan::PhaseParts], peak: usize| {
        phases
            .iter()
            .map(|ph| serde_json::json!({
                "phase": svg::phase_name(ph.phase),
                "bytes": ph.bytes(),
                "peak": ph.bytes() == peak,
                "buffers": ph.parts.iter().map(|b| serde_json::json!({
                    "name": b.name, "category": b.category, "bytes": b.bytes, "copies": b.copies,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()
    };
    if json {
        let v = serde_json::json!({
            "model": name,
            "image_size": [h, w],
            "activations": precision_name(p),
            "schedule": if threads.is_some() { "whole maps" } else { "compact" },
            "threads": threads.map(Threads::count),
            "placement": placement.name(),
            "arena_bytes": plan.peak_bytes,
            "large_bytes": plan.large_bytes,
            "phases": phases_json(&fast, plan.peak_bytes),
            "large_phases": phases_json(&large, plan.large_bytes),
            "config": config_json(&cfg),
        });
        return outln!("{v}");
    }
    if !placement.uses_large() {
        outln!(
            "{name} at {h}x{w}, {p:?} activations{described}: arena {}",
            kib(plan.peak_bytes)
        )?;
        print_memory("arena", &plan.phases, plan.peak_bytes, &fast)?;
    } else {
        outln!(
            "{name} at {h}x{w}, {p:?} activations{described}, placement {}: \
             fast memory {}, large memory {}",
            placement.name(),
            kib(plan.peak_bytes),
            kib(plan.large_bytes)
        )?;
        outln!("fast memory (SRAM):")?;
        print_memory("fast memory", &plan.phases, plan.peak_bytes, &fast)?;
        outln!("large memory (PSRAM):")?;
        print_memory("large memory", &plan.large_phases, plan.large_bytes, &large)?;
    }
    if let Some(output) = svg_out {
        outln!("wrote {}", output.path().display())?;
    }
    Ok(())
}
