//! Kernel micro-benchmarks, each beside a naive scalar baseline written here.
//!
//! `cargo bench -p soft-core --bench kernels [-- --quick]`. Throughput is reported in
//! multiply-accumulates (criterion "elements"), so `elem/s` reads as MAC/s.
//!
//! The baselines are the textbook loops: a linear layer over the PyTorch `[out, in]` layout
//! (one dot product per output), `|q - l|²` per landmark, and `i, j, k` matrix products.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use soft_core::kernels::{kernel_row, landmark_kernel, linear, max_row_sum, newton_schulz};
use soft_core::weights::{Matrix, MatrixData, Vector};

mod baselines;
use baselines::*;

fn widen16(h: u16) -> f32 {
    f16::from_bits(h).to_f32()
}

/// Panics unless `a` and `b` agree to a relative `tol` (the baselines sum in another order).
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * scale, "{what}: {x} vs {y}");
    }
}

/// Tokens per call: the engine's tile.
const TOKENS: usize = 8;
const NEWTON_ITERS: usize = 20;
const HEAD_DIM: usize = 32;

fn bench_linear(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_0001);
    for (ni, no) in [(64, 256), (256, 64), (320, 1280)] {
        let mut group = c.benchmark_group(format!("linear_{ni}x{no}_tile{TOKENS}"));
        group.throughput(Throughput::Elements((TOKENS * ni * no) as u64));
        let scale = 1.0 / (ni as f32).sqrt();
        let w = rng.vec(ni * no, scale);
        let b = rng.vec(no, 0.1);
        let x = rng.vec(TOKENS * ni, 1.0);
        let mut y = vec![0.0f32; TOKENS * no];
        let w16: Vec<u16> = w.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
        let amax = (0..no)
            .map(|o| (0..ni).fold(0.0f32, |a, i| a.max(w[i * no + o].abs())))
            .collect::<Vec<_>>();
        let scales: Vec<f32> = amax.iter().map(|a| a / 127.0).collect();
        let q: Vec<i8> = w
            .iter()
            .enumerate()
            .map(|(k, v)| (v / scales[k % no]).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let bias = Vector::F32(&b);
        let engine = [
            ("f32", MatrixData::F32(&w)),
            ("f16", MatrixData::F16(&w16)),
            (
                "i8",
                MatrixData::I8 {
                    q: &q,
                    scales: &scales,
                },
            ),
        ];
        let (wt, w16t, qt) = (
            transpose(&w, ni, no),
            transpose(&w16, ni, no),
            transpose(&q, ni, no),
        );
        let mut want = vec![0.0f32; TOKENS * no];
        for (name, data) in engine {
            let m = Matrix {
                inputs: ni,
                outputs: no,
                data,
            };
            match name {
                "f32" => naive_linear(&wt, |v| v, &b, &x, &mut want, ni),
                "f16" => naive_linear(&w16t, widen16, &b, &x, &mut want, ni),
                _ => naive_linear_i8(&qt, &scales, &b, &x, &mut want, ni),
            }
            linear(&m, Some(&bias), &x, &mut y);
            assert_close(name, &y, &want, 1e-4);
            group.bench_function(BenchmarkId::new("engine", name), |bn| {
                bn.iter(|| linear(black_box(&m), Some(&bias), black_box(&x), &mut y))
            });
        }
        group.bench_function(BenchmarkId::new("naive", "f32"), |bn| {
            bn.iter(|| naive_linear(black_box(&wt), |v| v, &b, black_box(&x), &mut y, ni))
        });
        group.bench_function(BenchmarkId::new("naive", "f16"), |bn| {
            bn.iter(|| naive_linear(black_box(&w16t), widen16, &b, black_box(&x), &mut y, ni))
        });
        group.bench_function(BenchmarkId::new("naive", "i8"), |bn| {
            bn.iter(|| naive_linear_i8(black_box(&qt), &scales, &b, black_box(&x), &mut y, ni))
        });
        group.finish();
    }
}

