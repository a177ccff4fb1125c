//! `soft eval` end to end: an image folder against `soft run` image by image, the demo's
//! digits as an `.npy` batch against their checkpoint, the same counts on any number of
//! threads, and one clear error line (exit 1, no output file) per bad input.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

mod common;

use common::{convert, json_output, micro_blob, one_error_line, soft};
use predicates::prelude::*;
use soft_host::npy;
use soft_tests::data;

/// A PNG of `w × h` pixels whose colours depend on `seed`.
fn png(path: &Path, w: u32, h: u32, seed: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = |k: u32| ((x * (3 + seed + k) + y * (5 + 2 * seed) + 40 * k * seed) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
    .save(path)
    .unwrap();
}

/// An image folder under `dir` with `images` PNGs in each of `classes`.
fn folder(dir: &Path, classes: &[&str], images: u32) -> PathBuf {
    let root = dir.join("images");
    for (c, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..images {
            let seed = 7 * c as u32 + i;
            png(
                &root.join(class).join(format!("{i}.png")),
                70 + 9 * i,
                64,
                seed,
            );
        }
    }
    root
}

/// Runs `soft args…`, expects success, returns standard output as JSON and standard error.
fn json_of(args: &[&OsStr]) -> (serde_json::Value, String) {
    let (v, out) = json_output(args);
    (v, String::from_utf8(out.stderr).unwrap())
}

/// An `(N,)` int32 `.npy` (numpy's header, written by hand: the crate writes int64 only).
fn int32_npy(labels: &[i32]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<i4', 'fortran_order': False, 'shape': ({},), }}",
        labels.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(labels.iter().flat_map(|l| l.to_le_bytes()));
    out
}

#[test]
fn a_folder_is_counted_as_soft_run_classifies_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let root = folder(dir.path(), &["bird", "ant", "cat"], 2);
    // A nested image counts for its class; other files are skipped with a warning.
    std::fs::create_dir(root.join("cat/more")).unwrap();
    png(&root.join("cat/more/z.JPG.png"), 80, 80, 3);
    std::fs::write(root.join("ant/notes.txt"), "not an image").unwrap();
    let svg = dir.path().join("confusion.svg");
    let (v, stderr) = json_of(&[
        "eval".as_ref(),
        blob.as_os_str(),
        root.as_os_str(),
        "--image-size".as_ref(),
        "64".as_ref(),
        "--confusion".as_ref(),
        svg.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(
        stderr.contains("3 class folders for a model of 10 classes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped 1 file") && stderr.contains("notes.txt"),
        "{stderr}"
    );
    assert_eq!(v["format"], "folder");
    assert_eq!(v["samples"], 7);
    assert_eq!(v["skipped_files"], 1);
    assert_eq!(v["image_size"], serde_json::json!([64, 64]));
    // Classes in folder-name order: ant 0, bird 1, cat 2, whatever the creation order.
    let expected = [
        ("ant", vec!["ant/0.png", "ant/1.png"]),
        ("bird", vec!["bird/0.png", "bird/1.png"]),
        ("cat", vec!["cat/0.png", "cat/1.png", "cat/more/z.JPG.png"]),
    ];
    let (mut top1, mut top5) = (0, 0);
    for (class, (label, images)) in expected.iter().enumerate() {
        let (mut class_top1, mut class_top5) = (0, 0);
        for image in images {
            let (run, _) = json_of(&[
                "run".as_ref(),
                blob.as_os_str(),
                "--image".as_ref(),
                root.join(image).as_os_str(),
                "--image-size".as_ref(),
                "64".as_ref(),
                "--top".as_ref(),
                "5".as_ref(),
                "--json".as_ref(),
            ]);
            let top: Vec<u64> = run["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["class"].as_u64().unwrap())
                .collect();
            class_top1 += usize::from(top[0] == class as u64);
            class_top5 += usize::from(top.contains(&(class as u64)));
        }
        let c = &v["classes"][class];
        assert_eq!(c["class"], class);
        assert_eq!(c["label"], *label);
        assert_eq!(c["samples"], images.len());
        assert_eq!(c["top1_correct"], class_top1, "{label}");
        assert_eq!(c["top5_correct"], class_top5, "{label}");
        top1 += class_top1;
        top5 += class_top5;
    }
    assert_eq!(v["top1_correct"], top1);
    assert_eq!(v["top5_correct"], top5);
    let accuracy = v["top1_accuracy"].as_f64().unwrap();
    assert!((accuracy - top1 as f64 / 7.0).abs() < 1e-12);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(">ant</text>") && svg.contains(">cat</text>"));
}

/// The first `n` digits of the demo's test split as a `(n,3,64,64)` batch and their labels.
fn digits_batch(dir: &Path, n: usize) -> (PathBuf, PathBuf, Vec<i64>) {
    let split = soft_host::demo::load_split(&soft_host::demo::default_dir()).unwrap();
    let inputs: Vec<f32> = split.images[..n]
        .iter()
        .flat_map(|d| soft_host::demo::preprocess(d))
        .collect();
    let labels: Vec<i64> = split.labels[..n].iter().map(|&l| l as i64).collect();
    let (x, y) = (dir.join("digits.npy"), dir.join("labels.npy"));
    std::fs::write(&x, npy::to_bytes(&[n, 3, 64, 64], &inputs)).unwrap();
    std::fs::write(&y, npy::to_bytes_i64(&[n], &labels)).unwrap();
    (x, y, labels)
}

#[test]
fn the_demo_digits_as_a_batch_are_classified_and_agree_with_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = soft_host::demo::default_dir().join("soft_digits.pth");
    let (x, y, labels) = digits_batch(dir.path(), 60);
    // W8A8 blobs carry a config flag their checkpoint does not: still the same model.
    for dtype in ["w8a8", "int8"] {
        let blob = dir.path().join("digits.soft");
        convert(&ckpt, &blob, &["--dtype", dtype]);
        let (v, stderr) = json_of(&[
            "eval".as_ref(),
            blob.as_os_str(),
            x.as_os_str(),
            "--labels".as_ref(),
            y.as_os_str(),
            "--against".as_ref(),
            ckpt.as_os_str(),
            "--json".as_ref(),
        ]);
        assert_eq!(
            stderr, "",
            "nothing on standard error when it is not a terminal"
        );
        assert_eq!(v["format"], "npy");
        assert_eq!(v["samples"], 60);
        assert!(v["top1_accuracy"].as_f64().unwrap() >= 0.97, "{dtype}: {v}");
        assert!(v["top5_accuracy"].as_f64().unwrap() >= v["top1_accuracy"].as_f64().unwrap());
        let against = &v["against"];
        assert!(
            against["agreement"].as_f64().unwrap() >= 0.95,
            "{dtype}: {v}"
        );
        let diff = against["max_abs_logit_diff"].as_f64().unwrap();
        assert!(diff > 0.0 && diff < 5.0, "{dtype} against f32: {diff}");
        let per_class: u64 = v["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["samples"].as_u64().unwrap())
            .sum();
        assert_eq!(per_class, 60);
        assert!(v["classes"][0]["label"].is_null());
    }
    let blob = dir.path().join("digits.soft");
    // The same labels as int32, and the text output, with --limit.
    let y32 = dir.path().join("labels32.npy");
    let small: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
    std::fs::write(&y32, int32_npy(&small)).unwrap();
    soft()
        .arg("eval")
        .arg(&blob)
        .arg(&x)
        .arg("--labels")
        .arg(&y32)
        .args(["--limit", "10", "--against"])
        .arg(&blob)
        .assert()
        .success()
        .stderr("")
        .stdout(
            predicate::str::contains("10 inputs of")
                .and(predicate::str::contains("top-1 accuracy"))
                .and(predicate::str::contains("top-5 accuracy"))
                .and(predicate::str::contains(
                    "| class | label | samples | top-1 | top-5 |",
                ))
                .and(predicate::str::contains(
                    "(f32 activations): top-1 agreement 100.00 % (10 of 10)",
                )),
        );
}

/// `soft eval … --json` with `threads` threads, the timings removed.
fn counts(args: &[&OsStr], threads: &str) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--threads", threads, "--json"].map(OsStr::new));
    let (mut v, _) = json_of(&all);
    assert_eq!(v["threads"], threads.parse::<u64>().unwrap());
    for timing in ["seconds", "samples_per_s", "threads"] {
        v.as_object_mut().unwrap().remove(timing);
    }
    v
}

#[test]
fn counts_and_confusion_matrices_are_the_same_on_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let root = folder(dir.path(), &["a", "b", "c", "d"], 2);
    let ckpt = data("golden/micro_64/ckpt.pth");
    let (mut svgs, mut results) = (Vec::new(), Vec::new());
    for threads in ["1", "2"] {
        let svg = dir.path().join(format!("c{threads}.svg"));
        svgs.push(svg.clone());
        let args: [&OsStr; 9] = [
            "eval".as_ref(),
            blob.as_os_str(),
            root.as_os_str(),
            "--image-size".as_ref(),
            "64".as_ref(),
            "--against".as_ref(),
            ckpt.as_os_str(),
            "--confusion".as_ref(),
            svg.as_os_str(),
        ];
        let mut v = counts(&args, threads);
        assert_eq!(v["confusion"], svg.display().to_string());
        v.as_object_mut().unwrap().remove("confusion");
        results.push(v);
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0]["samples"], 8);
    assert_eq!(
        std::fs::read(&svgs[0]).unwrap(),
        std::fs::read(&svgs[1]).unwrap()
    );
    // A batch of random inputs: every sample on the other thread, the same counts.
    let n = 9;
    let inputs: Vec<f32> = (0..n * 3 * 64 * 64)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    std::fs::write(&x, npy::to_bytes(&[n, 3, 64, 64], &inputs)).unwrap();
    let labels: Vec<i64> = (0..n as i64).map(|i| (i * 3) % 10).collect();
    std::fs::write(&y, npy::to_bytes_i64(&[n], &labels)).unwrap();
    let args: [&OsStr; 5] = [
        "eval".as_ref(),
        blob.as_os_str(),
        x.as_os_str(),
        "--labels".as_ref(),
        y.as_os_str(),
    ];
    let one = counts(&args, "1");
    assert_eq!(one["samples"], n);
    assert_eq!(one, counts(&args, "2"));
    assert_eq!(one, counts(&args, "3"));
}

