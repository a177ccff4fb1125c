//! 3×3, pad-1 convolutions with folded BatchNorm and ReLU, one output row at a time from
//! three input rows: the stem and the stride-2 patch embeddings.
//!
//! A chunk of output pixels is one GEMM: the three input rows, widened to f32 into a
//! zero-padded window, are its left operand's three pieces (each `3·C_in` taps deep, one
//! pixel every `stride·C_in` values), the `[3, 3, C_in, C_out]` weights its right operand.
//! Each output sums its taps in `(ky, kx, c_in)` order from the bias; taps left or right
//! of the image read +0.0, rows above or below it are left out. W8A8 convolutions read
//! rows outside the image as zeros instead (an exact integer sum gains nothing from them)
//! and quantise each output pixel's taps together.

use soft_kernels::{Lhs, Out, Start, Strided, TokenElem};

use crate::error::Result;
use crate::exec::{carve, split, Parts, Run};
use crate::linear::{apply, quant_len, Weight};
use crate::scratch::scratch;
use crate::weights::{Matrix, Vector};

/// A convolution's weights (BatchNorm folded) and bias.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv<'a> {
    pub w: Matrix<'a>,
    pub b: Vector<'a>,
}

/// The geometry of one 3×3 convolution over rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    /// Input row width in pixels.
    pub in_w: usize,
    pub cin: usize,
    pub cout: usize,
    pub stride: usize,
    /// W8A8 (scratch for the quantised taps).
    pub w8a8: bool,
}

impl ConvShape {
    /// Output row width: `⌊(in + 2 − 3) / stride⌋ + 1`.
    pub fn out_w(&self) -> usize {
        (self.in_w.saturating_sub(1)) / self.stride.max(1) + 1
    }

    /// Output pixels per chunk.
    pub fn chunk(&self, run_chunk: usize) -> usize {
        run_chunk.min(self.out_w())
    }

    /// Window columns that `pixels` consecutive output pixels read.
    fn window_cols(&self, pixels: usize) -> usize {
        (pixels.max(1) - 1) * self.stride + 3
    }

    /// Window values for one chunk.
    pub fn window_len(&self, run_chunk: usize) -> usize {
        3 * self.window_cols(self.chunk(run_chunk)) * self.cin
    }

    /// Sums for one chunk.
    pub fn sums_len(&self, run_chunk: usize) -> usize {
        self.chunk(run_chunk) * self.cout
    }

    /// Quantised taps of one chunk (W8A8).
    pub fn quant_len(&self, run_chunk: usize) -> usize {
        quant_len(self.w8a8, self.chunk(run_chunk), 9 * self.cin)
    }
}

scratch! {
    /// One chunk of output pixels.
    pub(crate) struct ConvScratch(lens: ConvLens) {
        /// The three input rows' pixels the chunk reads, zero-padded, f32.
        window: [f32; lens.window],
        /// The chunk's sums, `[pixel][c_out]`.
        sums: [f32; lens.sums],
        /// The chunk's taps quantised per pixel (W8A8).
        quant: [f32; lens.quant],
    }
}

/// Values of each [`ConvScratch`] buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvLens {
    window: usize,
    sums: usize,
    quant: usize,
}

impl ConvLens {
    /// Scratch for convolutions of any of `shapes`.
    pub fn of(shapes: &[ConvShape], run_chunk: usize) -> ConvLens {
        let max = |len: fn(&ConvShape, usize) -> usize| {
            shapes.iter().map(|c| len(c, run_chunk)).max().unwrap_or(0)
        };
        ConvLens {
            window: max(ConvShape::window_len),
            sums: max(ConvShape::sums_len),
            quant: max(ConvShape::quant_len),
        }
    }
}

