//! Arbitrary bytes into every host reader of untrusted files: the `torch.save` zip and
//! its pickle, safetensors and `.npy`. Each must return `Ok` or `Err`, never panic, and
//! never allocate far beyond the input's size (libFuzzer's `-rss_limit_mb` enforces it).
//!
//! Raw bytes also go straight into the pickle machine, since few random inputs make a
//! zip archive that reaches it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soft_host::{checkpoint, npy, pickle, pth};

fuzz_target!(|data: &[u8]| {
    let _ = pth::parse(data, pth::Prefer::Ema);
    let _ = pickle::parse(data);
    let _ = checkpoint::parse_safetensors(data);
    let _ = npy::parse(data);
});