/// Runs `soft eval args…` and checks it fails with exit 1 and one line holding `want`.
fn eval_fails(args: &[&OsStr], want: &str) {
    let a = soft().arg("eval").args(args).assert().failure().code(1);
    let line = one_error_line(a.get_output());
    assert!(line.contains(want), "{args:?}: {line:?} lacks {want:?}");
    assert!(a.get_output().stdout.is_empty(), "{args:?}");
}

#[test]
fn bad_data_gives_one_clear_error_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let b = blob.as_os_str();
    let svg = dir.path().join("c.svg");
    let confusion: [&OsStr; 2] = ["--confusion".as_ref(), svg.as_os_str()];

    // Batches: labels of the wrong shape, type or range; inputs of the wrong shape.
    let n = 4;
    let x = dir.path().join("x.npy");
    std::fs::write(
        &x,
        npy::to_bytes(&[n, 3, 64, 64], &vec![0.5; n * 3 * 64 * 64]),
    )
    .unwrap();
    let labels = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let short = labels("short.npy", npy::to_bytes_i64(&[3], &[0, 1, 2]));
    let wide = labels("wide.npy", npy::to_bytes_i64(&[4, 1], &[0, 1, 2, 3]));
    let floats = labels("floats.npy", npy::to_bytes(&[4], &[0.0, 1.0, 2.0, 3.0]));
    let big = labels("big.npy", npy::to_bytes_i64(&[4], &[0, 1, 10, 3]));
    let negative = labels("negative.npy", int32_npy(&[0, -1, 2, 3]));
    let good = labels("good.npy", npy::to_bytes_i64(&[4], &[0, 1, 2, 3]));
    for (labels, want) in [
        (&short, "labels shape [3]; expected (4,)"),
        (&wide, "labels shape [4, 1]; expected (4,)"),
        (&floats, "expected int64 (\"<i8\") or int32 (\"<i4\")"),
        (
            &big,
            "label 10 of sample 2 is not a class of the model (0 to 9)",
        ),
        (&negative, "label -1 of sample 1 is not a class"),
    ] {
        let mut args: Vec<&OsStr> = vec![b, x.as_os_str(), "--labels".as_ref(), labels.as_os_str()];
        args.extend(confusion);
        eval_fails(&args, want);
    }
    let gray = dir.path().join("gray.npy");
    std::fs::write(
        &gray,
        npy::to_bytes(&[4, 1, 64, 64], &vec![0.0; 4 * 64 * 64]),
    )
    .unwrap();
    eval_fails(
        &[b, gray.as_os_str(), "--labels".as_ref(), good.as_os_str()],
        "batch shape [4, 1, 64, 64]; expected (N,3,H,W)",
    );
    eval_fails(&[b, x.as_os_str()], "a .npy batch needs --labels");
    eval_fails(
        &[
            b,
            x.as_os_str(),
            "--labels".as_ref(),
            good.as_os_str(),
            "--image-size".as_ref(),
            "64".as_ref(),
        ],
        "--image-size and the preprocessing flags are for an image folder",
    );
    eval_fails(
        &[
            b,
            x.as_os_str(),
            "--labels".as_ref(),
            good.as_os_str(),
            "--limit".as_ref(),
            "0".as_ref(),
        ],
        "--limit must be at least 1",
    );
    eval_fails(
        &[
            b,
            x.as_os_str(),
            "--labels".as_ref(),
            good.as_os_str(),
            "--threads".as_ref(),
            "0".as_ref(),
        ],
        "--threads must be 1 to 16",
    );

    // Folders: empty, a class without images, a file that is not the image it says,
    // more classes than the model has, labels that do not belong.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut args: Vec<&OsStr> = vec![b, empty.as_os_str()];
    args.extend(confusion);
    eval_fails(&args, "no class folders");
    let root = folder(dir.path(), &["a", "b"], 1);
    std::fs::create_dir(root.join("c")).unwrap();
    std::fs::write(root.join("c/readme.txt"), "no images here").unwrap();
    let mut args: Vec<&OsStr> = vec![b, root.as_os_str()];
    args.extend(confusion);
    eval_fails(&args, "class folder c holds no .png, .jpg or .jpeg images");
    std::fs::write(root.join("c/photo.jpg"), "not a JPEG at all").unwrap();
    eval_fails(&args, "photo.jpg");
    std::fs::remove_file(root.join("c/photo.jpg")).unwrap();
    for c in 0..9 {
        std::fs::create_dir(root.join(format!("extra{c}"))).unwrap();
        png(&root.join(format!("extra{c}/x.png")), 64, 64, c);
    }
    png(&root.join("c/x.png"), 64, 64, 1);
    eval_fails(&args, "has 12 class folders, more than the 10 classes of");
    eval_fails(
        &[b, root.as_os_str(), "--labels".as_ref(), good.as_os_str()],
        "--labels goes with a .npy batch",
    );
    eval_fails(&[b, dir.path().join("nowhere").as_os_str()], "nowhere");
    assert!(!svg.exists(), "a failed eval wrote its confusion matrix");

    // A model compared against one of other classes, or another architecture.
    let deep = dir.path().join("deep.soft");
    convert(&data("golden/deep_96_timm/ckpt.safetensors"), &deep, &[]);
    let with = |other: &Path, want: &str| {
        eval_fails(
            &[
                b,
                x.as_os_str(),
                "--labels".as_ref(),
                good.as_os_str(),
                "--against".as_ref(),
                other.as_os_str(),
            ],
            want,
        )
    };
    with(
        &deep,
        "the model has 10 classes, the one it is compared against 7",
    );
    with(
        &data("golden/deep_96_timm/ckpt.pth"),
        "architecture differs from the blob's",
    );
    // The confusion matrix may not overwrite an input.
    eval_fails(
        &[
            b,
            x.as_os_str(),
            "--labels".as_ref(),
            good.as_os_str(),
            "--confusion".as_ref(),
            good.as_os_str(),
        ],
        "same file as the input",
    );
}
