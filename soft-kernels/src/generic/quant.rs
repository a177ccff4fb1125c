//! The integer linear layer, written as the contract states it: the reference every
//! other implementation is tested against bit for bit.

use crate::operand::{Lhs, Out, Start};
use crate::quant::{
    padded_depth, round_ties_even, slot, QuantRows, QuantRowsMut, QuantWeights, TOKEN_GROUP,
};

/// Each row's scale `m / 127` from `m = max |x|`, and `q = round_ties_even(x · (127 / m))`
/// clamped to ±127, written in the quad layout with zero padding (all zero where `m` is
/// 0). Walks each token's depths across the pieces, writing the even and the odd word of
/// each group of four as it fills.
pub(crate) fn quantize(src: &Lhs<'_>, dst: &mut QuantRowsMut<'_>) {
    let rows = src.rows();
    let groups = padded_depth(src.depth()) / 4;
    let (values, scales) = dst.parts();
    for t in 0..rows.div_ceil(TOKEN_GROUP) * TOKEN_GROUP {
        // Tokens that fill the last quad have no pieces: zeros.
        let live = t < rows;
        let max = if live {
            src.parts().iter().fold(0.0f32, |m, p| {
                (0..p.cols()).fold(m, |m, k| {
                    let a = p.at(t, k).abs();
                    if a > m {
                        a
                    } else {
                        m
                    }
                })
            })
        } else {
            0.0
        };
        let (inverse, scale) = if max > 0.0 {
            (127.0 / max, max / 127.0)
        } else {
            (0.0, 0.0)
        };
        if let Some(s) = scales.get_mut(t).filter(|_| live) {
            *s = scale;
        }
        let mut emit = |g: usize, row: &[f32; 4]| {
            // The even word holds depths 4g and 4g+2, the odd word 4g+1 and 4g+3.
            let even = slot(t, 4 * g, groups);
            let odd = slot(t, 4 * g + 1, groups);
            values[even] = row[0] as i16;
            values[even + 1] = row[2] as i16;
            values[odd] = row[1] as i16;
            values[odd + 1] = row[3] as i16;
        };
        let (mut row, mut filled, mut g) = ([0.0f32; 4], 0, 0);
        let pieces = if live { src.parts() } else { &[] };
        for p in pieces {
            for k in 0..p.cols() {
                row[filled] = round_ties_even(p.at(t, k) * inverse).clamp(-127.0, 127.0);
                filled += 1;
                if filled == 4 {
                    emit(g, &row);
                    (filled, g) = (0, g + 1);
                }
            }
        }
        // The depth's last partial group and the padding: zeros.
        while g < groups {
            row[filled..].fill(0.0);
            emit(g, &row);
            (filled, g) = (0, g + 1);
        }
    }
}

/// `out[t][o] = ((acc as f32) · sx[t]) · sw[o] + b[o]` with `acc = Σ_k q[t][k] · w[o][k]`
/// exact in i32, `b` the bias or +0.0.
pub(crate) fn gemm_q8(
    x: &QuantRows<'_>,
    w: &QuantWeights<'_>,
    start: Start<'_>,
    out: &mut Out<'_>,
) {
    let padded = padded_depth(x.depth());
    let groups = padded / 4;
    let (values, q) = (x.values(), w.q());
    let stride = out.row_stride();
    let data = out.data();
    for t in 0..x.rows() {
        for o in 0..w.outputs() {
            let weights = &q[o * padded..(o + 1) * padded];
            // Within ±127 · 128 · 2¹⁷ for quantised values; wrapping, as SMLAD and
            // vpmaddwd do, keeps any other input defined and equal across kernels.
            let acc = weights.iter().enumerate().fold(0i32, |acc, (k, &wk)| {
                acc.wrapping_add(i32::from(values[slot(t, k, groups)]) * i32::from(wk))
            });
            let bias = match start {
                Start::Bias(b) => b.get(o),
                _ => 0.0,
            };
            data[t * stride + o] = ((acc as f32) * x.scales()[t]) * w.scales()[o] + bias;
        }
    }
}
