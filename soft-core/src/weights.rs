//! Typed, shape-checked views of blob tensors. Kernels see `Matrix` and `Vector`, never bytes,
//! so a new storage type (f16 today, per-channel int8) only adds a match arm here.

use soft_kernels::{QuantWeights, Rhs, RhsData};

use crate::error::{Error, Result};
use crate::format::{Blob, Dtype, TensorId, TensorRef};
use crate::linear::Weight;

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
    /// The matrix as a linear layer's weights: a GEMM right operand (`inputs × outputs`,
    /// row-major) for float and int8 storage, integer weights for W8A8.
    pub(crate) fn weight(&self) -> Result<Weight<'a>> {
        let data = match self.data {
            MatrixData::F32(w) => RhsData::F32(w),
            MatrixData::F16(w) => RhsData::F16Finite(w),
            MatrixData::I8 { q, scales } => RhsData::I8 { q, scales },
            MatrixData::Q8 { q, scales } => {
                return Ok(Weight::Integer(QuantWeights::new(
                    q,
                    scales,
                    self.outputs,
                    self.inputs,
                )?))
            }
        };
        Ok(Weight::Float(Rhs::new(
            data,
            self.inputs,
            self.outputs,
            self.outputs,
        )?))
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
    /// W8A8 weights: int8, output-major, each output's inputs padded to a multiple of 16.
    Q8 {
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

    /// The shape [`crate::schema`] gives tensor `id` under the blob's config.
    fn schema_shape(&self, id: TensorId) -> Result<crate::schema::Shape> {
        crate::schema::shape(self.blob.config(), id).ok_or(Error::TensorMismatch(id))
    }

    /// Float tensor `id` with the shape the schema gives it, flattened.
    pub fn schema_vector(&self, id: TensorId) -> Result<Vector<'a>> {
        self.vector(id, self.schema_shape(id)?.dims())
    }

    /// Weight tensor `id` with the shape the schema gives it, as [`Weights::matrix`].
    pub fn schema_matrix(&self, id: TensorId) -> Result<Matrix<'a>> {
        self.matrix(id, self.schema_shape(id)?.dims())
    }

    /// A float tensor of exactly `dims`, flattened.
    pub fn vector(&self, id: TensorId, dims: &[usize]) -> Result<Vector<'a>> {
        let t = self.blob.tensor(id)?;
        shape_is(&t, dims)?;
        match t.dtype {
            Dtype::F32 => Ok(Vector::F32(cast(t.data, id)?)),
            Dtype::F16 => Ok(Vector::F16(cast(t.data, id)?)),
            Dtype::I8 | Dtype::Q8 => Err(Error::TensorMismatch(id)),
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
            Dtype::Q8 => MatrixData::Q8 {
                q: cast(t.data, id)?,
                scales: cast(t.scales.ok_or(Error::TensorMismatch(id))?, id)?,
            },
        };
        // A W8A8 model stores every matrix as Q8 and nothing else does: the plan counts
        // quantisation scratch from the config alone.
        if (t.dtype == Dtype::Q8) != self.blob.config().w8a8 {
            return Err(Error::TensorMismatch(id));
        }
        Ok(Matrix {
            inputs,
            outputs,
            data,
        })
    }
}

/// Quantises an input-major `inputs × outputs` matrix (`w[i][o]` at `i · outputs + o`)
/// into [`Dtype::Q8`] storage: per output, `scale = max|w| / 127` (1 for an all-zero
/// output) and `q = round_ties_even(w / scale)`, stored output-major with each output's
/// inputs padded with zeros to [`padded_depth`](soft_kernels::quant::padded_depth).
/// `q` must hold `outputs × padded_depth(inputs)` values and `scales` `outputs`.
pub fn quantize_q8(
    w: &[f32],
    inputs: usize,
    outputs: usize,
    q: &mut [i8],
    scales: &mut [f32],
) -> Result<()> {
    let padded = soft_kernels::quant::padded_depth(inputs);
    let fits = inputs.checked_mul(outputs) == Some(w.len())
        && outputs.checked_mul(padded) == Some(q.len())
        && scales.len() == outputs;
    if !fits {
        return Err(Error::UnsupportedConfig(
            "W8A8 weights: buffer sizes disagree with the shape",
        ));
    }
    for (o, (row, scale)) in q
        .chunks_exact_mut(padded.max(1))
        .zip(scales.iter_mut())
        .enumerate()
    {
        let column = || w.iter().skip(o).step_by(outputs.max(1));
        let max = column().fold(0.0f32, |m, v| m.max(v.abs()));
        *scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        row.fill(0);
        for (dst, v) in row.iter_mut().zip(column()) {
            *dst = libm::rintf(v / *scale).clamp(-127.0, 127.0) as i8;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_weights_are_output_major_padded_and_symmetric() {
        // 3 inputs × 2 outputs, input-major.
        let w = [1.0, -0.5, -2.0, 0.25, 0.5, 0.0];
        let mut q = [7i8; 32];
        let mut scales = [0.0f32; 2];
        quantize_q8(&w, 3, 2, &mut q, &mut scales).unwrap();
        assert_eq!(scales, [2.0 / 127.0, 0.5 / 127.0]);
        assert_eq!(&q[..4], &[64, -127, 32, 0]);
        assert!(q[3..16].iter().all(|&v| v == 0));
        assert_eq!(&q[16..19], &[-127, 64, 0]);
        assert!(q[19..].iter().all(|&v| v == 0));
        assert!(quantize_q8(&w, 3, 2, &mut q[..31], &mut scales).is_err());
    }
}
