//! The `soft` binary as a hostile user meets it: closed pipes, outputs that are inputs,
//! FIFOs, devices, directories and odd file names, overflowing activations, a verify
//! that must fail. It never panics, never destroys a file and never prints a wrong
//! answer with exit 0.

#![cfg(unix)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{convert, edited_micro_checkpoint, micro_blob, one_error_line, soft, soft_process};
use predicates::prelude::*;
use soft_host::npy;
use soft_tests::data;

fn input_npy() -> PathBuf {
    data("golden/micro_64/input.npy")
}

/// Runs `soft args…` with standard output closed before it writes anything, as
/// `soft … | head -0` does; returns its exit status and standard error.
fn with_closed_stdout(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    let mut child = soft_process()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_ends_output_quietly_and_the_work_still_happens() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let converted = dir.path().join("again.soft");
    let ckpt = data("golden/micro_64/ckpt.pth");
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["inspect".as_ref(), blob.as_os_str()],
        vec!["plan".as_ref(), "--arch".as_ref(), "soft_tiny".as_ref()],
        vec![
            "run".as_ref(),
            blob.as_os_str(),
            "--input-npy".as_ref(),
            input_npy().into_os_string().leak(),
        ],
        vec![
            "convert".as_ref(),
            ckpt.as_os_str(),
            "-o".as_ref(),
            converted.as_os_str(),
            "--variant".as_ref(),
            "plain".as_ref(),
        ],
        vec!["--help".as_ref()],
    ];
    for args in cases {
        let (status, stderr) = with_closed_stdout(&args);
        assert!(status.success(), "{args:?}: {status} {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The blob was written although nobody read the report.
    assert_eq!(
        std::fs::read(&converted).unwrap(),
        std::fs::read(&blob).unwrap()
    );
}

#[test]
fn an_output_that_is_an_input_is_refused_under_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("x.pth");
    std::fs::copy(data("golden/micro_64/ckpt.pth"), &ckpt).unwrap();
    let original = std::fs::read(&ckpt).unwrap();
    let hard = dir.path().join("hard.pth");
    std::fs::hard_link(&ckpt, &hard).unwrap();
    let link = dir.path().join("link.pth");
    std::os::unix::fs::symlink(&ckpt, &link).unwrap();
    for out in [&ckpt, &hard, &link, &dir.path().join(".").join("x.pth")] {
        let a = soft()
            .arg("convert")
            .arg(&ckpt)
            .arg("-o")
            .arg(out)
            .assert()
            .failure()
            .code(1);
        let line = one_error_line(a.get_output());
        assert!(line.contains("same file as the input"), "{line}");
    }
    assert_eq!(std::fs::read(&ckpt).unwrap(), original);

    let blob = micro_blob(dir.path());
    let before = std::fs::read(&blob).unwrap();
    soft()
        .arg("plan")
        .arg(&blob)
        .arg("--svg")
        .arg(&blob)
        .assert()
        .failure()
        .stderr(predicate::str::contains("same file as the input"));
    let npy_copy = dir.path().join("input.npy");
    std::fs::copy(input_npy(), &npy_copy).unwrap();
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(&npy_copy)
        .arg("--logits-out")
        .arg(&npy_copy)
        .assert()
        .failure()
        .stderr(predicate::str::contains("same file as the input"));
    assert_eq!(std::fs::read(&blob).unwrap(), before);
    assert_eq!(
        std::fs::read(&npy_copy).unwrap(),
        std::fs::read(input_npy()).unwrap()
    );
}

/// Runs micro_64 on its golden input with `--logits-out out`.
fn run_to(blob: &Path, out: &Path) -> assert_cmd::assert::Assert {
    soft()
        .arg("run")
        .arg(blob)
        .arg("--input-npy")
        .arg(input_npy())
        .arg("--logits-out")
        .arg(out)
        .assert()
}

