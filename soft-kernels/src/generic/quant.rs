//! The integer linear layer, written as the contract states it: the reference every
//! other implementation is tested against bit for bit.

use crate::operand::{Lhs, Out, Start, Strided};
use crate::quant::{
    padded_depth, round_ties_even, slot, QuantRows, QuantRowsMut, QuantWeights, TOKEN_GROUP,
};

/// Each row's scale `m / 127` from `m = max |x|`, and `q = round_ties_even(x · (127 / m))`
/// clamped to ±127, written in the quad layout with zero padding (all zero where `m` is
/// 0). Walks each token's values across the pieces twice (maximum, then values), writing
/// the even and the odd word of each group of four as it fills.
///
/// The clamp is implicit: `|x| ≤ m`, so `|x · (127 / m)| ≤ 127 · (1 + 2⁻²³)² < 127.5`
/// rounds to at most 127; a NaN converts to 0 with or without it.
pub(crate) fn quantize(src: &Lhs<'_>, dst: &mut QuantRowsMut<'_>) {
    let rows = src.rows();
    let groups = padded_depth(src.depth()) / 4;
    let (values, scales) = dst.parts();
    for t in 0..rows.div_ceil(TOKEN_GROUP) * TOKEN_GROUP {
        // Tokens that fill the last quad have no pieces: zeros.
        let pieces = if t < rows { src.parts() } else { &[] };
        let mut max = 0.0f32;
        for p in pieces {
            each(p, t, |x| {
                let a = x.abs();
                if a > max {
                    max = a;
                }
            });
        }
        let (inverse, scale) = if max > 0.0 {
            (127.0 / max, max / 127.0)
        } else {
            (0.0, 0.0)
        };
        if let Some(s) = scales.get_mut(t).filter(|_| t < rows) {
            *s = scale;
        }
        // Group g's even word is i16 `16·(quad·groups + g) + 2·s`, its odd word 8 later.
        let first = 16 * (t / TOKEN_GROUP) * groups + 2 * (t % TOKEN_GROUP);
        let mut groups_out = Groups {
            values: &mut *values,
            at: first,
            first,
            row: [0; 4],
            filled: 0,
        };
        for p in pieces {
            each(p, t, |x| {
                groups_out.push(round_ties_even(x * inverse) as i16)
            });
        }
        // The depth's last partial group and the padding: zeros.
        for _ in groups_out.written()..groups {
            groups_out.flush();
        }
    }
}

/// Calls `f` with row `t` of `p`, in order (a slice walk where the columns are contiguous).
#[inline(always)]
fn each(p: &Strided<'_>, t: usize, mut f: impl FnMut(f32)) {
    if p.col_stride() == 1 {
        let start = t * p.row_stride();
        let row = p.data().get(start..start + p.cols()).unwrap_or_default();
        row.iter().for_each(|&x| f(x));
    } else {
        (0..p.cols()).for_each(|k| f(p.at(t, k)));
    }
}

/// One token's quantised values, written a group of four depths at a time.
struct Groups<'v> {
    values: &'v mut [i16],
    /// Index of the next group's even word.
    at: usize,
    /// Index of the first group's even word.
    first: usize,
    row: [i16; 4],
    filled: usize,
}

impl Groups<'_> {
    /// Groups written so far.
    fn written(&self) -> usize {
        (self.at - self.first) / 16
    }

    #[inline(always)]
    fn push(&mut self, q: i16) {
        if let Some(slot) = self.row.get_mut(self.filled) {
            *slot = q;
        }
        self.filled += 1;
        if self.filled == 4 {
            self.flush();
        }
    }

    /// Writes the group (zeros past what was pushed) and starts the next.
    #[inline(always)]
    fn flush(&mut self) {
        let row = self.row;
        let live = self.filled;
        let value = |i: usize| if i < live { row[i] } else { 0 };
        // The even word holds depths 4g and 4g+2, the odd word 4g+1 and 4g+3.
        if let Some(w) = self.values.get_mut(self.at..self.at + 10) {
            w[0] = value(0);
            w[1] = value(2);
            w[8] = value(1);
            w[9] = value(3);
        }
        self.at += 16;
        self.filled = 0;
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
