//! Models that describe themselves, on the real binary: the variant read from the
//! checkpoint or refused, metadata from flags and training arguments, `inspect` showing
//! it, `run --image` and `eval` applying it, the demo's digits from PNG files, and
//! hostile metadata in a blob as one clear error.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

mod common;

use common::{convert, edited_pth, json_of, one_error_line, soft};
use soft_host::npy;
use soft_host::verify::{max_abs, max_abs_diff};
use soft_tests::data;

/// Runs `soft args…`, checks it fails with exit 1 and one line holding every `want`.
fn fails(args: &[&OsStr], wants: &[&str]) -> String {
    let a = soft().args(args).assert().failure().code(1);
    let line = one_error_line(a.get_output());
    for want in wants {
        assert!(line.contains(want), "{args:?}: {line:?} lacks {want:?}");
    }
    line
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(OsStr::new).collect()
}

/// A golden case's `.pth` with its pickle's root dict wrapped as a training checkpoint:
/// `{'state_dict': <the state dict>, <extra>}`, `extra` being pickle opcodes that push
/// key–value pairs (no memo use, so the original's memo indices stay valid).
fn wrapped_pth(case: &str, extra: &[u8]) -> Vec<u8> {
    edited_pth(case, |content| {
        assert!(content.starts_with(b"\x80\x02") && content.ends_with(b"."));
        let body = &content[2..content.len() - 1];
        let mut p = b"\x80\x02}(".to_vec();
        p.extend(text("state_dict"));
        p.extend_from_slice(body);
        p.extend_from_slice(extra);
        p.extend_from_slice(b"u.");
        p
    })
}