#[test]
fn fifos_devices_and_symlinks_are_written_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());

    let fifo = dir.path().join("logits.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    run_to(&blob, &fifo).success();
    let logits = npy::parse(&reader.join().unwrap()).unwrap();
    assert_eq!(logits.shape, vec![1, 10]);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    run_to(&blob, Path::new("/dev/null")).success();
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    // Standard output by name is the process's own: redirected to a file, the file gets
    // the logits then the report (not replaced, not overwritten from its start); piped,
    // the reader gets them.
    let log = dir.path().join("log.txt");
    std::fs::write(&log, b"earlier\n").unwrap();
    let inode = std::fs::metadata(&log).unwrap().ino();
    let appended = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let status = soft_process()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(input_npy())
        .args(["--logits-out", "/dev/stdout"])
        .stdout(appended)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read(&log).unwrap();
    assert_eq!(std::fs::metadata(&log).unwrap().ino(), inode);
    assert!(text.starts_with(b"earlier\n\x93NUMPY"), "{text:?}");
    assert!(String::from_utf8_lossy(&text).contains("arena high-water mark"));
    let piped = soft_process()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(input_npy())
        .args(["--logits-out", "/dev/stdout"])
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(piped.stdout.starts_with(b"\x93NUMPY"));

    // A symbolic link is written through: its target gets the logits, the link stays.
    let target = dir.path().join("target.npy");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("link.npy");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    run_to(&blob, &link).success();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(npy::read(&target).unwrap().data, logits.data);
    // A link to nothing is refused rather than guessed at.
    let dangling = dir.path().join("dangling.npy");
    std::os::unix::fs::symlink(dir.path().join("nowhere/x.npy"), &dangling).unwrap();
    let a = run_to(&blob, &dangling).failure().code(1);
    assert!(one_error_line(a.get_output()).contains("symbolic link to nothing"));
}

#[test]
fn outputs_get_the_mode_file_create_gives() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&blob), mode(&plain));
    let logits = dir.path().join("logits.npy");
    run_to(&blob, &logits).success();
    assert_eq!(mode(&logits), mode(&plain));
    // Replacing a file keeps its mode, as File::create does.
    std::fs::set_permissions(&logits, std::fs::Permissions::from_mode(0o604)).unwrap();
    run_to(&blob, &logits).success();
    assert_eq!(mode(&logits), 0o604);
}

#[test]
fn a_directory_as_output_is_named_as_such_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = data("golden/micro_64/ckpt.safetensors");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    for out in [
        format!("{}/", sub.display()),
        sub.display().to_string(),
        ".".into(),
        format!("{}/new/", dir.path().display()),
    ] {
        let a = soft()
            .current_dir(&sub)
            .arg("convert")
            .arg(&ckpt)
            .arg("-o")
            .arg(&out)
            .assert()
            .failure()
            .code(1);
        let line = one_error_line(a.get_output());
        assert!(line.contains("is a directory"), "{out}: {line}");
    }
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Compiles `rs` as a library with rustc: the generated source must be valid Rust.
fn compiles(rs: &Path) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    std::process::Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
        ])
        .args(["--crate-name", "generated"])
        .arg("--out-dir")
        .arg(rs.parent().unwrap().join("rustc-out"))
        .arg(rs)
        .status()
        .unwrap()
        .success()
}

#[test]
fn export_writes_valid_inert_rust_for_any_file_name_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    let names = [
        "plain.rs",
        "q\"uote.rs",
        "new\nline.rs",
        "back\\slash.rs",
        "*{} ±.rs",
    ];
    let mut lines = None;
    for name in names {
        let sub = tempfile::tempdir_in(dir.path()).unwrap();
        let rs = sub.path().join(name);
        soft()
            .arg("export")
            .arg(&blob)
            .arg("--rust")
            .arg(&rs)
            .assert()
            .success();
        let src = std::fs::read_to_string(&rs).unwrap();
        // Inert: a newline in a name adds no line, so it cannot reach code.
        let count = src.lines().count();
        assert_eq!(*lines.get_or_insert(count), count, "{name:?}:\n{src}");
        assert!(compiles(&rs), "{name:?}:\n{src}");
        assert_eq!(
            std::fs::read(rs.with_extension("soft")).unwrap(),
            std::fs::read(&blob).unwrap()
        );
    }

    // Beside its own blob: the blob is used where it is, not rewritten.
    let inode = std::fs::metadata(&blob).unwrap().ino();
    let beside = blob.with_extension("rs");
    soft()
        .arg("export")
        .arg(&blob)
        .arg("--rust")
        .arg(&beside)
        .assert()
        .success();
    assert_eq!(std::fs::metadata(&blob).unwrap().ino(), inode);
    assert!(compiles(&beside));

    // A directory as the Rust output, or where the blob would go: nothing is written.
    let empty = tempfile::tempdir_in(dir.path()).unwrap();
    let taken = empty.path().join("model.soft");
    std::fs::create_dir(&taken).unwrap();
    for rs in [empty.path().to_path_buf(), empty.path().join("model.rs")] {
        let a = soft()
            .arg("export")
            .arg(&blob)
            .arg("--rust")
            .arg(&rs)
            .assert()
            .failure()
            .code(1);
        assert!(one_error_line(a.get_output()).contains("is a directory"));
        let left: Vec<_> = std::fs::read_dir(empty.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["model.soft"], "left behind {left:?}");
    }
}

