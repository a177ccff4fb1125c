//! Prints Markdown tables of measured inference and kernel timings.
//!
//! `cargo run --release -p soft-host --example bench_table [-- --quick]`
//!
//! Models use random weights (`synthetic_checkpoint`, seed 7) and a pseudo-random image in
//! `[-2, 2)`. Each row is the median of N timed runs after one warm-up run (N = 5, or 2
//! with `--quick`, which also skips the 448×448 rows). GMAC/s divides `cost::macs` by the
//! median time. Everything printed is measured on this machine at run time.

use std::time::Instant;

use half::f16;
use soft_core::kernels::{landmark_kernel, linear, max_row_sum, newton_schulz};
use soft_core::weights::{Matrix, MatrixData, Vector};
use soft_core::{ChwImage, Model, ModelConfig, Precision};
use soft_host::Context as _;
use soft_host::{build_blob, cost, synthetic_checkpoint, AlignedBlob, WeightDtype};

#[path = "../../soft-core/benches/baselines/mod.rs"]
mod baselines;
use baselines::*;

/// Median of `runs` timings of `f` in milliseconds, after one untimed warm-up call.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// The demo-size model: soft_tiny's structure at a fraction of its widths.
fn micro() -> ModelConfig {
    let mut c = ModelConfig::preset("soft_tiny").expect("preset");
    c.embed_dims = [16, 32, 48, 64];
    c.heads = [1, 2, 3, 4];
    c.depths = [1, 1, 1, 1];
    c.stage4_mlp_hidden = 256;
    c.num_classes = 10;
    c.pos_grids = [16, 8, 4, 2];
    c
}

fn pixels(side: usize) -> Vec<f32> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    rng.vec(3 * side * side, 2.0)
}

fn dtype_name(d: WeightDtype) -> &'static str {
    match d {
        WeightDtype::F32 => "f32",
        WeightDtype::F16 => "f16",
        WeightDtype::I8 => "int8",
    }
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F16 => "f16",
    }
}

fn model_table(quick: bool, runs: usize) -> soft_host::Result<()> {
    let tiny = ModelConfig::preset("soft_tiny").expect("preset");
    let mut rows = vec![("soft_tiny", tiny, 224)];
    if !quick {
        rows.push(("soft_tiny", tiny, 448));
    }
    rows.push(("micro", micro(), 64));

    println!("### Inference (median of {runs} runs after 1 warm-up, random weights)\n");
    println!(
        "| model | input | weights | token maps | ms / inference | GMAC | GMAC/s | arena bytes | arena KiB | blob bytes |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for (name, cfg, side) in rows {
        let map = synthetic_checkpoint(&cfg, 7);
        let pixels = pixels(side);
        let macs = cost::macs(&cfg, side, side);
        for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::I8] {
            let bytes = build_blob(&map, &cfg, dtype)?;
            let blob = AlignedBlob::new(&bytes);
            let model = Model::from_blob(blob.as_bytes())?;
            for precision in [Precision::F32, Precision::F16] {
                let plan = model.plan(side, side, precision)?;
                let mut arena = vec![0u8; plan.peak_bytes + 16];
                let mut logits = vec![0.0f32; cfg.num_classes];
                let mut failed = None;
                let ms = median_ms(runs, || {
                    let run = ChwImage::new(&pixels, side, side).and_then(|mut image| {
                        model.run(&mut image, &mut arena, precision, &mut logits, &mut ())
                    });
                    if let Err(e) = run {
                        failed = Some(e);
                    }
                });
                if let Some(e) = failed {
                    return Err(e).context(format!("{name} {side}² {}", dtype_name(dtype)));
                }
                assert!(
                    logits.iter().all(|v| v.is_finite()),
                    "{name}: non-finite logits"
                );
                println!(
                    "| {name} | {side}×{side} | {} | {} | {ms:.1} | {:.3} | {:.2} | {} | {:.1} | {} |",
                    dtype_name(dtype),
                    precision_name(precision),
                    macs as f64 / 1e9,
                    macs as f64 / 1e6 / ms,
                    plan.peak_bytes,
                    plan.peak_bytes as f64 / 1024.0,
                    bytes.len(),
                );
            }
        }
    }
    println!();
    Ok(())
}

fn kernel_row_line(kernel: &str, shape: &str, macs: usize, engine: f64, naive: f64) {
    println!(
        "| {kernel} | {shape} | {engine:.3} | {naive:.3} | {:.1}× | {:.2} | {:.2} |",
        naive / engine,
        macs as f64 / 1e6 / engine,
        macs as f64 / 1e6 / naive,
    );
}

