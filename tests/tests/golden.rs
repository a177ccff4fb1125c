//! Golden tests: the engine against activations and logits of the reference PyTorch code
//! (cases in `tests/golden/*/`, described by each `meta.json`).

use soft_core::{argmax, Checkpoint, Model, Precision, Probe, Tokens};
use soft_host::verify::{max_abs, max_abs_diff};
use soft_host::{build_blob, AlignedBlob, WeightDtype};
use soft_tests::golden::{self, CASES};
use soft_tests::json::usizes;
use soft_tests::models::run_planned;
use soft_tests::pinned;

#[derive(Default)]
struct Capture(Vec<(Checkpoint, Vec<f32>, usize, usize)>);

impl Probe for Capture {
    fn observe(&mut self, at: Checkpoint, tokens: Tokens<'_>, rows: usize, cols: usize) {
        // The reference dumps stage outputs only.
        if matches!(at, Checkpoint::Block { .. }) {
            return;
        }
        let values = match tokens {
            Tokens::F32(v) => v[..rows * cols].to_vec(),
            Tokens::F16(v) => v[..rows * cols].iter().map(|h| h.to_f32()).collect(),
        };
        self.0.push((at, values, rows, cols));
    }
}

struct Outcome {
    logits: Vec<f32>,
    reference: Vec<f32>,
    stages: Capture,
    peak: usize,
    planned: usize,
}

fn run_case(case: &str, dtype: WeightDtype, precision: Precision) -> Outcome {
    let (map, cfg) = golden::checkpoint(case);
    let cfg_meta = &golden::meta(case)["config"];
    assert_eq!(
        cfg.embed_dims.to_vec(),
        usizes(&cfg_meta["embed_dims"]),
        "{case}"
    );
    assert_eq!(cfg.heads.to_vec(), usizes(&cfg_meta["num_heads"]), "{case}");
    assert_eq!(cfg.depths.to_vec(), usizes(&cfg_meta["depths"]), "{case}");
    assert_eq!(
        cfg.num_classes as u64,
        cfg_meta["num_classes"].as_u64().unwrap()
    );

    let blob = AlignedBlob::new(&build_blob(&map, &cfg, dtype).unwrap());
    let model = Model::from_blob(blob.as_bytes()).unwrap();
    let input = golden::npy(case, "input.npy");
    let (h, w) = (input.shape[2], input.shape[3]);
    let mut stages = Capture::default();
    let run = run_planned(&model, &input.data, h, w, precision, &mut stages);
    Outcome {
        logits: run.logits,
        reference: golden::npy(case, "logits.npy").data,
        stages,
        peak: run.peak,
        planned: run.planned,
    }
}

/// The largest |a − b| (a NaN counts as the worst), over arrays of one length.
fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    max_abs_diff(a, b)
}

fn stage_file(at: Checkpoint) -> &'static str {
    match at {
        Checkpoint::Stem => "stem.npy",
        Checkpoint::Stage(1) => "stage1.npy",
        Checkpoint::Stage(2) => "stage2.npy",
        Checkpoint::Stage(3) => "stage3.npy",
        Checkpoint::Stage(_) => "stage4.npy",
        Checkpoint::FinalNorm => "final_norm.npy",
        other => panic!("no reference file for {other:?}"),
    }
}

#[test]
fn f32_matches_reference_logits_and_every_stage() {
    for case in CASES {
        let out = run_case(case, WeightDtype::F32, Precision::F32);
        assert_eq!(
            out.peak, out.planned,
            "{case}: arena high-water mark differs from the plan"
        );
        assert_eq!(out.stages.0.len(), 6, "{case}");
        for (at, values, rows, cols) in &out.stages.0 {
            let reference = golden::npy(case, stage_file(*at));
            assert_eq!(reference.shape, vec![*rows, *cols], "{case} {at:?}");
            let err = max_err(values, &reference.data);
            let scale = max_abs(&reference.data);
            eprintln!(
                "{case} {at:?}: max abs err {err:e}, relative {:e}",
                err / scale
            );
            assert!(
                err <= 1e-4 * scale,
                "{case} {at:?}: error {err} > 1e-4 x {scale}"
            );
        }
        let err = max_err(&out.logits, &out.reference);
        let scale = max_abs(&out.reference);
        eprintln!("{case} logits: relative error {:e}", err / scale);
        assert!(
            err <= 1e-4 * scale,
            "{case}: logits {:?} vs {:?}",
            out.logits,
            out.reference
        );
    }
}