#[test]
fn the_demo_checks_its_outputs_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("soft_digits_f16.soft")).unwrap();
    let a = soft()
        .arg("demo")
        .arg("--out")
        .arg(dir.path())
        .assert()
        .failure()
        .code(1);
    assert!(one_error_line(a.get_output()).contains("is a directory"));
    // Refused before the split was run: no table, no blob.
    assert!(a.get_output().stdout.is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn verify_fails_against_a_different_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let blob = micro_blob(dir.path());
    // Same architecture, other weights: every tensor's values in reverse order.
    let other = dir.path().join("other.safetensors");
    std::fs::write(&other, edited_micro_checkpoint(|_, v| v.reverse())).unwrap();
    let a = soft()
        .arg("verify")
        .arg(&blob)
        .arg("--reference")
        .arg(&other)
        .args(["--inputs", "3"])
        .assert()
        .failure()
        .code(1);
    let out = a.get_output();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let line = one_error_line(out);
    assert!(
        line.contains("does not match") && line.contains("cosine"),
        "{line}"
    );
    // Thresholds are the user's to loosen (and to tighten).
    soft()
        .arg("verify")
        .arg(&blob)
        .arg("--reference")
        .arg(&other)
        .args(["--inputs", "3", "--min-cosine", "-1"])
        .args(["--max-relative-error", "1e9", "--min-agreement", "0"])
        .assert()
        .success()
        .stdout(predicate::str::contains("passed"));
    let golden = data("golden/micro_64/ckpt.safetensors");
    soft()
        .arg("verify")
        .arg(&blob)
        .arg("--reference")
        .arg(&golden)
        .args(["--inputs", "2", "--max-relative-error", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--max-relative-error"));
    soft()
        .arg("verify")
        .arg(&blob)
        .arg("--reference")
        .arg(&golden)
        .args(["--inputs", "2", "--min-agreement", "1.5"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("between 0 and 1"));
}

#[test]
fn overflowing_f16_activations_are_an_error_that_names_the_phase() {
    let dir = tempfile::tempdir().unwrap();
    // A LayerNorm gain of 1e6: stage 2's token map exceeds f16's ±65504.
    let ckpt = dir.path().join("loud.safetensors");
    std::fs::write(
        &ckpt,
        edited_micro_checkpoint(|key, v| {
            if key == "block2.0.att.norm2.weight" {
                v.iter_mut().for_each(|x| *x *= 1e6);
            }
        }),
    )
    .unwrap();
    let blob = dir.path().join("loud.soft");
    convert(&ckpt, &blob, &["--dtype", "f32"])
        .stderr(predicate::str::contains("warning").and(predicate::str::contains("f16")));
    let a = soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(input_npy())
        .assert()
        .failure()
        .code(1);
    let line = one_error_line(a.get_output());
    assert!(
        line.contains("stage 2 block 0") && line.contains("--activations f32"),
        "{line}"
    );
    assert!(a.get_output().stdout.is_empty());
    soft()
        .arg("run")
        .arg(&blob)
        .arg("--input-npy")
        .arg(input_npy())
        .args(["--activations", "f32"])
        .assert()
        .success()
        .stdout(predicate::str::contains("NaN").not());
}

#[test]
fn every_error_is_one_line_whatever_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad\nname\r.soft");
    std::fs::write(&bad, b"not a model\n\n").unwrap();
    for args in [&["inspect"][..], &["run", "--input-npy", "/nonexistent"]] {
        let a = soft()
            .arg(args[0])
            .arg(&bad)
            .args(&args[1..])
            .assert()
            .failure()
            .code(1);
        let line = one_error_line(a.get_output());
        assert!(line.contains("bad\\nname\\r.soft"), "{line}");
    }
    soft()
        .arg("verify")
        .arg(&bad)
        .args([
            "--reference",
            "x.pth",
            "--inputs",
            "2",
            "--input-npy",
            "y.npy",
        ])
        .assert()
        .failure()
        .code(1);
}
