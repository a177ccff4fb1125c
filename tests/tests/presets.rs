//! `models/presets.json` documents the published configurations; it must agree with
//! `ModelConfig::preset`, and the demo entry with the bundled checkpoint.

use soft_core::ModelConfig;
use soft_host::{checkpoint::read_checkpoint, infer_config, pth::Prefer, ArchOptions};
use soft_tests::json::usizes;

fn json() -> serde_json::Value {
    soft_tests::json::read(&soft_tests::repo("models/presets.json"))
}

fn check(cfg: &ModelConfig, entry: &serde_json::Value, shared: &serde_json::Value) {
    let field = |k: &str| entry.get(k).unwrap_or(&shared[k]).clone();
    assert_eq!(cfg.embed_dims.to_vec(), usizes(&field("embed_dims")));
    assert_eq!(cfg.heads.to_vec(), usizes(&field("heads")));
    assert_eq!(cfg.depths.to_vec(), usizes(&field("depths")));
    assert_eq!(
        cfg.landmark_ratios.to_vec(),
        usizes(&field("landmark_ratios"))
    );
    assert_eq!(cfg.vconv_sizes.to_vec(), usizes(&field("vconv_sizes")));
    assert_eq!(cfg.pos_grids.to_vec(), usizes(&field("pos_grids")));
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
