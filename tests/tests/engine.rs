//! Engine behaviour beyond the golden numbers: exact memory plans, arbitrary input sizes,
//! and one clear error (never a panic) for every kind of bad input.

use soft_core::format::{encode, encoded_len, Blob, Dtype, TensorRef, TensorSpec};
use soft_core::model::newton_bytes;
use soft_core::{
    plan, Arenas, ChwImage, Error, ImageSource, Model, ModelConfig, Placement, Precision,
    RunOptions, Site,
};
use soft_host::verify::{max_abs, max_abs_diff};
use soft_host::{build_blob, synthetic_checkpoint, AlignedBlob, WeightDtype};
use soft_tests::models::{micro_config, pixels, run_planned, synthetic_blob, DTYPES};

/// `cfg` with the synthetic weights of seed 3.
fn blob(cfg: &ModelConfig, dtype: WeightDtype) -> AlignedBlob {
    synthetic_blob(cfg, 3, dtype)
}

/// Runs `model` on [`pixels`] in its planned arena: the logits, the arena's high-water
/// mark and the plan's peak.
fn run(model: &Model<'_>, h: usize, w: usize, p: Precision) -> (Vec<f32>, usize, usize) {
    let out = run_planned(model, &pixels(h, w), h, w, p, &mut ());
    (out.logits, out.peak, out.planned)
}

#[test]
fn soft_tiny_224_f16_plan_is_exact_and_under_512_kib() {
    let cfg = ModelConfig::preset("soft_tiny").unwrap();
    let p = plan(&cfg, 224, 224, Precision::F16).unwrap();
    // The peak is stage 1's second pass: the 56·56·64 f16 map (401,408 B), landmarks and
    // Z for both heads (2 · 49·64·4 = 25,088 B), the V ring of 9 rows (9·56·64·2 = 64,512 B),
    // one row of depthwise weights (9 · 2 f32, 80 B rounded to 16), three f32 chunks of
    // 8 tokens (3 · 8·64·4 = 6,144 B) and the chunk's K1 rows, then MLP hidden layer
    // (8 · max(2·49, 256) · 4 = 8,192 B).
    assert_eq!(p.peak_bytes, 401_408 + 25_088 + 64_512 + 80 + 6_144 + 8_192);
    assert!(p.peak_bytes <= 512 * 1024);
    assert_eq!(p.phases.iter().map(|x| x.1).max(), Some(p.peak_bytes));
}

#[test]
fn plan_grows_linearly_in_tokens_apart_from_the_landmark_matrices() {
    let cfg = ModelConfig::preset("soft_tiny").unwrap();
    let mut rest = Vec::new();
    for side in [224, 448, 896] {
        let p = plan(&cfg, side, side, Precision::F16).unwrap().peak_bytes;
        let mm = (0..3)
            .map(|s| newton_bytes(&cfg, side, side, s).unwrap())
            .max()
            .unwrap();
        // Without the m×m buffers, what remains is the stage-1 map plus O(m·C) landmark
        // state and per-row buffers: linear in the token count N.
        let n1 = (side / 4) * (side / 4);
        let map = n1 * 64 * 2;
        assert!(
            p >= map && p - mm <= map + map / 4,
            "{side}: {p} vs map {map} + m² {mm}"
        );
        rest.push((p - mm) as f64 / n1 as f64);
        eprintln!(
            "{side}: plan {p} B, m² buffers {mm} B, rest per token {:.1} B",
            rest.last().unwrap()
        );
    }
    // Bytes per token (m² terms removed) do not grow with N.
    assert!(
        rest[1] <= rest[0] * 1.01 && rest[2] <= rest[1] * 1.01,
        "{rest:?}"
    );
}

