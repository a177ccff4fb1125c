//! The elementwise functions, as fixed sequences of f32 operations: the scalar code here
//! defines their bits, and every SIMD version repeats it lane by lane.

/// `e^x`.
#[inline]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

/// `tanh x`.
#[inline]
pub fn tanh(x: f32) -> f32 {
    libm::tanhf(x)
}

/// `erf x`.
#[inline]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, as PyTorch's `nn.GELU()`.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// The SOFT blocks' tanh GELU, `x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))))
}
