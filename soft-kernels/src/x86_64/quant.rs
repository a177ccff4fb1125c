//! The integer linear layer on AVX2: `vpmaddwd` multiplies sixteen 16-bit pairs and adds
//! each pair, so one instruction does eight outputs' two multiply-accumulates. Vectorised
//! across outputs (eight per vector), four tokens (one quad of the layout) per block; a
//! panel of eight outputs' weights is rearranged into the activations' pair order once
//! per depth chunk, for every quad. The sums are exact integers, so the bits equal the
//! generic kernel's by construction; the rescale is the same scalar expression.

use core::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_set1_epi32,
    _mm256_setzero_si256, _mm256_storeu_si256,
};

use crate::operand::{Out, Start};
use crate::quant::{padded_depth, QuantRows, QuantWeights, TOKEN_GROUP};

/// Outputs per vector.
const LANES: usize = 8;
/// Depths one panel holds: 512 pair steps of 8 outputs, 16 KiB of stack.
const PANEL_DEPTH: usize = 1024;

/// See the module docs.
///
/// # Safety
/// The CPU must have AVX2, and the operands must have passed `Kernels::gemm_q8`'s
/// checks (which [`QuantRows::new`] and [`QuantWeights::new`] did in part).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm_q8(
    x: &QuantRows<'_>,
    w: &QuantWeights<'_>,
    start: Start<'_>,
    out: &mut Out<'_>,
) {
    let padded = padded_depth(x.depth());
    if padded == 0 {
        // No depth: every sum is 0, which the generic kernel writes.
        return (crate::generic::GENERIC.gemm_q8)(x, w, start, out);
    }
    let groups = padded / 4;
    let (rows, outputs) = (x.rows(), w.outputs());
    let quads = rows.div_ceil(TOKEN_GROUP);
    let (values, q) = (x.values(), w.q());
    let (sx, sw) = (x.scales(), w.scales());
    let stride = out.row_stride();
    let data = out.data();
    let mut panel = [[0i16; 2 * LANES]; PANEL_DEPTH / 2];
    for ob in (0..outputs).step_by(LANES) {
        let width = LANES.min(outputs - ob);
        for c0 in (0..padded).step_by(PANEL_DEPTH) {
            let depths = PANEL_DEPTH.min(padded - c0);
            let steps = depths / 2;
            // Pair step j (group g = c0/4 + j/2, half h = j%2): lane o holds
            // (w[ob+o][4g+h], w[ob+o][4g+h+2]), zero past the last output. Each output's
            // row is read in order, four depths at a time.
            if width < LANES {
                panel.iter_mut().take(steps).for_each(|step| step.fill(0));
            }
            for o in 0..width {
                let row = &q[(ob + o) * padded + c0..][..depths];
                for (four, steps) in row.chunks_exact(4).zip(panel.chunks_exact_mut(2)) {
                    steps[0][2 * o] = i16::from(four[0]);
                    steps[0][2 * o + 1] = i16::from(four[2]);
                    steps[1][2 * o] = i16::from(four[1]);
                    steps[1][2 * o + 1] = i16::from(four[3]);
                }
            }
            let first = c0 == 0;
            let last = c0 + depths == padded;
            for u in 0..quads {
                let t0 = u * TOKEN_GROUP;
                let live = (rows - t0).min(TOKEN_GROUP);
                let mut acc = [[0i32; LANES]; TOKEN_GROUP];
                if !first {
                    // Partial sums of the earlier chunks, parked in the output as bits.
                    for (s, a) in acc.iter_mut().enumerate().take(live) {
                        let row = &data[(t0 + s) * stride + ob..][..width];
                        for (ai, v) in a.iter_mut().zip(row) {
                            *ai = v.to_bits() as i32;
                        }
                    }
                }
                // Word index of step 0 of this chunk for token 0 of the quad.
                let base = (u * groups + c0 / 4) * 2 * TOKEN_GROUP;
                // SAFETY: AVX2 is enabled on this function. The words read are
                // `base + 4j + s` for j < steps, s < 4: within quad u's 2·padded words
                // (`values` holds quads · 4 · padded i16, checked by QuantRows::new), read
                // unaligned from the i16 slice. The panel and `acc` are locals.
                unsafe {
                    let words = values.as_ptr().cast::<i32>();
                    let mut sums: [__m256i; TOKEN_GROUP] = [_mm256_setzero_si256(); TOKEN_GROUP];
                    for (s, sum) in sums.iter_mut().enumerate() {
                        *sum = _mm256_loadu_si256(acc[s].as_ptr().cast());
                    }
                    for (j, step) in panel.iter().take(steps).enumerate() {
                        let wv = _mm256_loadu_si256(step.as_ptr().cast());
                        let at = words.add(base + TOKEN_GROUP * j);
                        for (s, sum) in sums.iter_mut().enumerate() {
                            let xv = _mm256_set1_epi32(at.add(s).read_unaligned());
                            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(xv, wv));
                        }
                    }
                    for (s, sum) in sums.iter().enumerate() {
                        _mm256_storeu_si256(acc[s].as_mut_ptr().cast(), *sum);
                    }
                }
                for (s, a) in acc.iter().enumerate().take(live) {
                    let t = t0 + s;
                    let row = &mut data[t * stride + ob..][..width];
                    for (o, (y, &sum)) in row.iter_mut().zip(a).enumerate() {
                        *y = if last {
                            let bias = match start {
                                Start::Bias(b) => b.get(ob + o),
                                _ => 0.0,
                            };
                            ((sum as f32) * sx[t]) * sw[ob + o] + bias
                        } else {
                            f32::from_bits(sum as u32)
                        };
                    }
                }
            }
        }
    }
}