#[test]
fn high_water_mark_equals_plan_for_square_and_rectangular_inputs() {
    let cfg = micro_config();
    for dtype in DTYPES {
        let b = blob(&cfg, dtype);
        let model = Model::from_blob(b.as_bytes()).unwrap();
        for (h, w) in [(64, 64), (64, 128), (96, 64), (80, 72)] {
            for p in [Precision::F16, Precision::F32] {
                let (logits, peak, planned) = run(&model, h, w, p);
                assert_eq!(peak, planned, "{dtype:?} {h}x{w} {p:?}");
                assert!(logits.iter().all(|x| x.is_finite()));
            }
        }
    }
}

#[test]
fn high_water_mark_equals_plan_when_stage_4_is_the_peak() {
    // Narrow early stages and a wide stage 4: the stage-4 blocks' K/V maps and MLP
    // tiles dominate the arena.
    let mut cfg = micro_config();
    cfg.embed_dims = [16, 32, 64, 256];
    cfg.heads = [1, 2, 4, 8];
    cfg.stage4_mlp_hidden = 1024;
    let p = plan(&cfg, 64, 64, Precision::F32).unwrap();
    let peak_phase = p.phases.iter().find(|x| x.1 == p.peak_bytes).unwrap().0;
    assert_eq!(peak_phase, soft_core::Phase::Blocks(4));
    for dtype in [WeightDtype::F32, WeightDtype::W8A8] {
        let b = blob(&cfg, dtype);
        let model = Model::from_blob(b.as_bytes()).unwrap();
        for precision in [Precision::F32, Precision::F16] {
            let (_, peak, planned) = run(&model, 64, 64, precision);
            assert_eq!(peak, planned, "{dtype:?} {precision:?}");
        }
    }
}

#[test]
fn soft_tiny_224_runs_in_its_planned_arena() {
    let cfg = ModelConfig::preset("soft_tiny").unwrap();
    let b = blob(&cfg, WeightDtype::F16);
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let (logits, peak, planned) = run(&model, 224, 224, Precision::F16);
    assert_eq!(peak, planned);
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn runs_are_deterministic_and_precisions_agree() {
    let cfg = micro_config();
    let b = blob(&cfg, WeightDtype::F32);
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let (a, _, _) = run(&model, 64, 96, Precision::F32);
    let (again, _, _) = run(&model, 64, 96, Precision::F32);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        again.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let (h, _, _) = run(&model, 64, 96, Precision::F16);
    let scale = max_abs(&a);
    for (x, y) in a.iter().zip(&h) {
        assert!((x - y).abs() <= 2e-2 * scale, "{a:?} vs {h:?}");
    }
}

/// A source that counts the rows it was asked for.
struct Counting<'a>(ChwImage<'a>, usize);

impl ImageSource for Counting<'_> {
    fn height(&self) -> usize {
        self.0.height()
    }
    fn width(&self) -> usize {
        self.0.width()
    }
    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> soft_core::Result<()> {
        self.1 += 1;
        self.0.read_row(y, rgb)
    }
}

#[test]
fn too_small_arena_fails_before_any_work() {
    let cfg = micro_config();
    let b = blob(&cfg, WeightDtype::F32);
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let needed = model.plan(64, 64, Precision::F32).unwrap().peak_bytes;
    let mut arena = soft_core::ArenaBuffer::<4096>::new();
    let data = pixels(64, 64);
    let mut src = Counting(ChwImage::new(&data, 64, 64).unwrap(), 0);
    let mut logits = [0.0; 10];
    let err = model
        .run(&mut src, &mut arena.0, Precision::F32, &mut logits, &mut ())
        .unwrap_err();
    assert_eq!(
        err,
        Error::ArenaTooSmall {
            needed,
            available: 4096
        }
    );
    assert_eq!(src.1, 0, "no row may be read before the arena check");
    assert!(err.to_string().contains(&needed.to_string()));
}

