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
/// Both walks work on bits, so a Cortex-M4 spends no FPU compare or rounding instruction:
/// - the maximum of `|x|` is the largest `x.to_bits() & 0x7fff_ffff` (positive floats
///   order as their bits); a row holding an infinity or NaN takes [`quantize_row_slow`];
/// - `x · (127 / m)` is within ±127.5 (`|x| ≤ m`), where adding `1.5 · 2²³` rounds it to
///   the nearest integer, ties to even, and leaves that integer, two's complement, in the
///   low bits: its low half is the i16 ([`crate::quant::round_ties_even`] without the
///   subtraction). The contract's clamp acts only where `127 / m` overflows (`m` below
///   127 / f32::MAX), which also takes the contract's path.
pub(crate) fn quantize(src: &Lhs<'_>, dst: &mut QuantRowsMut<'_>) {
    const MAGIC: f32 = 12_582_912.0;
    let rows = src.rows();
    let groups = padded_depth(src.depth()) / 4;
    let (values, scales) = dst.parts();
    for t in 0..rows.div_ceil(TOKEN_GROUP) * TOKEN_GROUP {
        // Tokens that fill the last quad have no pieces: zeros.
        let pieces = if t < rows { src.parts() } else { &[] };
        let mut top = 0u32;
        for p in pieces {
            each(p, t, |x| top = top.max(x.to_bits() & 0x7fff_ffff));
        }
        let mut groups_out = Groups::new(values, t, groups);
        // An infinity or NaN in the row, or a maximum so small (below 127 / f32::MAX) that
        // `127 / m` is infinite and every nonzero value saturates to ±127.
        let max = f32::from_bits(top);
        if top >= f32::INFINITY.to_bits() || (max > 0.0 && !(127.0 / max).is_finite()) {
            let scale = quantize_row_slow(pieces, t, &mut groups_out);
            if let Some(s) = scales.get_mut(t) {
                *s = scale;
            }
            continue;
        }
        let (inverse, scale) = if max > 0.0 {
            (127.0 / max, max / 127.0)
        } else {
            (0.0, 0.0)
        };
        if let Some(s) = scales.get_mut(t).filter(|_| t < rows) {
            *s = scale;
        }
        for p in pieces {
            each(p, t, |x| {
                groups_out.push((x * inverse + MAGIC).to_bits() as u16 as i16)
            });
        }
        groups_out.finish();
    }
}

/// Token `t`'s values as the contract states it, for a row with an infinity or a NaN
/// (NaN is left out of the maximum and quantises to 0) or a maximum whose reciprocal
/// overflows; returns the row's scale.
#[cold]
fn quantize_row_slow(pieces: &[Strided<'_>], t: usize, out: &mut Groups<'_>) -> f32 {
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
    for p in pieces {
        each(p, t, |x| {
            out.push(round_ties_even(x * inverse).clamp(-127.0, 127.0) as i16)
        });
    }
    out.finish();
    scale
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
    /// Groups in the padded depth.
    groups: usize,
    row: [i16; 4],
    filled: usize,
}

impl<'v> Groups<'v> {
    /// Token `t`'s groups: group g's even word is i16 `16·(quad·groups + g) + 2·s`, its
    /// odd word 8 later.
    fn new(values: &'v mut [i16], t: usize, groups: usize) -> Self {
        let first = 16 * (t / TOKEN_GROUP) * groups + 2 * (t % TOKEN_GROUP);
        Groups {
            values,
            at: first,
            first,
            groups,
            row: [0; 4],
            filled: 0,
        }
    }

    /// Writes the last partial group and the padding (zeros).
    fn finish(&mut self) {
        while (self.at - self.first) / 16 < self.groups {
            self.flush();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quant_values_len, slot};

    /// Rows with a NaN or an infinity take the contract's own path: NaN is left out of
    /// the maximum and quantises to 0; an infinite maximum gives scale ∞ and zeros; a
    /// maximum whose reciprocal overflows saturates every nonzero value.
    #[test]
    fn non_finite_rows_follow_the_contract() {
        let x = [
            f32::NAN,
            1.0,
            -2.0,
            0.5,
            f32::INFINITY,
            1.0,
            -0.0,
            3.0,
            // 127 / 1e-37 overflows: every nonzero value saturates.
            1e-37,
            -5e-38,
            0.0,
            2e-38,
        ];
        let src = Lhs::new(Strided::rows_of(&x, 3, 4, 4).unwrap());
        let mut values = vec![0x5555i16; quant_values_len(3, 4)];
        let mut scales = [f32::NAN; 3];
        let mut dst = QuantRowsMut::new(&mut values, &mut scales, 3, 4).unwrap();
        quantize(&src, &mut dst);
        assert_eq!(scales, [2.0 / 127.0, f32::INFINITY, 1e-37 / 127.0]);
        let groups = padded_depth(4) / 4;
        let q = |t: usize| -> Vec<i16> { (0..4).map(|k| values[slot(t, k, groups)]).collect() };
        assert_eq!(q(0), [0, 64, -127, 32]);
        assert_eq!(q(1), [0, 0, 0, 0]);
        assert_eq!(q(2), [127, -127, 0, 127]);
    }
}
