#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "test-support"))]
extern crate alloc;

#[cfg(soft_arm_dsp)]
#[allow(unsafe_code)]
pub mod arm;
pub mod error;
pub mod generic;
pub mod math;
pub mod operand;
pub mod quant;
#[cfg(any(test, feature = "test-support"))]
pub mod reference;
pub mod rng;
mod table;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_64;

#[cfg(test)]
mod suite;

pub use error::{Error, Result};
pub use operand::{
    widen, widen_finite, Elems, ElemsMut, Lhs, Out, Rhs, RhsData, Start, Strided, TokenElem,
    Vector, MAX_PIECES,
};
pub use quant::{QuantRows, QuantRowsMut, QuantWeights};
pub use table::{Kernels, MAX_Q8_DEPTH};

impl Kernels {
    /// The generic kernels, available everywhere.
    pub fn generic() -> &'static Kernels {
        &generic::GENERIC
    }

    /// The fastest kernels this CPU runs: on x86-64, AVX-512F, else AVX2 (+F16C), else
    /// generic; on ARMv7E-M (Cortex-M4, M7), the DSP kernels. With the `std` feature the CPU is asked at run time; without it, only
    /// what the build's target features guarantee is used.
    pub fn detect() -> &'static Kernels {
        Kernels::available().last().unwrap_or(&generic::GENERIC)
    }

    /// Every implementation this CPU runs, generic first, fastest last: for tests that
    /// compare them and benchmarks that time them.
    pub fn available() -> impl Iterator<Item = &'static Kernels> {
        let simd: [Option<&'static Kernels>; 2] = {
            #[cfg(target_arch = "x86_64")]
            {
                [x86_64::avx2(), x86_64::avx512()]
            }
            #[cfg(soft_arm_dsp)]
            {
                [Some(&arm::DSP), None]
            }
            #[cfg(not(any(target_arch = "x86_64", soft_arm_dsp)))]
            {
                [None, None]
            }
        };
        core::iter::once(&generic::GENERIC).chain(simd.into_iter().flatten())
    }

    /// The implementation called `name` (see [`Kernels::name`]), if this CPU runs it.
    pub fn by_name(name: &str) -> Option<&'static Kernels> {
        Kernels::available().find(|k| k.name() == name)
    }
}
