//! Typed, shape-checked views of blob tensors. Kernels see `Matrix` and `Vector`, never bytes,
//! so a new storage type (f16 today, per-channel int8) only adds a match arm here.

use soft_kernels::{Rhs, RhsData};

use crate::error::{Error, Result};
use crate::format::{Blob, Dtype, TensorId, TensorRef};

pub use soft_kernels::{widen, widen_finite, Vector};

/// Weight matrix stored input-major: row `i` holds the weights of input `i` to every output,
/// so the inner loop runs over contiguous outputs.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    /// Inputs (rows).
    pub inputs: usize,
    /// Outputs (columns).
    pub outputs: usize,
    /// The values.
    pub data: MatrixData<'a>,
}

impl<'a> Matrix<'a> {
    /// The matrix as a GEMM right operand (`inputs × outputs`, row-major).
    pub fn rhs(&self) -> Result<Rhs<'a>> {
        let data = match self.data {
            MatrixData::F32(w) => RhsData::F32(w),
            MatrixData::F16(w) => RhsData::F16Finite(w),
            MatrixData::I8 { q, scales } => RhsData::I8 { q, scales },
        };
        Ok(Rhs::new(data, self.inputs, self.outputs, self.outputs)?)
    }
}

/// Storage of a [`Matrix`].
#[derive(Debug, Clone, Copy)]
pub enum MatrixData<'a> {
    /// f32 weights.
    F32(&'a [f32]),
    /// f16 weights.
    F16(&'a [u16]),
    /// int8 weights with one f32 scale per output.
    I8 {
        /// Quantised weights.
        q: &'a [i8],
        /// Per-output scales.
        scales: &'a [f32],
    },
}

fn cast<T: bytemuck::Pod>(bytes: &[u8], id: TensorId) -> Result<&[T]> {
    bytemuck::try_cast_slice(bytes).map_err(|_| Error::TensorMismatch(id))
}

fn shape_is(t: &TensorRef<'_>, dims: &[usize]) -> Result<()> {
    if t.dims() == dims {
        Ok(())
    } else {
        Err(Error::TensorMismatch(t.id))
    }
}

/// Looks up tensors of one model by id, checking shape and dtype.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    blob: Blob<'a>,
}

impl<'a> Weights<'a> {
    /// Wraps a parsed blob.
    pub fn new(blob: Blob<'a>) -> Self {
        Weights { blob }
    }

    /// The blob.
    pub fn blob(&self) -> &Blob<'a> {
        &self.blob
    }

    /// A float tensor of exactly `dims`, flattened.
    pub fn vector(&self, id: TensorId, dims: &[usize]) -> Result<Vector<'a>> {
        let t = self.blob.tensor(id)?;
        shape_is(&t, dims)?;
        match t.dtype {
            Dtype::F32 => Ok(Vector::F32(cast(t.data, id)?)),
            Dtype::F16 => Ok(Vector::F16(cast(t.data, id)?)),
            Dtype::I8 => Err(Error::TensorMismatch(id)),
        }
    }

    /// A weight tensor of exactly `dims`, viewed as `[product of all but last, last]`.
    pub fn matrix(&self, id: TensorId, dims: &[usize]) -> Result<Matrix<'a>> {
        let t = self.blob.tensor(id)?;
        shape_is(&t, dims)?;
        let outputs = dims.last().copied().unwrap_or(0);
        let inputs = dims.iter().rev().skip(1).product();
        let data = match t.dtype {
            Dtype::F32 => MatrixData::F32(cast(t.data, id)?),
            Dtype::F16 => MatrixData::F16(cast(t.data, id)?),
            Dtype::I8 => MatrixData::I8 {
                q: cast(t.data, id)?,
                scales: cast(t.scales.ok_or(Error::TensorMismatch(id))?, id)?,
            },
        };
        Ok(Matrix {
            inputs,
            outputs,
            data,
        })
    }
}
