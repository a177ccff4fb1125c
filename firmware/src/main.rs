//! Runs the soft demo digits model on a Cortex-M4F (QEMU `mps2-an386`) and logs, with defmt
//! over semihosting, the exact bits of every logit plus a deterministic instruction clock,
//! for `cargo xtask crosscheck` to decode and compare with the host build.
//!
//! Decoded log lines (one per fact, space separated, parsed by the xtask):
//!
//! ```text
//! SOFT-FIRMWARE <arena bytes> <digits per blob>
//! CALIB <delay iterations> <ticks>       SysTick ticks across `asm::delay`: 2 instructions/iteration
//! KERNEL <name> <multiply-accumulates> <ticks>   one call of a kernel on synthetic data
//! LAYER <blob> <digit index> <checkpoint> <ticks since the run began>   per-layer progress
//! LOGITS <blob> <digit index> <ticks> <10 × f32::to_bits as 8 hex digits>
//! STEP <blob> <digit index> <stage> <step> <ticks spent in it>   digit 0 only
//! DONE
//! ```

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
use soft_core::kernels::quant::quant_values_len;
use soft_core::kernels::rng::XorShift64;
use soft_core::kernels::{
    Kernels, Lhs, Out, QuantRowsMut, QuantWeights, Rhs, RhsData, Start, Strided, Vector,
};
use soft_core::probe::{Activity, Checkpoint, Step, Tokens};
use soft_core::{argmax, ArenaBuffer, Error, ImageSource, Model, Precision, Probe};

mod board;
#[cfg(feature = "psram")]
mod psram;
mod stack;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
use generated::{ARENA_BYTES, DIGITS};

/// Arena bytes: the planner's figure for the demo blobs, or the PSRAM model's budget.
#[cfg(not(feature = "psram"))]
const ARENA_SIZE: usize = ARENA_BYTES;
#[cfg(feature = "psram")]
const ARENA_SIZE: usize = psram::ARENA_BYTES;

/// Input side: the 8×8 digits are upsampled ×8, as in training.
const SIDE: usize = 64;
/// Classes of the demo model.
const CLASSES: usize = 10;

/// 16-byte alignment for an embedded blob, as [`Model::from_blob`] requires.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

static F16_BLOB: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../target/demo/soft_digits_f16.soft"));
static INT8_BLOB: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../target/demo/soft_digits_int8.soft"));
static W8A8_BLOB: &Aligned<[u8]> =
    &Aligned(*include_bytes!("../../target/demo/soft_digits_w8a8.soft"));

/// One 8×8 digit (pixels 0..=16), streamed as the normalised 3×64×64 image the model was
/// trained on: `pixel / 16`, nearest ×8 upsampling, `(x − 0.5) / 0.5`, the same plane in
/// all three channels. Matches `soft_host::demo::preprocess` operation for operation.
struct Digit<'a>(&'a [f32; 64]);

impl ImageSource for Digit<'_> {
    fn height(&self) -> usize {
        SIDE
    }

    fn width(&self) -> usize {
        SIDE
    }

    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> soft_core::Result<()> {
        if y >= SIDE || rgb.len() != 3 * SIDE {
            return Err(Error::InputSource);
        }
        let row = &self.0[(y / 8) * 8..][..8];
        for (x, px) in rgb.chunks_exact_mut(3).enumerate() {
            let v = row[x / 8] / 16.0;
            px.fill((v - 0.5) / 0.5);
        }
        Ok(())
    }
}

/// Steps the per-step clock tells apart: [`Step`]'s variants, and one slot for any later.
const STEPS: usize = 11;

fn step_slot(step: Step) -> usize {
    match step {
        Step::Stem => 0,
        Step::PatchEmbed => 1,
        Step::Position => 2,
        Step::Projections => 3,
        Step::Landmarks => 4,
        Step::KeyValue => 5,
        Step::Newton => 6,
        Step::Attention => 7,
        Step::Mlp => 8,
        Step::Head => 9,
        _ => 10,
    }
}

/// Logs each layer as the run passes it, with the instruction clock, and adds up the
/// ticks each (stage, step) takes.
struct Progress<'a> {
    blob: &'a str,
    digit: usize,
    start: u64,
    /// The step running and when it started.
    current: Option<(Activity, u64)>,
    /// Ticks per stage (0–4) and step slot.
    steps: [[u64; STEPS]; 5],
    /// The step each slot holds, for the log.
    names: [Option<Step>; STEPS],
}

impl<'a> Progress<'a> {
    fn new(blob: &'a str, digit: usize, start: u64) -> Self {
        Progress {
            blob,
            digit,
            start,
            current: None,
            steps: [[0; STEPS]; 5],
            names: [None; STEPS],
        }
    }

