//! Arbitrary bytes into the `--image` path: decode within limits, resample the centre
//! crop, normalise. Must return `Ok` or `Err`, never panic, and never allocate beyond
//! the decode limits plus the output (libFuzzer's `-rss_limit_mb` enforces it).
//!
//! The first byte picks the crop side (16..=63); the rest is the image file. The decode
//! limits are smaller than the CLI's so each input stays fast; the resampler's memory
//! does not depend on them, only on the decoded image and the crop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soft_host::image_input::{self, DecodeLimits};

const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 65_535,
    max_bytes: 16 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Some((&first, image)) = data.split_first() else {
        return;
    };
    let crop = 16 + usize::from(first % 48);
    match image_input::load_bytes_within(image, crop, LIMITS) {
        Ok(values) => {
            assert_eq!(values.len(), 3 * crop * crop);
            assert!(values.iter().all(|v| v.is_finite()), "non-finite output");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.contains(['\n', '\r']),
                "multi-line error: {message:?}"
            );
        }
    }
});
