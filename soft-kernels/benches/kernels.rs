//! Kernel micro-benchmarks: every implementation this CPU runs (generic, AVX2, AVX-512)
//! beside a naive scalar baseline written here, so a speed-up is a measured ratio.
//!
//! `cargo bench -p soft-kernels --bench kernels [-- --quick]`. Throughput is reported in
//! multiply-accumulates (criterion "elements"), so `elem/s` reads as MAC/s; elementwise
//! functions count values.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use soft_kernels::quant::quant_values_len;
use soft_kernels::{
    Kernels, Lhs, Out, QuantRowsMut, QuantWeights, Rhs, RhsData, Start, Strided, Vector,
};

mod baselines;
use baselines::*;

fn widen16(h: u16) -> f32 {
    f16::from_bits(h).to_f32()
}

/// Panics unless `a` and `b` agree to a relative `tol` (the baselines sum in other orders).
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * scale, "{what}: {x} vs {y}");
    }
}

/// `y = b + x·W` through a kernel table.
fn linear(k: &Kernels, x: &[f32], data: RhsData<'_>, b: &[f32], y: &mut [f32], rows: usize) {
    let (ni, no) = (x.len() / rows, b.len());
    let lhs = Lhs::new(Strided::rows_of(x, rows, ni, ni).expect("lhs"));
    let rhs = Rhs::new(data, ni, no, no).expect("rhs");
    let mut out = Out::new(y, rows, no, no).expect("out");
    k.gemm(&lhs, &rhs, Start::Bias(Vector::F32(b)), &mut out)
        .expect("gemm");
}

