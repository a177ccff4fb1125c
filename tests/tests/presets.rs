//! `models/presets.json` documents the published configurations; it must agree with
//! `ModelConfig::preset`, and the demo entry with the bundled checkpoint.

use soft_core::ModelConfig;
use soft_host::{checkpoint::read_checkpoint, infer_config, pth::Prefer, ArchOptions};

fn json() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/presets.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn list(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn check(cfg: &ModelConfig, entry: &serde_json::Value, shared: &serde_json::Value) {
    let field = |k: &str| entry.get(k).unwrap_or(&shared[k]).clone();
    assert_eq!(cfg.embed_dims.to_vec(), list(&field("embed_dims")));
    assert_eq!(cfg.heads.to_vec(), list(&field("heads")));
    assert_eq!(cfg.depths.to_vec(), list(&field("depths")));
    assert_eq!(
        cfg.landmark_ratios.to_vec(),
        list(&field("landmark_ratios"))
    );
    assert_eq!(cfg.vconv_sizes.to_vec(), list(&field("vconv_sizes")));
    assert_eq!(cfg.pos_grids.to_vec(), list(&field("pos_grids")));
    assert_eq!(cfg.stem_width as u64, field("stem_width").as_u64().unwrap());
    assert_eq!(
        cfg.stage4_mlp_hidden as u64,
        field("stage4_mlp_hidden").as_u64().unwrap()
    );
    assert_eq!(
        cfg.num_classes as u64,
        field("num_classes").as_u64().unwrap()
    );
    assert_eq!(
        cfg.newton_iters as u64,
        field("newton_iters").as_u64().unwrap()
    );
    assert_eq!(cfg.normalized, field("normalized").as_bool().unwrap());
}

#[test]
fn presets_json_matches_the_code() {
    let j = json();
    for name in ModelConfig::PRESETS {
        check(&ModelConfig::preset(name).unwrap(), &j[name], &j["_shared"]);
    }
}

#[test]
fn demo_entry_matches_the_bundled_checkpoint() {
    let ckpt = soft_host::demo::default_dir().join("soft_digits.pth");
    let loaded = read_checkpoint(&ckpt, Prefer::Ema).unwrap();
    let cfg = infer_config(&loaded.tensors, &ArchOptions::default()).unwrap();
    check(&cfg, &json()["demo_digits"], &serde_json::Value::Null);
}
