//! What the CLI test files share and only they can: the `soft` binary, runs of it, and
//! checkpoints edited for them. Helpers that need no binary (where the test data is, the
//! golden cases) are `soft_tests`'s, the workspace's test-support crate.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::assert::Assert;
use assert_cmd::Command;
use soft_tests::data;

/// The `soft` binary.
pub fn soft() -> Command {
    Command::cargo_bin("soft").unwrap()
}

/// The `soft` binary as a plain process, for tests that need its pipes.
pub fn soft_process() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_soft"))
}

/// `soft convert ckpt -o blob --variant plain extra…`, which must succeed.
pub fn convert(ckpt: &Path, blob: &Path, extra: &[&str]) -> Assert {
    soft()
        .arg("convert")
        .arg(ckpt)
        .arg("-o")
        .arg(blob)
        .args(["--variant", "plain"])
        .args(extra)
        .assert()
        .success()
}

/// The micro_64 golden model as a blob in `dir`.
pub fn micro_blob(dir: &Path) -> PathBuf {
    let blob = dir.join("m.soft");
    convert(&data("golden/micro_64/ckpt.safetensors"), &blob, &[]);
    blob
}

/// Runs `soft args…`, which must succeed: its standard output parsed as JSON, and the
/// whole output.
pub fn json_output(args: &[&OsStr]) -> (serde_json::Value, std::process::Output) {
    let out = soft().args(args).assert().success().get_output().clone();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (v, out)
}

/// Runs `soft args…`, which must succeed: its standard output parsed as JSON.
pub fn json_of(args: &[&OsStr]) -> serde_json::Value {
    json_output(args).0
}

/// A checkpoint's tensors as `(key, dtype, shape, little-endian bytes)`.
pub type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// The micro_64 golden checkpoint after `edit`, as safetensors bytes.
pub fn edited_golden(edit: impl FnOnce(&mut Tensors)) -> Vec<u8> {
    use safetensors::tensor::{serialize, TensorView};
    let bytes = std::fs::read(data("golden/micro_64/ckpt.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    serialize(views, &None).unwrap()
}

/// The micro_64 golden checkpoint with every f32 tensor passed through
/// `edit(key, values)`.
pub fn edited_micro_checkpoint(mut edit: impl FnMut(&str, &mut [f32])) -> Vec<u8> {
    edited_golden(|tensors| {
        for (key, dtype, _, raw) in tensors.iter_mut() {
            if *dtype == safetensors::Dtype::F32 {
                let mut values: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                edit(key, &mut values);
                *raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            }
        }
    })
}

/// The golden case's `.pth` with its pickle (`data.pkl`) replaced by `edit(pickle)`,
/// every entry stored uncompressed.
pub fn edited_pth(case: &str, mut edit: impl FnMut(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let bytes = std::fs::read(data(&format!("golden/{case}/ckpt.pth"))).unwrap();
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let name = f.name().to_string();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut content).unwrap();
        if name.ends_with("data.pkl") {
            content = edit(content);
        }
        out.start_file(name, stored).unwrap();
        out.write_all(&content).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// The variant of a golden case, as its `meta.json` says: `plain` or `norm`.
pub fn golden_variant(case: &str) -> &'static str {
    match soft_tests::golden::arch_options(case).normalized {
        true => "norm",
        false => "plain",
    }
}

/// Runs `soft convert` on `bytes` (saved as `name`) with `extra` arguments and checks it
/// fails with exit 1, one line holding every one of `wants`, and no output file. Unless
/// `extra` says the variant (`--variant`, `--norm`, `--arch`), `--variant plain` is
/// passed, so the conversion gets past the variant to the fault under test.
pub fn convert_fails(name: &str, bytes: &[u8], extra: &[&str], wants: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name);
    std::fs::write(&input, bytes).unwrap();
    let assert = soft()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("out.soft"))
        .args(extra)
        .args(
            if extra
                .iter()
                .any(|a| ["--variant", "--norm", "--arch"].contains(a))
            {
                &[][..]
            } else {
                &["--variant", "plain"][..]
            },
        )
        .assert()
        .failure()
        .code(1);
    let stderr = one_error_line(assert.get_output());
    for want in wants {
        assert!(stderr.contains(want), "{name}: {stderr:?} lacks {want:?}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{name}: left behind {left:?}");
}

/// Standard error that is exactly one line, as a predicate for `.stderr(…)`.
pub fn one_line() -> impl predicates::Predicate<str> {
    predicates::function::function(|s: &str| s.trim_end().lines().count() == 1)
}

/// The one line a failed command printed on standard error (asserting there is one).
pub fn one_error_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr
}
