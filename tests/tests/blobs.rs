//! The converter's output pinned byte for byte: the golden checkpoints, the bundled demo
//! model and synthetic checkpoints, in every weight type. A refactor of the converter or
//! of the checkpoint schema leaves these digests unchanged; a deliberate change of the
//! blob format moves them, and updates them in the same commit.

use soft_core::ModelConfig;
use soft_host::checkpoint::read_checkpoint;
use soft_host::pth::Prefer;
use soft_host::{build_blob, build_blob_with, infer_config, synthetic_checkpoint, ArchOptions};
use soft_host::{demo, TensorMap};
use soft_tests::golden::{self, CASES};
use soft_tests::models::DTYPES;
use soft_tests::pinned;

fn lines(name: &str, map: &TensorMap, cfg: &ModelConfig, demo: bool) -> Vec<String> {
    DTYPES
        .iter()
        .map(|&dtype| {
            let blob = if demo {
                build_blob_with(map, cfg, dtype, Some(&demo::metadata())).unwrap()
            } else {
                build_blob(map, cfg, dtype).unwrap()
            };
            format!(
                "{name} {} {} {:016x}",
                dtype.name(),
                blob.len(),
                pinned::fnv1a(blob.iter().copied())
            )
        })
        .collect()
}

#[test]
fn converted_blobs_are_pinned_byte_for_byte() {
    let mut got = Vec::new();
    for case in CASES {
        let (map, cfg) = golden::checkpoint(case);
        got.extend(lines(case, &map, &cfg, false));
    }
    let ckpt = demo::default_dir().join("soft_digits.pth");
    let loaded = read_checkpoint(&ckpt, Prefer::Ema).unwrap();
    let cfg = infer_config(&loaded.tensors, &ArchOptions::default()).unwrap();
    got.extend(lines("digits", &loaded.tensors, &cfg, true));
    let mut micro = ModelConfig::preset("soft_tiny").unwrap();
    micro.stem_width = 4;
    micro.embed_dims = [8, 16, 16, 24];
    micro.heads = [1, 2, 2, 3];
    micro.depths = [1, 2, 1, 2];
    micro.pos_grids = [4, 2, 2, 1];
    micro.stage4_mlp_hidden = 40;
    micro.num_classes = 10;
    let tiny = ModelConfig::preset("soft_tiny").unwrap();
    for (arch, cfg, seed) in [("soft_tiny", tiny, 1), ("micro", micro, 7)] {
        let map = synthetic_checkpoint(&cfg, seed);
        assert_eq!(infer_config(&map, &ArchOptions::default()).unwrap(), cfg);
        got.extend(lines(arch, &map, &cfg, false));
    }
    let want = pinned::lines(PINNED);
    assert_eq!(got, want, "blob bytes changed:\n{}", got.join("\n"));
}

const PINNED: &str = "
    micro_64 f32 1051868 cca2958cde48f935
    micro_64 f16 527832 ddbebb82c92fde66
    micro_64 int8 362856 0094c52901e96396
    micro_64 w8a8 363016 72e041b6606ade34
    norm_micro_64 f32 1051868 e0eb5e5ded50b3e7
    norm_micro_64 f16 527832 c827e2176591918e
    norm_micro_64 int8 362856 48ca23ca5fb112cc
    norm_micro_64 w8a8 363016 679d524515db1022
    deep_96_timm f32 2553600 0662f744ce736b07
    deep_96_timm f16 1280082 b4af5d2ac7b011aa
    deep_96_timm int8 804946 0cf15c684a7a0d5d
    deep_96_timm w8a8 805106 14c097474f46c83f
    digits f32 1338960 bef493470ddf1f68
    digits f16 671936 3ffc984eff0611e1
    digits int8 360640 a3b73cb8e3ca06f1
    digits w8a8 360720 cb1220e5547c3ad1
    soft_tiny f32 52274020 f4a9b3798af5eedc
    soft_tiny f16 26140292 98296cd9a12c5f21
    soft_tiny int8 13583044 d6f8820d56a0b21c
    soft_tiny w8a8 13583204 068d3da37d88d9cf
    micro f32 139452 f59cc07d70b3358b
    micro f16 72296 097d9fb3be69e04c
    micro int8 44136 6e1e01ee1c62c137
    micro w8a8 47512 99b61d5b0aa61361
";
