//! `--features psram`: the big model on two memories. A `soft_tiny` int8 or W8A8 blob
//! (random weights, about 13.6 MB) sits in the board's 16 MiB PSRAM, put there by QEMU's
//! `-device loader` as a flasher would on a real board; the PSRAM after it is the large
//! memory's arena, and the SRAM arena is a static sized by the build script. The image's
//! memory map (`memory-an386.x` with its RAM cut to `soft_device::psram::SRAM_BYTES` by the
//! build script) gives it 512 KiB of RAM in all. It runs
//! [`soft_device::psram::RUNS`] (224×224 and 448×448 [`soft_core::TestPattern`] images,
//! each with its placement), with per-layer progress. `cargo xtask psram` builds the
//! blob, runs this and compares the logits with the host (`soft_host::crosscheck`).
//!
//! Log lines, besides `CLOCK`, `BLOB`, `LAYER`, `STEP` and `LOGITS` (tag `psram`; see
//! `main.rs`):
//!
//! ```text
//! PSRAM-FIRMWARE <SRAM arena bytes>
//! LOADED <blob bytes> <ticks to parse and verify the blob>
//! PLAN <tag> <side> <placement> <planned SRAM bytes> <planned PSRAM bytes> <PSRAM arena bytes>
//! ```

use defmt::println;
use soft_core::{Blob, Error, Model, ARENA_ALIGN};
use soft_device::input::Inputs;
use soft_device::psram::{IMAGE_SEED, PRECISION, PSRAM_BASE, PSRAM_BYTES, RUNS};
use soft_device::{log, run};

use crate::{ticks, CORE_HZ};

/// Largest class count this binary logs.
const MAX_CLASSES: usize = 1000;

/// The blob's bytes at the start of PSRAM, and the rest of PSRAM from the next 16-byte
/// boundary: the large memory's arena. Fails if the blob's header claims more than PSRAM.
///
/// # Safety
///
/// Call at most once: the arena it returns is `&'static mut`, and a second call would
/// hand out another.
unsafe fn psram() -> soft_core::Result<(&'static [u8], &'static mut [u8])> {
    // SAFETY: PSRAM is plain RAM in the board's memory map, present for the whole run;
    // the linker's memory map has nothing there, so no Rust object aliases it, and any
    // byte is a valid `u8`. This shared view lives only to read the blob's length from
    // its header, and ends before the two slices below are made.
    let whole = unsafe { core::slice::from_raw_parts(PSRAM_BASE as *const u8, PSRAM_BYTES) };
    let blob_len = Blob::declared_len(whole)?;
    if blob_len > PSRAM_BYTES {
        return Err(Error::BlobTruncated {
            needed: blob_len,
            got: PSRAM_BYTES,
        });
    }
    // PSRAM_BYTES is a multiple of the alignment, so this is at most PSRAM_BYTES.
    let large_at = blob_len.next_multiple_of(ARENA_ALIGN);
    // SAFETY: as above. `0..blob_len` (loaded before reset) and `large_at..PSRAM_BYTES`
    // (whatever PSRAM holds) do not overlap since `blob_len <= large_at`, so the shared
    // blob and the exclusive arena never alias; the caller calls this once, so no other
    // reference to either range exists.
    let (blob, large) = unsafe {
        (
            core::slice::from_raw_parts(PSRAM_BASE as *const u8, blob_len),
            core::slice::from_raw_parts_mut(
                (PSRAM_BASE + large_at) as *mut u8,
                PSRAM_BYTES - large_at,
            ),
        )
    };
    Ok((blob, large))
}

/// Runs the PSRAM model on each of [`RUNS`] and logs its logits.
pub fn run(arena: &mut [u8], serial: &mut impl embedded_io::Write) -> soft_core::Result<()> {
    println!("PSRAM-FIRMWARE {=usize}", arena.len());
    log::clock(CORE_HZ, "systick", serial);
    let t0 = ticks();
    // SAFETY: the only call, and `run` itself runs once (from `main`).
    let (bytes, large) = unsafe { psram()? };
    let model = Model::from_blob(bytes)?;
    println!("LOADED {=usize} {=u64}", model.blob().len(), ticks() - t0);
    let mut buffer = [0.0f32; MAX_CLASSES];
    let logits = buffer
        .get_mut(..model.config().num_classes)
        .ok_or(Error::UnsupportedConfig(
            "more classes than the firmware logs",
        ))?;
    let crc32 = soft_core::Blob::stored_crc32(bytes).unwrap_or_default();
    let options = soft_core::RunOptions::new(PRECISION);
    for psram_run in RUNS {
        let (side, placement) = (psram_run.side, psram_run.placement);
        let plan = model.plan_placed(side, side, &options, placement)?;
        println!(
            "PLAN {=str} {=usize} {=str} {=usize} {=usize} {=usize}",
            psram_run.tag,
            side,
            placement.name(),
            plan.peak_bytes,
            plan.large_bytes,
            large.len()
        );
        let blob = run::Blob {
            tag: psram_run.tag,
            model: &model,
            crc32,
        };
        let inputs = Inputs {
            digits: &[],
            patterns: &[IMAGE_SEED],
            side,
        };
        let mut memory = run::Memories::Two {
            fast: &mut *arena,
            large: &mut *large,
            placement,
        };
        run::run(
            &blob,
            &inputs,
            &mut memory,
            PRECISION,
            logits,
            ticks,
            serial,
        )?;
    }
    Ok(())
}
