//! Runs the soft demo digits model on a Cortex-M4F (QEMU `mps2-an386`; built for
//! `thumbv8m.main-none-eabihf`, on a Cortex-M33, QEMU `mps2-an505`) and logs, with defmt
//! over semihosting, the exact bits of every logit plus a deterministic instruction clock,
//! for `cargo xtask crosscheck` to decode and compare with the host build.
//!
//! Decoded log lines (one per fact, space separated; `CLOCK`, `BLOB` and `LOGITS` are the
//! lines `soft crosscheck` reads, also written to the UART, see `soft_device`):
//!
//! ```text
//! SOFT-FIRMWARE <arena bytes> <digits per blob>
//! CLOCK <SysTick ticks per second> systick
//! CALIB <delay iterations> <ticks>       SysTick ticks across `asm::delay`: 2 instructions/iteration
//! KERNEL <name> <multiply-accumulates> <ticks>   one call of a kernel on synthetic data (`bench`)
//! BLOB <tag> <crc32> <bytes> f16 <classes>
//! LAYER <tag> <input> <checkpoint> <ticks since the run began>   per-layer progress
//! LOGITS <tag> <input> <ticks> <first class> <count> <count × f32::to_bits as 8 hex digits>
//! STEP <tag> <input> <stage> <step> <ticks spent in it>   first input of each blob
//! MEMORY <arena> <statics> <stack high-water>
//! DONE
//! ```
//!
//! Features: `f16`, `int8`, `w8a8` embed the demo blob of that tag (all three by default);
//! `bench` (default) adds the kernel benchmark; `psram` runs soft_tiny from PSRAM instead.

#![no_std]
#![no_main]
// The PSRAM build leaves the demo's code and data unused.
#![cfg_attr(feature = "psram", allow(dead_code, unused_imports))]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::debug;
use defmt::println;
use defmt_semihosting as _; // the global defmt logger: frames go to the host's stdout
use soft_core::{ArenaBuffer, Model, Precision};
use soft_device::input::{Inputs, DIGIT_SIDE};
use soft_device::{log, run, stack};

#[cfg(feature = "bench")]
mod bench;
mod board;
#[cfg(feature = "psram")]
mod psram;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
use generated::{ARENA_BYTES, DIGITS};

/// Arena bytes: the planner's figure for the demo blobs, or for the PSRAM model's SRAM
/// arena (both from the build script).
const ARENA_SIZE: usize = ARENA_BYTES;

/// Classes of the demo model.
const CLASSES: usize = 10;
/// The test pattern each blob also runs (at 64×64), besides the digits.
const PATTERN_SEED: u32 = 2024;
/// QEMU's mps2-an386 clocks the core, and so SysTick, at 25 MHz; the mps2-an505 at 20 MHz.
#[cfg(not(mps2_an505))]
const CORE_HZ: u64 = 25_000_000;
#[cfg(mps2_an505)]
const CORE_HZ: u64 = 20_000_000;

#[cfg(all(feature = "psram", mps2_an505))]
compile_error!("the PSRAM image is for the MPS2 AN386 (thumbv7em-none-eabihf)");

/// 16-byte alignment for an embedded blob, as [`Model::from_blob`] requires.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

#[cfg(feature = "f16")]
static F16_BLOB: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../target/demo/soft_digits_f16.soft"));
#[cfg(feature = "int8")]
static INT8_BLOB: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../target/demo/soft_digits_int8.soft"));
#[cfg(feature = "w8a8")]
static W8A8_BLOB: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../target/demo/soft_digits_w8a8.soft"));

/// The embedded blobs by tag, in the order they run.
static BLOBS: &[(&str, &Aligned<[u8]>)] = &[
    #[cfg(feature = "f16")]
    ("f16", F16_BLOB),
    #[cfg(feature = "int8")]
    ("int8", INT8_BLOB),
    #[cfg(feature = "w8a8")]
    ("w8a8", W8A8_BLOB),
];

/// SysTick reload: the full 24 bits; the exception counts wraps.
const RELOAD: u32 = 0x00FF_FFFF;
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Core-clock ticks since the SysTick was started. Under `qemu -icount shift=0` the
/// virtual clock advances 1 ns per instruction, so this counts instructions deterministically.
fn ticks() -> u64 {
    loop {
        let wraps = WRAPS.load(Ordering::SeqCst);
        let current = SYST::get_current();
        if WRAPS.load(Ordering::SeqCst) == wraps {
            return u64::from(wraps) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current);
        }
    }
}

#[entry]
fn main() -> ! {
    // cortex-m-rt turns this into a `&'static mut` handed out once: no `unsafe` needed.
    static mut ARENA: ArenaBuffer<ARENA_SIZE> = ArenaBuffer::new();
    stack::paint();

    let mut core = cortex_m::Peripherals::take().unwrap();
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(RELOAD);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let mut serial = board::Uart::take();
    #[cfg(not(feature = "psram"))]
    let result = run(&mut ARENA.0, &mut serial);
    #[cfg(feature = "psram")]
    let result = psram::run(&mut ARENA.0, &mut serial);
    let (statics, stack) = stack::usage();
    println!(
        "MEMORY {=usize} {=usize} {=usize}",
        ARENA_SIZE, statics, stack
    );
    let code = match result {
        Ok(()) => {
            println!("DONE");
            debug::EXIT_SUCCESS
        }
        Err(e) => {
            println!("ERROR {}", e);
            debug::EXIT_FAILURE
        }
    };
    debug::exit(code);
    loop {
        cortex_m::asm::wfi();
    }
}

fn run(arena: &mut [u8], serial: &mut impl embedded_io::Write) -> soft_core::Result<()> {
    println!("SOFT-FIRMWARE {=usize} {=usize}", arena.len(), DIGITS.len());
    log::clock(CORE_HZ, "systick", serial);

    // Calibrate the clock against a known instruction count: `asm::delay(n)` (cortex-m 0.7.10)
    // spins n + 1 times round a two-instruction loop.
    const CALIB: u32 = 4_000_000;
    let t0 = ticks();
    cortex_m::asm::delay(CALIB);
    println!("CALIB {=u32} {=u64}", CALIB, ticks() - t0);

    #[cfg(feature = "bench")]
    {
        bench::bench_linear();
        // The benchmark's buffers are not the model's: measure the stack from here.
        stack::paint();
    }

    let inputs = Inputs {
        digits: &DIGITS,
        patterns: &[PATTERN_SEED],
        side: DIGIT_SIDE,
    };
    for &(tag, blob) in BLOBS {
        let model = Model::from_blob(&blob.0)?;
        let crc32 = soft_core::Blob::stored_crc32(&blob.0).unwrap_or_default();
        let blob = run::Blob {
            tag,
            model: &model,
            crc32,
        };
        let mut logits = [0.0f32; CLASSES];
        run::run(
            &blob,
            &inputs,
            &mut run::Memories::One(&mut *arena),
            Precision::F16,
            &mut logits,
            ticks,
            serial,
        )?;
    }
    Ok(())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PANIC {}", defmt::Display2Format(info));
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
