//! Gaussian kernel rows: the `K1` rows of SOFT attention and its `K2` matrix.

use super::gemm::OUTPUT_BLOCK;
use crate::math;
use crate::operand::{Out, Strided};

/// `out[t][l] = exp(-½ · Σ_i (q[t][i] − L[i][l])²)`, the sum over `i` in order, for the
/// landmarks `L` stored transposed (`d × m`, columns contiguous).
pub(crate) fn gaussian(q: &Strided<'_>, landmarks: &Strided<'_>, out: &mut Out<'_>) {
    let (d, m) = (q.cols(), landmarks.cols());
    let lt = landmarks.data();
    let stride = landmarks.row_stride();
    for t in 0..q.rows() {
        let row = out.row_mut(t);
        // Eight (x86) or four (ARM) landmarks at a time, each with its own sum, so the
        // additions of different landmarks overlap instead of waiting on one chain.
        for l0 in (0..m).step_by(OUTPUT_BLOCK) {
            let mut acc = [0.0f32; OUTPUT_BLOCK];
            let valid = OUTPUT_BLOCK.min(m - l0);
            for i in 0..d {
                let qi = q.at(t, i);
                let at = i * stride + l0;
                // A whole block as an array: the loop unrolls, no count per landmark.
                match lt
                    .get(at..at + OUTPUT_BLOCK)
                    .and_then(|l| <&[f32; OUTPUT_BLOCK]>::try_from(l).ok())
                    .filter(|_| valid == OUTPUT_BLOCK)
                {
                    Some(ls) => {
                        for (a, &l) in acc.iter_mut().zip(ls) {
                            let diff = qi - l;
                            *a += diff * diff;
                        }
                    }
                    None => {
                        let ls = lt.get(at..).unwrap_or_default();
                        for (a, &l) in acc.iter_mut().zip(ls).take(valid) {
                            let diff = qi - l;
                            *a += diff * diff;
                        }
                    }
                }
            }
            for (o, a) in row.iter_mut().skip(l0).zip(acc).take(valid) {
                *o = math::exp(a * -0.5);
            }
        }
    }
}
