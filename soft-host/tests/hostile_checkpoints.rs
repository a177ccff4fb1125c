//! The golden micro_64 checkpoint, edited in hostile ways, through `soft convert`: each
//! edit fails with one line naming the tensor at fault and leaves no output file.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use safetensors::tensor::{serialize, TensorView};
use safetensors::Dtype;

fn golden_safetensors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/micro_64/ckpt.safetensors")
}

/// The golden tensors as `(key, dtype, shape, bytes)`.
type Owned = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// The golden checkpoint after `edit`, serialised again.
fn edited(edit: impl FnOnce(&mut Owned)) -> Vec<u8> {
    let bytes = std::fs::read(golden_safetensors()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Owned = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut owned);
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    serialize(views, &None).unwrap()
}

/// Sets element 0 of f32 tensor `key`.
fn set_first(owned: &mut Owned, key: &str, value: f32) {
    let t = owned.iter_mut().find(|t| t.0 == key).unwrap();
    assert_eq!(t.1, Dtype::F32);
    t.3[..4].copy_from_slice(&value.to_le_bytes());
}

/// Runs `soft convert` and checks it fails with one line holding every one of `wants`.
fn convert_fails(bytes: &[u8], extra: &[&str], wants: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ckpt.safetensors");
    std::fs::write(&input, bytes).unwrap();
    let assert = Command::cargo_bin("soft")
        .unwrap()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("out.soft"))
        .args(extra)
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for want in wants {
        assert!(stderr.contains(want), "{stderr:?} lacks {want:?}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "{stderr}"
    );
}

#[test]
fn a_negative_running_var_names_the_running_var() {
    let bytes = edited(|o| set_first(o, "patch_embed2.proj.1.running_var", -3.0));
    convert_fails(
        &bytes,
        &[],
        &[
            "tensor patch_embed2.proj.1.running_var: channel 0",
            "negative variance (-3)",
        ],
    );
}

#[test]
fn a_bias_beyond_f16_names_the_remedy() {
    let bytes = edited(|o| set_first(o, "head.bias", 1e5));
    convert_fails(
        &bytes,
        &["--dtype", "f16"],
        &[
            "tensor head.bias: value 1e5 exceeds the f16 range (±65504)",
            "--dtype f32",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ckpt.safetensors");
    std::fs::write(&input, &bytes).unwrap();
    Command::cargo_bin("soft")
        .unwrap()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("out.soft"))
        .args(["--dtype", "f32"])
        .assert()
        .success();
}

#[test]
fn a_wrapped_duplicate_names_both_keys() {
    let bytes = edited(|o| {
        let head = o.iter().find(|t| t.0 == "head.weight").unwrap().clone();
        o.push(("module.head.weight".into(), head.1, head.2, head.3));
    });
    convert_fails(
        &bytes,
        &[],
        &["module.head.weight", "both hold tensor head.weight"],
    );
}

#[test]
fn an_int8_weight_is_refused_not_reported_missing() {
    let bytes = edited(|o| {
        let head = o.iter_mut().find(|t| t.0 == "head.weight").unwrap();
        let numel: usize = head.2.iter().product();
        head.1 = Dtype::I8;
        head.3 = vec![1; numel];
    });
    convert_fails(
        &bytes,
        &[],
        &["tensor head.weight: dtype I8 is not supported"],
    );
}
