//! Generates `$OUT_DIR/generated.rs` from the demo artefacts:
//!
//! - `ARENA_BYTES`: the planner's exact arena size, the largest over the embedded blobs for
//!   a 64×64 input with f16 activations;
//! - `DIGITS`: the first few 8×8 test digits of `models/digits/test_images.npy`, as exact
//!   f32 bit patterns.
//!
//! It also puts `memory.x` on the linker's search path for cortex-m-rt's `link.x`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Test digits embedded in the image.
const DIGITS: usize = 4;
/// Input side the firmware runs at.
const SIDE: usize = 64;
/// The embedded blobs, relative to the firmware crate.
const BLOBS: [&str; 3] = [
    "../target/demo/soft_digits_f16.soft",
    "../target/demo/soft_digits_int8.soft",
    "../target/demo/soft_digits_w8a8.soft",
];
const TEST_IMAGES: &str = "../models/digits/test_images.npy";

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());

    std::fs::copy(root.join("memory.x"), out.join("memory.x")).expect("copying memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed={TEST_IMAGES}");

    let mut code = String::new();
    let arena = BLOBS
        .iter()
        .map(|b| {
            println!("cargo:rerun-if-changed={b}");
            plan_bytes(&root.join(b))
        })
        .max()
        .unwrap();
    writeln!(
        code,
        "/// Planner's peak arena bytes over the embedded blobs."
    )
    .unwrap();
    writeln!(code, "pub const ARENA_BYTES: usize = {arena};").unwrap();

    let digits = read_digits(&root.join(TEST_IMAGES));
    writeln!(code, "/// `(index in test_images.npy, 8×8 pixels 0..=16)`.").unwrap();
    writeln!(code, "pub const DIGITS: [(usize, [f32; 64]); {DIGITS}] = [").unwrap();
    for (i, d) in digits.iter().enumerate() {
        write!(code, "    ({i}, [").unwrap();
        for v in d {
            write!(code, "f32::from_bits({:#010x}), ", v.to_bits()).unwrap();
        }
        writeln!(code, "]),").unwrap();
    }
    writeln!(code, "];").unwrap();
    std::fs::write(out.join("generated.rs"), code).expect("writing generated.rs");
}

/// Exact arena bytes the blob at `path` needs at 64×64 with f16 activations.
fn plan_bytes(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate the demo blobs first with \
             `cargo run --release -p soft-host -- demo` at the repository root \
             (or run `cargo xtask crosscheck`)",
            path.display()
        )
    });
    // Blobs must start 16-byte aligned: copy into an over-allocated buffer at an aligned offset.
    let mut buf = vec![0u8; bytes.len() + 16];
    let skip = buf.as_ptr().align_offset(16);
    let view = &mut buf[skip..skip + bytes.len()];
    view.copy_from_slice(&bytes);
    let model =
        soft_core::Model::from_blob(view).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    model
        .plan(SIDE, SIDE, soft_core::Precision::F16)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .peak_bytes
}

/// First `DIGITS` rows of a little-endian f32 `.npy` of shape `(n, 64)`.
fn read_digits(path: &Path) -> Vec<[f32; 64]> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x93NUMPY"),
        "{}: not .npy",
        path.display()
    );
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{}: expected C-order <f4, got {header}",
        path.display()
    );
    let body = &bytes[start + header_len..];
    (0..DIGITS)
        .map(|d| {
            std::array::from_fn(|i| {
                let at = (d * 64 + i) * 4;
                f32::from_le_bytes(body[at..at + 4].try_into().unwrap())
            })
        })
        .collect()
}