/// Pickle opcodes pushing the text `s`.
fn text(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// Pickle opcodes pushing an `argparse.Namespace` of `(name, value opcodes)`.
fn namespace(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut v = b"cargparse\nNamespace\n)\x81}(".to_vec();
    for (name, value) in fields {
        v.extend(text(name));
        v.extend_from_slice(value);
    }
    v.extend_from_slice(b"ub");
    v
}

fn float(x: f64) -> Vec<u8> {
    let mut v = vec![b'G'];
    v.extend_from_slice(&x.to_be_bytes());
    v
}

fn int(x: u8) -> Vec<u8> {
    vec![b'K', x]
}

fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![b'('];
    items.iter().for_each(|i| v.extend_from_slice(i));
    v.push(b'l');
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Converts and runs the golden case's input with f32 maps: the logits.
fn convert_and_run(ckpt: &Path, case: &str, extra: &[&str]) -> (Vec<f32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("m.soft");
    let out = soft()
        .arg("convert")
        .arg(ckpt)
        .arg("-o")
        .arg(&blob)
        .args(["--dtype", "f32"])
        .args(extra)
        .assert()
        .success()
        .get_output()
        .clone();
    let logits = dir.path().join("y.npy");
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(data(&format!("golden/{case}/input.npy")))
        .args(["--activations", "f32", "--logits-out"])
        .arg(&logits)
        .assert()
        .success();
    (
        npy::read(&logits).unwrap().data,
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn close(got: &[f32], case: &str) -> bool {
    let want = soft_tests::golden::npy(case, "logits.npy").data;
    let err = max_abs_diff(got, &want);
    err <= 1e-4 * max_abs(&want)
}

#[test]
fn a_checkpoint_that_does_not_say_its_variant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.soft");
    for (ckpt, also) in [
        (data("golden/norm_micro_64/ckpt.pth"), None),
        (data("golden/micro_64/ckpt.safetensors"), None),
        // timm's saver wrote args.model = 'soft' and arch = 'soft': not a published name.
        (
            data("golden/deep_96_timm/ckpt.pth"),
            Some("args.model = 'soft'"),
        ),
    ] {
        let mut args = vec![OsStr::new("convert"), ckpt.as_os_str(), "-o".as_ref()];
        args.push(out.as_os_str());
        let mut wants = vec![
            "does not say whether the model is SOFT or SOFT-Norm",
            "pass --variant plain or --variant norm",
        ];
        wants.extend(also);
        fails(&args, &wants);
        assert!(!out.exists());
    }
    // The command line and the checkpoint must agree, and so must two flags.
    let norm_config = wrapped_pth(
        "norm_micro_64",
        &[
            text("config"),
            b"}".to_vec(),
            text("normalized_attention"),
            vec![0x88, b's'],
        ]
        .concat(),
    );
    let ckpt = write(dir.path(), "norm.pth", &norm_config);
    fails(
        &[
            "convert".as_ref(),
            ckpt.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--variant".as_ref(),
            "plain".as_ref(),
        ],
        &["config.normalized_attention = True says SOFT-Norm but --variant plain says SOFT"],
    );
    let micro = data("golden/micro_64/ckpt.pth");
    fails(
        &[
            "convert".as_ref(),
            micro.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--norm".as_ref(),
            "--arch".as_ref(),
            "soft_tiny".as_ref(),
        ],
        &["--norm says SOFT-Norm but --arch soft_tiny says SOFT"],
    );
}

#[test]
fn the_variant_is_read_where_the_checkpoint_says_it() {
    let dir = tempfile::tempdir().unwrap();
    // A config dict in a .pth: SOFT-Norm, and the logits are the reference's.
    let ckpt = write(
        dir.path(),
        "norm.pth",
        &wrapped_pth(
            "norm_micro_64",
            &[
                text("config"),
                b"}".to_vec(),
                text("normalized_attention"),
                vec![0x88, b's'],
            ]
            .concat(),
        ),
    );
    let (logits, stdout) = convert_and_run(&ckpt, "norm_micro_64", &[]);
    assert!(close(&logits, "norm_micro_64"), "{logits:?}");
    assert!(
        stdout.contains("variant: SOFT-Norm (config.normalized_attention = True)"),
        "{stdout}"
    );
    // The reference's class name, as timm's saver writes it without args.
    let ckpt = write(
        dir.path(),
        "arch.pth",
        &wrapped_pth(
            "norm_micro_64",
            &[text("arch"), text("softmaxfreenormvisiontransformer")].concat(),
        ),
    );
    assert!(close(
        &convert_and_run(&ckpt, "norm_micro_64", &[]).0,
        "norm_micro_64"
    ));
    // safetensors metadata.
    let bytes = std::fs::read(data("golden/norm_micro_64/ckpt.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    let metadata = Some(
        [("model".to_string(), "soft_norm_tiny".to_string())]
            .into_iter()
            .collect(),
    );
    let ckpt = write(
        dir.path(),
        "norm.safetensors",
        &safetensors::tensor::serialize(views, &metadata).unwrap(),
    );
    let (logits, stdout) = convert_and_run(&ckpt, "norm_micro_64", &[]);
    assert!(close(&logits, "norm_micro_64"));
    assert!(
        stdout.contains("__metadata__.model = 'soft_norm_tiny'"),
        "{stdout}"
    );
    // Converted plain, the same tensors give other logits: the trap the refusal closes.
    let (plain, _) = convert_and_run(
        &data("golden/norm_micro_64/ckpt.pth"),
        "norm_micro_64",
        &["--variant", "plain"],
    );
    assert!(!close(&plain, "norm_micro_64"));
}

#[test]
fn training_arguments_and_flags_become_the_blobs_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let args = namespace(&[
        (
            "input_size",
            [b"(".to_vec(), int(3), int(64), int(64), b"t".to_vec()].concat(),
        ),
        ("mean", list(&[float(0.5), float(0.25), float(0.125)])),
        ("std", list(&[float(0.5)])),
        ("interpolation", text("bicubic")),
        ("crop_pct", float(0.9)),
        ("lr", float(0.1)),
        // timm's unset defaults: not recorded, not worth a note.
        ("img_size", b"N".to_vec()),
        ("crop_mode", text("")),
    ]);
    let ckpt = write(
        dir.path(),
        "timm.pth",
        &wrapped_pth(
            "micro_64",
            &[
                text("arch"),
                text("softmaxfreevisiontransformer"),
                text("args"),
                args,
            ]
            .concat(),
        ),
    );
    let labels = write(
        dir.path(),
        "labels.txt",
        (0..10)
            .map(|i| format!("class «{i}»\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let blob = dir.path().join("m.soft");
    let out = soft()
        .arg("convert")
        .arg(&ckpt)
        .arg("-o")
        .arg(&blob)
        .arg("--labels")
        .arg(&labels)
        .args(["--name", "micro", "--license", "MIT", "--channels", "bgr"])
        .args(["--std", "0.5,0.25,2"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "recorded from the checkpoint: args.input_size, args.crop_pct, \
             args.interpolation, args.mean"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("variant: SOFT (arch = 'softmaxfreevisiontransformer')"));
    assert!(!stdout.contains("ignored"), "{stdout}");
    let v = json_of(&os(&["inspect", blob.to_str().unwrap(), "--json"]));
    let m = &v["metadata"];
    assert_eq!(m["name"], "micro");
    assert_eq!(m["licence"], "MIT");
    assert_eq!(m["source"], serde_json::Value::Null);
    assert_eq!(m["variant"]["variant"], "plain");
    assert_eq!(m["variant"]["origin"], "checkpoint");
    assert_eq!(m["input_size"], serde_json::json!([64, 64]));
    assert_eq!(m["resize"]["mode"], "shorter_side");
    assert_eq!(m["resize"]["crop_pct"], 0.9);
    assert_eq!(m["interpolation"], "bicubic");
    assert_eq!(m["channels"], "bgr");
    assert_eq!(m["mean"], serde_json::json!([0.5, 0.25, 0.125]));
    // The flag over the checkpoint's.
    assert_eq!(m["std"], serde_json::json!([0.5, 0.25, 2.0]));
    assert_eq!(m["labels"][3], "class «3»");
    assert_eq!(v["metadata_problem"], serde_json::Value::Null);
    // The text shows it all.
    let text = soft().arg("inspect").arg(&blob).assert().success();
    let text = String::from_utf8(text.get_output().stdout.clone()).unwrap();
    for want in [
        "  name: micro",
        "  variant: SOFT (from the checkpoint: arch = 'softmaxfreevisiontransformer')",
        "  interpolation: bicubic",
        "  labels: 10 (class «0», class «1», class «2», class «3», class «4», …)",
    ] {
        assert!(text.contains(want), "{text} lacks {want}");
    }
    // run --image applies it: 64x64, resized to 71, bicubic, BGR; its labels name the classes.
    let img = dir.path().join("x.png");
    image::RgbImage::from_fn(90, 70, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 128])
    })
    .save(&img)
    .unwrap();
    let image = img.to_str().unwrap();
    let b = blob.to_str().unwrap();
    let v = json_of(&os(&["run", b, "--image", image, "--json"]));
    let p = &v["preprocessing"];
    assert_eq!(v["image_size"], serde_json::json!([64, 64]));
    assert_eq!(
        (p["resize_to"].as_u64(), p["channels"].as_str()),
        (Some(71), Some("bgr"))
    );
    assert!(v["top"][0]["label"]
        .as_str()
        .unwrap()
        .starts_with("class «"));
    // Flags override it; the same flags as the blob give the same logits.
    let same = json_of(&os(&[
        "run",
        b,
        "--image",
        image,
        "--json",
        "--interpolation",
        "bicubic",
        "--channels",
        "bgr",
        "--crop-pct",
        "0.9",
    ]));
    assert_eq!(same["logits"], v["logits"]);
    let other = json_of(&os(&[
        "run",
        b,
        "--image",
        image,
        "--json",
        "--interpolation",
        "nearest",
        "--image-size",
        "32",
    ]));
    assert_eq!(other["image_size"], serde_json::json!([32, 32]));
    assert_eq!(other["preprocessing"]["interpolation"], "nearest");
    assert_eq!(other["preprocessing"]["resize_to"], 35);
    // A blob without metadata keeps ImageNet's preprocessing at the model's native size
    // (its stage-1 position grid is 56: 224).
    let bare = dir.path().join("bare.soft");
    let map = soft_host::checkpoint::read_checkpoint(
        &data("golden/micro_64/ckpt.pth"),
        soft_host::pth::Prefer::Ema,
    )
    .unwrap()
    .tensors;
    let cfg = soft_host::infer_config(&map, &Default::default()).unwrap();
    let bytes = soft_host::build_blob(&map, &cfg, soft_host::WeightDtype::F32).unwrap();
    std::fs::write(&bare, &bytes).unwrap();
    let v = json_of(&os(&["inspect", bare.to_str().unwrap(), "--json"]));
    assert_eq!(v["metadata"], serde_json::Value::Null);
    let t = soft().arg("inspect").arg(&bare).assert().success();
    assert!(String::from_utf8_lossy(&t.get_output().stdout).contains(
        "metadata: none (soft run --image preprocesses as ImageNet's evaluation at 224x224)"
    ));
    let v = json_of(&os(&[
        "run",
        bare.to_str().unwrap(),
        "--image",
        image,
        "--json",
    ]));
    assert_eq!(v["preprocessing"]["interpolation"], "bilinear");
    assert_eq!(v["preprocessing"]["resize_to"], 256);
    assert_eq!(v["top"][0]["label"], serde_json::Value::Null);
}

#[test]
fn bad_metadata_flags_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.soft");
    let short = write(dir.path(), "short.txt", b"a\nb\n");
    let control = write(
        dir.path(),
        "control.txt",
        b"a\nb\x1b[31m\nc\nd\ne\nf\ng\nh\ni\nj\n",
    );
    let ckpt = data("golden/micro_64/ckpt.pth");
    let base = [
        "convert",
        ckpt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--variant",
        "plain",
    ];
    for (extra, want) in [
        (
            vec!["--labels", short.to_str().unwrap()],
            "2 labels for a model of 10 classes",
        ),
        (
            vec!["--labels", control.to_str().unwrap()],
            "line 2 holds a control character",
        ),
        (vec!["--crop-pct", "0"], "--crop-pct 0 is outside (0, 1]"),
        (
            vec!["--std", "1,0,1"],
            "--std [1.0, 0.0, 1.0] is not positive",
        ),
        (vec!["--mean", "1,2"], "is not R,G,B or one number"),
        (
            vec!["--value-range", "-1"],
            "--value-range -1 is not a positive number",
        ),
        (vec!["--input-size", "0"], "--input-size 0 is out of range"),
        (vec!["--name", "a\nb"], "--name holds a control character"),
        (
            vec!["--interpolation", "lanczos"],
            "invalid value 'lanczos'",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        fails(&os(&args), &[want]);
        assert!(!out.exists());
    }
}

/// An 8×8 digit of the test split as a grey PNG, 0..16 stored as `round(v · 255 / 16)`.
fn digit_png(digit: &[f32], path: &Path) {
    let levels: Vec<u8> = digit
        .iter()
        .map(|&v| (v * 255.0 / 16.0).round() as u8)
        .collect();
    image::GrayImage::from_raw(8, 8, levels)
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
fn the_demos_blobs_classify_digit_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    soft().args(["demo", "--out"]).arg(&out).assert().success();
    let blob = out.join("soft_digits_f16.soft");
    let split = soft_host::demo::load_split(&soft_host::demo::default_dir()).unwrap();
    let b = blob.to_str().unwrap();
    for (i, (digit, &label)) in split.images.iter().zip(&split.labels).take(12).enumerate() {
        let png = dir.path().join(format!("digit{i}.png"));
        digit_png(digit, &png);
        let v = json_of(&os(&["run", b, "--image", png.to_str().unwrap(), "--json"]));
        assert_eq!(v["top"][0]["class"], label, "test digit {i}");
        assert_eq!(v["top"][0]["label"], label.to_string());
        assert_eq!(v["image_size"], serde_json::json!([64, 64]));
    }
    // The text output names the blob's preprocessing and labels.
    let png = dir.path().join("digit0.png");
    let t = soft()
        .args(["run", b, "--image"])
        .arg(&png)
        .assert()
        .success();
    let t = String::from_utf8(t.get_output().stdout.clone()).unwrap();
    assert!(
        t.contains(
            "image: shorter side to 64 (64 / 1), centre 64x64 crop, nearest, GREY, v/255, \
             mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5] (the blob's, with any flags over it)"
        ),
        "{t}"
    );
    assert!(
        t.contains(&format!(" 1. class {0} {0}:", split.labels[0])),
        "{t}"
    );
    // The same digit as a 64x64 colour PNG (grey ink on a tinted page) is the same input
    // to within the tint's luminance.
    let big = image::RgbImage::from_fn(64, 64, |x, y| {
        let v = (split.images[0][(y / 8 * 8 + x / 8) as usize] * 255.0 / 16.0).round() as u8;
        image::Rgb([v, v, v])
    });
    let big_png = dir.path().join("big.png");
    big.save(&big_png).unwrap();
    let v = json_of(&os(&[
        "run",
        b,
        "--image",
        big_png.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["top"][0]["class"], split.labels[0]);
    // eval on a folder of them: every digit right, with the blob's labels and
    // preprocessing.
    let data_dir = dir.path().join("digits");
    for (i, (digit, &label)) in split.images.iter().zip(&split.labels).take(40).enumerate() {
        let class = data_dir.join(label.to_string());
        std::fs::create_dir_all(&class).unwrap();
        digit_png(digit, &class.join(format!("{i}.png")));
    }
    let v = json_of(&os(&["eval", b, data_dir.to_str().unwrap(), "--json"]));
    assert_eq!(v["samples"], 40);
    assert_eq!(v["top1_accuracy"], 1.0);
    assert_eq!(v["preprocessing"]["interpolation"], "nearest");
    // inspect shows where everything came from.
    let v = json_of(&os(&["inspect", b, "--json"]));
    assert_eq!(v["metadata"]["variant"]["origin"], "writer");
    assert_eq!(v["metadata"]["labels"][9], "9");
}

/// The CRC-32 (IEEE) of `bytes`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// `blob` with `edit` applied to its metadata section (given the section's offset) and
/// the checksum made to match, as a hostile writer would.
fn edited_blob(blob: &[u8], edit: impl FnOnce(&mut [u8], usize)) -> Vec<u8> {
    let mut b = blob.to_vec();
    let at = u32::from_le_bytes(b[44..48].try_into().unwrap()) as usize;
    edit(&mut b, at);
    let n = b.len();
    let crc = crc32(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Offset of the metadata record `tag` in `blob`'s section at `at`.
fn record(blob: &[u8], at: usize, tag: u32) -> usize {
    let mut r = at + 8;
    loop {
        let t = u32::from_le_bytes(blob[r..r + 4].try_into().unwrap());
        let len = u32::from_le_bytes(blob[r + 4..r + 8].try_into().unwrap()) as usize;
        if t == tag {
            return r;
        }
        r += 8 + len.next_multiple_of(4);
    }
}

#[test]
fn hostile_metadata_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blob_path = dir.path().join("m.soft");
    let labels = write(
        dir.path(),
        "labels.txt",
        (0..10)
            .map(|i| format!("l{i}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    soft()
        .arg("convert")
        .arg(data("golden/micro_64/ckpt.safetensors"))
        .arg("-o")
        .arg(&blob_path)
        .args(["--variant", "plain", "--name", "micro", "--labels"])
        .arg(&labels)
        .assert()
        .success();
    let good = std::fs::read(&blob_path).unwrap();
    const LABELS: u32 = 12;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad-utf8",
            edited_blob(&good, |b, at| {
                let r = record(b, at, LABELS);
                // Label 3's first byte: after the count and ten ends.
                b[r + 8 + 4 + 40 + 6] = 0xff;
            }),
            "corrupt model metadata: label 3 is not UTF-8",
        ),
        (
            "overlapping-labels",
            edited_blob(&good, |b, at| {
                let r = record(b, at, LABELS);
                b[r + 8 + 4 + 4 * 5..r + 8 + 4 + 4 * 6].copy_from_slice(&1u32.to_le_bytes());
            }),
            "corrupt model metadata: label 5 ends outside the label text",
        ),
        (
            "label-count",
            edited_blob(&good, |b, at| {
                let r = record(b, at, LABELS);
                b[r + 8..r + 12].copy_from_slice(&11u32.to_le_bytes());
            }),
            "label count differs from the model's classes",
        ),
        (
            "truncated",
            edited_blob(&good, |b, _| {
                let len = u32::from_le_bytes(b[48..52].try_into().unwrap());
                b[48..52].copy_from_slice(&(len - 8).to_le_bytes());
            }),
            "corrupt model metadata: record runs past the end of the section",
        ),
        (
            "overlapping-data",
            edited_blob(&good, |b, at| {
                b[44..48].copy_from_slice(&(at as u32 - 64).to_le_bytes());
            }),
            "section overlaps the header, config, tensor table or data",
        ),
        (
            "past-the-end",
            edited_blob(&good, |b, _| {
                b[48..52].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
            "section runs past the end of the blob",
        ),
    ];
    for (name, bytes, want) in cases {
        let path = write(dir.path(), &format!("{name}.soft"), &bytes);
        for command in ["inspect", "run"] {
            let mut args = vec![OsStr::new(command), path.as_os_str()];
            let input = data("golden/micro_64/input.npy");
            if command == "run" {
                args.extend([OsStr::new("--input-npy"), input.as_os_str()]);
            }
            fails(&args, &[want]);
        }
    }
    // A newer metadata version: the model still runs, and says why its metadata is unread.
    let newer = edited_blob(&good, |b, at| b[at + 4] = 9);
    let path = write(dir.path(), "newer.soft", &newer);
    let input = data("golden/micro_64/input.npy");
    let a = soft()
        .arg("run")
        .arg(&path)
        .arg("--input-npy")
        .arg(&input)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(
        stderr.contains("unsupported model metadata version 9; ignoring its metadata"),
        "{stderr}"
    );
    let v = json_of(&os(&["inspect", path.to_str().unwrap(), "--json"]));
    assert_eq!(v["metadata"], serde_json::Value::Null);
    assert_eq!(
        v["metadata_problem"],
        "unsupported model metadata version 9"
    );
    assert_eq!(v["usable"], true);
}

#[test]
fn verify_refuses_a_blob_of_the_other_variant_than_its_checkpoint_says() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = write(
        dir.path(),
        "norm.pth",
        &wrapped_pth(
            "norm_micro_64",
            &[text("arch"), text("soft_norm_tiny")].concat(),
        ),
    );
    // As an older build would have converted it: plain, from the bare state dict.
    let blob = dir.path().join("plain.soft");
    convert(&data("golden/norm_micro_64/ckpt.pth"), &blob, &[]);
    fails(
        &[
            "verify".as_ref(),
            blob.as_os_str(),
            "--reference".as_ref(),
            ckpt.as_os_str(),
        ],
        &["the blob is SOFT but arch = 'soft_norm_tiny' says SOFT-Norm"],
    );
}