/// Landmarks of one head, scaled so that `K2` has real off-diagonal mass (entries of a few
/// tenths) rather than being numerically the identity.
fn landmarks(rng: &mut Rng, m: usize) -> Vec<f32> {
    rng.vec(m * HEAD_DIM, 0.3)
}

fn bench_kernel_rows(c: &mut Criterion) {
    const ROWS: usize = 64;
    let mut rng = Rng(0x5eed_0002);
    let d = HEAD_DIM;
    for m in [49, 196] {
        let mut group = c.benchmark_group(format!("kernel_rows_d{d}_m{m}_x{ROWS}"));
        group.throughput(Throughput::Elements((ROWS * m * d) as u64));
        let lm = landmarks(&mut rng, m);
        let q = rng.vec(ROWS * d, 0.3);
        let mut out = vec![0.0f32; ROWS * m];
        let mut want = vec![0.0f32; ROWS * m];
        naive_kernel_rows(&q, &lm, d, m, &mut want);
        for (qr, kr) in q.chunks_exact(d).zip(out.chunks_exact_mut(m)) {
            kernel_row(qr, &lm, d, kr);
        }
        assert_close("kernel rows", &out, &want, 1e-5);
        group.bench_function("engine", |bn| {
            bn.iter(|| {
                for (qr, kr) in q.chunks_exact(d).zip(out.chunks_exact_mut(m)) {
                    kernel_row(black_box(qr), black_box(&lm), d, kr);
                }
            })
        });
        group.bench_function("naive", |bn| {
            bn.iter(|| naive_kernel_rows(black_box(&q), black_box(&lm), d, m, &mut out))
        });
        group.finish();
    }
}

/// `P = K2 + 0.01·I` of random landmarks and `V0 = 1.8 / maxrowsum(K2)² · P`.
fn newton_inputs(rng: &mut Rng, m: usize) -> (Vec<f32>, Vec<f32>) {
    let lm = landmarks(rng, m);
    let mut p = vec![0.0f32; m * m];
    landmark_kernel(&lm, HEAD_DIM, &mut p);
    let max_sum = max_row_sum(&p, m);
    for i in 0..m {
        p[i * m + i] += 0.01;
    }
    let alpha = 1.8 / (max_sum * max_sum);
    let v0 = p.iter().map(|x| alpha * x).collect();
    (p, v0)
}

fn bench_newton(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_0003);
    for m in [49, 196] {
        let mut group = c.benchmark_group(format!("newton_schulz_m{m}_it{NEWTON_ITERS}"));
        group.throughput(Throughput::Elements((NEWTON_ITERS * 2 * m * m * m) as u64));
        if m > 100 {
            group.sample_size(10);
        }
        let (p, v0) = newton_inputs(&mut rng, m);
        let (mut v, mut t, mut u, mut row) =
            (v0.clone(), vec![0.0; m * m], vec![0.0; m * m], vec![0.0; m]);
        let mut want = v0.clone();
        naive_newton(&mut want, &p, &mut t, &mut u, m, NEWTON_ITERS);
        newton_schulz(&mut v, &p, &mut t, &mut row, m, NEWTON_ITERS);
        assert_close("newton", &v, &want, 1e-3);
        // Copying V0 back (m² moves) is noise beside the 40·m³ MACs.
        group.bench_function("engine", |bn| {
            bn.iter(|| {
                v.copy_from_slice(&v0);
                newton_schulz(&mut v, black_box(&p), &mut t, &mut row, m, NEWTON_ITERS);
            })
        });
        group.bench_function("naive", |bn| {
            bn.iter(|| {
                v.copy_from_slice(&v0);
                naive_newton(&mut v, black_box(&p), &mut t, &mut u, m, NEWTON_ITERS);
            })
        });
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_linear, bench_kernel_rows, bench_newton
}
criterion_main!(benches);
