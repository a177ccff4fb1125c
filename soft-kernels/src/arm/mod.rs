//! Kernels for ARMv7E-M cores (Cortex-M4, M7): the generic kernels, with the integer
//! linear layer on the DSP extension's dual 16-bit multiply-accumulate (`SMLAD`).
//!
//! The only `unsafe` here is the inline assembly of [`gemm_q8`]'s inner loop.

#![warn(clippy::undocumented_unsafe_blocks)]

use crate::operand::{Out, Start};
use crate::quant::{padded_depth, QuantRows, QuantWeights, DEPTH_GROUP, TOKEN_GROUP};
use crate::table::Kernels;

/// The generic kernels with the DSP integer layer.
pub static DSP: Kernels = Kernels {
    name: "armv7em-dsp",
    gemm_q8,
    ..crate::generic::GENERIC
};

/// Outputs whose integer sums one call of [`dot_quad`] leaves on the stack before they
/// are rescaled: 1 KiB.
const OUTPUT_CHUNK: usize = 64;

/// [`Kernels::gemm_q8`](crate::Kernels::gemm_q8) with a register block of four tokens
/// (one quad of the activation layout) by one output: per four depths, one `LDR` and
/// one `SXTB16` give the output's even weights, one `LDM` the four tokens' matching
/// activation pairs, four `SMLAD`s do eight multiply-accumulates; the same again for
/// the odd depths. 14 instructions for 16 MACs. The assembly walks a chunk of outputs
/// and leaves their sums; the rescale to f32 follows in Rust, with every register free.
fn gemm_q8(x: &QuantRows<'_>, w: &QuantWeights<'_>, start: Start<'_>, out: &mut Out<'_>) {
    let padded = padded_depth(x.depth());
    let (values, q) = (x.values(), w.q());
    // LDM needs word-aligned activations, and the weight rows are read as words: an
    // engine's arena gives both, anything else takes the generic path.
    let aligned =
        values.as_ptr().cast::<u32>().is_aligned() && q.as_ptr().cast::<u32>().is_aligned();
    if padded == 0 || !aligned {
        return (crate::generic::GENERIC.gemm_q8)(x, w, start, out);
    }
    let (rows, outputs) = (x.rows(), w.outputs());
    let (sx, sw) = (x.scales(), w.scales());
    let stride = out.row_stride();
    let data = out.data();
    let mut sums = [[0i32; TOKEN_GROUP]; OUTPUT_CHUNK];
    let mut biases = [0.0f32; OUTPUT_CHUNK];
    let chunks = q[..outputs * padded].chunks(OUTPUT_CHUNK * padded);
    for (chunk, weights) in chunks.enumerate() {
        let count = weights.len() / padded;
        let o0 = chunk * OUTPUT_CHUNK;
        let biases = &mut biases[..count];
        for (o, bias) in biases.iter_mut().enumerate() {
            *bias = match start {
                Start::Bias(b) => b.get(o0 + o),
                _ => 0.0,
            };
        }
        let quads = values
            .chunks_exact(TOKEN_GROUP * padded)
            .take(rows.div_ceil(TOKEN_GROUP));
        for (quad, activations) in quads.enumerate() {
            let t0 = quad * TOKEN_GROUP;
            let live = (rows - t0).min(TOKEN_GROUP);
            let sums = &mut sums[..count];
            dot_quad(activations, weights, padded, sums);
            for (s, &scale) in sx[t0..t0 + live].iter().enumerate() {
                let row = &mut data[(t0 + s) * stride + o0..][..count];
                for (((y, sum), &weight_scale), &bias) in row
                    .iter_mut()
                    .zip(sums.iter())
                    .zip(&sw[o0..])
                    .zip(biases.iter())
                {
                    *y = ((sum[s] as f32) * scale) * weight_scale + bias;
                }
            }
        }
    }
}

