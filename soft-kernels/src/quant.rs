//! Operands of the integer (W8A8) linear layer: activation rows quantised to int8 per
//! token at run time, and int8 weights per output channel, both laid out the way a
//! Cortex-M4's `SMLAD` reads them. Every implementation reads and writes these same
//! layouts, so the layout is part of the contract (see the crate README).
//!
//! - The depth is padded with zeros to a multiple of [`DEPTH_GROUP`].
//! - Weights: `outputs × padded depth` int8, output-major (each output's weights
//!   contiguous, PyTorch's own order).
//! - Activations: int8 values (within ±127, as [`Kernels::quantize`](crate::Kernels::quantize)
//!   writes them) held as i16, tokens in quads. For quad `u`, token
//!   `s` of it (`t = 4u + s`) and group `g` of four depths, the 32-bit word at
//!   `((u · groups + g) · 2 + h) · 4 + s` (in words) holds `x[4g + h]` and
//!   `x[4g + h + 2]`: for `h = 0` the pair `SMLAD` multiplies with a weight word's even
//!   bytes (`SXTB16`), for `h = 1` with its odd bytes (`SXTB16 … ROR #8`). One `LDM`
//!   of four words brings that half for all four tokens. Tokens past the last, up to a
//!   multiple of four, are zero.

use crate::error::{Error, Result};

/// The depth is padded to a multiple of this: the M4 kernel consumes 16 depths per
/// loop iteration.
pub const DEPTH_GROUP: usize = 16;

/// The padded depth: `depth` rounded up to a multiple of [`DEPTH_GROUP`].
pub const fn padded_depth(depth: usize) -> usize {
    depth.div_ceil(DEPTH_GROUP) * DEPTH_GROUP
}

/// Tokens the integer kernels take together: activations are laid out in quads.
pub const TOKEN_GROUP: usize = 4;

/// i16 values a [`QuantRowsMut`] of `rows × depth` needs (for sizes that fit a `usize`;
/// the views check with [`checked_values_len`]).
pub const fn quant_values_len(rows: usize, depth: usize) -> usize {
    rows.div_ceil(TOKEN_GROUP) * TOKEN_GROUP * padded_depth(depth)
}

/// [`quant_values_len`], or `None` where it overflows a `usize` (a 32-bit target).
pub fn checked_values_len(rows: usize, depth: usize) -> Option<usize> {
    rows.div_ceil(TOKEN_GROUP)
        .checked_mul(TOKEN_GROUP)?
        .checked_mul(depth.checked_next_multiple_of(DEPTH_GROUP)?)
}

/// Where the layout puts `x[t][k]` (an index into the i16 values) for `groups`
/// four-depth groups per token.
#[inline(always)]
pub(crate) fn slot(t: usize, k: usize, groups: usize) -> usize {
    let (quad, s) = (t / TOKEN_GROUP, t % TOKEN_GROUP);
    let (g, within) = (k / 4, k % 4);
    // Depths 4g and 4g+2 share the even word (low, high half), 4g+1 and 4g+3 the odd.
    let (half, high) = (within % 2, within / 2);
    let word = ((quad * groups + g) * 2 + half) * TOKEN_GROUP + s;
    2 * word + high
}

/// [`checked_values_len`] as an error where it overflows.
fn values_len(rows: usize, depth: usize) -> Result<usize> {
    checked_values_len(rows, depth).ok_or(Error::OutOfBounds {
        operand: "quantised values",
        needed: usize::MAX,
        len: 0,
    })
}

/// Whether `values` i16 and `scales` f32 hold `rows × depth` quantised activations.
fn rows_fit(values: usize, scales: usize, rows: usize, depth: usize) -> Result<()> {
    need("quantised values", values_len(rows, depth)?, values)?;
    need("quantised scales", rows, scales)
}

fn need(operand: &'static str, needed: usize, len: usize) -> Result<()> {
    if len >= needed {
        Ok(())
    } else {
        Err(Error::OutOfBounds {
            operand,
            needed,
            len,
        })
    }
}

/// Quantised activation rows (see the module docs for the layout), with each token's
/// scale: `x[t][k] ≈ q[t][k] · scales[t]`.
#[derive(Debug, Clone, Copy)]
pub struct QuantRows<'a> {
    values: &'a [i16],
    scales: &'a [f32],
    rows: usize,
    depth: usize,
}

impl<'a> QuantRows<'a> {
    /// A view of `rows × depth` activations, checked to fit the slices.
    pub fn new(values: &'a [i16], scales: &'a [f32], rows: usize, depth: usize) -> Result<Self> {
        rows_fit(values.len(), scales.len(), rows, depth)?;
        Ok(QuantRows {
            values,
            scales,
            rows,
            depth,
        })
    }

    /// Tokens.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Depth before padding.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The values in their layout.
    pub fn values(&self) -> &'a [i16] {
        self.values
    }

    /// One scale per token.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }
}

/// Room for `rows × depth` quantised activations, written by
/// [`Kernels::quantize`](crate::Kernels::quantize).
#[derive(Debug)]
pub struct QuantRowsMut<'a> {
    values: &'a mut [i16],
    scales: &'a mut [f32],
    rows: usize,
    depth: usize,
}