fn kernel_table(quick: bool) {
    const TOKENS: usize = 8;
    const ITERS: usize = 20;
    const D: usize = 32;
    let mut rng = Rng(0x5eed_0001);
    println!(
        "### Kernels (median ms per call after 1 warm-up; naive = scalar loops, PyTorch layout)\n"
    );
    println!("| kernel | shape | engine ms | naive ms | speed-up | engine GMAC/s | naive GMAC/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");

    let (ni, no) = (320, 1280);
    let runs = if quick { 11 } else { 41 };
    let w = rng.vec(ni * no, 1.0 / (ni as f32).sqrt());
    let b = rng.vec(no, 0.1);
    let x = rng.vec(TOKENS * ni, 1.0);
    let mut y = vec![0.0f32; TOKENS * no];
    let w16: Vec<u16> = w.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
    let scales: Vec<f32> = (0..no)
        .map(|o| (0..ni).fold(0.0f32, |a, i| a.max(w[i * no + o].abs())) / 127.0)
        .collect();
    let q: Vec<i8> = w
        .iter()
        .enumerate()
        .map(|(k, v)| (v / scales[k % no]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    // Source index in `[in][out]` of each element of the `[out][in]` layout.
    let order: Vec<usize> = (0..ni * no).map(|k| (k % ni) * no + k / ni).collect();
    let wt: Vec<f32> = order.iter().map(|&k| w[k]).collect();
    let w16t: Vec<u16> = order.iter().map(|&k| w16[k]).collect();
    let qt: Vec<i8> = order.iter().map(|&k| q[k]).collect();
    let bias = Vector::F32(&b);
    let macs = TOKENS * ni * no;
    let shape = format!("{ni}→{no}, {TOKENS} tokens");

    let m32 = Matrix {
        inputs: ni,
        outputs: no,
        data: MatrixData::F32(&w),
    };
    let e = median_ms(runs, || {
        linear(&m32, Some(&bias), std::hint::black_box(&x), &mut y)
    });
    let n = median_ms(runs, || {
        naive_linear(&wt, |v| v, &b, std::hint::black_box(&x), &mut y, ni)
    });
    kernel_row_line("linear f32", &shape, macs, e, n);

    let m16 = Matrix {
        inputs: ni,
        outputs: no,
        data: MatrixData::F16(&w16),
    };
    let e = median_ms(runs, || {
        linear(&m16, Some(&bias), std::hint::black_box(&x), &mut y)
    });
    let widen16 = |h: u16| f16::from_bits(h).to_f32();
    let n = median_ms(runs, || {
        naive_linear(&w16t, widen16, &b, std::hint::black_box(&x), &mut y, ni)
    });
    kernel_row_line("linear f16", &shape, macs, e, n);

    let m8 = Matrix {
        inputs: ni,
        outputs: no,
        data: MatrixData::I8 {
            q: &q,
            scales: &scales,
        },
    };
    let e = median_ms(runs, || {
        linear(&m8, Some(&bias), std::hint::black_box(&x), &mut y)
    });
    let n = median_ms(runs, || {
        naive_linear_i8(&qt, &scales, &b, std::hint::black_box(&x), &mut y, ni)
    });
    kernel_row_line("linear int8", &shape, macs, e, n);

    for m in [49, 196] {
        let runs = if quick {
            3
        } else if m > 100 {
            5
        } else {
            21
        };
        let lm = rng.vec(m * D, 0.3);
        let mut p = vec![0.0f32; m * m];
        landmark_kernel(&lm, D, &mut p);
        let max_sum = max_row_sum(&p, m);
        for i in 0..m {
            p[i * m + i] += 0.01;
        }
        let alpha = 1.8 / (max_sum * max_sum);
        let v0: Vec<f32> = p.iter().map(|x| alpha * x).collect();
        let (mut v, mut t, mut u, mut row) =
            (v0.clone(), vec![0.0; m * m], vec![0.0; m * m], vec![0.0; m]);
        let e = median_ms(runs, || {
            v.copy_from_slice(&v0);
            newton_schulz(&mut v, std::hint::black_box(&p), &mut t, &mut row, m, ITERS);
        });
        let n = median_ms(runs, || {
            v.copy_from_slice(&v0);
            naive_newton(&mut v, std::hint::black_box(&p), &mut t, &mut u, m, ITERS);
        });
        kernel_row_line(
            "Newton–Schulz",
            &format!("m = {m}, {ITERS} iters"),
            ITERS * 2 * m * m * m,
            e,
            n,
        );
    }
    println!();
}

fn main() -> soft_host::Result<()> {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let runs = if quick { 2 } else { 5 };
    model_table(quick, runs)?;
    kernel_table(quick);
    Ok(())
}
