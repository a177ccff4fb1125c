//! The PSRAM image's runs (`firmware/`, `--features psram`): `soft_tiny` with its blob and
//! the large memory's arena in the board's PSRAM, the rest in at most
//! [`SRAM_BYTES`] of SRAM. One definition for the firmware, which runs them, and its
//! build script, which sizes the SRAM arena by planning them ([`fast_arena_bytes`]).

use soft_core::{ModelConfig, Placement, Precision, RunOptions};

/// One run of the PSRAM image.
#[derive(Debug, Clone, Copy)]
pub struct PsramRun {
    /// Its tag in the log (`BLOB`, `LOGITS`, `STEP` lines).
    pub tag: &'static str,
    /// The input's side.
    pub side: usize,
    /// Where the buffers live.
    pub placement: Placement,
}

/// The runs, in order. At 224×224 the token-sized buffers alone go to PSRAM (and, for
/// comparison, everything that grows); at 448×448 the landmarks, `Z` and Newton–Schulz
/// matrices of stage 3 (m = 196) would need about 0.9 MiB of SRAM, so everything that
/// grows with the input goes to PSRAM.
pub const RUNS: [PsramRun; 3] = [
    PsramRun {
        tag: "maps-224",
        side: 224,
        placement: Placement::MAPS,
    },
    PsramRun {
        tag: "growing-224",
        side: 224,
        placement: Placement::GROWING,
    },
    PsramRun {
        tag: "growing-448",
        side: 448,
        placement: Placement::GROWING,
    },
];

/// The whole SRAM the image may use (its memory map's RAM, which the build script writes
/// from this): statics, SRAM arena, stack.
pub const SRAM_BYTES: usize = 512 * 1024;

/// PSRAM of the MPS2 AN385/AN386 FPGA images (QEMU `hw/arm/mps2.c`), where `cargo xtask
/// psram` has QEMU load the blob.
pub const PSRAM_BASE: usize = 0x2100_0000;
/// Its size.
pub const PSRAM_BYTES: usize = 16 * 1024 * 1024;
/// The seed of every run's [`soft_core::TestPattern`] input.
pub const IMAGE_SEED: u32 = 2024;

/// Token maps' precision in every run.
pub const PRECISION: Precision = Precision::F16;

/// The exact SRAM arena bytes for `cfg` (an int8 or W8A8 `soft_tiny`): the largest fast
/// memory any of [`RUNS`] plans.
pub fn fast_arena_bytes(cfg: &ModelConfig) -> soft_core::Result<usize> {
    RUNS.iter().try_fold(0, |most, run| {
        let plan = soft_core::plan_placed(
            cfg,
            run.side,
            run.side,
            PRECISION,
            &RunOptions::new(PRECISION).schedule,
            run.placement,
        )?;
        Ok(most.max(plan.peak_bytes))
    })
}
