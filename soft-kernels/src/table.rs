//! The kernel table: one set of implementations, chosen once (at build time or, on the
//! host, after CPU feature detection) and handed to the engine. Model code calls these
//! methods and never names an instruction set.

use half::f16;

use crate::error::{Error, Result};
use crate::operand::{Elems, ElemsMut, Lhs, Out, Rhs, Start, Strided, Vector};
use crate::quant::{QuantRows, QuantRowsMut, QuantWeights};

/// The deepest integer dot product: `127 · 128 · depth` must fit an i32.
pub const MAX_Q8_DEPTH: usize = 1 << 17;

/// `out = start + lhs · rhs`.
pub(crate) type GemmFn = fn(&Lhs<'_>, &Rhs<'_>, Start<'_>, &mut Out<'_>);
/// Gaussian kernel rows against transposed landmarks.
pub(crate) type GaussianFn = fn(&Strided<'_>, &Strided<'_>, &mut Out<'_>);
/// An elementwise function over a slice, in place.
pub(crate) type RowFn = fn(&mut [f32]);
/// One depthwise-convolution tap.
pub(crate) type DepthwiseFn = fn(Elems<'_>, &[f32], usize, &mut [f32]);
/// LayerNorm of rows.
pub(crate) type LayerNormFn = fn(&mut [f32], usize, &Vector<'_>, &Vector<'_>, f32);
/// Per-token int8 quantisation of activation rows.
pub(crate) type QuantizeFn = fn(&Lhs<'_>, &mut QuantRowsMut<'_>);
/// `out = rescale(x_q · w_qᵀ) + bias`, the integer linear layer.
pub(crate) type GemmQ8Fn = fn(&QuantRows<'_>, &QuantWeights<'_>, Start<'_>, &mut Out<'_>);
/// The multiply-and-add peak probe: steps in, (multiply-adds done, a result to keep).
pub(crate) type PeakFn = fn(usize) -> (u64, f32);

/// One implementation of every kernel. The functions behind it are reached only through
/// the methods below, which check shapes first, so an implementation may rely on them.
#[derive(Debug)]
pub struct Kernels {
    pub(crate) name: &'static str,
    pub(crate) gemm: GemmFn,
    pub(crate) gaussian: GaussianFn,
    pub(crate) exp: RowFn,
    pub(crate) gelu_tanh: RowFn,
    pub(crate) gelu_erf: RowFn,
    pub(crate) widen_f16: fn(&[f16], &mut [f32]),
    pub(crate) narrow_f16: fn(&[f32], &mut [f16]),
    pub(crate) depthwise: DepthwiseFn,
    pub(crate) layer_norm: LayerNormFn,
    pub(crate) peak: PeakFn,
    pub(crate) quantize: QuantizeFn,
    pub(crate) gemm_q8: GemmQ8Fn,
}

fn same(what: &'static str, left: usize, right: usize) -> Result<()> {
    if left == right {
        Ok(())
    } else {
        Err(Error::Mismatch { what, left, right })
    }
}

/// A bias must cover every column, and [`Start::Accumulate`] needs sums that can go on
/// (`can_accumulate`; `why` says which cannot).
fn start_fits(
    start: Start<'_>,
    cols: usize,
    can_accumulate: bool,
    why: &'static str,
) -> Result<()> {
    match start {
        Start::Bias(b) if b.len() < cols => Err(Error::OutOfBounds {
            operand: "bias",
            needed: cols,
            len: b.len(),
        }),
        Start::Accumulate if !can_accumulate => Err(Error::Unsupported(why)),
        _ => Ok(()),
    }
}

impl Kernels {
    /// A short name for reports: `generic`, `avx2`, `avx512`, `armv7em-dsp`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `out[i][j] = s + Σ_k lhs[i][k] · rhs[k][j]` with the sum over `k` in order, starting
    /// from `s` = +0.0, `bias[j]` or `out[i][j]` ([`Start`]). For int8 right operands the
    /// sum starts at +0.0 and is stored as `bias[j] + scale[j] · sum` (bias +0.0 for
    /// [`Start::Zero`]). See the crate docs for the exact rounding.
    pub fn gemm(
        &self,
        lhs: &Lhs<'_>,
        rhs: &Rhs<'_>,
        start: Start<'_>,
        out: &mut Out<'_>,
    ) -> Result<()> {
        same("lhs depth vs rhs rows", lhs.depth(), rhs.rows())?;
        same("lhs rows vs out rows", lhs.rows(), out.rows())?;
        same("rhs cols vs out cols", rhs.cols(), out.cols())?;
        start_fits(
            start,
            out.cols(),
            !rhs.is_int8(),
            "accumulating int8 sums across calls",
        )?;
        (self.gemm)(lhs, rhs, start, out);
        Ok(())
    }

    /// `out[t][l] = exp(-½ · Σ_i (q[t][i] − L[i][l])²)` (sum over `i` in order, then
    /// [`math::exp`](crate::math::exp) of the product with −0.5), for landmarks stored
    /// transposed, `d × m` with contiguous columns.
    pub fn gaussian(
        &self,
        q: &Strided<'_>,
        landmarks: &Strided<'_>,
        out: &mut Out<'_>,
    ) -> Result<()> {
        same("query width vs landmark rows", q.cols(), landmarks.rows())?;
        same("query rows vs out rows", q.rows(), out.rows())?;
        same("landmarks vs out cols", landmarks.cols(), out.cols())?;
        if landmarks.col_stride() != 1 && landmarks.cols() > 1 {
            return Err(Error::Unsupported("landmark columns must be contiguous"));
        }
        (self.gaussian)(q, landmarks, out);
        Ok(())
    }

    /// [`math::exp`](crate::math::exp) of every value, in place.
    pub fn exp(&self, x: &mut [f32]) {
        (self.exp)(x)
    }

    /// [`math::gelu_tanh`](crate::math::gelu_tanh) of every value, in place.
    pub fn gelu_tanh(&self, x: &mut [f32]) {
        (self.gelu_tanh)(x)
    }

    /// [`math::gelu_erf`](crate::math::gelu_erf) of every value, in place.
    pub fn gelu_erf(&self, x: &mut [f32]) {
        (self.gelu_erf)(x)
    }

    /// Widens token values to f32 (exact).
    pub fn widen(&self, src: Elems<'_>, dst: &mut [f32]) -> Result<()> {
        same("widen lengths", src.len(), dst.len())?;
        match src {
            Elems::F32(s) => dst.copy_from_slice(s),
            Elems::F16(s) => (self.widen_f16)(s, dst),
        }
        Ok(())
    }

    /// Rounds f32 values to the token type (to nearest even; f16 overflows to infinity).
    pub fn narrow(&self, src: &[f32], dst: ElemsMut<'_>) -> Result<()> {
        same("narrow lengths", src.len(), dst.len())?;
        match dst {
            ElemsMut::F32(d) => d.copy_from_slice(src),
            ElemsMut::F16(d) => (self.narrow_f16)(src, d),
        }
        Ok(())
    }

    /// One tap of a depthwise convolution over whole tokens:
    /// `out[i] += scales[(i mod w) / group] · src[i]` with `w = group · scales.len()`
    /// (a token's width; each group of `group` channels shares one kernel weight).
    pub fn depthwise(
        &self,
        src: Elems<'_>,
        scales: &[f32],
        group: usize,
        out: &mut [f32],
    ) -> Result<()> {
        same("depthwise lengths", src.len(), out.len())?;
        let width = group * scales.len();
        if width == 0 || !out.len().is_multiple_of(width) {
            return Err(Error::Mismatch {
                what: "depthwise length vs token width",
                left: out.len(),
                right: width,
            });
        }
        (self.depthwise)(src, scales, group, out);
        Ok(())
    }

    /// Quantises each row of `src` to int8 for [`Kernels::gemm_q8`]: with
    /// `m = max_k |x[k]|` (NaN ignored), the row's scale is `m / 127` and
    /// `q[k] = round_ties_even(x[k] · (127 / m))` clamped to ±127 (scale and values 0
    /// where `m` is 0), written in the layout of [`crate::quant`]. The row is all of its
    /// pieces' depths (a convolution's taps).
    pub fn quantize(&self, src: &Lhs<'_>, dst: &mut QuantRowsMut<'_>) -> Result<()> {
        same("quantise rows", src.rows(), dst.rows())?;
        same("quantise depth", src.depth(), dst.depth())?;
        (self.quantize)(src, dst);
        Ok(())
    }

    /// The integer linear layer: `out[t][o] = ((acc as f32) · sx[t]) · sw[o] + b[o]`,
    /// `acc = Σ_k q[t][k] · w[o][k]` exact in i32 (so in any order), `b` the bias
    /// ([`Start::Bias`]) or +0.0 ([`Start::Zero`]).
    pub fn gemm_q8(
        &self,
        x: &QuantRows<'_>,
        w: &QuantWeights<'_>,
        start: Start<'_>,
        out: &mut Out<'_>,
    ) -> Result<()> {
        same("activation depth vs weight depth", x.depth(), w.depth())?;
        same("activation rows vs out rows", x.rows(), out.rows())?;
        same("weight outputs vs out cols", w.outputs(), out.cols())?;
        if x.depth() > MAX_Q8_DEPTH {
            return Err(Error::Unsupported("integer dot products deeper than 2^17"));
        }
        start_fits(
            start,
            out.cols(),
            false,
            "accumulating integer sums across calls",
        )?;
        (self.gemm_q8)(x, w, start, out);
        Ok(())
    }

    /// Runs `steps` rounds of independent multiply-then-add chains held in registers (no
    /// memory traffic): the most multiply-accumulates per second this implementation can
    /// do with a separate multiply and add, for judging the other kernels. Returns the
    /// multiply-adds done and a value that depends on all of them.
    pub fn peak_probe(&self, steps: usize) -> (u64, f32) {
        (self.peak)(steps)
    }

    /// LayerNorm of every `width`-value row of `x`, in place:
    /// `mean = Σx / n`, `var = Σ(x − mean)² / n` (sums in order from +0.0),
    /// `y = ((x − mean) · (1 / √(var + eps))) · w + b`.
    pub fn layer_norm(
        &self,
        x: &mut [f32],
        width: usize,
        w: &Vector<'_>,
        b: &Vector<'_>,
        eps: f32,
    ) -> Result<()> {
        if width == 0 || !x.len().is_multiple_of(width) {
            return Err(Error::Mismatch {
                what: "layer norm length vs width",
                left: x.len(),
                right: width,
            });
        }
        same("layer norm weight length", w.len().min(b.len()), width)?;
        (self.layer_norm)(x, width, w, b, eps);
        Ok(())
    }
}
