//! Arbitrary bytes into the blob reader: `Model::from_blob`, `Blob::parse`, every
//! `Blob::tensor_at` and the metadata's labels must return `Ok` or `Err`, never panic,
//! for any input.
//!
//! Each input is tried three ways:
//! 1. as given, from a 4-byte aligned buffer (blobs must be 4-byte aligned, so this
//!    is the path a firmware takes);
//! 2. as given, from an address that is 1 mod 4 (must be rejected, not panic);
//! 3. with the CRC-32 trailer patched to match, aligned, so mutations reach the
//!    config, table and tensor checks instead of stopping at the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soft_core::format::Blob;
use soft_core::Model;

/// Offset of the "total blob bytes" header field (see docs/FORMAT.md).
const TOTAL_FIELD: usize = 40;

fuzz_target!(|data: &[u8]| {
    let mut words = vec![0u32; data.len().div_ceil(4) + 1];

    // 1. Aligned: a `Vec<u32>` starts at a 4-byte aligned address.
    let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()];
    aligned.copy_from_slice(data);
    exercise(aligned);

    // 2. Misaligned by one byte.
    let bytes = bytemuck::cast_slice_mut::<u32, u8>(&mut words);
    let unaligned = &mut bytes[1..1 + data.len()];
    unaligned.copy_from_slice(data);
    exercise(unaligned);

    // 3. Aligned again, with a valid checksum where the header says the blob ends.
    let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()];
    aligned.copy_from_slice(data);
    if fix_crc(aligned) {
        exercise(aligned);
    }
});

fn exercise(bytes: &[u8]) {
    let model_ok = Model::from_blob(bytes).is_ok();
    match Blob::parse(bytes) {
        Ok(blob) => {
            for i in 0..blob.tensor_count() {
                let _ = blob.tensor_at(i);
            }
            // One past the end must be an error, not a panic.
            let _ = blob.tensor_at(blob.tensor_count());
            // Metadata checked at parse: reading it again, and every label, cannot fail
            // except for a newer metadata version.
            match blob.metadata() {
                Ok(Some(m)) => {
                    for i in 0..=blob.config().num_classes {
                        let _ = m.label(i);
                    }
                }
                Ok(None) => {}
                Err(e) => assert!(
                    matches!(e, soft_core::Error::UnsupportedMetadataVersion(_)),
                    "metadata of a parsed blob failed: {e:?}"
                ),
            }
        }
        Err(e) => assert!(
            !model_ok,
            "Model::from_blob accepted a blob Blob::parse rejects: {e:?}"
        ),
    }
}

/// Writes the CRC-32 of `bytes[..total - 4]` at `total - 4`, `total` being the header's
/// length field. False when that field is missing or out of range.
fn fix_crc(bytes: &mut [u8]) -> bool {
    let Some(field) = bytes.get(TOTAL_FIELD..TOTAL_FIELD + 4) else {
        return false;
    };
    let total = u32::from_le_bytes(field.try_into().unwrap()) as usize;
    if total < TOTAL_FIELD + 8 || total > bytes.len() {
        return false;
    }
    let crc = crc32fast::hash(&bytes[..total - 4]);
    bytes[total - 4..total].copy_from_slice(&crc.to_le_bytes());
    true
}