#[test]
fn too_small_memories_fail_before_any_work_naming_which() {
    let b = blob(&micro_config(), WeightDtype::F16);
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let options = RunOptions::new(Precision::F16);
    let plan = model
        .plan_placed(64, 64, &options, Placement::MAPS)
        .unwrap();
    assert!(plan.large_bytes > 0 && plan.peak_bytes > 0);
    let data = pixels(64, 64);
    let mut logits = [0.0; 10];
    let (mut fast, mut large) = (
        vec![0u8; plan.peak_bytes + 16],
        vec![0u8; plan.large_bytes + 16],
    );
    // `len` bytes from a 16-byte aligned start, so `available` is `len`.
    fn aligned(v: &mut [u8], len: usize) -> &mut [u8] {
        let at = v.as_ptr().align_offset(16);
        &mut v[at..at + len]
    }
    for (fast_len, large_len, want) in [
        (
            plan.peak_bytes,
            plan.large_bytes - 16,
            Error::LargeArenaTooSmall {
                needed: plan.large_bytes,
                available: plan.large_bytes - 16,
            },
        ),
        (
            plan.peak_bytes - 16,
            plan.large_bytes,
            Error::ArenaTooSmall {
                needed: plan.peak_bytes,
                available: plan.peak_bytes - 16,
            },
        ),
    ] {
        let mut src = Counting(ChwImage::new(&data, 64, 64).unwrap(), 0);
        let arenas = Arenas {
            fast: aligned(&mut fast, fast_len),
            large: aligned(&mut large, large_len),
            placement: Placement::MAPS,
        };
        let err = model
            .run_split(&options, &mut src, arenas, &mut logits, &mut ())
            .unwrap_err();
        assert_eq!(err, want);
        assert_eq!(src.1, 0, "no row may be read before the arena check");
    }
    assert!(Error::LargeArenaTooSmall {
        needed: 5,
        available: 4
    }
    .to_string()
    .starts_with("large-memory arena too small"));
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = micro_config();
    let b = blob(&cfg, WeightDtype::F32);
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let mut arena = vec![0u8; 1 << 20];
    let data = pixels(64, 64);
    let mut logits = [0.0; 10];

    let mut img = ChwImage::new(&data, 64, 64).unwrap();
    let err = model
        .run(
            &mut img,
            &mut arena,
            Precision::F32,
            &mut logits[..9],
            &mut (),
        )
        .unwrap_err();
    assert_eq!(
        err,
        Error::LogitsLength {
            expected: 10,
            got: 9
        }
    );

    let mut nan = data.clone();
    nan[3 * 64 * 64 - 1] = f32::NAN;
    let mut img = ChwImage::new(&nan, 64, 64).unwrap();
    let err = model
        .run(&mut img, &mut arena, Precision::F32, &mut logits, &mut ())
        .unwrap_err();
    assert_eq!(err, Error::NonFiniteInput { row: 63 });

    // Stage 1 of a 16x16 image is 4x4 tokens: fewer than the 8x8 landmark patch.
    let small = pixels(16, 16);
    let mut img = ChwImage::new(&small, 16, 16).unwrap();
    let err = model
        .run(&mut img, &mut arena, Precision::F32, &mut logits, &mut ())
        .unwrap_err();
    assert_eq!(
        err,
        Error::InputShape {
            height: 16,
            width: 16
        }
    );
    assert!(ChwImage::new(&data, 64, 63).is_err());
    assert!(plan(&cfg, 0, 64, Precision::F16).is_err());
    assert!(plan(&cfg, 1 << 20, 64, Precision::F16).is_err());
}

#[test]
fn overflowing_attention_is_reported_not_propagated() {
    let cfg = micro_config();
    let mut ckpt = synthetic_checkpoint(&cfg, 3);
    // Landmark sums overflow to infinity, LayerNorm turns them into NaN, and the
    // Newton–Schulz step must report it instead of producing NaN logits.
    for v in &mut ckpt
        .get_mut("block1.0.att.mha.attn.Qlandmark_op.weight")
        .unwrap()
        .data
    {
        *v = 3e38;
    }
    let b = AlignedBlob::new(&build_blob(&ckpt, &cfg, WeightDtype::F32).unwrap());
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let mut arena = vec![0u8; 1 << 20];
    let data = pixels(64, 64);
    let mut img = ChwImage::new(&data, 64, 64).unwrap();
    let err = model
        .run(
            &mut img,
            &mut arena,
            Precision::F32,
            &mut [0.0; 10],
            &mut (),
        )
        .unwrap_err();
    assert_eq!(err, Error::NonFiniteAttention { stage: 1, block: 0 });
}

