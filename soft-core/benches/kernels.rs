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

/// Deterministic uniform values in `[-1, 1)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// `[in][out]` → `[out][in]`.
fn transpose<T: Copy>(w: &[T], inputs: usize, outputs: usize) -> Vec<T> {
    let mut t = Vec::with_capacity(w.len());
    for o in 0..outputs {
        for i in 0..inputs {
            t.push(w[i * outputs + o]);
        }
    }
    t
}

/// Naive linear layer, weights `[out][in]` f32: one dot product per output.
fn naive_linear_f32(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32], ni: usize, no: usize) {
    for (xt, yt) in x.chunks_exact(ni).zip(y.chunks_exact_mut(no)) {
        for o in 0..no {
            let mut acc = b[o];
            for i in 0..ni {
                acc += w[o * ni + i] * xt[i];
            }
            yt[o] = acc;
        }
    }
}

/// Naive linear layer, weights `[out][in]` as f16 bits, widened with `half`.
fn naive_linear_f16(w: &[u16], b: &[f32], x: &[f32], y: &mut [f32], ni: usize, no: usize) {
    for (xt, yt) in x.chunks_exact(ni).zip(y.chunks_exact_mut(no)) {
        for o in 0..no {
            let mut acc = b[o];
            for i in 0..ni {
                acc += f16::from_bits(w[o * ni + i]).to_f32() * xt[i];
            }
            yt[o] = acc;
        }
    }
}

/// Naive linear layer, weights `[out][in]` int8 with per-output scales.
fn naive_linear_i8(
    q: &[i8],
    scales: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    ni: usize,
    no: usize,
) {
    for (xt, yt) in x.chunks_exact(ni).zip(y.chunks_exact_mut(no)) {
        for o in 0..no {
            let mut acc = 0.0f32;
            for i in 0..ni {
                acc += f32::from(q[o * ni + i]) * xt[i];
            }
            yt[o] = b[o] + scales[o] * acc;
        }
    }
}

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
                "f32" => naive_linear_f32(&wt, &b, &x, &mut want, ni, no),
                "f16" => naive_linear_f16(&w16t, &b, &x, &mut want, ni, no),
                _ => naive_linear_i8(&qt, &scales, &b, &x, &mut want, ni, no),
            }
            linear(&m, Some(&bias), &x, &mut y);
            assert_close(name, &y, &want, 1e-4);
            group.bench_function(BenchmarkId::new("engine", name), |bn| {
                bn.iter(|| linear(black_box(&m), Some(&bias), black_box(&x), &mut y))
            });
        }
        group.bench_function(BenchmarkId::new("naive", "f32"), |bn| {
            bn.iter(|| naive_linear_f32(black_box(&wt), &b, black_box(&x), &mut y, ni, no))
        });
        group.bench_function(BenchmarkId::new("naive", "f16"), |bn| {
            bn.iter(|| naive_linear_f16(black_box(&w16t), &b, black_box(&x), &mut y, ni, no))
        });
        group.bench_function(BenchmarkId::new("naive", "i8"), |bn| {
            bn.iter(|| naive_linear_i8(black_box(&qt), &scales, &b, black_box(&x), &mut y, ni, no))
        });
        group.finish();
    }
}

/// Naive Gaussian kernel rows: `exp(-|q - l|²/2)` with index loops.
fn naive_kernel_rows(q: &[f32], lm: &[f32], d: usize, m: usize, out: &mut [f32]) {
    let rows = q.len() / d;
    for t in 0..rows {
        for l in 0..m {
            let mut dist = 0.0f32;
            for i in 0..d {
                let diff = q[t * d + i] - lm[l * d + i];
                dist += diff * diff;
            }
            out[t * m + l] = (-dist / 2.0).exp();
        }
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

/// `c = a · b`, `m×m`, with the textbook `i, j, k` loop (strided column reads of `b`).
fn naive_matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize) {
    for i in 0..m {
        for j in 0..m {
            let mut acc = 0.0f32;
            for k in 0..m {
                acc += a[i * m + k] * b[k * m + j];
            }
            c[i * m + j] = acc;
        }
    }
}

/// Naive Newton–Schulz: `V = 2V - (V·P)·V`, `iters` times.
fn naive_newton(v: &mut [f32], p: &[f32], t: &mut [f32], u: &mut [f32], m: usize, iters: usize) {
    for _ in 0..iters {
        naive_matmul(v, p, t, m);
        naive_matmul(t, v, u, m);
        for (vv, &uu) in v.iter_mut().zip(u.iter()) {
            *vv = 2.0 * *vv - uu;
        }
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
