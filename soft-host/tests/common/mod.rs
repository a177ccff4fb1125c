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

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |a, x| a.max(x.abs()))
}

pub fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// The micro_64 golden model as a blob in `dir`.
pub fn micro_blob(dir: &Path) -> PathBuf {
    let blob = dir.join("m.soft");
    soft()
        .arg("convert")
        .arg(data("golden/micro_64/ckpt.safetensors"))
        .arg("-o")
        .arg(&blob)
        .assert()
        .success();
    blob
}

/// The micro_64 golden checkpoint as safetensors bytes, every f32 tensor passed
/// through `edit(key, values)` first.
pub fn edited_micro_checkpoint(mut edit: impl FnMut(&str, &mut [f32])) -> Vec<u8> {
    use safetensors::tensor::{serialize, TensorView};
    let bytes = std::fs::read(data("golden/micro_64/ckpt.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut raw = view.data().to_vec();
        if view.dtype() == safetensors::Dtype::F32 {
            let mut values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            edit(&name, &mut values);
            raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        owned.push((name, view.dtype(), view.shape().to_vec(), raw));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, r)| (n.clone(), TensorView::new(*d, s.clone(), r).unwrap()))
        .collect();
    serialize(views, &None).unwrap()
}

/// The one line a failed command printed on standard error (asserting there is one).
pub fn one_error_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr
}