impl<'a> QuantRowsMut<'a> {
    /// A view of room for `rows × depth` activations, checked to fit the slices.
    pub fn new(
        values: &'a mut [i16],
        scales: &'a mut [f32],
        rows: usize,
        depth: usize,
    ) -> Result<Self> {
        rows_fit(values.len(), scales.len(), rows, depth)?;
        Ok(QuantRowsMut {
            values,
            scales,
            rows,
            depth,
        })
    }

    /// Tokens.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Depth before padding.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The values and scales, for an implementation to fill.
    pub(crate) fn parts(&mut self) -> (&mut [i16], &mut [f32]) {
        (self.values, self.scales)
    }

    /// The rows as written, to multiply.
    pub fn as_rows(&self) -> QuantRows<'_> {
        QuantRows {
            values: self.values,
            scales: self.scales,
            rows: self.rows,
            depth: self.depth,
        }
    }
}

/// int8 weights, output-major with each output's depth padded with zeros to
/// [`padded_depth`], and one f32 scale per output: `w[o][k] ≈ q[o][k] · scales[o]`.
#[derive(Debug, Clone, Copy)]
pub struct QuantWeights<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    outputs: usize,
    depth: usize,
}

impl<'a> QuantWeights<'a> {
    /// A view of `outputs × depth` weights, checked to fit the slices. The kernels rely
    /// on the padding being zero; a blob's loader checks it once.
    pub fn new(q: &'a [i8], scales: &'a [f32], outputs: usize, depth: usize) -> Result<Self> {
        let len = outputs
            .checked_mul(padded_depth(depth))
            .ok_or(Error::OutOfBounds {
                operand: "quantised weights",
                needed: usize::MAX,
                len: q.len(),
            })?;
        need("quantised weights", len, q.len())?;
        need("weight scales", outputs, scales.len())?;
        Ok(QuantWeights {
            q,
            scales,
            outputs,
            depth,
        })
    }

    /// Outputs.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Depth before padding.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The weights, output-major, padded.
    pub fn q(&self) -> &'a [i8] {
        self.q
    }

    /// One scale per output.
    pub fn scales(&self) -> &'a [f32] {
        self.scales
    }

    /// Outputs `first..first + count` (clamped to the view): one head's columns of a
    /// projection.
    pub fn output_range(&self, first: usize, count: usize) -> QuantWeights<'a> {
        let first = first.min(self.outputs);
        let count = count.min(self.outputs - first);
        let padded = padded_depth(self.depth);
        QuantWeights {
            q: self.q.get(first * padded..).unwrap_or_default(),
            scales: self.scales.get(first..).unwrap_or_default(),
            outputs: count,
            ..*self
        }
    }
}

/// Rounds to the nearest integer, ties to even, for `|y| < 2²²`: adding and subtracting
/// 1.5 · 2²³ leaves the integer part in the mantissa under IEEE round-to-nearest-even,
/// the same on every target (the M4's FPU has no rounding instruction).
#[inline(always)]
pub(crate) fn round_ties_even(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (y + MAGIC) - MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_every_value_once() {
        let (rows, depth) = (5, 20);
        let groups = padded_depth(depth) / 4;
        let mut seen = vec![0u8; quant_values_len(rows, depth)];
        for t in 0..rows.div_ceil(TOKEN_GROUP) * TOKEN_GROUP {
            for k in 0..padded_depth(depth) {
                seen[slot(t, k, groups)] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        // One quad, one group: the even words (x0, x2) of t0..t3, then the odd (x1, x3).
        let depths: Vec<usize> = (0..4).map(|k| slot(0, k, 1)).collect();
        assert_eq!(depths, [0, 8, 1, 9]);
        let tokens: Vec<usize> = (0..4).map(|t| slot(t, 0, 1)).collect();
        assert_eq!(tokens, [0, 2, 4, 6]);
        assert_eq!(slot(3, 3, 1), 15);
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        for (y, want) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, -0.0),
            (-1.5, -2.0),
            (126.5, 126.0),
            (127.49, 127.0),
            (0.49999997, 0.0),
        ] {
            assert_eq!(round_ties_even(y), want, "{y}");
        }
    }

    #[test]
    fn views_check_their_slices() {
        assert!(QuantRows::new(&[0; 63], &[0.0; 2], 2, 16).is_err());
        assert!(QuantRows::new(&[0; 64], &[0.0; 1], 2, 16).is_err());
        assert!(QuantRows::new(&[0; 64], &[0.0; 2], 2, 16).is_ok());
        assert!(QuantWeights::new(&[0; 47], &[0.0; 3], 3, 10).is_err());
        let w = QuantWeights::new(&[0; 48], &[0.0; 3], 3, 10).unwrap();
        let tail = w.output_range(1, 5);
        assert_eq!(
            (tail.outputs(), tail.q().len(), tail.scales().len()),
            (2, 32, 2)
        );
        assert_eq!(w.output_range(4, 1).outputs(), 0);
        assert!(QuantWeights::new(&[], &[], usize::MAX, 16).is_err());
        assert!(QuantRows::new(&[], &[], usize::MAX, 16).is_err());
        assert_eq!(checked_values_len(5, 20), Some(quant_values_len(5, 20)));
    }
}
