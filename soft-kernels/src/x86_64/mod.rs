//! x86-64 kernels: AVX2 (with F16C) and AVX-512F, chosen at run time. With `arm`, one of
//! the two modules of the crate with `unsafe`: intrinsics and raw pointers into views
//! that [`Kernels`] has checked.
//!
//! Each kernel is written once over the `Lanes` trait (`lanes.rs`) and instantiated per
//! instruction set by the `isa_table!` macro: a `#[target_feature]` function (where the lanes' methods inline),
//! wrapped in a safe function for the table. A table is reachable only through
//! [`avx2`] and [`avx512`], which check the CPU first; that check is what makes the
//! wrappers' `unsafe` blocks sound.

#![warn(clippy::undocumented_unsafe_blocks)]

mod gemm;
mod lanes;
mod math;
mod quant;
mod rows;

use crate::table::Kernels;

/// Whether this CPU has `$feature`: asked at run time with `std`, else what the build's
/// target features guarantee.
macro_rules! has {
    ($feature:tt) => {{
        #[cfg(any(test, feature = "std"))]
        {
            std::is_x86_feature_detected!($feature)
        }
        #[cfg(not(any(test, feature = "std")))]
        {
            cfg!(target_feature = $feature)
        }
    }};
}

/// One instruction set's table.
macro_rules! isa_table {
    ($module:ident, $lanes:ident, $features:literal, $name:literal) => {
        mod $module {
            use half::f16;

            use super::lanes::$lanes as L;
            use super::{gemm, math, quant, rows};
            use crate::operand::{Elems, Lhs, Out, Rhs, Start, Strided, Vector};
            use crate::quant::{QuantRows, QuantWeights};
            use crate::table::Kernels;

            #[target_feature(enable = $features)]
            unsafe fn gemm_isa(lhs: &Lhs<'_>, rhs: &Rhs<'_>, start: Start<'_>, out: &mut Out<'_>) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { gemm::gemm::<L>(lhs, rhs, start, out) }
            }

            #[target_feature(enable = $features)]
            unsafe fn gaussian_isa(q: &Strided<'_>, lt: &Strided<'_>, out: &mut Out<'_>) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { math::gaussian::<L>(q, lt, out) }
            }

            #[target_feature(enable = $features)]
            unsafe fn exp_isa(x: &mut [f32]) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { math::map::<L, math::Exp>(x) }
            }

            #[target_feature(enable = $features)]
            unsafe fn gelu_tanh_isa(x: &mut [f32]) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { math::map::<L, math::GeluTanh>(x) }
            }

            #[target_feature(enable = $features)]
            unsafe fn gelu_erf_isa(x: &mut [f32]) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { math::map::<L, math::GeluErf>(x) }
            }

            #[target_feature(enable = $features)]
            unsafe fn widen_isa(src: &[f16], dst: &mut [f32]) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { rows::widen_f16::<L>(src, dst) }
            }

            #[target_feature(enable = $features)]
            unsafe fn narrow_isa(src: &[f32], dst: &mut [f16]) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { rows::narrow_f16::<L>(src, dst) }
            }

            #[target_feature(enable = $features)]
            unsafe fn depthwise_isa(src: Elems<'_>, scales: &[f32], group: usize, out: &mut [f32]) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { rows::depthwise::<L>(src, scales, group, out) }
            }

            #[target_feature(enable = $features)]
            unsafe fn layer_norm_isa(
                x: &mut [f32],
                width: usize,
                w: &Vector<'_>,
                b: &Vector<'_>,
                eps: f32,
            ) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { rows::layer_norm::<L>(x, width, w, b, eps) }
            }

            #[target_feature(enable = $features)]
            unsafe fn gemm_q8_isa(
                x: &QuantRows<'_>,
                w: &QuantWeights<'_>,
                start: Start<'_>,
                out: &mut Out<'_>,
            ) {
                // SAFETY: forwarded from the safe wrapper below ($features include AVX2).
                unsafe { quant::gemm_q8(x, w, start, out) }
            }

            #[target_feature(enable = $features)]
            unsafe fn peak_isa(steps: usize) -> (u64, f32) {
                // SAFETY: forwarded from the safe wrapper below.
                unsafe { rows::peak::<L>(steps) }
            }

            // The safe entries of the table. SAFETY (each): the table is only handed out by
            // `super::avx2`/`super::avx512` after the CPU reported these features, and
            // `Kernels` checked the operands' shapes before calling.

            fn gemm(lhs: &Lhs<'_>, rhs: &Rhs<'_>, start: Start<'_>, out: &mut Out<'_>) {
                // SAFETY: see above.
                unsafe { gemm_isa(lhs, rhs, start, out) }
            }

            fn gaussian(q: &Strided<'_>, lt: &Strided<'_>, out: &mut Out<'_>) {
                // SAFETY: see above.
                unsafe { gaussian_isa(q, lt, out) }
            }

            fn exp(x: &mut [f32]) {
                // SAFETY: see above.
                unsafe { exp_isa(x) }
            }

            fn gelu_tanh(x: &mut [f32]) {
                // SAFETY: see above.
                unsafe { gelu_tanh_isa(x) }
            }

            fn gelu_erf(x: &mut [f32]) {
                // SAFETY: see above.
                unsafe { gelu_erf_isa(x) }
            }

            fn widen(src: &[f16], dst: &mut [f32]) {
                // SAFETY: see above.
                unsafe { widen_isa(src, dst) }
            }

            fn narrow(src: &[f32], dst: &mut [f16]) {
                // SAFETY: see above.
                unsafe { narrow_isa(src, dst) }
            }

            fn depthwise(src: Elems<'_>, scales: &[f32], group: usize, out: &mut [f32]) {
                // SAFETY: see above.
                unsafe { depthwise_isa(src, scales, group, out) }
            }

            fn layer_norm(x: &mut [f32], width: usize, w: &Vector<'_>, b: &Vector<'_>, eps: f32) {
                // SAFETY: see above.
                unsafe { layer_norm_isa(x, width, w, b, eps) }
            }

            fn peak(steps: usize) -> (u64, f32) {
                // SAFETY: see above.
                unsafe { peak_isa(steps) }
            }

            fn gemm_q8(
                x: &QuantRows<'_>,
                w: &QuantWeights<'_>,
                start: Start<'_>,
                out: &mut Out<'_>,
            ) {
                // SAFETY: see above.
                unsafe { gemm_q8_isa(x, w, start, out) }
            }

            pub(super) static TABLE: Kernels = Kernels {
                name: $name,
                gemm,
                gaussian,
                exp,
                gelu_tanh,
                gelu_erf,
                widen_f16: widen,
                narrow_f16: narrow,
                depthwise,
                layer_norm,
                peak,
                // Quantisation is O(tokens · depth) beside the GEMM's O(· outputs).
                quantize: crate::generic::GENERIC.quantize,
                gemm_q8,
            };
        }
    };
}

isa_table!(avx2_table, V256, "avx2,f16c", "avx2");
isa_table!(avx512_table, V512, "avx512f,avx2,f16c", "avx512");

/// `table` if every feature is present.
fn when(features: &[bool], table: &'static Kernels) -> Option<&'static Kernels> {
    features.iter().all(|&f| f).then_some(table)
}

/// The AVX2 kernels, if this CPU runs them (AVX2 and F16C).
pub fn avx2() -> Option<&'static Kernels> {
    when(&[has!("avx2"), has!("f16c")], &avx2_table::TABLE)
}

/// The AVX-512F kernels, if this CPU runs them (AVX-512F, AVX2 and F16C).
pub fn avx512() -> Option<&'static Kernels> {
    when(
        &[has!("avx512f"), has!("avx2"), has!("f16c")],
        &avx512_table::TABLE,
    )
}