/// Runs `micro_config()` with the synthetic weights, each key's values multiplied by its factor.
fn run_scaled(scaled: &[(&str, f32)], precision: Precision) -> Result<Vec<f32>, Error> {
    let cfg = micro_config();
    let mut ckpt = synthetic_checkpoint(&cfg, 3);
    for (key, factor) in scaled {
        for v in &mut ckpt.get_mut(*key).unwrap().data {
            *v *= factor;
        }
    }
    let b = AlignedBlob::new(&build_blob(&ckpt, &cfg, WeightDtype::F32).unwrap());
    let model = Model::from_blob(b.as_bytes()).unwrap();
    let mut arena = vec![0u8; 1 << 20];
    let data = pixels(64, 64);
    let mut img = ChwImage::new(&data, 64, 64).unwrap();
    let mut logits = vec![0.0; 10];
    model.run(&mut img, &mut arena, precision, &mut logits, &mut ())?;
    Ok(logits)
}

#[test]
fn f16_maps_that_overflow_are_reported_at_their_phase() {
    // Each weight scaled so that its phase's output exceeds f16's ±65504 but not f32's
    // range (SOFT blocks end in LayerNorm, so their gain is the one to scale): f16 maps
    // fail naming the phase, f32 maps give finite logits.
    let cases = [
        ("patch_embed1.proj.0.weight", 1e6, Site::Stem),
        (
            "patch_embed2.proj.0.weight",
            1e6,
            Site::Embedding { stage: 2 },
        ),
        (
            "block2.0.att.norm2.weight",
            1e6,
            Site::Block { stage: 2, block: 0 },
        ),
        (
            "block4.0.mlp.fc2.weight",
            1e9,
            Site::Block { stage: 4, block: 0 },
        ),
        ("norm.weight", 1e6, Site::FinalNorm),
    ];
    for (key, factor, site) in cases {
        let err = run_scaled(&[(key, factor)], Precision::F16).expect_err(key);
        assert_eq!(err, Error::NonFiniteActivation(site), "{key}");
        assert!(err.to_string().contains("NaN or infinity"), "{err}");
        let logits = run_scaled(&[(key, factor)], Precision::F32).unwrap();
        assert!(logits.iter().all(|l| l.is_finite()), "{key}: {logits:?}");
    }
    // Logits beyond f32's range are caught too, whatever the maps.
    let huge_logits = [("norm.weight", 100.0), ("head.weight", 1e37)];
    for precision in [Precision::F16, Precision::F32] {
        let err = run_scaled(&huge_logits, precision).unwrap_err();
        assert_eq!(err, Error::NonFiniteActivation(Site::Head));
    }
}

#[test]
fn corrupt_and_truncated_blobs_are_errors() {
    let cfg = micro_config();
    let b = blob(&cfg, WeightDtype::F16);
    let bytes = b.as_bytes();
    // Every single-bit flip is caught (by the checksum or an earlier check).
    for at in (0..bytes.len())
        .step_by(97)
        .chain([0, 8, 40, bytes.len() - 1])
    {
        let mut bad = bytes.to_vec();
        bad[at] ^= 0x10;
        let bad = AlignedBlob::new(&bad);
        assert!(
            Model::from_blob(bad.as_bytes()).is_err(),
            "flip at {at} accepted"
        );
    }
    for len in [0, 10, 63, 64, 67, 200, bytes.len() / 2, bytes.len() - 1] {
        let cut = AlignedBlob::new(&bytes[..len]);
        assert!(
            matches!(
                Model::from_blob(cut.as_bytes()),
                Err(Error::BlobTruncated { .. } | Error::BadMagic)
            ),
            "length {len}"
        );
    }
    let mut magic = bytes.to_vec();
    magic[0] = b'X';
    assert_eq!(
        Model::from_blob(AlignedBlob::new(&magic).as_bytes()).unwrap_err(),
        Error::BadMagic
    );
    // Unaligned blobs are refused rather than read misaligned.
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(bytes);
    let shifted = AlignedBlob::new(&shifted);
    assert_eq!(
        Model::from_blob(&shifted.as_bytes()[1..]).unwrap_err(),
        Error::BlobMisaligned
    );
}

