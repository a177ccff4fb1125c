//! End-to-end inference of soft_tiny at 224×224 with random weights.
//!
//! `cargo bench -p soft-host --bench e2e`. Throughput is in multiply-accumulates
//! (`soft_host::cost::macs`), so criterion's `elem/s` reads as MAC/s.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use soft_core::{ChwImage, Model, ModelConfig, Precision};
use soft_host::{build_blob, synthetic_checkpoint, AlignedBlob, WeightDtype};

const SIDE: usize = 224;

/// `3 × SIDE × SIDE` pseudo-random pixels in `[-2, 2)`.
fn pixels() -> Vec<f32> {
    let mut s = 0x1234_5678_9abc_def1u64;
    (0..3 * SIDE * SIDE)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

fn bench_e2e(c: &mut Criterion) {
    let cfg = ModelConfig::preset("soft_tiny").expect("preset");
    let map = synthetic_checkpoint(&cfg, 7);
    let pixels = pixels();
    let mut group = c.benchmark_group(format!("soft_tiny_{SIDE}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(soft_host::cost::macs(
        &cfg, SIDE, SIDE,
    )));
    for (name, dtype, precision) in [
        ("f32_weights_f32_maps", WeightDtype::F32, Precision::F32),
        ("f16_weights_f16_maps", WeightDtype::F16, Precision::F16),
    ] {
        let bytes = build_blob(&map, &cfg, dtype).expect("blob");
        let blob = AlignedBlob::new(&bytes);
        let model = Model::from_blob(blob.as_bytes()).expect("model");
        let plan = model.plan(SIDE, SIDE, precision).expect("plan");
        let mut arena = vec![0u8; plan.peak_bytes + 16];
        let mut logits = vec![0.0f32; cfg.num_classes];
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut image = ChwImage::new(&pixels, SIDE, SIDE).expect("image");
                model
                    .run(&mut image, &mut arena, precision, &mut logits, &mut ())
                    .expect("run");
            })
        });
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{name}: non-finite logits"
        );
    }
    group.finish();
}

criterion_group!(benches, bench_e2e);
criterion_main!(benches);
