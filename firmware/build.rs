//! Generates `$OUT_DIR/generated.rs` from the demo artefacts:
//!
//! - `ARENA_BYTES`: the planner's exact arena size, the largest over the embedded blobs
//!   (features `f16`, `int8`, `w8a8`) for a 64×64 input with f16 activations; with
//!   `psram`, the SRAM arena of the PSRAM image's runs (`soft_device::psram`) for
//!   `soft_tiny`, int8 or W8A8;
//! - `DIGITS`: the first few 8×8 test digits of `models/digits/test_images.npy`, as exact
//!   f32 bit patterns.
//!
//! It also puts the board's memory map on the linker's search path as `memory.x` for
//! cortex-m-rt's `link.x`: `memory-an386.x` (MPS2 AN386, Cortex-M4F) for `thumbv7em`
//! targets (with `psram`, the same map with its RAM cut to `soft_device::psram::SRAM_BYTES`,
//! so statics, SRAM arena and stack must fit in it), `memory-an505.x`
//! (MPS2 AN505, Cortex-M33) for `thumbv8m.main`, which also sets the `mps2_an505` cfg
//! for the code. (Neither is called `memory.x`: the linker looks in
//! the crate's directory before the search path.)

use std::path::PathBuf;

use soft_core::{ModelConfig, Precision};
use soft_device::build::{blob_facts, digits_rs, read_digits};

/// Test digits embedded in the image.
const DIGITS: usize = 4;
/// The demo blobs by the feature that embeds them, relative to the firmware crate.
const BLOBS: [(&str, &str); 3] = [
    ("F16", "../target/demo/soft_digits_f16.soft"),
    ("INT8", "../target/demo/soft_digits_int8.soft"),
    ("W8A8", "../target/demo/soft_digits_w8a8.soft"),
];
const TEST_IMAGES: &str = "../models/digits/test_images.npy";
const HINT: &str = "generate the demo blobs first with `cargo run --release -p soft-host -- demo` \
                    at the repository root (or run `cargo xtask crosscheck`)";

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());

    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo::rustc-check-cfg=cfg(mps2_an505)");
    let psram = std::env::var_os("CARGO_FEATURE_PSRAM").is_some();
    let memory = if target.starts_with("thumbv8m.main") {
        println!("cargo::rustc-cfg=mps2_an505");
        "memory-an505.x"
    } else {
        "memory-an386.x"
    };
    let mut map = std::fs::read_to_string(root.join(memory)).expect("reading the memory map");
    if psram {
        const RAM: &str = "RAM   : ORIGIN = 0x20000000, LENGTH = 4M";
        assert!(map.contains(RAM), "{memory} has no `{RAM}` line");
        let kib = soft_device::psram::SRAM_BYTES / 1024;
        map = map.replace(
            RAM,
            &format!("RAM   : ORIGIN = 0x20000000, LENGTH = {kib}K"),
        );
    }
    std::fs::write(out.join("memory.x"), map).expect("writing the memory map");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={memory}");
    println!("cargo:rerun-if-changed={TEST_IMAGES}");

    let arena = if psram {
        let mut tiny = ModelConfig::preset("soft_tiny").expect("the soft_tiny preset");
        let mut most = 0;
        for w8a8 in [false, true] {
            tiny.w8a8 = w8a8;
            let bytes = soft_device::psram::fast_arena_bytes(&tiny);
            most = most.max(bytes.expect("planning the PSRAM runs"));
        }
        most
    } else {
        BLOBS
            .iter()
            .filter(|(feature, _)| std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some())
            .map(|(_, b)| {
                println!("cargo:rerun-if-changed={b}");
                blob_facts(&root.join(b), Precision::F16, HINT).arena_bytes
            })
            .max()
            .unwrap_or(0)
    };
    let mut code = String::new();
    code.push_str("/// Planner's peak arena bytes over the embedded blobs.\n");
    code.push_str(&format!("pub const ARENA_BYTES: usize = {arena};\n"));
    code.push_str(&digits_rs(&read_digits(&root.join(TEST_IMAGES), DIGITS)));
    std::fs::write(out.join("generated.rs"), code).expect("writing generated.rs");
}