fn bench_linear(c: &mut Criterion) {
    let mut rng = Rng::new(0x5eed_0001);
    // (tokens, inputs, outputs): the device's 8-token chunk and the host's 64.
    for (tokens, ni, no) in [(8, 96, 384), (8, 320, 1280), (64, 64, 256), (64, 320, 1280)] {
        let mut group = c.benchmark_group(format!("linear_{ni}x{no}_tokens{tokens}"));
        group.throughput(Throughput::Elements((tokens * ni * no) as u64));
        let w = rng.vec(ni * no, 1.0 / (ni as f32).sqrt());
        let b = rng.vec(no, 0.1);
        let x = rng.vec(tokens * ni, 1.0);
        let mut y = vec![0.0f32; tokens * no];
        let w16: Vec<u16> = w.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
        let scales: Vec<f32> = (0..no)
            .map(|o| (0..ni).fold(0.0f32, |a, i| a.max(w[i * no + o].abs())) / 127.0)
            .collect();
        let q: Vec<i8> = w
            .iter()
            .enumerate()
            .map(|(k, v)| (v / scales[k % no]).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let (wt, w16t, qt) = (
            transpose(&w, ni, no),
            transpose(&w16, ni, no),
            transpose(&q, ni, no),
        );
        let mut want = vec![0.0f32; tokens * no];
        let formats = [
            ("f32", RhsData::F32(&w)),
            ("f16", RhsData::F16Finite(&w16)),
            (
                "i8",
                RhsData::I8 {
                    q: &q,
                    scales: &scales,
                },
            ),
        ];
        for (name, data) in formats {
            match name {
                "f32" => naive_linear(&wt, |v| v, &b, &x, &mut want, ni),
                "f16" => naive_linear(&w16t, widen16, &b, &x, &mut want, ni),
                _ => naive_linear_i8(&qt, &scales, &b, &x, &mut want, ni),
            }
            for k in Kernels::available() {
                linear(k, &x, data, &b, &mut y, tokens);
                assert_close(name, &y, &want, 1e-4);
                group.bench_function(BenchmarkId::new(k.name(), name), |bn| {
                    bn.iter(|| linear(k, black_box(&x), data, &b, &mut y, tokens))
                });
            }
            group.bench_function(BenchmarkId::new("naive", name), |bn| match name {
                "f32" => bn.iter(|| naive_linear(black_box(&wt), |v| v, &b, &x, &mut y, ni)),
                "f16" => bn.iter(|| naive_linear(black_box(&w16t), widen16, &b, &x, &mut y, ni)),
                _ => bn.iter(|| naive_linear_i8(black_box(&qt), &scales, &b, &x, &mut y, ni)),
            });
        }
        // W8A8: each token quantised to int8, then the integer GEMM (weights output-major;
        // these depths are multiples of 16, so `qt` needs no padding). `want` still holds
        // the int8 baseline from the last format above.
        let mut values = vec![0i16; quant_values_len(tokens, ni)];
        let mut token_scales = vec![0.0f32; tokens];
        for k in Kernels::available() {
            let mut run = |y: &mut [f32]| {
                let src = Lhs::new(Strided::rows_of(&x, tokens, ni, ni).expect("src"));
                let mut rows =
                    QuantRowsMut::new(&mut values, &mut token_scales, tokens, ni).expect("rows");
                k.quantize(&src, &mut rows).expect("quantize");
                let w = QuantWeights::new(&qt, &scales, no, ni).expect("weights");
                let mut out = Out::new(y, tokens, no, no).expect("out");
                k.gemm_q8(&rows.as_rows(), &w, Start::Bias(Vector::F32(&b)), &mut out)
                    .expect("gemm_q8");
            };
            run(&mut y);
            // Activation rounding on top of the weights': a looser match.
            assert_close("w8a8", &y, &want, 3e-2);
            group.bench_function(BenchmarkId::new(k.name(), "w8a8"), |bn| {
                bn.iter(|| run(black_box(&mut y)))
            });
        }
        group.finish();
    }
}

/// The Newton–Schulz products: `m×m` by `m×m`, f32.
fn bench_square(c: &mut Criterion) {
    let mut rng = Rng::new(0x5eed_0003);
    for m in [49, 196] {
        let mut group = c.benchmark_group(format!("matmul_{m}"));
        group.throughput(Throughput::Elements((m * m * m) as u64));
        if m > 100 {
            group.sample_size(20);
        }
        let (a, b) = (rng.vec(m * m, 0.3), rng.vec(m * m, 0.3));
        let (mut out, mut want) = (vec![0.0f32; m * m], vec![0.0f32; m * m]);
        naive_matmul(&a, &b, &mut want, m);
        for k in Kernels::available() {
            let run = |out: &mut [f32]| {
                let lhs = Lhs::new(Strided::rows_of(&a, m, m, m).expect("lhs"));
                let rhs = Rhs::f32(Strided::rows_of(&b, m, m, m).expect("rhs")).expect("rhs");
                let mut o = Out::new(out, m, m, m).expect("out");
                k.gemm(&lhs, &rhs, Start::Zero, &mut o).expect("gemm");
            };
            run(&mut out);
            assert_close("matmul", &out, &want, 1e-4);
            group.bench_function(k.name(), |bn| bn.iter(|| run(black_box(&mut out))));
        }
        group.bench_function("naive", |bn| {
            bn.iter(|| naive_matmul(black_box(&a), &b, &mut out, m))
        });
        group.finish();
    }
}

/// Gaussian kernel rows: 64 tokens of one head (d = 32) against `m` landmarks.
fn bench_gaussian(c: &mut Criterion) {
    const ROWS: usize = 64;
    const D: usize = 32;
    let mut rng = Rng::new(0x5eed_0002);
    for m in [49, 196] {
        let mut group = c.benchmark_group(format!("gaussian_rows_d{D}_m{m}_x{ROWS}"));
        group.throughput(Throughput::Elements((ROWS * m * D) as u64));
        let lm = rng.vec(m * D, 0.3);
        let lt = transpose(&lm, m, D);
        let q = rng.vec(ROWS * D, 0.3);
        let (mut out, mut want) = (vec![0.0f32; ROWS * m], vec![0.0f32; ROWS * m]);
        naive_kernel_rows(&q, &lm, D, m, &mut want);
        for k in Kernels::available() {
            let run = |out: &mut [f32]| {
                let qv = Strided::rows_of(&q, ROWS, D, D).expect("q");
                let lv = Strided::rows_of(&lt, D, m, m).expect("landmarks");
                let mut o = Out::new(out, ROWS, m, m).expect("out");
                k.gaussian(&qv, &lv, &mut o).expect("gaussian");
            };
            run(&mut out);
            assert_close("gaussian", &out, &want, 1e-5);
            group.bench_function(k.name(), |bn| bn.iter(|| run(black_box(&mut out))));
        }
        group.bench_function("naive", |bn| {
            bn.iter(|| naive_kernel_rows(black_box(&q), &lm, D, m, &mut out))
        });
        group.finish();
    }
}

/// Elementwise rows and LayerNorm over 64 tokens of 1280 values (stage 3's MLP width).
fn bench_rows(c: &mut Criterion) {
    const N: usize = 64 * 1280;
    let mut rng = Rng::new(0x5eed_0004);
    let x = rng.vec(N, 4.0);
    let mut y = x.clone();
    for (name, f, naive) in [
        (
            "gelu_tanh",
            Kernels::gelu_tanh as fn(&Kernels, &mut [f32]),
            naive_gelu_tanh as fn(&mut [f32]),
        ),
        ("exp", Kernels::exp, naive_exp),
    ] {
        let mut group = c.benchmark_group(format!("{name}_{N}"));
        group.throughput(Throughput::Elements(N as u64));
        for k in Kernels::available() {
            group.bench_function(k.name(), |bn| {
                bn.iter(|| {
                    y.copy_from_slice(&x);
                    f(k, black_box(&mut y))
                })
            });
        }
        group.bench_function("naive (libm)", |bn| {
            bn.iter(|| {
                y.copy_from_slice(&x);
                naive(black_box(&mut y))
            })
        });
        group.finish();
    }
    let mut group = c.benchmark_group(format!("layer_norm_{N}_width320"));
    group.throughput(Throughput::Elements(N as u64));
    let (w, b) = (vec![1.0f32; 320], vec![0.0f32; 320]);
    for k in Kernels::available() {
        group.bench_function(k.name(), |bn| {
            bn.iter(|| {
                y.copy_from_slice(&x);
                k.layer_norm(
                    black_box(&mut y),
                    320,
                    &Vector::F32(&w),
                    &Vector::F32(&b),
                    1e-5,
                )
                .expect("layer norm")
            })
        });
    }
    group.bench_function("naive", |bn| {
        bn.iter(|| {
            y.copy_from_slice(&x);
            naive_layer_norm(black_box(&mut y), 320)
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_linear, bench_square, bench_gaussian, bench_rows
}
criterion_main!(benches);
