//! Typed, shape-checked views of blob tensors. Kernels see `Matrix` and `Vector`, never bytes,
//! so a new storage type (f16 today, per-channel int8) only adds a match arm here.

use half::f16;

use crate::error::{Error, Result};
use crate::format::{Blob, Dtype, TensorId, TensorRef};

/// Exact f16 → f32, branch-free so loops over f16 weights vectorise.
#[inline(always)]
pub fn widen(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let magnitude = h & 0x7fff;
    // Shift the exponent and mantissa into place, then rebias by 2^112; handles subnormals.
    let finite = (f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let special = 0x7f80_0000 | ((magnitude & 0x3ff) << 13);
    f32::from_bits(if magnitude >= 0x7c00 { special } else { finite } | sign)
}

/// f16 → f32 for finite values only, in four integer/float instructions on a Cortex-M4F
/// instead of [`widen`]'s dozen: the weight kernels' inner loops use it, and
/// [`Blob::parse`](crate::Blob::parse) rejects blobs with non-finite weights, so the
/// special case never arises. Exact for every finite half, subnormals included, given the
/// FPU's default mode (no flush-to-zero), which the engine needs everywhere anyway.
#[inline(always)]
pub fn widen_finite(h: u16) -> f32 {
    // Sign-extend, then shift exponent and mantissa into f32 place: bit 31 is the sign,
    // bits 30..28 are copies of it to clear, bits 27..13 the half's magnitude bits.
    let bits = ((i32::from(h as i16) << 13) as u32) & 0x8fff_ffff;
    // Rebias the exponent by 2^(127 - 15); the product is exact.
    f32::from_bits(bits) * f32::from_bits(0x7780_0000)
}

/// A vector of parameters (bias, norm weights, embeddings).
#[derive(Debug, Clone, Copy)]
pub enum Vector<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl Vector<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Vector::F32(v) => v.len(),
            Vector::F16(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as f32 (0 beyond the end; shapes are checked at load).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Vector::F32(v) => v.get(i).copied().unwrap_or(0.0),
            Vector::F16(v) => v.get(i).map_or(0.0, |h| widen(h.to_bits())),
        }
    }

    /// Copies values `start..start + out.len()` into `out`.
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Vector::F32(v) => {
                for (o, x) in out.iter_mut().zip(v.iter().skip(start)) {
                    *o = *x;
                }
            }
            Vector::F16(v) => {
                for (o, x) in out.iter_mut().zip(v.iter().skip(start)) {
                    *o = widen(x.to_bits());
                }
            }
        }
    }

    /// `out[i] += self[start + i]`.
    pub fn add_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Vector::F32(v) => {
                for (o, x) in out.iter_mut().zip(v.iter().skip(start)) {
                    *o += *x;
                }
            }
            Vector::F16(v) => {
                for (o, x) in out.iter_mut().zip(v.iter().skip(start)) {
                    *o += widen(x.to_bits());
                }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_finite_matches_half_on_every_finite_f16() {
        for bits in (0..=u16::MAX).filter(|b| b & 0x7c00 != 0x7c00) {
            let want = f16::from_bits(bits).to_f32();
            assert_eq!(widen_finite(bits).to_bits(), want.to_bits(), "{bits:#06x}");
        }
    }

    #[test]
    fn widen_matches_half_on_every_f16() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = widen(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }
}
