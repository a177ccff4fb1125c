//! `--features psram`: the big model on the small memory map. A `soft_tiny` int8 or W8A8
//! blob (random weights, about 13.6 MB) sits in the board's 16 MiB PSRAM, put there by QEMU's
//! `-device loader` as a flasher would on a real board; the arena is a 512 KiB static in
//! SRAM. One 224×224 inference of a [`soft_core::TestPattern`] image, with per-layer
//! progress. `cargo xtask psram` builds the blob, runs this and compares the logits with
//! the host (`soft_host::crosscheck`).
//!
//! Log lines, besides `CLOCK`, `BLOB`, `LAYER`, `STEP` and `LOGITS` (tag `psram`; see
//! `main.rs`):
//!
//! ```text
//! PSRAM-FIRMWARE <arena bytes>
//! LOADED <blob bytes> <ticks to parse and verify the blob>
//! PLAN <planned arena bytes>
//! ```

use defmt::println;
use soft_core::{Error, Model, Precision};
use soft_device::input::Inputs;
use soft_device::{log, run};

use crate::{ticks, CORE_HZ};

/// The arena budget for `soft_tiny` at 224×224 with f16 activations.
pub const ARENA_BYTES: usize = 512 * 1024;
/// PSRAM of the MPS2 AN385/AN386 FPGA images (QEMU `hw/arm/mps2.c`).
const PSRAM_BASE: usize = 0x2100_0000;
const PSRAM_BYTES: usize = 16 * 1024 * 1024;
/// Input side and test-pattern seed; `cargo xtask psram` reads them from the log.
const SIDE: usize = 224;
const SEED: u32 = 2024;
/// Largest class count this binary logs.
const MAX_CLASSES: usize = 1000;

/// The whole PSRAM. `Blob::parse` reads the blob's own length from its header and
/// ignores what follows, so the loader's file size need not be known here.
fn psram() -> &'static [u8] {
    // SAFETY: PSRAM is plain RAM in the board's memory map, present for the whole run;
    // the linker's memory map (`memory-an386.x`) has nothing there, so no Rust object
    // aliases it, and nothing writes it while this shared borrow lives. Its contents were
    // loaded before reset.
    unsafe { core::slice::from_raw_parts(PSRAM_BASE as *const u8, PSRAM_BYTES) }
}

/// Runs the PSRAM model once and logs its logits.
pub fn run(arena: &mut [u8], serial: &mut impl embedded_io::Write) -> soft_core::Result<()> {
    println!("PSRAM-FIRMWARE {=usize}", arena.len());
    log::clock(CORE_HZ, "systick", serial);
    let t0 = ticks();
    let model = Model::from_blob(psram())?;
    println!("LOADED {=usize} {=u64}", model.blob().len(), ticks() - t0);
    let plan = model.plan(SIDE, SIDE, Precision::F16)?;
    println!("PLAN {=usize}", plan.peak_bytes);
    let mut buffer = [0.0f32; MAX_CLASSES];
    let logits = buffer
        .get_mut(..model.config().num_classes)
        .ok_or(Error::UnsupportedConfig(
            "more classes than the firmware logs",
        ))?;
    let blob = run::Blob {
        tag: "psram",
        model: &model,
        crc32: soft_device::blob_crc32(psram()).unwrap_or_default(),
    };
    let inputs = Inputs {
        digits: &[],
        patterns: &[SEED],
        side: SIDE,
    };
    run::run(&blob, &inputs, arena, Precision::F16, logits, ticks, serial)?;
    Ok(())
}
