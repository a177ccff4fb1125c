//! The linear layer every block uses: one GEMM whose sums start from the bias.

use soft_kernels::{Lhs, Out, Rhs, Start, Strided};

use crate::error::Result;
use crate::exec::Run;
use crate::weights::Vector;

/// `y = x·W + b` for `rows` tokens of `x` (row-major, `W.rows()` wide).
pub(crate) fn linear(
    run: &Run<'_>,
    w: &Rhs<'_>,
    b: &Vector<'_>,
    x: &[f32],
    rows: usize,
    y: &mut [f32],
) -> Result<()> {
    let lhs = Lhs::new(Strided::rows_of(x, rows, w.rows(), w.rows())?);
    let mut out = Out::new(y, rows, w.cols(), w.cols())?;
    Ok(run.kernels.gemm(&lhs, w, Start::Bias(*b), &mut out)?)
}