/// One output row from the input rows `rows` (`[ky]`, `None` above or below the image),
/// each `in_w × c_in` channel-last, into `out` (`out_w × c_out`).
pub(crate) fn conv_row<S: TokenElem, E: TokenElem>(
    run: &Run<'_>,
    conv: &Conv<'_>,
    shape: &ConvShape,
    rows: [Option<&[S]>; 3],
    scratch: &mut ConvScratch<'_, E>,
    out: &mut [E],
) -> Result<()> {
    let (cin, cout, stride) = (shape.cin, shape.cout, shape.stride);
    let out_w = shape.out_w();
    let chunk = shape.chunk(run.schedule.chunk);
    let weights = conv.w.weight()?;
    let integer = matches!(weights, Weight::Integer(_));
    let k = run.kernels;
    for ox0 in (0..out_w).step_by(chunk) {
        let n = chunk.min(out_w - ox0);
        let cols = shape.window_cols(n);
        let row_len = cols * cin;
        // Input column of window column 0 (one left of the chunk's first tap).
        let origin = ox0 * stride;
        for (ky, row) in rows.iter().enumerate() {
            let win = scratch
                .window
                .get_mut(ky * row_len..(ky + 1) * row_len)
                .unwrap_or_default();
            let Some(row) = row else {
                // Only the integer path reads rows outside the image.
                win.fill(0.0);
                continue;
            };
            // Window column c is input column origin + c − 1: zeros left of the image
            // (c = 0 when origin = 0) and right of it, the rest one contiguous run.
            let lead = usize::from(origin == 0);
            let first = origin + lead - 1;
            let inside = cols
                .saturating_sub(lead)
                .min(shape.in_w.saturating_sub(first));
            let (left, rest) = win.split_at_mut((lead * cin).min(win.len()));
            let (middle, right) = rest.split_at_mut((inside * cin).min(rest.len()));
            left.fill(0.0);
            right.fill(0.0);
            let src = row
                .get(first * cin..(first + inside) * cin)
                .unwrap_or_default();
            k.widen(S::elems(src), middle)?;
        }
        let window = &*scratch.window;
        let mut pieces: heapless::Vec<Strided<'_>, 3> = heapless::Vec::new();
        for ky in (0..3).filter(|&ky| integer || rows[ky].is_some()) {
            let piece = window.get(ky * row_len..).unwrap_or_default();
            let _ = pieces.push(Strided::rows_of(piece, n, 3 * cin, stride * cin)?);
        }
        let lhs = Lhs::pieces(&pieces)?;
        let sums = scratch.sums.get_mut(..n * cout).unwrap_or_default();
        match weights {
            Weight::Float(rhs) => {
                // Rows present are consecutive taps, so their weights are consecutive rows.
                let first_ky = rows.iter().position(Option::is_some).unwrap_or(0);
                let rhs = rhs.row_range(first_ky * 3 * cin, pieces.len() * 3 * cin);
                let workers = run.workers_for(n, n * lhs.depth() * cout);
                let parts: Parts<_> = carve(sums, cout, n, workers)
                    .into_iter()
                    .enumerate()
                    .map(|(w, sums)| (split(n, workers, w), sums))
                    .collect();
                run.try_parallel(parts, |(range, sums)| {
                    let mut out = Out::new(sums, range.len(), cout, cout)?;
                    let lhs = lhs.row_range(range.start, range.len());
                    Ok(k.gemm(&lhs, &rhs, Start::Bias(conv.b), &mut out)?)
                })?;
            }
            // One call: the quantised rows come in quads, which a split by tokens would
            // cut. Whole maps split convolutions by bands of rows instead.
            Weight::Integer(_) => {
                let mut out = Out::new(sums, n, cout, cout)?;
                let start = Start::Bias(conv.b);
                apply(run, &weights, &lhs, start, scratch.quant, &mut out)?;
            }
        }
        let sums = scratch.sums.get_mut(..n * cout).unwrap_or_default();
        for v in sums.iter_mut() {
            // ReLU; NaN stays NaN. An unconditional select vectorises, a conditional
            // store does not.
            *v = if *v < 0.0 { 0.0 } else { *v };
        }
        let dst = out
            .get_mut(ox0 * cout..(ox0 + n) * cout)
            .unwrap_or_default();
        k.narrow(sums, E::elems_mut(dst))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{Arena, Watermark};
    use crate::exec::{Inline, Schedule};
    use crate::weights::MatrixData;
    use soft_kernels::Kernels;

    /// `conv_row` against an f64 convolution, for strides 1 and 2, missing top or bottom
    /// rows, and chunk sizes and worker splits that must not change a bit.
    #[test]
    fn conv_row_matches_f64_and_chunking_changes_no_bit() {
        for (cin, cout, in_w, stride) in [(3, 4, 7, 2), (5, 9, 11, 1), (2, 17, 1, 2), (4, 3, 6, 1)]
        {
            let shape = ConvShape {
                in_w,
                cin,
                cout,
                stride,
                w8a8: false,
            };
            let out_w = shape.out_w();
            let w: Vec<f32> = (0..9 * cin * cout)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..cout).map(|i| i as f32 * 0.05 - 0.1).collect();
            let img: Vec<Vec<f32>> = (0..3)
                .map(|r| {
                    (0..in_w * cin)
                        .map(|i| ((i + r * 5) as f32 * 0.3).sin())
                        .collect()
                })
                .collect();
            let conv = Conv {
                w: Matrix {
                    inputs: 9 * cin,
                    outputs: cout,
                    data: MatrixData::F32(&w),
                },
                b: Vector::F32(&b),
            };
            for present in [
                [false, true, true],
                [true, true, false],
                [true, true, true],
                [false, true, false],
            ] {
                let rows: [Option<&[f32]>; 3] =
                    core::array::from_fn(|k| present[k].then_some(img[k].as_slice()));
                let mut first: Option<Vec<f32>> = None;
                for (chunk, workers) in [(8, 1), (1, 1), (3, 2), (5, 3)] {
                    let run = Run {
                        kernels: Kernels::generic(),
                        executor: &Inline,
                        schedule: Schedule {
                            chunk,
                            whole_maps: false,
                            workers,
                            min_split_macs: 0,
                        },
                    };
                    let lens = ConvLens::of(&[shape], chunk);
                    let mut arena = vec![0u8; ConvScratch::<f32>::bytes(lens) + 16];
                    let mark = Watermark::new();
                    let mut ar = Arena::new(&mut arena, &mark);
                    let mut scratch = ConvScratch::<f32>::alloc(&mut ar, lens).unwrap();
                    let mut out = vec![0.0f32; out_w * cout];
                    conv_row(&run, &conv, &shape, rows, &mut scratch, &mut out).unwrap();
                    for ox in 0..out_w {
                        for co in 0..cout {
                            let mut acc = f64::from(b[co]);
                            for ky in (0..3).filter(|&ky| present[ky]) {
                                for kx in 0..3 {
                                    let ix = (ox * stride + kx) as isize - 1;
                                    if ix < 0 || ix >= in_w as isize {
                                        continue;
                                    }
                                    for ci in 0..cin {
                                        acc += f64::from(img[ky][ix as usize * cin + ci])
                                            * f64::from(w[((ky * 3 + kx) * cin + ci) * cout + co]);
                                    }
                                }
                            }
                            let got = f64::from(out[ox * cout + co]);
                            assert!((got - acc.max(0.0)).abs() < 1e-5, "{got} vs {acc}");
                        }
                    }
                    match &first {
                        None => first = Some(out),
                        Some(f) => {
                            assert!(f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()))
                        }
                    }
                }
            }
        }
    }
}
