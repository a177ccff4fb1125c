//! End-to-end inference of soft_tiny at 224×224 with random weights, f16 weights and maps:
//! the compact (device) schedule and the whole-map host schedule on one thread.
//!
//! `cargo bench -p soft-host --bench e2e`. Throughput is in multiply-accumulates
//! (`soft_host::cost::macs_for`), so criterion's `elem/s` reads as MAC/s.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use soft_core::{Model, ModelConfig, Precision, RunOptions, Schedule, TestPattern};
use soft_host::{build_blob, synthetic_checkpoint, AlignedBlob, WeightDtype};

const SIDE: usize = 224;

fn bench_e2e(c: &mut Criterion) {
    let cfg = ModelConfig::preset("soft_tiny").expect("preset");
    let map = synthetic_checkpoint(&cfg, 7);
    let bytes = build_blob(&map, &cfg, WeightDtype::F16).expect("blob");
    let blob = AlignedBlob::new(&bytes);
    let model = Model::from_blob(blob.as_bytes()).expect("model");
    let mut group = c.benchmark_group(format!("soft_tiny_{SIDE}_f16"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, schedule) in [
        ("compact", Schedule::COMPACT),
        ("whole_maps", Schedule::fast(1)),
    ] {
        let options = RunOptions::new(Precision::F16).with_schedule(schedule);
        let macs = soft_host::cost::macs_for(&cfg, SIDE, SIDE, &schedule);
        group.throughput(Throughput::Elements(macs));
        let plan = model.plan_with(SIDE, SIDE, &options).expect("plan");
        let mut arena = vec![0u8; plan.peak_bytes + 16];
        let mut logits = vec![0.0f32; cfg.num_classes];
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut image = TestPattern::new(SIDE, SIDE, 7);
                model
                    .run_with(&options, &mut image, &mut arena, &mut logits, &mut ())
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
