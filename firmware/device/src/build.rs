//! For firmware build scripts (std): the demo's test digits, a blob's exact arena size,
//! and Rust source for `$OUT_DIR`. Failures panic with a message that says what to do,
//! which is how a build script reports them.

use std::fmt::Write as _;
use std::path::Path;
use std::string::String;
use std::vec::Vec;
use std::{format, panic, vec};

use soft_core::{Model, ModelConfig, Precision};

/// What a blob needs, from its own header and the planner.
#[derive(Debug, Clone, Copy)]
pub struct BlobFacts {
    /// Its bytes.
    pub bytes: usize,
    /// Its configuration.
    pub config: ModelConfig,
    /// The input side it was trained for (stage-1 grid × 4).
    pub side: usize,
    /// The planner's exact arena bytes at `side × side`.
    pub arena_bytes: usize,
}

/// Reads and checks the blob at `path` and plans its arena at its native input size with
/// `precision` token maps. `hint` follows the error when the file is missing.
pub fn blob_facts(path: &Path, precision: Precision, hint: &str) -> BlobFacts {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}; {hint}", path.display()));
    // Blobs must start 16-byte aligned: copy into an over-allocated buffer at an aligned offset.
    let mut buf = vec![0u8; bytes.len() + 16];
    let skip = buf.as_ptr().align_offset(16);
    let view = &mut buf[skip..skip + bytes.len()];
    view.copy_from_slice(&bytes);
    let model = Model::from_blob(view).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let config = *model.config();
    let side = config.pos_grids[0] * 4;
    let arena_bytes = model
        .plan(side, side, precision)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        .peak_bytes;
    BlobFacts {
        bytes: bytes.len(),
        config,
        side,
        arena_bytes,
    }
}

/// The first `count` rows of the demo's `test_images.npy` (little-endian f32, C order,
/// `(n, 8, 8)`), pixels 0..=16.
pub fn read_digits(path: &Path, count: usize) -> Vec<[f32; 64]> {
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
    assert!(
        body.len() >= count * 64 * 4,
        "{}: fewer than {count} digits",
        path.display()
    );
    (0..count)
        .map(|d| {
            core::array::from_fn(|i| {
                let at = (d * 64 + i) * 4;
                f32::from_le_bytes(body[at..at + 4].try_into().unwrap())
            })
        })
        .collect()
}

/// `pub const DIGITS: [(usize, [f32; 64]); N]`: `(index in the split, pixels)` as exact
/// f32 bit patterns.
pub fn digits_rs(digits: &[[f32; 64]]) -> String {
    let mut code = String::new();
    writeln!(code, "/// `(index in test_images.npy, 8×8 pixels 0..=16)`.").unwrap();
    writeln!(
        code,
        "pub const DIGITS: [(usize, [f32; 64]); {}] = [",
        digits.len()
    )
    .unwrap();
    for (i, d) in digits.iter().enumerate() {
        write!(code, "    ({i}, [").unwrap();
        for v in d {
            write!(code, "f32::from_bits({:#010x}), ", v.to_bits()).unwrap();
        }
        writeln!(code, "]),").unwrap();
    }
    writeln!(code, "];").unwrap();
    code
}

/// `pub static <name>: &Aligned<[u8; N]>` holding the file at `path` (absolute), 16-byte
/// aligned as `Model::from_blob` requires, with the `Aligned` wrapper it needs.
pub fn blob_rs(name: &str, path: &Path, bytes: usize) -> String {
    let path = path
        .to_str()
        .unwrap_or_else(|| panic!("{}: include_bytes! needs a UTF-8 path", path.display()));
    format!(
        "/// 16-byte alignment for a model blob, which `Model::from_blob` reads in place.\n\
         #[repr(C, align(16))]\n\
         pub struct Aligned<T: ?Sized>(pub T);\n\n\
         /// The model blob ({bytes} bytes), from {path:?}.\n\
         pub static {name}: &Aligned<[u8; {bytes}]> = &Aligned(*include_bytes!({path:?}));\n"
    )
}
