//! Picks the model, plans its arena and writes `$OUT_DIR/generated.rs`:
//!
//! - `MODEL`: the blob, 16-byte aligned in flash (what `soft export` writes, generated
//!   here so that no copy of the blob sits in the source tree), and `TAG`, its name in
//!   the log;
//! - `ARENA_BYTES`: the planner's exact arena size at the model's input size with f16
//!   token maps; `SIDE`, that input size; `CLASSES`;
//! - `DIGITS`: the first test digits of `models/digits/test_images.npy` when the model
//!   takes 64×64 inputs (the demo does), else none.
//!
//! The blob: the file `SOFT_MODEL` names (absolute, or relative to this crate), else the
//! demo blob of the one feature among `f16`, `int8`, `w8a8` (default), from `target/demo/`
//! (`soft demo` writes them). It also puts `memory.x` on the linker's search path.

use std::path::PathBuf;

use soft_core::Precision;
use soft_device::build::{blob_facts, blob_rs, digits_rs, read_digits};

/// Test digits the demo runs.
const DIGITS: usize = 8;
/// The demo blobs by feature, relative to this crate.
const DEMO: [(&str, &str); 3] = [
    ("f16", "../../target/demo/soft_digits_f16.soft"),
    ("int8", "../../target/demo/soft_digits_int8.soft"),
    ("w8a8", "../../target/demo/soft_digits_w8a8.soft"),
];
const TEST_IMAGES: &str = "../../models/digits/test_images.npy";
const HINT: &str = "make the demo blobs with `cargo run --release -p soft-host -- demo` at \
                    the repository root, or name your blob with SOFT_MODEL=path/to/model.soft";

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::copy(root.join("memory.x"), out.join("memory.x")).expect("copying memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=SOFT_MODEL");
    println!("cargo:rerun-if-changed={TEST_IMAGES}");

    let (tag, path) = match std::env::var_os("SOFT_MODEL") {
        Some(p) => ("model", root.join(p)),
        None => {
            let chosen: Vec<_> = DEMO
                .iter()
                .filter(|(f, _)| {
                    std::env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some()
                })
                .collect();
            let [(tag, file)] = chosen[..] else {
                panic!(
                    "enable exactly one of the features f16, int8, w8a8 (the demo blob to \
                     embed), or set SOFT_MODEL; {} are enabled",
                    chosen.len()
                );
            };
            (*tag, root.join(file))
        }
    };
    let path =
        std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}; {HINT}", path.display()));
    println!("cargo:rerun-if-changed={}", path.display());
    let facts = blob_facts(&path, Precision::F16, HINT);

    let mut code = blob_rs("MODEL", &path, facts.bytes);
    code += &format!("/// The blob's name in the log.\npub const TAG: &str = {tag:?};\n");
    code += &format!(
        "/// The planner's exact arena bytes at SIDE × SIDE, f16 token maps.\n\
         pub const ARENA_BYTES: usize = {};\n\
         /// The model's input side (stage-1 grid × 4).\n\
         pub const SIDE: usize = {};\n\
         /// Classes.\n\
         pub const CLASSES: usize = {};\n",
        facts.arena_bytes, facts.side, facts.config.num_classes
    );
    let digits = if facts.side == 64 {
        read_digits(&root.join(TEST_IMAGES), DIGITS)
    } else {
        Vec::new()
    };
    code += &digits_rs(&digits);
    std::fs::write(out.join("generated.rs"), code).expect("writing generated.rs");
}