/// A table entry as a spec for `encode`, unchanged.
fn spec<'a>(t: &'a TensorRef<'a>) -> TensorSpec<'a> {
    TensorSpec {
        id: t.id,
        dtype: t.dtype,
        shape: t.dims(),
        data: t.data,
        scales: t.scales,
    }
}

/// Every tensor of the blob, in its table's order.
fn tensors<'a>(parsed: &Blob<'a>) -> Vec<TensorRef<'a>> {
    (0..parsed.tensor_count())
        .map(|i| parsed.tensor_at(i).unwrap())
        .collect()
}

/// A blob of `cfg` with exactly these tensors.
fn reencode(cfg: &ModelConfig, specs: &[TensorSpec<'_>]) -> AlignedBlob {
    let mut out = vec![0u8; encoded_len(specs)];
    encode(cfg, specs, &mut out).unwrap();
    AlignedBlob::new(&out)
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let cfg = micro_config();
    let b = blob(&cfg, WeightDtype::F32);
    let parsed = Blob::parse(b.as_bytes()).unwrap();
    let tensors = tensors(&parsed);
    let reencode = |specs: &[TensorSpec<'_>]| reencode(&cfg, specs);
    let without: Vec<_> = tensors.iter().skip(1).map(spec).collect();
    let err = Model::from_blob(reencode(&without).as_bytes()).unwrap_err();
    assert_eq!(err, Error::MissingTensor(tensors[0].id));
    assert_eq!(
        err.to_string(),
        "model blob lacks tensor patch_embed1.proj.0.weight"
    );

    let q = tensors
        .iter()
        .position(|t| t.id.to_string() == "block2.0.att.mha.W_q.weight")
        .unwrap();
    let shape = [16usize, 64];
    let mut specs: Vec<_> = tensors.iter().map(spec).collect();
    specs[q].shape = &shape;
    let err = Model::from_blob(reencode(&specs).as_bytes()).unwrap_err();
    assert_eq!(err, Error::TensorMismatch(tensors[q].id));
}

#[test]
fn non_finite_weights_are_refused_at_load() {
    let cfg = micro_config();
    for dtype in DTYPES {
        let b = blob(&cfg, dtype);
        let parsed = Blob::parse(b.as_bytes()).unwrap();
        let tensors = tensors(&parsed);
        // The first matrix of this dtype; for int8, poison a scale instead of a weight.
        let stored = match dtype {
            WeightDtype::F32 => Dtype::F32,
            WeightDtype::F16 => Dtype::F16,
            WeightDtype::I8 => Dtype::I8,
            WeightDtype::W8A8 => Dtype::Q8,
        };
        let i = tensors
            .iter()
            .position(|t| t.dims().len() >= 2 && t.dtype == stored)
            .unwrap();
        for poison in [f32::INFINITY, f32::NAN] {
            let mut data = tensors[i].data.to_vec();
            let mut scales = tensors[i].scales.map(<[u8]>::to_vec);
            match (tensors[i].dtype, scales.as_mut()) {
                (Dtype::F32, _) => data[4..8].copy_from_slice(&poison.to_le_bytes()),
                (Dtype::F16, _) => {
                    data[2..4].copy_from_slice(&half::f16::from_f32(poison).to_bits().to_le_bytes())
                }
                (Dtype::I8 | Dtype::Q8, Some(s)) => s[4..8].copy_from_slice(&poison.to_le_bytes()),
                other => panic!("unexpected tensor {other:?}"),
            }
            let mut specs: Vec<TensorSpec<'_>> = tensors.iter().map(spec).collect();
            specs[i].data = &data;
            specs[i].scales = scales.as_deref();
            let err = Model::from_blob(reencode(parsed.config(), &specs).as_bytes()).unwrap_err();
            assert_eq!(
                err,
                Error::NonFiniteWeight(tensors[i].id),
                "{dtype:?} {poison}"
            );
            assert!(err.to_string().contains("NaN or infinity"));
        }
    }
}

/// Runs `model` with `options`, inside the threads' pool; returns the logits' bits.
fn run_with(
    model: &Model<'_>,
    threads: &soft_host::threads::Threads,
    options: &soft_core::RunOptions<'_>,
    h: usize,
    w: usize,
) -> Vec<u32> {
    let plan = model.plan_with(h, w, options).unwrap();
    let mut arena = vec![0u8; plan.peak_bytes + 16];
    let mut logits = vec![0.0; model.config().num_classes];
    let data = pixels(h, w);
    let report = threads.install(|| {
        let mut img = ChwImage::new(&data, h, w).unwrap();
        model
            .run_with(options, &mut img, &mut arena, &mut logits, &mut ())
            .unwrap()
    });
    assert_eq!(report.peak_bytes, plan.peak_bytes, "{options:?}");
    assert_eq!(plan.large_bytes, 0);
    let bits: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
    // Two memories: each high-water mark is its plan, and no bit moves.
    for placement in [Placement::MAPS, Placement::GROWING] {
        let plan = model.plan_placed(h, w, options, placement).unwrap();
        let mut fast = vec![0u8; plan.peak_bytes + 16];
        let mut large = vec![0u8; plan.large_bytes + 16];
        let report = threads.install(|| {
            let mut img = ChwImage::new(&data, h, w).unwrap();
            let arenas = Arenas {
                fast: &mut fast,
                large: &mut large,
                placement,
            };
            model
                .run_split(options, &mut img, arenas, &mut logits, &mut ())
                .unwrap()
        });
        let marks = (report.peak_bytes, report.large_peak_bytes);
        assert_eq!(marks, (plan.peak_bytes, plan.large_bytes), "{placement:?}");
        let split: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
        assert_eq!(split, bits, "{placement:?} {options:?}");
    }
    bits
}

#[test]
fn bits_do_not_depend_on_kernels_schedule_or_threads() {
    use soft_core::{Kernels, RunOptions, Schedule};
    use soft_host::threads::Threads;
    // soft_tiny's shapes at 96×96 (every stage, SOFT-Norm too), and the micro model at a
    // rectangular size whose chunks and bands do not divide evenly.
    let mut norm = ModelConfig::preset("soft_tiny").unwrap();
    norm.normalized = true;
    norm.depths = [1, 1, 1, 1];
    for (cfg, h, w) in [(micro_config(), 80, 72), (norm, 96, 96)] {
        for dtype in [WeightDtype::F16, WeightDtype::I8, WeightDtype::W8A8] {
            let b = blob(&cfg, dtype);
            let model = Model::from_blob(b.as_bytes()).unwrap();
            for precision in [Precision::F16, Precision::F32] {
                let one = Threads::new(1).unwrap();
                let reference = RunOptions::new(precision).with_kernels(Kernels::generic());
                let want = run_with(&model, &one, &reference, h, w);
                for kernels in Kernels::available() {
                    for workers in 1..=3 {
                        let threads = Threads::new(workers).unwrap();
                        let split = Schedule {
                            chunk: 5,
                            whole_maps: false,
                            workers,
                            min_split_macs: 0,
                        };
                        for schedule in [Schedule::fast(workers), split] {
                            let options = RunOptions::new(precision)
                                .with_kernels(kernels)
                                .with_schedule(schedule)
                                .with_executor(&threads);
                            let got = run_with(&model, &threads, &options, h, w);
                            assert_eq!(got, want, "{dtype:?} {options:?}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn w8a8_blobs_are_version_2_and_close_to_f32() {
    let cfg = micro_config();
    let w8a8 = blob(&cfg, WeightDtype::W8A8);
    let parsed = Blob::parse(w8a8.as_bytes()).unwrap();
    assert_eq!(parsed.version(), 2);
    assert!(parsed.config().w8a8);
    // Blobs without W8A8 stay version 1, so older readers still load them.
    let f32_blob = blob(&cfg, WeightDtype::F32);
    assert_eq!(Blob::parse(f32_blob.as_bytes()).unwrap().version(), 1);
    let model = Model::from_blob(w8a8.as_bytes()).unwrap();
    let reference = Model::from_blob(f32_blob.as_bytes()).unwrap();
    for (h, w) in [(64, 64), (80, 72)] {
        let (got, ..) = run(&model, h, w, Precision::F32);
        let (want, ..) = run(&reference, h, w, Precision::F32);
        let scale = max_abs(&want);
        let err = max_abs_diff(&got, &want);
        assert!(err <= 0.1 * scale, "{h}x{w}: {err} of {scale}");
    }
}

#[test]
fn w8a8_and_float_weights_do_not_mix() {
    // A W8A8 config with float matrices, and a float config with W8A8 matrices, are
    // refused at load: the plan counts quantisation scratch from the config alone.
    let cfg = micro_config();
    for (dtype, flag) in [(WeightDtype::F16, true), (WeightDtype::W8A8, false)] {
        let b = blob(&cfg, dtype);
        let parsed = Blob::parse(b.as_bytes()).unwrap();
        let tensors = tensors(&parsed);
        let specs: Vec<_> = tensors.iter().map(spec).collect();
        let mut out = vec![0u8; encoded_len(&specs)];
        let mixed = ModelConfig { w8a8: flag, ..cfg };
        match encode(&mixed, &specs, &mut out) {
            // The encoder refuses W8A8 weights under a float config itself.
            Err(_) => assert!(!flag),
            Ok(()) => {
                let b = AlignedBlob::new(&out);
                let err = Model::from_blob(b.as_bytes()).unwrap_err();
                assert!(matches!(err, Error::TensorMismatch(_)), "{err}");
            }
        }
    }
}

#[test]
fn plan_equals_peak_when_workers_outnumber_a_chunks_tokens() {
    // Streamed steps give a chunk's tokens to at most that many workers: the plan must
    // count the scratch copies the run allocates, not one per worker asked for (the
    // W8A8 quantisation scratch of streaming pass 1 once did). `run_with` asserts the
    // high-water mark against the plan; the bits must not move either.
    use soft_core::{Kernels, RunOptions, Schedule};
    use soft_host::threads::Threads;
    for (h, w) in [(64, 64), (40, 200)] {
        for dtype in [WeightDtype::F16, WeightDtype::W8A8] {
            let b = blob(&micro_config(), dtype);
            let model = Model::from_blob(b.as_bytes()).unwrap();
            let one = Threads::new(1).unwrap();
            let reference = RunOptions::new(Precision::F16).with_kernels(Kernels::generic());
            let want = run_with(&model, &one, &reference, h, w);
            let threads = Threads::new(3).unwrap();
            for (chunk, workers, whole_maps) in [(1, 7, false), (2, 16, false), (3, 16, true)] {
                let schedule = Schedule {
                    chunk,
                    whole_maps,
                    workers,
                    min_split_macs: 0,
                };
                let options = RunOptions::new(Precision::F16)
                    .with_schedule(schedule)
                    .with_executor(&threads);
                let got = run_with(&model, &threads, &options, h, w);
                assert_eq!(got, want, "{dtype:?} {h}x{w} {schedule:?}");
            }
        }
    }
}
