//! `soft crosscheck` end to end: the real binary against device logs made from the host's
//! own logits (as a board that matches would log them), then with one bit flipped, a
//! different blob, and a damaged log.

use std::path::Path;

mod common;

use common::{micro_blob, one_error_line, soft};
use predicates::prelude::*;
use soft_core::{ChwImage, Model, Precision, TestPattern};
use soft_host::demo::{default_dir, load_split, preprocess};

/// The lines a device that computes what the host computes would log for `blob`: digit 5
/// and a 64×64 test pattern, each class's bits, with what `probe-rs run` prints around
/// them; `flip` flips the lowest bit of one class of the pattern's run.
fn device_log(blob: &Path, flip: Option<usize>) -> String {
    let bytes = std::fs::read(blob).unwrap();
    let aligned = soft_host::AlignedBlob::new(&bytes);
    let model = Model::from_blob(aligned.as_bytes()).unwrap();
    let crc = soft_core::Blob::stored_crc32(aligned.as_bytes()).unwrap();
    let classes = model.config().num_classes;
    let mut arena = vec![0u8; 1 << 20];
    let mut run = |image: &mut dyn FnMut(&mut [u8], &mut [f32])| {
        let mut logits = vec![0.0f32; classes];
        image(&mut arena, &mut logits);
        logits.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
    };
    let digit = preprocess(&load_split(&default_dir()).unwrap().images[5]);
    let digit_bits = run(&mut |arena, logits| {
        let mut image = ChwImage::new(&digit, 64, 64).unwrap();
        model
            .run(&mut image, arena, Precision::F16, logits, &mut ())
            .unwrap();
    });
    let mut pattern_bits = run(&mut |arena, logits| {
        let mut image = TestPattern::new(64, 64, 7);
        model
            .run(&mut image, arena, Precision::F16, logits, &mut ())
            .unwrap();
    });
    if let Some(class) = flip {
        pattern_bits[class] ^= 1;
    }
    let hex = |bits: &[u32]| {
        bits.iter()
            .map(|b| format!("{b:08x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut log = String::from(
        "      Erasing ✔ 100% [####################] 624.00 KiB\n     Finished in 9.1s\n\
         SOFT-BOARD nrf52840-dk 25360 8\n\
         CLOCK 64000000 dwt-cycles\n\
         └─ soft_device::log::emit @ firmware/device/src/log.rs:70\n",
    );
    log += &format!("BLOB m {crc:08x} {} f16 {classes}\n", bytes.len());
    log += "LAYER m digit:5 the stem 1234\n";
    log += &format!("LOGITS m digit:5 640000 0 {classes} {}\n", hex(&digit_bits));
    // Split over two lines, as a device logs more than ten classes.
    let (a, b) = pattern_bits.split_at(4);
    log += &format!("LOGITS m pattern:7:64x64 650000 0 4 {}\n", hex(a));
    log += &format!("LOGITS m pattern:7:64x64 650000 4 {} {}\n", b.len(), hex(b));
    log + "MEMORY 25360 29536 21588\nDONE\n"
}

#[test]
fn matching_logs_pass_from_a_file_stdin_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let log_path = dir.path().join("log.txt");
    let log = device_log(&blob, None);
    std::fs::write(&log_path, &log).unwrap();

    soft()
        .arg("crosscheck")
        .arg(&blob)
        .arg("--device-log")
        .arg(&log_path)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "blob m (line 6), f16 activations, 10 classes",
        ))
        .stdout(predicate::str::contains("| digit:5 | 10/10 | 0 |"))
        .stdout(predicate::str::contains("| 640000 | 10.00 |"))
        .stdout(predicate::str::contains(
            "crosscheck OK: 2 inferences, all 20 logits bit-identical",
        ));

    soft()
        .arg("crosscheck")
        .arg(&blob)
        .args(["--device-log", "-", "--tag", "m"])
        .write_stdin(log.clone())
        .assert()
        .success()
        .stdout(predicate::str::contains("crosscheck OK: 2 inferences"));

    let out = soft()
        .arg("crosscheck")
        .arg(&blob)
        .arg("--device-log")
        .arg(&log_path)
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["first_difference"], serde_json::Value::Null);
    assert_eq!(v["clock"]["hz"], 64_000_000);
    let runs = v["blobs"][0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["input"], "pattern:7:64x64");
    assert_eq!(runs[1]["bit_identical"], 10);
}

