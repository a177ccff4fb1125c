//! The `soft` binary end to end: every golden case through convert and run, every
//! checkpoint wrapper, and one clear error line (exit 1, no output file) per bad input.

use std::ffi::OsStr;
use std::path::Path;

mod common;

use common::{
    convert, convert_fails, edited_golden, edited_pth, golden_variant, json_of, micro_blob, soft,
};
use predicates::prelude::*;
use soft_core::argmax;
use soft_host::npy;
use soft_host::verify::{max_abs, max_abs_diff};
use soft_tests::{data, golden};

/// Converts `ckpt` and runs the case's input; returns the logits.
fn convert_and_run(
    ckpt: &Path,
    case: &str,
    dtype: &str,
    activations: &str,
    extra: &[&str],
) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("m.soft");
    let mut convert = soft();
    convert
        .arg("convert")
        .arg(ckpt)
        .arg("-o")
        .arg(&blob)
        .args(["--dtype", dtype])
        .args(extra);
    // The variant as the case's meta.json says it; `--norm` is the alias of `--variant
    // norm`, tried on the .pth files.
    match (
        golden_variant(case),
        ckpt.extension().and_then(|e| e.to_str()),
    ) {
        ("norm", Some("pth")) => convert.arg("--norm"),
        (variant, _) => convert.args(["--variant", variant]),
    };
    convert
        .assert()
        .success()
        .stdout(predicate::str::contains("arena at"));
    let logits = dir.path().join("logits.npy");
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(data(&format!("golden/{case}/input.npy")))
        .args(["--activations", activations])
        .arg("--logits-out")
        .arg(&logits)
        .assert()
        .success()
        .stdout(predicate::str::contains("arena high-water mark"));
    npy::read(&logits).unwrap().data
}

#[test]
fn golden_cases_convert_from_pth_and_safetensors_and_match_the_reference() {
    for case in golden::CASES {
        let reference = golden::npy(case, "logits.npy").data;
        let scale = max_abs(&reference);
        for file in ["ckpt.pth", "ckpt.safetensors"] {
            let ckpt = data(&format!("golden/{case}/{file}"));
            for (dtype, act, tol) in [
                ("f32", "f32", 1e-4),
                ("f16", "f16", 2e-2),
                ("int8", "f16", 5e-2),
            ] {
                let got = convert_and_run(&ckpt, case, dtype, act, &[]);
                let err = max_abs_diff(&got, &reference);
                eprintln!("{case} {file} {dtype}: relative error {:.2e}", err / scale);
                assert!(
                    err <= tol * scale,
                    "{case} {file} {dtype}: {got:?} vs {reference:?}"
                );
                assert_eq!(argmax(&got), argmax(&reference), "{case} {file} {dtype}");
            }
        }
    }
}

