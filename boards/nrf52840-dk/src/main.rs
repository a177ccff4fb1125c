//! Template: the soft demo digits model (or any blob, see `build.rs`) on an nRF52840-DK.
//!
//! At reset it starts the 64 MHz crystal oscillator, turns on the flash's instruction
//! cache and the DWT cycle counter, and runs the embedded test digits and one test pattern
//! through the model with f16 token maps, out of a static arena of exactly the planner's
//! size. It logs, over defmt-rtt (read by `probe-rs run`) and the UART (the J-Link's
//! virtual COM port on the DK, 115200 8N1), the lines `soft crosscheck` compares bit for bit
//! with the host:
//!
//! ```text
//! SOFT-BOARD nrf52840-dk <arena bytes> <digits>
//! CLOCK 64000000 dwt-cycles
//! BLOB <tag> <crc32> <bytes> f16 <classes>
//! LAYER <tag> <input> <checkpoint> <cycles since the run began>   (defmt only)
//! LOGITS <tag> <input> <cycles> <first class> <count> <bits…>
//! STEP <tag> <input> <stage> <step> <cycles>                      (defmt only, first input)
//! MEMORY <arena> <statics> <stack high-water>
//! DONE
//! ```
//!
//! Then it sleeps; if a debugger is attached (`probe-rs run`), it ends the session with a
//! semihosting exit instead, so the command returns. Nothing here is semihosting otherwise:
//! the board runs the same without a probe.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::{DCB, DWT};
use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use defmt::println;
use defmt_rtt as _; // the global defmt logger: RTT, read by the debug probe
use nrf52840_hal::{self as hal, gpio, uarte};
use soft_core::{ArenaBuffer, Model, Precision};
use soft_device::input::Inputs;
use soft_device::{log, run, stack};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
use generated::{ARENA_BYTES, CLASSES, DIGITS, MODEL, SIDE, TAG};

/// The core clock: the nRF52840 always runs at 64 MHz.
const CORE_HZ: u64 = 64_000_000;
/// RAM (`memory.x`).
const RAM_BYTES: usize = 256 * 1024;
/// Stack to leave beside the statics: `cargo xtask crosscheck` measures 23 KB for the demo
/// on the same core (QEMU), the `MEMORY` line on the board.
const STACK_BUDGET: usize = 32 * 1024;
/// The test pattern run after the digits (`soft_core::TestPattern`, at SIDE × SIDE).
const PATTERN_SEED: u32 = 2024;

const _: () = assert!(
    ARENA_BYTES + STACK_BUDGET + 8 * 1024 <= RAM_BYTES,
    "the model's arena does not fit the nRF52840's 256 KiB of RAM beside a 32 KiB stack: \
     pick a smaller model or input"
);

/// The UART as an `embedded_io::Write`. EasyDMA reads only RAM, so bytes (which may sit
/// in flash) go through a small buffer on the stack.
struct Serial(hal::Uarte<hal::pac::UARTE0>);

impl embedded_io::ErrorType for Serial {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let mut ram = [0u8; 64];
        let n = buf.len().min(ram.len());
        if n == 0 {
            return Ok(0);
        }
        ram[..n].copy_from_slice(&buf[..n]);
        self.0
            .write(&ram[..n])
            .map_err(|_| embedded_io::ErrorKind::Other)?;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The high half of the cycle clock and the last CYCCNT read: CYCCNT is 32 bits and wraps
/// every 67 s at 64 MHz, and the clock is read far more often than that (every layer).
static HIGH: AtomicU32 = AtomicU32::new(0);
static LAST: AtomicU32 = AtomicU32::new(0);

/// Core cycles since the counter started (DWT CYCCNT, widened to 64 bits).
fn cycles() -> u64 {
    let now = DWT::cycle_count();
    let mut high = HIGH.load(Ordering::Relaxed);
    if now < LAST.swap(now, Ordering::Relaxed) {
        high += 1;
        HIGH.store(high, Ordering::Relaxed);
    }
    (u64::from(high) << 32) | u64::from(now)
}

#[entry]
fn main() -> ! {
    // cortex-m-rt turns this into a `&'static mut` handed out once: the arena lives in
    // .bss, exactly the planner's size.
    static mut ARENA: ArenaBuffer<ARENA_BYTES> = ArenaBuffer::new();
    stack::paint();

    let mut core = cortex_m::Peripherals::take().unwrap();
    let p = hal::pac::Peripherals::take().unwrap();
    // The crystal, for an accurate UART baud rate; the core runs at 64 MHz either way.
    let _clocks = hal::clocks::Clocks::new(p.CLOCK).enable_ext_hfosc();
    // The flash's instruction cache is off at reset; code and weights stream from flash.
    p.NVMC.icachecnf.write(|w| w.cacheen().enabled());
    core.DCB.enable_trace();
    core.DWT.enable_cycle_counter();

    let port0 = gpio::p0::Parts::new(p.P0);
    let pins = uarte::Pins {
        // P0.06 / P0.08: the DK's UART to the interface MCU's virtual COM port.
        txd: port0
            .p0_06
            .into_push_pull_output(gpio::Level::High)
            .degrade(),
        rxd: port0.p0_08.into_floating_input().degrade(),
        cts: None,
        rts: None,
    };
    let mut serial = Serial(hal::Uarte::new(
        p.UARTE0,
        pins,
        uarte::Parity::EXCLUDED,
        uarte::Baudrate::BAUD115200,
    ));

    let result = run(&mut ARENA.0, &mut serial);
    let (statics, stack) = stack::usage();
    println!(
        "MEMORY {=usize} {=usize} {=usize}",
        ARENA_BYTES, statics, stack
    );
    match result {
        Ok(()) => {
            println!("DONE");
            finish(true)
        }
        Err(e) => {
            println!("ERROR {}", e);
            finish(false)
        }
    }
}

fn run(arena: &mut [u8], serial: &mut Serial) -> soft_core::Result<()> {
    println!(
        "SOFT-BOARD nrf52840-dk {=usize} {=usize}",
        arena.len(),
        DIGITS.len()
    );
    log::clock(CORE_HZ, "dwt-cycles", serial);
    let t0 = cycles();
    let model = Model::from_blob(&MODEL.0)?;
    println!("LOADED {=usize} {=u64}", MODEL.0.len(), cycles() - t0);
    let blob = run::Blob {
        tag: TAG,
        model: &model,
        crc32: soft_core::Blob::stored_crc32(&MODEL.0).unwrap_or_default(),
    };
    let inputs = Inputs {
        digits: &DIGITS,
        patterns: &[PATTERN_SEED],
        side: SIDE,
    };
    let mut logits = [0.0f32; CLASSES];
    run::run(
        &blob,
        &inputs,
        &mut run::Memories::One(arena),
        Precision::F16,
        &mut logits,
        cycles,
        serial,
    )?;
    Ok(())
}

/// Ends the program: with a debugger attached (`probe-rs run`), a semihosting exit that
/// ends the session with the program's status; on its own, sleep.
fn finish(ok: bool) -> ! {
    if DCB::is_debugger_attached() {
        debug::exit(if ok {
            debug::EXIT_SUCCESS
        } else {
            debug::EXIT_FAILURE
        });
    }
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PANIC {}", defmt::Display2Format(info));
    finish(false)
}