#[test]
fn one_flipped_bit_fails_naming_the_class() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let log_path = dir.path().join("log.txt");
    std::fs::write(&log_path, device_log(&blob, Some(6))).unwrap();

    let assert = soft()
        .arg("crosscheck")
        .arg(&blob)
        .arg("--device-log")
        .arg(&log_path)
        .assert()
        .failure()
        .code(1)
        .stdout(predicate::str::contains("| pattern:7:64x64 | 9/10 | 1 |"))
        .stdout(predicate::str::contains("crosscheck OK").not());
    let line = one_error_line(assert.get_output());
    for want in [
        "differs from the device",
        "blob m pattern:7:64x64 (line 9), class 6: host ",
        "1 ulp apart",
        "1 of 20 logits differ, in 1 of 2 runs",
    ] {
        assert!(line.contains(want), "{line:?} lacks {want:?}");
    }

    let assert = soft()
        .arg("crosscheck")
        .arg(&blob)
        .arg("--device-log")
        .arg(&log_path)
        .arg("--json")
        .assert()
        .failure()
        .code(1);
    let v: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(v["passed"], false);
    assert_eq!(v["first_difference"]["class"], 6);
    assert_eq!(v["first_difference"]["input"], "pattern:7:64x64");
    assert_eq!(v["first_difference"]["ulps"], 1);
    one_error_line(assert.get_output());
}

#[test]
fn another_blob_or_a_damaged_log_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let good = device_log(&blob, None);
    let cases = [
        (
            good.replace("BLOB m ", "BLOB other "),
            "no BLOB line declares",
        ),
        (
            good.replace(" 650000 4 ", " 650000 3 "),
            "class 3 of m pattern:7:64x64 is logged twice (lines 9 and 10)",
        ),
        (
            good.lines()
                .filter(|l| !l.contains(" 650000 4 "))
                .collect::<Vec<_>>()
                .join("\n"),
            "m pattern:7:64x64 (line 9): no logit for 6 of its 10 classes (classes 4 to 9)",
        ),
        (
            good.replacen(" 640000 0 10 ", " 640000 0 10 zz", 1),
            "line 8: malformed LOGITS line",
        ),
    ];
    for (i, (log, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("log{i}.txt"));
        std::fs::write(&path, log).unwrap();
        let assert = soft()
            .arg("crosscheck")
            .arg(&blob)
            .arg("--device-log")
            .arg(&path)
            .assert()
            .failure()
            .code(1);
        let line = one_error_line(assert.get_output());
        assert!(line.contains(want), "case {i}: {line:?} lacks {want:?}");
        assert!(
            line.contains(&format!("device log {}", path.display())),
            "{line}"
        );
    }

    // The log of another blob: its CRC-32 is not the model's.
    let bytes = std::fs::read(&blob).unwrap();
    let crc =
        soft_core::Blob::stored_crc32(soft_host::AlignedBlob::new(&bytes).as_bytes()).unwrap();
    let other = good.replace(&format!("{crc:08x}"), &format!("{:08x}", crc ^ 0x8000_0000));
    let path = dir.path().join("other.txt");
    std::fs::write(&path, other).unwrap();
    let assert = soft()
        .arg("crosscheck")
        .arg(&blob)
        .arg("--device-log")
        .arg(&path)
        .assert()
        .failure()
        .code(1);
    let line = one_error_line(assert.get_output());
    assert!(
        line.contains("the device ran no blob with the model's CRC-32"),
        "{line}"
    );
    let assert = soft()
        .arg("crosscheck")
        .arg(&blob)
        .args(["--device-log", "/nonexistent/log.txt"])
        .assert()
        .failure()
        .code(1);
    assert!(one_error_line(assert.get_output()).contains("reading /nonexistent/log.txt"));
}
