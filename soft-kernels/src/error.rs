//! The one error type of `soft-kernels`: a view or a call whose shapes do not fit.

use core::fmt;

/// Why a kernel call was refused. Kernels check shapes when a view is built and when a
/// call combines views, never inside their loops; an error means the caller's shapes are
/// wrong, and nothing has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A view reaches past the end of its slice (or its size overflows `usize`).
    OutOfBounds {
        /// Which operand.
        operand: &'static str,
        /// Elements the view needs.
        needed: usize,
        /// Elements the slice has.
        len: usize,
    },
    /// Two operands of one call disagree on a dimension.
    Mismatch {
        /// Which dimension, e.g. "lhs depth vs rhs rows".
        what: &'static str,
        /// One side's size.
        left: usize,
        /// The other side's size.
        right: usize,
    },
    /// A combination the contract does not define (e.g. accumulating into int8 sums).
    Unsupported(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::OutOfBounds {
                operand,
                needed,
                len,
            } => write!(
                f,
                "kernel operand {operand} needs {needed} elements, its slice has {len}"
            ),
            Error::Mismatch { what, left, right } => {
                write!(f, "kernel shapes disagree: {what} ({left} vs {right})")
            }
            Error::Unsupported(what) => write!(f, "kernel call not supported: {what}"),
        }
    }
}

impl core::error::Error for Error {}

/// Result with the crate's error.
pub type Result<T> = core::result::Result<T, Error>;
