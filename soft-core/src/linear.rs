//! The linear layer every block uses, and the seam between float and integer (W8A8)
//! layers: float weights are one GEMM whose sums start from the bias; W8A8 weights
//! quantise the input per token into scratch, then one integer GEMM rescales the exact
//! i32 sums and adds the bias.

use soft_kernels::quant::{checked_values_len, quant_values_len};
use soft_kernels::{Lhs, Out, QuantRowsMut, QuantWeights, Rhs, Start, Strided};

use crate::error::{Error, Result};
use crate::exec::Run;
use crate::weights::Vector;

/// A linear layer's (or convolution's) weights.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weight<'a> {
    /// f32, f16 or int8 weights on f32 activations.
    Float(Rhs<'a>),
    /// W8A8: int8 weights on activations quantised per token.
    Integer(QuantWeights<'a>),
}

impl<'a> Weight<'a> {
    /// Inputs (the GEMM depth).
    pub fn inputs(&self) -> usize {
        match self {
            Weight::Float(w) => w.rows(),
            Weight::Integer(w) => w.depth(),
        }
    }

    /// Outputs.
    pub fn outputs(&self) -> usize {
        match self {
            Weight::Float(w) => w.cols(),
            Weight::Integer(w) => w.outputs(),
        }
    }

    /// Outputs `first..first + count`: one head's columns.
    pub fn output_range(&self, first: usize, count: usize) -> Weight<'a> {
        match self {
            Weight::Float(w) => Weight::Float(w.col_range(first, count)),
            Weight::Integer(w) => Weight::Integer(w.output_range(first, count)),
        }
    }
}

/// f32 words of the scratch a W8A8 layer quantises `rows × depth` inputs into (the i16
/// values in the kernels' layout, then one scale per token); none for a float model.
/// Every step that calls [`apply`] declares one such buffer for its largest layer.
pub(crate) const fn quant_len(w8a8: bool, rows: usize, depth: usize) -> usize {
    if w8a8 {
        // The values fill whole quads of 16-deep groups: an even number of i16.
        quant_values_len(rows, depth) / 2 + rows
    } else {
        0
    }
}

/// `out = lhs · W + start`: a GEMM for float weights; for W8A8 weights, `lhs` quantised
/// per row into `quant` (see [`quant_len`]), then the integer GEMM.
pub(crate) fn apply(
    run: &Run<'_>,
    w: &Weight<'_>,
    lhs: &Lhs<'_>,
    start: Start<'_>,
    quant: &mut [f32],
    out: &mut Out<'_>,
) -> Result<()> {
    let k = run.kernels;
    match w {
        Weight::Float(rhs) => Ok(k.gemm(lhs, rhs, start, out)?),
        Weight::Integer(qw) => {
            let (rows, depth) = (lhs.rows(), lhs.depth());
            // The i16 values in the first words, the scales after them; QuantRowsMut
            // checks that both fit (a short `quant` leaves too few scales).
            let words = checked_values_len(rows, depth).map_or(quant.len(), |v| v / 2);
            let (values, scales) = quant.split_at_mut(words.min(quant.len()));
            // f32 words always hold two i16 each, aligned.
            let values: &mut [i16] = bytemuck::try_cast_slice_mut(values)
                .map_err(|_| Error::UnsupportedConfig("quantised scratch layout"))?;
            let mut x = QuantRowsMut::new(values, scales, rows, depth)?;
            k.quantize(lhs, &mut x)?;
            Ok(k.gemm_q8(&x.as_rows(), qw, start, out)?)
        }
    }
}

/// `y = x·W + b` for `rows` tokens of `x` (row-major, `W.inputs()` wide).
pub(crate) fn linear(
    run: &Run<'_>,
    w: &Weight<'_>,
    b: &Vector<'_>,
    x: &[f32],
    rows: usize,
    quant: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    let lhs = Lhs::new(Strided::rows_of(x, rows, w.inputs(), w.inputs())?);
    let mut out = Out::new(y, rows, w.outputs(), w.outputs())?;
    apply(run, w, &lhs, Start::Bias(*b), quant, &mut out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{Inline, Schedule};
    use soft_kernels::Kernels;

    /// Scratch too short for the values, or for the scales after them, is an error.
    #[test]
    fn short_quantisation_scratch_is_an_error() {
        let run = Run {
            kernels: Kernels::generic(),
            executor: &Inline,
            schedule: Schedule::COMPACT,
        };
        let (q, scales) = ([1i8; 2 * 16], [0.5f32; 2]);
        let w = Weight::Integer(QuantWeights::new(&q, &scales, 2, 3).unwrap());
        let x = [1.0f32, -2.0, 0.5, 3.0, 0.0, 1.0];
        let full = quant_len(true, 2, 3);
        for len in [0, 3, full - 1, full] {
            let mut quant = vec![0.0f32; len];
            let mut y = [0.0f32; 4];
            let got = linear(&run, &w, &Vector::F32(&[0.0; 2]), &x, 2, &mut quant, &mut y);
            assert_eq!(got.is_ok(), len == full, "{len}");
        }
    }
}