/// One group of four depths for the four tokens against one output: the even weights
/// (`SXTB16`) with the activations' even words, then the odd ones (`ROR #8`) with the odd
/// words; the weight pointer advances one word, the activation pointer eight.
macro_rules! four_depths {
    () => {
        concat!(
            "ldr {w}, [{wp}]\n",
            "sxtb16 {w}, {w}\n",
            "ldm {xp}!, {{r0, r1, r2, r3}}\n",
            "smlad {a0}, r0, {w}, {a0}\n",
            "smlad {a1}, r1, {w}, {a1}\n",
            "smlad {a2}, r2, {w}, {a2}\n",
            "smlad {a3}, r3, {w}, {a3}\n",
            "ldr {w}, [{wp}], #4\n",
            "sxtb16 {w}, {w}, ror #8\n",
            "ldm {xp}!, {{r0, r1, r2, r3}}\n",
            "smlad {a0}, r0, {w}, {a0}\n",
            "smlad {a1}, r1, {w}, {a1}\n",
            "smlad {a2}, r2, {w}, {a2}\n",
            "smlad {a3}, r3, {w}, {a3}",
        )
    };
}

/// The four tokens' integer dot products with each of `sums.len()` outputs' weights.
///
/// `activations`: one quad's `4 · n` values in the layout; `weights`: `sums.len()` rows
/// of `n` values; `n` a non-zero multiple of [`DEPTH_GROUP`]; both word-aligned.
fn dot_quad(activations: &[i16], weights: &[i8], n: usize, sums: &mut [[i32; TOKEN_GROUP]]) {
    const _: () = assert!(DEPTH_GROUP == 16 && TOKEN_GROUP == 4, "the loop below");
    // What the loop's bounds rest on; the caller guarantees it, the check keeps a
    // mistake from becoming an out-of-bounds access.
    assert!(
        n > 0
            && n.is_multiple_of(DEPTH_GROUP)
            && activations.len() == TOKEN_GROUP * n
            && !sums.is_empty()
            && weights.len() == sums.len() * n
    );
    // Read by the assembly at each output's start and end, from the stack.
    let mut context: [usize; 4] = [
        activations.as_ptr() as usize,
        n,
        sums.as_mut_ptr() as usize,
        weights.as_ptr_range().end as usize,
    ];
    // SAFETY: the outer loop runs once per output (it ends when the weight pointer
    // reaches the end of `weights`, `sums.len()` rows of n bytes). Each output resets
    // the activation pointer to the quad's start and runs the inner loop n / 16 times
    // (until the weight pointer has advanced n bytes); each inner iteration reads 128
    // bytes of activations (eight LDMs of four words) and 16 bytes of weights (each
    // word twice), so an output reads exactly the 8n bytes of `activations` and its n
    // bytes of `weights`. After each output, two STRDs write its four sums, 16 bytes, at
    // the sums pointer kept in `context`, which then advances: `sums.len()` outputs
    // write exactly `sums`. Both inputs are word-aligned (checked by the caller), all
    // three slices are live for the call, and `context` is a live local the assembly
    // reads and writes through r0. The one word pushed is popped before the end, so sp
    // is restored. r0–r3 and the flags (CMP) are declared clobbered; SMLAD's Q flag is
    // not read by Rust code.
    unsafe {
        core::arch::asm!(
            "push {{r0}}",
            "3:",
            "ldr r0, [sp]",
            "ldr {xp}, [r0]",
            "ldr {wend}, [r0, #4]",
            "add {wend}, {wp}, {wend}",
            "mov {a0}, #0",
            "mov {a1}, #0",
            "mov {a2}, #0",
            "mov {a3}, #0",
            "2:",
            four_depths!(),
            four_depths!(),
            four_depths!(),
            four_depths!(),
            "cmp {wp}, {wend}",
            "bne 2b",
            "ldr r0, [sp]",
            "ldr r1, [r0, #8]",
            "strd {a0}, {a1}, [r1], #8",
            "strd {a2}, {a3}, [r1], #8",
            "str r1, [r0, #8]",
            "ldr r1, [r0, #12]",
            "cmp {wp}, r1",
            "bne 3b",
            "add sp, #4",
            xp = out(reg) _,
            wp = inout(reg) weights.as_ptr() => _,
            wend = out(reg) _,
            w = out(reg) _,
            a0 = out(reg) _,
            a1 = out(reg) _,
            a2 = out(reg) _,
            a3 = out(reg) _,
            inout("r0") context.as_mut_ptr() => _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
        );
    }
}
