//! What the CLI test files share: the project's test data, the binary, a small blob.

// Each test file uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A file under the project's `tests/` directory (golden cases, fixtures).
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests")
        .join(rel)
}

/// The `soft` binary.
pub fn soft() -> Command {
    Command::cargo_bin("soft").unwrap()
}

/// The `soft` binary as a plain process, for tests that need its pipes.
pub fn soft_process() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_soft"))
}

/// The micro_64 golden model as a blob in `dir`.
pub fn micro_blob(dir: &Path) -> PathBuf {
    let blob = dir.join("m.soft");
    soft()
        .arg("convert")
        .arg(data("golden/micro_64/ckpt.safetensors"))
        .arg("-o")
        .arg(&blob)
        .args(["--variant", "plain"])
        .assert()
        .success();
    blob
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

/// The variant of a golden case, as its `meta.json` says: `plain` or `norm`.
pub fn golden_variant(case: &str) -> &'static str {
    let meta = std::fs::read(data(&format!("golden/{case}/meta.json"))).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    match meta["config"]["normalized_attention"].as_bool().unwrap() {
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
