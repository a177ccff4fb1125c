//! `--features bench` (on by default): times one linear layer, the GEMM as the engine
//! calls it, in each weight format (`KERNEL` lines), and checks the device's integer
//! kernels against the generic ones bit for bit (`W8A8-CHECK`). Its weights take 258 KB
//! of flash, which a small board may not have: the board templates leave it out.

use cortex_m_semihosting::debug;
use defmt::println;
use soft_core::kernels::quant::quant_values_len;
use soft_core::kernels::rng::XorShift64;
use soft_core::kernels::{
    Kernels, Lhs, Out, QuantRowsMut, QuantWeights, Rhs, RhsData, Start, Strided, Vector,
};

use crate::ticks;

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
pub fn bench_linear() {
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

/// Times one `m × m` f32 product, `Start::Zero`, as the Newton–Schulz step calls it (with
/// `P` stored, on one worker).
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