    /// Charges the running step up to now.
    fn close(&mut self, now: u64) {
        if let Some((at, since)) = self.current.take() {
            let slot = step_slot(at.step);
            if let Some(t) = self
                .steps
                .get_mut(usize::from(at.stage))
                .and_then(|s| s.get_mut(slot))
            {
                *t += now - since;
            }
            if let Some(name) = self.names.get_mut(slot) {
                *name = Some(at.step);
            }
        }
    }

    /// Logs the ticks of every (stage, step) that ran.
    fn log_steps(&self) {
        for (stage, steps) in self.steps.iter().enumerate() {
            for (&t, name) in steps.iter().zip(&self.names) {
                if let (Some(step), true) = (name, t > 0) {
                    println!(
                        "STEP {=str} {=usize} {=usize} {} {=u64}",
                        self.blob, self.digit, stage, step, t
                    );
                }
            }
        }
    }
}

impl Probe for Progress<'_> {
    fn enter(&mut self, at: Activity) {
        let now = ticks();
        self.close(now);
        self.current = Some((at, now));
    }

    fn finish(&mut self) {
        self.close(ticks());
    }

    fn observe(&mut self, at: Checkpoint, _: Tokens<'_>, _: usize, _: usize) {
        println!(
            "LAYER {=str} {=usize} {} {=u64}",
            self.blob,
            self.digit,
            at,
            ticks() - self.start
        );
    }
}

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

    // Calibrate the clock against a known instruction count: `asm::delay(n)` (cortex-m 0.7.10)
    // spins n + 1 times round a two-instruction loop.
    const CALIB: u32 = 4_000_000;
    let t0 = ticks();
    cortex_m::asm::delay(CALIB);
    println!("CALIB {=u32} {=u64}", CALIB, ticks() - t0);

    bench_linear();
    // The benchmark's buffers are not the model's: measure the stack from here.
    stack::paint();

    for (tag, blob) in [("f16", F16_BLOB), ("int8", INT8_BLOB), ("w8a8", W8A8_BLOB)] {
        let model = Model::from_blob(&blob.0)?;
        let plan = model.plan(SIDE, SIDE, Precision::F16)?;
        if plan.peak_bytes > arena.len() {
            return Err(Error::ArenaTooSmall {
                needed: plan.peak_bytes,
                available: arena.len(),
            });
        }
        for (index, pixels) in DIGITS.iter() {
            let mut logits = [0.0f32; CLASSES];
            let t0 = ticks();
            let mut progress = Progress::new(tag, *index, t0);
            let report = model.run(
                &mut Digit(pixels),
                arena,
                Precision::F16,
                &mut logits,
                &mut progress,
            )?;
            let elapsed = ticks() - t0;
            if *index == 0 {
                progress.log_steps();
            }
            if report.peak_bytes != plan.peak_bytes {
                println!(
                    "WARN {=str} peak {=usize} != plan {=usize}",
                    tag, report.peak_bytes, plan.peak_bytes
                );
            }
            // A human-readable line on the serial port, for whoever watches the board.
            let _ = writeln!(
                serial,
                "soft {tag}: digit #{index} is a {} ({elapsed} ticks)\r",
                argmax(&logits)
            );
            let b = logits.map(f32::to_bits);
            println!(
                "LOGITS {=str} {=usize} {=u64} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x} {=u32:08x}",
                tag, index, elapsed, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]
            );
        }
    }
    Ok(())
}

/// Shape of the kernel benchmark: the demo model's stage-4 MLP (96 → 384) on one tile of
/// 8 tokens, as the engine calls it.
const BENCH_IN: usize = 96;
const BENCH_OUT: usize = 384;
const BENCH_TOKENS: usize = 8;

/// A fixed pseudo-random sequence (the project's xorshift64, top 32 bits), so the
/// weights are the same every build.
const fn pattern<const N: usize>(seed: u32) -> [u32; N] {
    let mut out = [0u32; N];
    let mut rng = XorShift64::new(seed as u64);
    let mut i = 0;
    while i < N {
        out[i] = (rng.next_u64() >> 32) as u32;
        i += 1;
    }
    out
}

const BENCH_SEED: u32 = 0x5eed_1234;

/// Finite f16 weights of magnitude below 2: sign, exponent 0..=15, any mantissa.
static BENCH_F16: [u16; BENCH_IN * BENCH_OUT] = {
    let mut out = [0u16; BENCH_IN * BENCH_OUT];
    let bits: [u32; BENCH_IN * BENCH_OUT] = pattern(BENCH_SEED);
    let mut i = 0;
    while i < out.len() {
        out[i] = (bits[i] & 0xbfff) as u16;
        i += 1;
    }
    out
};
/// Word-aligned, as the DSP kernels read their operands (an arena gives that too).
#[repr(C, align(4))]
struct WordAligned<T>(T);

