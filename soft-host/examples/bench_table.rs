//! Prints the README's speed tables, measured on this machine at run time: the peak
//! multiply-and-add rate of each kernel set, and soft_tiny inference per schedule, thread
//! count, format and kernel set. (Kernels beside naive baselines: `cargo bench -p
//! soft-kernels`.)
//!
//! `cargo run --release -p soft-host --example bench_table [-- --quick]`
//!
//! Models use random weights (`synthetic_checkpoint`, seed 7) on `soft bench`'s synthetic
//! image. Inference rows are medians of N timed runs after one warm-up (N = 7, or 3 with
//! `--quick`, which also skips 448×448). GMAC/s divides `cost::macs_for` by the median.

use std::time::Instant;

use soft_core::{Kernels, Model, ModelConfig, Precision};
use soft_host::bench::{bench, BenchOptions};
use soft_host::{build_blob, synthetic_checkpoint, AlignedBlob, WeightDtype};

fn peaks() {
    println!("### Peak separate multiply-and-add rate (register-only probe)\n");
    println!("| kernels | GMAC/s |\n|---|---:|");
    for k in Kernels::available() {
        k.peak_probe(10_000);
        let steps = 50_000_000 / if k.name() == "generic" { 1 } else { 8 };
        let start = Instant::now();
        let (macs, keep) = k.peak_probe(steps);
        let s = start.elapsed().as_secs_f64();
        std::hint::black_box(keep);
        println!("| {} | {:.1} |", k.name(), macs as f64 / s / 1e9);
    }
    println!();
}

fn models(quick: bool) -> soft_host::Result<()> {
    let runs = if quick { 3 } else { 7 };
    let cfg = ModelConfig::preset("soft_tiny").expect("preset");
    let map = synthetic_checkpoint(&cfg, 7);
    let sides: &[usize] = if quick { &[224] } else { &[224, 448] };
    println!("### soft_tiny inference (median of {runs} runs after 1 warm-up, random weights)\n");
    println!("| input | weights | maps | schedule | threads | kernels | ms | GMAC/s | arena bytes | blob bytes |");
    println!("|---|---|---|---|---:|---|---:|---:|---:|---:|");
    for &side in sides {
        for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::I8] {
            let bytes = build_blob(&map, &cfg, dtype)?;
            let blob = AlignedBlob::new(&bytes);
            let model = Model::from_blob(blob.as_bytes())?;
            let mut rows = vec![(Precision::F16, false, 1, Kernels::detect())];
            if dtype == WeightDtype::F16 {
                rows.push((Precision::F32, false, 1, Kernels::detect()));
                rows.push((Precision::F16, false, 2, Kernels::detect()));
                rows.push((Precision::F16, true, 1, Kernels::detect()));
                rows.push((Precision::F16, true, 1, Kernels::generic()));
            }
            for (precision, compact, threads, kernels) in rows {
                let options = BenchOptions {
                    image: (side, side),
                    threads,
                    runs,
                    warmup: 1,
                    precision,
                    kernels,
                    compact,
                };
                let r = bench(&model, &options)?;
                println!(
                    "| {side}×{side} | {} | {} | {} | {threads} | {} | {:.1} | {:.1} | {} | {} |",
                    WeightDtype::name(dtype),
                    match precision {
                        Precision::F16 => "f16",
                        Precision::F32 => "f32",
                    },
                    if compact { "compact" } else { "whole maps" },
                    kernels.name(),
                    r.median_ms(),
                    r.gmac_per_s(),
                    r.arena_bytes,
                    bytes.len()
                );
            }
        }
    }
    println!();
    Ok(())
}

fn main() -> soft_host::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    peaks();
    models(quick)
}