#[test]
fn every_wrapper_layout_converts_to_the_same_model() {
    let reference = golden::npy("micro_64", "logits.npy").data;
    let scale = max_abs(&reference);
    for (file, tol) in [
        ("fixtures/wrap_model.pth", 1e-4),
        ("fixtures/wrap_timm_module.pth", 1e-4),
        ("fixtures/strided.pth", 1e-4),
        ("fixtures/half.pth", 2e-2),
        ("fixtures/bf16.pth", 5e-2),
    ] {
        let got = convert_and_run(&data(file), "micro_64", "f32", "f32", &[]);
        let err = max_abs_diff(&got, &reference);
        assert!(err <= tol * scale, "{file}: error {err}");
    }
    // The timm fixture's state_dict has head.bias + 1: --no-ema must take it.
    let raw = convert_and_run(
        &data("fixtures/wrap_timm_module.pth"),
        "micro_64",
        "f32",
        "f32",
        &["--no-ema"],
    );
    for (r, e) in raw.iter().zip(&reference) {
        assert!(
            (r - e - 1.0).abs() < 1e-3,
            "--no-ema logits {raw:?} vs {reference:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    convert(
        &data("fixtures/wrap_timm_module.pth"),
        &dir.path().join("m.soft"),
        &[],
    )
    .stdout(predicate::str::contains("took state_dict_ema"));
}

/// The golden micro_64 `.pth` with its `data.pkl` replaced.
fn pth_with_pickle(pickle: &[u8]) -> Vec<u8> {
    edited_pth("micro_64", |_| pickle.to_vec())
}

/// The golden micro_64 checkpoint without `key` (`"+sr"`: with a PVT spatial-reduction
/// tensor added), with a NaN in `poison`.
fn safetensors_without(key: &str, poison: Option<&str>) -> Vec<u8> {
    edited_golden(|tensors| {
        tensors.retain(|t| t.0 != key);
        for (name, _, _, raw) in tensors.iter_mut() {
            if Some(name.as_str()) == poison {
                raw[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
        if key == "+sr" {
            // A stage-4 spatial-reduction conv: PVT has it, this engine does not.
            tensors.push((
                "block4.0.attn.sr.weight".into(),
                safetensors::Dtype::F32,
                vec![1],
                vec![0; 4],
            ));
        }
    })
}

#[test]
fn bad_checkpoints_give_one_clear_error_and_no_output() {
    let pth = std::fs::read(data("golden/micro_64/ckpt.pth")).unwrap();
    convert_fails(
        "cut.pth",
        &pth[..pth.len() / 2],
        &[],
        &["not a readable zip archive"],
    );
    convert_fails(
        "junk.pth",
        b"PK\x03\x04 not really a zip",
        &[],
        &["not a readable zip archive"],
    );
    convert_fails(
        "junk.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
        &[],
        &["reading checkpoint"],
    );
    convert_fails("empty.safetensors", b"", &[], &["reading checkpoint"]);
    convert_fails(
        "opcode.pth",
        &pth_with_pickle(b"\x80\x02}\xfe."),
        &[],
        &["unknown pickle opcode 0xfe"],
    );
    // A tensor claiming 2^40 floats: refused before anything of that size is allocated.
    let absurd = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu\x8a\x06\x00\x00\x00\x00\x00\x01tQK\x00(K\x02t(K\x01t\x89ccollections\nOrderedDict\n)RtRu.";
    convert_fails(
        "absurd.pth",
        &pth_with_pickle(absurd),
        &[],
        &["its tensors need 4398046511104"],
    );
    convert_fails(
        "missing.safetensors",
        &safetensors_without("head.weight", None),
        &[],
        &["lacks tensor head.weight"],
    );
    convert_fails(
        "extra.safetensors",
        &safetensors_without("+sr", None),
        &[],
        &["unexpected tensor block4.0.attn.sr.weight"],
    );

    convert_fails(
        "nan.safetensors",
        &safetensors_without("", Some("block2.0.att.ff1.weight")),
        &[],
        &["block2.0.att.ff1.weight holds a non-finite value"],
    );
    let st = std::fs::read(data("golden/micro_64/ckpt.safetensors")).unwrap();
    convert_fails(
        "mismatch.safetensors",
        &st,
        &["--arch", "soft_tiny"],
        &["do not match --arch"],
    );
    convert_fails(
        "unknown-arch.safetensors",
        &st,
        &["--arch", "soft_giant"],
        &["unknown architecture soft_giant"],
    );
}

#[test]
fn bad_blobs_and_inputs_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let good = std::fs::read(&blob).unwrap();
    let check = |bytes: &[u8], args: &[&str], message: &str| {
        let path = dir.path().join("bad.soft");
        std::fs::write(&path, bytes).unwrap();
        let a = soft()
            .args(&args[..1])
            .arg(&path)
            .args(&args[1..])
            .assert()
            .failure()
            .code(1);
        let stderr = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(message), "{stderr:?} lacks {message:?}");
    };
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    check(&flipped, &["inspect"], "checksum mismatch");
    check(
        b"NOTSOFT!........................................................................",
        &["inspect"],
        "bad magic",
    );
    check(&good[..100], &["inspect"], "truncated");
    let input = data("golden/micro_64/input.npy")
        .to_string_lossy()
        .into_owned();
    check(
        &flipped,
        &["run", "--input-npy", &input],
        "checksum mismatch",
    );
    let bad_npy = dir.path().join("x.npy");
    std::fs::write(&bad_npy, npy::to_bytes(&[1, 2, 8, 8], &[0.0; 128])).unwrap();
    let a = soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(&bad_npy)
        .assert()
        .failure()
        .code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("expected (1,3,H,W)"));
    soft()
        .arg("run")
        .arg(&blob)
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("--input-npy"));
    soft()
        .args(["plan", "--arch", "soft_tiny", "--image-size", "12x"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains("bad image size"));
    soft().arg("frobnicate").assert().failure().code(1);
}

#[test]
fn plan_inspect_verify_and_export_report_what_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    soft()
        .args([
            "plan",
            "--arch",
            "soft_tiny",
            "--image-size",
            "224",
            "--svg",
        ])
        .arg(dir.path().join("p.svg"))
        .assert()
        .success()
        .stdout(
            predicate::str::contains("arena 505424 B").and(predicate::str::contains("<- peak")),
        );
    let svg = std::fs::read_to_string(dir.path().join("p.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("stage 1"));
    // Stacked bars: each buffer a segment named in its tooltip, a legend per category.
    for part in [
        "RingScratch.ring: 64512 bytes (V ring)",
        "token map: 401408 bytes (token map)",
        ">Newton-Schulz matrices</text>",
    ] {
        assert!(svg.contains(part), "{part}");
    }
    // The JSON names every buffer of every phase; they add up to the phase.
    let v = json_of(&["plan", "--arch", "soft_tiny", "--json"].map(OsStr::new));
    for phase in v["phases"].as_array().unwrap() {
        let buffers = phase["buffers"].as_array().unwrap();
        let sum: u64 = buffers.iter().map(|b| b["bytes"].as_u64().unwrap()).sum();
        assert_eq!(sum, phase["bytes"].as_u64().unwrap(), "{phase}");
        assert_eq!(buffers[0]["name"], "token map");
    }
    // At 448² stage 1's pseudo-inverse sets the model's peak: its two m×m matrices show
    // (`P` is formed a panel at a time in the work buffer), then the scale and the work.
    // Stage 3's is under that peak and keeps `P` as a third matrix.
    let args = [
        "plan",
        "--arch",
        "soft_tiny",
        "--image-size",
        "448",
        "--json",
    ];
    let v = json_of(&args.map(OsStr::new));
    let newton = |stage: &str| -> Vec<u64> {
        let phase = v["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == stage)
            .unwrap();
        phase["buffers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["category"] == "Newton-Schulz matrices")
            .map(|b| b["bytes"].as_u64().unwrap())
            .collect()
    };
    let matrix = 196 * 196 * 4;
    assert_eq!(newton("stage 1"), [matrix, matrix, 196 * 4, 196 * 32 * 4]);
    assert_eq!(
        newton("stage 3"),
        [matrix, matrix, matrix, 196 * 4, 196 * 32 * 4]
    );
    // W8A8 presets plan their quantisation scratch.
    soft()
        .args(["plan", "--arch", "soft_tiny", "--w8a8"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("arena 509552 B")
                .and(predicate::str::contains("EmitScratch.quant")),
        );
    soft()
        .args([
            "plan",
            "--arch",
            "soft_tiny",
            "--image-size",
            "64x128",
            "--activations",
            "f32",
        ])
        .assert()
        .success();

    let blob = dir.path().join("m.soft");
    let ckpt = data("golden/micro_64/ckpt.pth");
    convert(&ckpt, &blob, &["--dtype", "int8"]);
    soft().arg("inspect").arg(&blob).assert().success().stdout(
        predicate::str::contains("ok")
            .and(predicate::str::contains("block1.0.att.mha.W_q.weight"))
            .and(predicate::str::contains("int8")),
    );
    soft()
        .arg("verify")
        .arg(&blob)
        .arg("--reference")
        .arg(&ckpt)
        .args(["--inputs", "2"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("top-1 agreement").and(predicate::str::contains("cosine")),
        );
    let rs = dir.path().join("model.rs");
    soft()
        .arg("export")
        .arg(&blob)
        .arg("--rust")
        .arg(&rs)
        .assert()
        .success();
    let src = std::fs::read_to_string(&rs).unwrap();
    assert!(src.contains("align(16)") && src.contains("include_bytes!(\"model.soft\")"));
    assert_eq!(
        std::fs::read(dir.path().join("model.soft")).unwrap(),
        std::fs::read(&blob).unwrap()
    );
}

#[test]
fn image_input_runs() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("m.soft");
    convert(&data("golden/micro_64/ckpt.pth"), &blob, &[]);
    let img = dir.path().join("x.png");
    image::RgbImage::from_fn(90, 70, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 128])
    })
    .save(&img)
    .unwrap();
    let labels = dir.path().join("labels.txt");
    std::fs::write(
        &labels,
        (0..10).map(|i| format!("digit-{i}\n")).collect::<String>(),
    )
    .unwrap();
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--image")
        .arg(&img)
        .args(["--image-size", "64", "--top", "3"])
        .arg("--labels")
        .arg(&labels)
        .assert()
        .success()
        .stdout(predicate::str::contains("digit-").and(predicate::str::contains("64x64")));
}

#[test]
fn bench_reports_timings_and_phases_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let out = soft()
        .arg("bench")
        .arg(&blob)
        .args([
            "--runs",
            "3",
            "--threads",
            "2",
            "--image-size",
            "64x64",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(num("median_ms") > 0.0 && num("p90_ms") >= num("median_ms"));
    assert!(num("min_ms") <= num("median_ms") && num("gmac_per_s") > 0.0);
    assert_eq!(v["runs"], 3);
    assert_eq!(v["threads"], 2);
    assert_eq!(v["times_ms"].as_array().unwrap().len(), 3);
    assert_eq!(v["image_size"], serde_json::json!([64, 64]));
    assert!(v["arena_bytes"].as_u64().unwrap() > 0 && v["macs"].as_u64().unwrap() > 0);
    let phases = v["phases"].as_array().unwrap();
    let steps: Vec<&str> = phases.iter().map(|p| p["step"].as_str().unwrap()).collect();
    for step in [
        "stem",
        "landmarks",
        "key_value",
        "newton_schulz",
        "attention",
        "mlp",
        "head",
    ] {
        assert!(steps.contains(&step), "{step} missing from {steps:?}");
    }
    let shares: f64 = phases.iter().map(|p| p["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    for kernels in ["generic", "auto"] {
        soft()
            .arg("bench")
            .arg(&blob)
            .args([
                "--runs",
                "1",
                "--image-size",
                "64",
                "--compact",
                "--kernels",
                kernels,
            ])
            .assert()
            .success()
            .stdout(
                predicate::str::contains("| phase | ms | share |")
                    .and(predicate::str::contains("stage 2 Newton–Schulz"))
                    .and(predicate::str::contains("compact schedule")),
            );
    }
    soft()
        .arg("bench")
        .arg(&blob)
        .args(["--runs", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--runs must be at least 1"));
}

/// The text after `marker` on the line that holds it.
fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"));
    text[at + marker.len()..].lines().next().unwrap_or_default()
}

#[test]
fn run_gives_the_same_bits_on_any_number_of_threads_in_the_planned_arena() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let mut first: Option<Vec<u8>> = None;
    let mut arenas = Vec::new();
    for threads in ["1", "2", "3"] {
        let logits = dir.path().join(format!("l{threads}.npy"));
        let out = soft()
            .arg("run")
            .arg(&blob)
            .arg("--input-npy")
            .arg(data("golden/micro_64/input.npy"))
            .args(["--threads", threads])
            .arg("--logits-out")
            .arg(&logits)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("on {threads} thread")))
            .get_output()
            .stdout
            .clone();
        let used = after(&String::from_utf8(out).unwrap(), "arena high-water mark ").to_string();
        let plan = soft()
            .arg("plan")
            .arg(&blob)
            .args(["--image-size", "64", "--threads", threads])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let plan = String::from_utf8(plan).unwrap();
        assert_eq!(
            after(after(&plan, "thread"), ": arena "),
            used,
            "{threads} threads"
        );
        arenas.push(used);
        let bytes = std::fs::read(&logits).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert_eq!(f, &bytes, "{threads} threads"),
        }
    }
    // Each thread has its own scratch.
    assert_ne!(arenas[0], arenas[1]);
}

#[test]
fn json_outputs_follow_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let b = blob.as_os_str();

    let v = json_of(&["inspect".as_ref(), b, "--json".as_ref()]);
    assert_eq!(v["usable"], true);
    assert_eq!(v["config"]["num_classes"], 10);
    assert!(v["crc32"].as_u64().is_some() && v["bytes"].as_u64().unwrap() > 0);
    let tensors = v["tensors"].as_array().unwrap();
    assert!(tensors
        .iter()
        .any(|t| t["name"] == "head.weight" && t["dtype"] == "f16"));

    let v = json_of(&[
        "plan".as_ref(),
        b,
        "--image-size".as_ref(),
        "64".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(v["image_size"], serde_json::json!([64, 64]));
    assert_eq!(v["schedule"], "compact");
    let phases = v["phases"].as_array().unwrap();
    let peak = v["arena_bytes"].as_u64().unwrap();
    assert_eq!(
        phases.iter().filter_map(|p| p["bytes"].as_u64()).max(),
        Some(peak)
    );
    assert!(phases.iter().any(|p| p["peak"] == true));

    let input = data("golden/micro_64/input.npy");
    let v = json_of(&[
        "run".as_ref(),
        b,
        "--input-npy".as_ref(),
        input.as_os_str(),
        "--top".as_ref(),
        "3".as_ref(),
        "--json".as_ref(),
    ]);
    let logits: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(logits.len(), 10);
    assert_eq!(v["top"].as_array().unwrap().len(), 3);
    assert_eq!(v["top"][0]["class"], argmax(&logits));
    assert!(v["arena_high_water_bytes"].as_u64().unwrap() > 0);

    let ckpt = data("golden/micro_64/ckpt.safetensors");
    let v = json_of(&[
        "verify".as_ref(),
        b,
        "--reference".as_ref(),
        ckpt.as_os_str(),
        "--inputs".as_ref(),
        "2".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(v["passed"], true);
    assert_eq!(v["inputs"], 2);
    assert!(v["failures"].as_array().unwrap().is_empty());
    // Below a threshold: the JSON still comes, and the exit code says it failed.
    let a = soft()
        .arg("verify")
        .arg(&blob)
        .arg("--reference")
        .arg(&ckpt)
        .args(["--inputs", "2", "--max-relative-error", "0", "--json"])
        .assert()
        .failure()
        .code(1);
    let v: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(v["passed"], false);
    assert!(v["failures"][0]
        .as_str()
        .unwrap()
        .contains("--max-relative-error"));
}

#[test]
fn labels_must_match_the_classes_and_big_plans_read_in_mib() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "zero\none\ntwo\n").unwrap();
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(data("golden/micro_64/input.npy"))
        .arg("--labels")
        .arg(&labels)
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains(
            "3 labels for a model of 10 classes",
        ));
    soft()
        .args(["plan", "--arch", "soft_tiny", "--image-size", "896"])
        .assert()
        .success()
        .stdout(predicate::str::contains("MiB").and(predicate::str::contains("<- peak")));
    soft()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("_soft()").and(predicate::str::contains("verify")));
}