/// int8 weights: `[in][out]` for the float-activation GEMM, and read output-major
/// (`BENCH_IN` is a multiple of 16, so no padding) for the integer layer.
static BENCH_I8: WordAligned<[i8; BENCH_IN * BENCH_OUT]> = WordAligned({
    let mut out = [0i8; BENCH_IN * BENCH_OUT];
    let bits: [u32; BENCH_IN * BENCH_OUT] = pattern(BENCH_SEED);
    let mut i = 0;
    while i < out.len() {
        out[i] = (bits[i] >> 24) as u8 as i8;
        i += 1;
    }
    out
});
static BENCH_F32: [f32; BENCH_IN * BENCH_OUT] = {
    let mut out = [0f32; BENCH_IN * BENCH_OUT];
    let bits: [u32; BENCH_IN * BENCH_OUT] = pattern(BENCH_SEED);
    let mut i = 0;
    while i < out.len() {
        out[i] = ((bits[i] >> 8) as f32) / 16_777_216.0 - 0.5;
        i += 1;
    }
    out
};
static BENCH_SCALES: [f32; BENCH_OUT] = [0.01; BENCH_OUT];
static BENCH_BIAS: [f32; BENCH_OUT] = [0.25; BENCH_OUT];

/// Times one linear layer (the kernel table's GEMM, as the engine calls it) once per
/// weight format and logs `KERNEL` lines. Never inlined: its buffers must not sit in
/// the caller's frame, where they would count as the model's stack.
#[inline(never)]
fn bench_linear() {
    let mut x = [0f32; BENCH_TOKENS * BENCH_IN];
    for (i, v) in x.iter_mut().enumerate() {
        *v = (i % 17) as f32 * 0.125 - 1.0;
    }
    let mut y = [0f32; BENCH_TOKENS * BENCH_OUT];
    let bias = Start::Bias(Vector::F32(&BENCH_BIAS));
    let kernels = Kernels::generic();
    for (name, data) in [
        ("linear-f32", RhsData::F32(&BENCH_F32)),
        ("linear-f16", RhsData::F16Finite(&BENCH_F16)),
        (
            "linear-int8",
            RhsData::I8 {
                q: &BENCH_I8.0,
                scales: &BENCH_SCALES,
            },
        ),
    ] {
        let call = |y: &mut [f32]| -> Result<(), soft_core::kernels::Error> {
            let lhs = Lhs::new(Strided::rows_of(&x, BENCH_TOKENS, BENCH_IN, BENCH_IN)?);
            let rhs = Rhs::new(data, BENCH_IN, BENCH_OUT, BENCH_OUT)?;
            let mut out = Out::new(y, BENCH_TOKENS, BENCH_OUT, BENCH_OUT)?;
            kernels.gemm(&lhs, &rhs, bias, &mut out)
        };
        let t0 = ticks();
        let result = call(&mut y);
        let elapsed = ticks() - t0;
        if let Err(e) = result {
            println!("PANIC kernel bench: {}", defmt::Display2Format(&e));
            debug::exit(debug::EXIT_FAILURE);
        }
        log_kernel(name, BENCH_MACS, elapsed, &y);
    }
    bench_integer_linear(&x, bias);
    bench_square();
}

/// Side of the square f32 product the attention's Newton–Schulz step repeats (`m = 49`
/// landmarks, soft_tiny at 224×224).
const SQUARE: usize = 49;

/// Times one `m × m` f32 product, `Start::Zero`, as `newton::product` calls it.
#[inline(never)]
fn bench_square() {
    let a: [f32; SQUARE * SQUARE] = core::array::from_fn(|i| BENCH_F32[i]);
    let b: [f32; SQUARE * SQUARE] = core::array::from_fn(|i| BENCH_F32[i + 7]);
    let mut y = [0f32; SQUARE * SQUARE];
    let call = |y: &mut [f32]| -> Result<(), soft_core::kernels::Error> {
        let lhs = Lhs::new(Strided::rows_of(&a, SQUARE, SQUARE, SQUARE)?);
        let rhs = Rhs::f32(Strided::rows_of(&b, SQUARE, SQUARE, SQUARE)?)?;
        let mut out = Out::new(y, SQUARE, SQUARE, SQUARE)?;
        Kernels::generic().gemm(&lhs, &rhs, Start::Zero, &mut out)
    };
    let t0 = ticks();
    let result = call(&mut y);
    let elapsed = ticks() - t0;
    if let Err(e) = result {
        println!("PANIC kernel bench: {}", defmt::Display2Format(&e));
        debug::exit(debug::EXIT_FAILURE);
    }
    log_kernel("square-f32-49", SQUARE * SQUARE * SQUARE, elapsed, &y);
}

