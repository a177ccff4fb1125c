//! Arbitrary bytes into the `.npy` reader: `npy::parse` on the bytes as given, and
//! `npy::parse_header` on them as header text, must return `Ok` or `Err`, never panic,
//! and an error must be one line. Whatever `parse_header` accepts must also survive
//! `parse` with a body of the size it declares (when that size is small).
#![no_main]

use libfuzzer_sys::fuzz_target;
use soft_host::npy;

/// Bodies larger than this are not built, to keep each run fast.
const MAX_BODY_BYTES: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = npy::parse(data) {
        assert_one_line(&e.to_string());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match npy::parse_header(text) {
        Err(e) => assert_one_line(&e.to_string()),
        Ok(header) => {
            // Wrap the accepted header in a preamble and a body of the declared size:
            // the full parser must accept it and return that shape.
            let Some(count) = header
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
            else {
                return;
            };
            if count.saturating_mul(4) > MAX_BODY_BYTES || text.len() > npy::MAX_HEADER_LEN {
                return;
            }
            let mut file = b"\x93NUMPY\x02\x00".to_vec();
            file.extend_from_slice(&(text.len() as u32).to_le_bytes());
            file.extend_from_slice(text.as_bytes());
            file.resize(file.len() + count * 4, 0);
            let array = npy::parse(&file).expect("a header parse_header accepts");
            assert_eq!(array.shape, header.shape);
            assert_eq!(array.data.len(), count);
        }
    }
});

fn assert_one_line(message: &str) {
    assert!(
        !message.contains(['\n', '\r']),
        "multi-line error: {message:?}"
    );
}