/// `dtype` weights with `precision` maps, on every case: the arena's high-water mark is
/// the plan's, the top-1 is the reference's and the logits are within `tol` × max|logit|.
fn keeps_top1_and_logits_within(dtype: WeightDtype, precision: Precision, tol: f32) {
    for case in CASES {
        let out = run_case(case, dtype, precision);
        assert_eq!(out.peak, out.planned, "{case}");
        let err = max_err(&out.logits, &out.reference);
        let scale = max_abs(&out.reference);
        eprintln!(
            "{case} {} logits: relative error {:e}",
            dtype.name(),
            err / scale
        );
        assert_eq!(
            argmax(&out.logits),
            argmax(&out.reference),
            "{case}: top-1 differs"
        );
        assert!(
            err <= tol * scale,
            "{case}: logits {:?} vs {:?}",
            out.logits,
            out.reference
        );
    }
}

#[test]
fn f16_weights_and_maps_keep_top1_and_logits_within_2e_2() {
    keeps_top1_and_logits_within(WeightDtype::F16, Precision::F16, 2e-2);
}

/// W8A8 against the reference, issue 11's bar: the same top-1 and logits within
/// 5e-2 × max|logit|. Measured (error / max|logit|, f16 maps): micro_64 2.20e-2,
/// norm_micro_64 2.53e-2, deep_96_timm 2.74e-2, every top-1 kept.
#[test]
fn w8a8_keeps_top1_and_logits_within_5e_2() {
    keeps_top1_and_logits_within(WeightDtype::W8A8, Precision::F16, 5e-2);
}

#[test]
fn pth_and_safetensors_hold_the_same_tensors() {
    use soft_host::checkpoint::read_checkpoint;
    use soft_host::pth::Prefer;
    for case in CASES {
        let dir = golden::dir(case);
        let pth = read_checkpoint(&dir.join("ckpt.pth"), Prefer::Ema).unwrap();
        let st = read_checkpoint(&dir.join("ckpt.safetensors"), Prefer::Ema).unwrap();
        assert_eq!(pth.tensors.len(), st.tensors.len(), "{case}");
        assert!(pth.tensors == st.tensors, "{case}: tensors differ");
        eprintln!("{case}: {:?}", pth.notes);
    }
}

#[test]
fn logit_bits_are_pinned() {
    // The engine's exact output bits on the golden inputs, the same with every kernel
    // implementation and schedule. A kernel rewrite that keeps every sum's order (the rule
    // that makes host and Cortex-M4F agree) leaves these unchanged; if a deliberate numerics
    // change moves them, update the digests in the same commit. Last moved by the
    // vectorisable exp/tanh/erf (soft-kernels `math`).
    let mut got = Vec::new();
    for case in CASES {
        for (dtype, precision) in [
            (WeightDtype::F32, Precision::F32),
            (WeightDtype::F16, Precision::F16),
            (WeightDtype::W8A8, Precision::F16),
        ] {
            let out = run_case(case, dtype, precision);
            got.push(format!(
                "{case} {} {precision:?} {:016x}",
                dtype.name(),
                pinned::bits_digest(&out.logits)
            ));
        }
    }
    let want = pinned::lines(PINNED);
    assert_eq!(got, want, "logit bits changed:\n{}", got.join("\n"));
}

const PINNED: &str = "
    micro_64 f32 F32 b6a868d0c3945f19
    micro_64 f16 F16 1534cddf6ee23055
    micro_64 w8a8 F16 7ffe3840fdb6ceac
    norm_micro_64 f32 F32 3f5a506e54da35a7
    norm_micro_64 f16 F16 4eedc8da5e88ad68
    norm_micro_64 w8a8 F16 08837a8dea577374
    deep_96_timm f32 F32 0b6f2623afb5af4d
    deep_96_timm f16 F16 80ffbbd7398dbc84
    deep_96_timm w8a8 F16 2eaf7f6a52b07133
";