/// Logs one `KERNEL` line; the checksum keeps the result observable, so the call is not
/// optimised away.
fn log_kernel(name: &str, macs: usize, elapsed: u64, y: &[f32]) {
    let checksum = y.iter().fold(0u32, |a, v| a.rotate_left(1) ^ v.to_bits());
    println!(
        "KERNEL {=str} {=usize} {=u64} {=u32:08x}",
        name, macs, elapsed, checksum
    );
}

/// Multiply-accumulates of one benchmark linear layer.
const BENCH_MACS: usize = BENCH_TOKENS * BENCH_IN * BENCH_OUT;

/// The same layer as W8A8 (per-token quantisation, then the integer GEMM, as the
/// engine will call them): timed with the fastest kernels (`linear-w8a8`) and the
/// generic ones, whose outputs must agree bit for bit.
fn bench_integer_linear(x: &[f32], bias: Start<'_>) {
    const VALUES: usize = quant_values_len(BENCH_TOKENS, BENCH_IN);
    let mut values = WordAligned([0i16; VALUES]);
    let mut scales = [0f32; BENCH_TOKENS];
    let mut results = [[0f32; BENCH_TOKENS * BENCH_OUT]; 2];
    let tables = [
        ("linear-w8a8", Kernels::detect()),
        ("linear-w8a8-generic", Kernels::generic()),
    ];
    for ((name, kernels), y) in tables.into_iter().zip(results.iter_mut()) {
        let call = |values: &mut [i16], scales: &mut [f32], y: &mut [f32]| {
            let src = Lhs::new(Strided::rows_of(x, BENCH_TOKENS, BENCH_IN, BENCH_IN)?);
            let mut q = QuantRowsMut::new(values, scales, BENCH_TOKENS, BENCH_IN)?;
            kernels.quantize(&src, &mut q)?;
            let w = QuantWeights::new(&BENCH_I8.0, &BENCH_SCALES, BENCH_OUT, BENCH_IN)?;
            let mut out = Out::new(y, BENCH_TOKENS, BENCH_OUT, BENCH_OUT)?;
            kernels.gemm_q8(&q.as_rows(), &w, bias, &mut out)
        };
        let t0 = ticks();
        let result = call(&mut values.0, &mut scales, y);
        let elapsed = ticks() - t0;
        if let Err(e) = result {
            println!("PANIC kernel bench: {}", defmt::Display2Format(&e));
            debug::exit(debug::EXIT_FAILURE);
        }
        log_kernel(name, BENCH_MACS, elapsed, y);
    }
    let [fast, generic] = &results;
    if fast
        .iter()
        .zip(generic)
        .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        println!("PANIC kernel bench: the W8A8 kernels differ from the generic ones");
        debug::exit(debug::EXIT_FAILURE);
    }
    check_integer_shapes(x);
}

/// The device's integer kernels against the generic ones on shapes the benchmark does
/// not reach: a partial last quad, depths that need padding, output counts around the
/// 64-output chunk, with and without a bias. Any differing bit ends the run.
fn check_integer_shapes(x: &[f32]) {
    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 16, 1),
        (3, 20, 5),
        (5, 96, 63),
        (7, 40, 65),
        (4, 33, 70),
        (8, 96, 129),
    ];
    let mut values = WordAligned([0i16; quant_values_len(BENCH_TOKENS, BENCH_IN)]);
    let mut scales = [0f32; BENCH_TOKENS];
    let mut results = [[0f32; BENCH_TOKENS * 129]; 2];
    for (i, &(rows, depth, outputs)) in SHAPES.iter().enumerate() {
        let start = if i % 2 == 0 {
            Start::Zero
        } else {
            Start::Bias(Vector::F32(&BENCH_BIAS))
        };
        let tables = [Kernels::detect(), Kernels::generic()];
        for (kernels, y) in tables.into_iter().zip(results.iter_mut()) {
            let result = (|| {
                let src = Lhs::new(Strided::rows_of(x, rows, depth, BENCH_IN)?);
                let mut q = QuantRowsMut::new(&mut values.0, &mut scales, rows, depth)?;
                kernels.quantize(&src, &mut q)?;
                let w = QuantWeights::new(&BENCH_I8.0, &BENCH_SCALES, outputs, depth)?;
                let mut out = Out::new(y, rows, outputs, outputs)?;
                kernels.gemm_q8(&q.as_rows(), &w, start, &mut out)
            })();
            if let Err(e) = result {
                println!("PANIC integer kernel check: {}", defmt::Display2Format(&e));
                debug::exit(debug::EXIT_FAILURE);
            }
        }
        let [fast, generic] = &results;
        let n = rows * outputs;
        if fast[..n]
            .iter()
            .zip(&generic[..n])
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            println!(
                "PANIC integer kernel check: shape {=usize}x{=usize}x{=usize} differs",
                rows, depth, outputs
            );
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    println!("W8A8-CHECK {=usize}", SHAPES.len());
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("PANIC {}", defmt::Display2Format(info));
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
