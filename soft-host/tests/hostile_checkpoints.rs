//! The golden micro_64 checkpoint, edited in hostile ways, through `soft convert`: each
//! edit fails with one line naming the tensor at fault and leaves no output file.

mod common;

use common::{convert, convert_fails, edited_golden, Tensors};
use safetensors::Dtype;

/// Sets element 0 of f32 tensor `key`.
fn set_first(tensors: &mut Tensors, key: &str, value: f32) {
    let t = tensors.iter_mut().find(|t| t.0 == key).unwrap();
    assert_eq!(t.1, Dtype::F32);
    t.3[..4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn a_negative_running_var_names_the_running_var() {
    let bytes = edited_golden(|o| set_first(o, "patch_embed2.proj.1.running_var", -3.0));
    convert_fails(
        "ckpt.safetensors",
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
    let bytes = edited_golden(|o| set_first(o, "head.bias", 1e5));
    convert_fails(
        "ckpt.safetensors",
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
    convert(&input, &dir.path().join("out.soft"), &["--dtype", "f32"]);
}

#[test]
fn a_wrapped_duplicate_names_both_keys() {
    let bytes = edited_golden(|o| {
        let head = o.iter().find(|t| t.0 == "head.weight").unwrap().clone();
        o.push(("module.head.weight".into(), head.1, head.2, head.3));
    });
    convert_fails(
        "ckpt.safetensors",
        &bytes,
        &[],
        &["module.head.weight", "both hold tensor head.weight"],
    );
}

#[test]
fn an_int8_weight_is_refused_not_reported_missing() {
    let bytes = edited_golden(|o| {
        let head = o.iter_mut().find(|t| t.0 == "head.weight").unwrap();
        let numel: usize = head.2.iter().product();
        head.1 = Dtype::I8;
        head.3 = vec![1; numel];
    });
    convert_fails(
        "ckpt.safetensors",
        &bytes,
        &[],
        &["tensor head.weight: dtype I8 is not supported"],
    );
}
