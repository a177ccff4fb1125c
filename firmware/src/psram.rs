//! `--features psram`: the big model on the small memory map. A `soft_tiny` int8 or W8A8
//! blob (random weights, about 13.6 MB) sits in the board's 16 MiB PSRAM, put there by QEMU's
//! `-device loader` as a flasher would on a real board; the arena is a 512 KiB static in
//! SRAM. One 224×224 inference of a [`TestPattern`] image, with per-layer progress.
//! `cargo xtask psram` builds the blob, runs this and compares the logits with the host.
//!
//! Log lines, besides `LAYER` (see `main.rs`):
//!
//! ```text
//! PSRAM-FIRMWARE <arena bytes>
//! LOADED <blob bytes> <ticks to parse and verify the blob>
//! PLAN <planned arena bytes>
//! LOGITS-PSRAM <first class> <count> <ticks> <10 × f32::to_bits as 8 hex digits, `count` used>
//! ```

use defmt::println;
use soft_core::{Error, Model, Precision, TestPattern};

use crate::{ticks, Progress};

/// The arena budget for `soft_tiny` at 224×224 with f16 activations.
pub const ARENA_BYTES: usize = 512 * 1024;
/// PSRAM of the MPS2 AN385/AN386 FPGA images (QEMU `hw/arm/mps2.c`).
const PSRAM_BASE: usize = 0x2100_0000;
const PSRAM_BYTES: usize = 16 * 1024 * 1024;
/// Input side and test-pattern seed; `cargo xtask psram` uses the same.
const SIDE: usize = 224;
const SEED: u32 = 2024;
/// Largest class count this binary prints.
const MAX_CLASSES: usize = 1000;

/// The whole PSRAM. `Blob::parse` reads the blob's own length from its header and
/// ignores what follows, so the loader's file size need not be known here.
fn psram() -> &'static [u8] {
    // SAFETY: PSRAM is plain RAM in the board's memory map, present for the whole run;
    // `memory.x` gives the linker nothing there, so no Rust object aliases it, and nothing
    // writes it while this shared borrow lives. Its contents were loaded before reset.
    unsafe { core::slice::from_raw_parts(PSRAM_BASE as *const u8, PSRAM_BYTES) }
}

/// Runs the PSRAM model once and logs its logits.
pub fn run(arena: &mut [u8], serial: &mut impl embedded_io::Write) -> soft_core::Result<()> {
    println!("PSRAM-FIRMWARE {=usize}", arena.len());
    let t0 = ticks();
    let model = Model::from_blob(psram())?;
    println!("LOADED {=usize} {=u64}", model.blob().len(), ticks() - t0);
    let plan = model.plan(SIDE, SIDE, Precision::F16)?;
    println!("PLAN {=usize}", plan.peak_bytes);
    let classes = model.config().num_classes;
    let mut buffer = [0.0f32; MAX_CLASSES];
    let logits = buffer.get_mut(..classes).ok_or(Error::UnsupportedConfig(
        "more classes than the firmware prints",
    ))?;
    let t0 = ticks();
    let mut progress = Progress::new("psram", 0, t0);
    let mut image = TestPattern::new(SIDE, SIDE, SEED);
    model.run(&mut image, arena, Precision::F16, logits, &mut progress)?;
    let elapsed = ticks() - t0;
    progress.log_steps();
    let _ = writeln!(
        serial,
        "soft psram: soft_tiny top-1 class {} ({elapsed} ticks)\r",
        crate::argmax(logits)
    );
    for (i, chunk) in logits.chunks(10).enumerate() {
        let mut b = [0u32; 10];
        for (d, v) in b.iter_mut().zip(chunk) {
            *d = v.to_bits();
        }
        println!(
            "LOGITS-PSRAM {=usize} {=usize} {=u64} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x}",
            i * 10, chunk.len(), elapsed, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]
        );
    }
    Ok(())
}
