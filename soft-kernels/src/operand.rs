//! The views kernels read and write. Each is checked against its slice once, when it is
//! built, so no kernel (generic or SIMD) needs a bounds check in its loops, and the SIMD
//! kernels' raw-pointer reads are sound by construction.

use bytemuck::Pod;
use half::f16;

use crate::error::{Error, Result};

/// Exact f16 → f32 for every half, infinities and NaNs included; branch-free, so loops
/// over f16 activations vectorise.
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
/// instead of [`widen`]'s dozen. The weight kernels use it: a model blob's weights are
/// checked finite when it is loaded, so the special case never arises. Exact for every
/// finite half, subnormals included, given the FPU's default mode (no flush-to-zero).
#[inline(always)]
pub fn widen_finite(h: u16) -> f32 {
    // Sign-extend, then shift exponent and mantissa into f32 place: bit 31 is the sign,
    // bits 30..28 are copies of it to clear, bits 27..13 the half's magnitude bits.
    let bits = ((i32::from(h as i16) << 13) as u32) & 0x8fff_ffff;
    // Rebias the exponent by 2^(127 - 15); the product is exact.
    f32::from_bits(bits) * f32::from_bits(0x7780_0000)
}

/// A vector of parameters (bias, norm weights, embeddings), f32 or f16.
#[derive(Debug, Clone, Copy)]
pub enum Vector<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl<'a> Vector<'a> {
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

    /// Value `i` as f32 (0 beyond the end; callers check lengths when they build views).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Vector::F32(v) => v.get(i).copied().unwrap_or(0.0),
            Vector::F16(v) => v.get(i).map_or(0.0, |h| widen(h.to_bits())),
        }
    }

    /// Values `start..`, as a vector of their own.
    pub fn skip(&self, start: usize) -> Vector<'a> {
        match *self {
            Vector::F32(v) => Vector::F32(v.get(start..).unwrap_or_default()),
            Vector::F16(v) => Vector::F16(v.get(start..).unwrap_or_default()),
        }
    }

    /// Values `range`, for [`Kernels::widen`](crate::Kernels::widen) (`None` past the end).
    pub fn elems(&self, range: core::ops::Range<usize>) -> Option<Elems<'a>> {
        match *self {
            Vector::F32(v) => v.get(range).map(Elems::F32),
            Vector::F16(v) => v.get(range).map(Elems::F16),
        }
    }

    /// Copies values `start..start + out.len()` into `out` (as many as there are).
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Vector::F32(v) => {
                let src = v.get(start..).unwrap_or_default();
                let n = out.len().min(src.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
            }
            Vector::F16(v) => {
                for (o, x) in out.iter_mut().zip(v.get(start..).unwrap_or_default()) {
                    *o = widen(x.to_bits());
                }
            }
        }
    }

    /// `out[i] += self[start + i]`.
    pub fn add_into(&self, start: usize, out: &mut [f32]) {
        match self {
            Vector::F32(v) => {
                for (o, x) in out.iter_mut().zip(v.get(start..).unwrap_or_default()) {
                    *o += *x;
                }
            }
            Vector::F16(v) => {
                for (o, x) in out.iter_mut().zip(v.get(start..).unwrap_or_default()) {
                    *o += widen(x.to_bits());
                }
            }
        }
    }
}

/// Storage type of token maps and line buffers: f32, or f16 to halve the arena.
pub trait TokenElem: Pod + Default + core::fmt::Debug + Send + Sync {
    /// Widens to f32 (exact).
    fn load(self) -> f32;
    /// Rounds an f32 to this type (round to nearest even).
    fn store(v: f32) -> Self;
    /// A slice of these, as a kernel operand.
    fn elems(s: &[Self]) -> Elems<'_>;
    /// A mutable slice of these, as a kernel operand.
    fn elems_mut(s: &mut [Self]) -> ElemsMut<'_>;
}

impl TokenElem for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        v
    }
    fn elems(s: &[f32]) -> Elems<'_> {
        Elems::F32(s)
    }
    fn elems_mut(s: &mut [f32]) -> ElemsMut<'_> {
        ElemsMut::F32(s)
    }
}

impl TokenElem for f16 {
    #[inline(always)]
    fn load(self) -> f32 {
        widen(self.to_bits())
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn elems(s: &[f16]) -> Elems<'_> {
        Elems::F16(s)
    }
    fn elems_mut(s: &mut [f16]) -> ElemsMut<'_> {
        ElemsMut::F16(s)
    }
}

/// Token values in their storage type.
#[derive(Debug, Clone, Copy)]
pub enum Elems<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values (any, infinities and NaNs included).
    F16(&'a [f16]),
}

impl Elems<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Elems::F32(v) => v.len(),
            Elems::F16(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Mutable token values in their storage type.
#[derive(Debug)]
pub enum ElemsMut<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// f16 values.
    F16(&'a mut [f16]),
}

impl ElemsMut<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            ElemsMut::F32(v) => v.len(),
            ElemsMut::F16(v) => v.len(),
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Elements a `rows × cols` view with these strides reaches, or `None` on overflow.
fn reach(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(row_stride)?
        .checked_add((cols - 1).checked_mul(col_stride)?)?
        .checked_add(1)
}

fn check_reach(
    operand: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<()> {
    match reach(rows, cols, row_stride, col_stride) {
        Some(needed) if needed <= len => Ok(()),
        needed => Err(Error::OutOfBounds {
            operand,
            needed: needed.unwrap_or(usize::MAX),
            len,
        }),
    }
}

/// A read-only `rows × cols` matrix of f32: element `(i, j)` is
/// `data[i·row_stride + j·col_stride]`. Any strides, so a transpose is a view too.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    /// A view, checked to lie inside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_reach("strided", data.len(), rows, cols, row_stride, col_stride)?;
        Ok(Strided {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A row-major view: `rows × cols`, consecutive rows `row_stride` apart.
    pub fn rows_of(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Result<Self> {
        Self::new(data, rows, cols, row_stride, 1)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance between columns.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The slice, starting at element `(0, 0)`.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element `(i, j)`; 0 outside the view (never reached by a checked caller).
    #[inline(always)]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data
            .get(i * self.row_stride + j * self.col_stride)
            .copied()
            .unwrap_or(0.0)
    }

    /// Rows `first..first + count` (clamped to the view).
    pub fn row_range(&self, first: usize, count: usize) -> Strided<'a> {
        let first = first.min(self.rows);
        let count = count.min(self.rows - first);
        Strided {
            data: if count == 0 {
                &[]
            } else {
                self.data.get(first * self.row_stride..).unwrap_or_default()
            },
            rows: count,
            ..*self
        }
    }

    /// Columns `first..first + count` (clamped to the view).
    pub fn col_range(&self, first: usize, count: usize) -> Strided<'a> {
        let first = first.min(self.cols);
        let count = count.min(self.cols - first);
        Strided {
            data: if count == 0 {
                &[]
            } else {
                self.data.get(first * self.col_stride..).unwrap_or_default()
            },
            cols: count,
            ..*self
        }
    }
}

/// Most pieces a [`Lhs`] can have: a 3×3 convolution reads three image rows.
pub const MAX_PIECES: usize = 3;

/// The left operand of a GEMM: `rows × depth` f32 values, made of up to [`MAX_PIECES`]
/// strided pieces with the same rows, concatenated along the depth (a convolution's
/// three input rows, each `3·C_in` taps deep).
#[derive(Debug, Clone, Copy)]
pub struct Lhs<'a> {
    pieces: [Strided<'a>; MAX_PIECES],
    count: usize,
    depth: usize,
}

impl<'a> Lhs<'a> {
    /// One piece.
    pub fn new(a: Strided<'a>) -> Lhs<'a> {
        let empty = a.row_range(0, a.rows).col_range(0, 0);
        Lhs {
            pieces: [a, empty, empty],
            count: 1,
            depth: a.cols,
        }
    }

    /// Several pieces (1 to [`MAX_PIECES`]) with equal row counts.
    pub fn pieces(pieces: &[Strided<'a>]) -> Result<Lhs<'a>> {
        let first = pieces
            .first()
            .ok_or(Error::Unsupported("a lhs without pieces"))?;
        if pieces.len() > MAX_PIECES {
            return Err(Error::Unsupported("more than three lhs pieces"));
        }
        let mut lhs = Lhs::new(*first);
        for p in pieces.iter().skip(1) {
            if p.rows != first.rows {
                return Err(Error::Mismatch {
                    what: "rows of lhs pieces",
                    left: first.rows,
                    right: p.rows,
                });
            }
            if let Some(slot) = lhs.pieces.get_mut(lhs.count) {
                *slot = *p;
            }
            lhs.count += 1;
            lhs.depth += p.cols;
        }
        Ok(lhs)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.pieces[0].rows
    }

    /// Total depth (columns of all pieces).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The pieces, in depth order.
    pub fn parts(&self) -> &[Strided<'a>] {
        self.pieces.get(..self.count).unwrap_or_default()
    }

    /// Rows `first..first + count` of every piece.
    pub fn row_range(&self, first: usize, count: usize) -> Lhs<'a> {
        Lhs {
            pieces: self.pieces.map(|p| p.row_range(first, count)),
            ..*self
        }
    }

    /// Calls `f(k, a[row][k0 + k])` for `k < count`, in order (across pieces): a
    /// [`Lhs::read`] without the copy.
    #[inline(always)]
    pub fn each(&self, row: usize, k0: usize, count: usize, mut f: impl FnMut(usize, f32)) {
        let mut piece_start = 0;
        let mut done = 0;
        for p in self.parts() {
            let piece_end = piece_start + p.cols;
            let want = k0 + done;
            if done < count && want < piece_end {
                let local = want - piece_start;
                let n = (piece_end - want).min(count - done);
                let base = row * p.row_stride + local * p.col_stride;
                if p.col_stride == 1 {
                    let src = p.data.get(base..base + n).unwrap_or_default();
                    for (k, &v) in src.iter().enumerate() {
                        f(done + k, v);
                    }
                } else {
                    for k in 0..n {
                        f(
                            done + k,
                            p.data.get(base + k * p.col_stride).copied().unwrap_or(0.0),
                        );
                    }
                }
                done += n;
            }
            piece_start = piece_end;
        }
    }

    /// `dst[k] = a[row][k0 + k]` for `k < dst.len()` (across pieces).
    #[inline]
    pub fn read(&self, row: usize, k0: usize, dst: &mut [f32]) {
        let mut piece_start = 0;
        let mut filled = 0;
        for p in self.parts() {
            let piece_end = piece_start + p.cols;
            let want = k0 + filled;
            if filled < dst.len() && want < piece_end {
                let local = want - piece_start;
                let n = (piece_end - want).min(dst.len() - filled);
                let out = dst.get_mut(filled..filled + n).unwrap_or_default();
                let base = row * p.row_stride + local * p.col_stride;
                if p.col_stride == 1 {
                    if let Some(src) = p.data.get(base..base + n) {
                        out.copy_from_slice(src);
                    }
                } else {
                    for (k, o) in out.iter_mut().enumerate() {
                        *o = p.data.get(base + k * p.col_stride).copied().unwrap_or(0.0);
                    }
                }
                filled += n;
            }
            piece_start = piece_end;
        }
    }
}

/// The stored values of a GEMM's right operand.
#[derive(Debug, Clone, Copy)]
pub enum RhsData<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 weights, all finite (a blob's weights are checked when it is loaded), widened
    /// with [`widen_finite`].
    F16Finite(&'a [u16]),
    /// f16 activations, any value, widened with [`widen`].
    F16(&'a [f16]),
    /// int8 weights with one f32 scale per column.
    I8 {
        /// Quantised values.
        q: &'a [i8],
        /// Per-column scales, indexed like the columns.
        scales: &'a [f32],
    },
}

impl<'a> RhsData<'a> {
    fn len(&self) -> usize {
        match self {
            RhsData::F32(v) => v.len(),
            RhsData::F16Finite(v) => v.len(),
            RhsData::F16(v) => v.len(),
            RhsData::I8 { q, .. } => q.len(),
        }
    }

    fn skip(&self, n: usize) -> RhsData<'a> {
        match *self {
            RhsData::F32(v) => RhsData::F32(v.get(n..).unwrap_or_default()),
            RhsData::F16Finite(v) => RhsData::F16Finite(v.get(n..).unwrap_or_default()),
            RhsData::F16(v) => RhsData::F16(v.get(n..).unwrap_or_default()),
            RhsData::I8 { q, scales } => RhsData::I8 {
                q: q.get(n..).unwrap_or_default(),
                scales,
            },
        }
    }
}

/// The right operand of a GEMM: `rows × cols`, row-major with a row stride (columns
/// contiguous, so kernels vectorise across them). Weights are stored input-major, so a
/// layer's weight matrix is its `Rhs` as it lies in the blob.
#[derive(Debug, Clone, Copy)]
pub struct Rhs<'a> {
    data: RhsData<'a>,
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> Rhs<'a> {
    /// A view, checked to lie inside `data` with rows that do not overlap (and, for
    /// int8, to have a scale per column).
    pub fn new(data: RhsData<'a>, rows: usize, cols: usize, row_stride: usize) -> Result<Self> {
        if rows > 1 && row_stride < cols {
            return Err(Error::Mismatch {
                what: "rhs row stride vs cols",
                left: row_stride,
                right: cols,
            });
        }
        // A single row's stride is never used to step; keep it at least its width.
        let row_stride = if rows > 1 {
            row_stride
        } else {
            row_stride.max(cols)
        };
        check_reach("rhs", data.len(), rows, cols, row_stride, 1)?;
        if let RhsData::I8 { scales, .. } = data {
            if scales.len() < cols {
                return Err(Error::OutOfBounds {
                    operand: "rhs scales",
                    needed: cols,
                    len: scales.len(),
                });
            }
        }
        Ok(Rhs {
            data,
            rows,
            cols,
            row_stride,
        })
    }

    /// An f32 matrix view.
    pub fn f32(view: Strided<'a>) -> Result<Self> {
        if view.col_stride != 1 && view.cols > 1 {
            return Err(Error::Unsupported("rhs columns must be contiguous"));
        }
        Self::new(
            RhsData::F32(view.data),
            view.rows,
            view.cols,
            view.row_stride,
        )
    }

    /// Rows (the GEMM's depth).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// The stored values, starting at element `(0, 0)`.
    pub fn data(&self) -> RhsData<'a> {
        self.data
    }

    /// Whether the values are int8 (whose sums are scaled when they are stored).
    pub fn is_int8(&self) -> bool {
        matches!(self.data, RhsData::I8 { .. })
    }

    /// Rows `first..first + count` (clamped).
    pub fn row_range(&self, first: usize, count: usize) -> Rhs<'a> {
        let first = first.min(self.rows);
        let count = count.min(self.rows - first);
        Rhs {
            data: self.data.skip(if count == 0 {
                0
            } else {
                first * self.row_stride
            }),
            rows: count,
            ..*self
        }
    }

    /// Columns `first..first + count` (clamped); int8 scales move with them.
    pub fn col_range(&self, first: usize, count: usize) -> Rhs<'a> {
        let first = first.min(self.cols);
        let count = count.min(self.cols - first);
        let data = match self.data.skip(first) {
            RhsData::I8 { q, scales } => RhsData::I8 {
                q,
                scales: scales.get(first..).unwrap_or_default(),
            },
            other => other,
        };
        Rhs {
            data,
            cols: count,
            ..*self
        }
    }
}

/// A GEMM's output: `rows × cols` f32, row-major with a row stride of at least `cols`.
#[derive(Debug)]
pub struct Out<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> Out<'a> {
    /// A view, checked to lie inside `data`, rows not overlapping.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Result<Self> {
        if rows > 1 && row_stride < cols {
            return Err(Error::Mismatch {
                what: "out row stride vs cols",
                left: row_stride,
                right: cols,
            });
        }
        check_reach("out", data.len(), rows, cols, row_stride, 1)?;
        Ok(Out {
            data,
            rows,
            cols,
            row_stride,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// The slice, starting at element `(0, 0)`.
    pub fn data(&mut self) -> &mut [f32] {
        self.data
    }

    /// Re-borrows the view.
    pub fn reborrow(&mut self) -> Out<'_> {
        Out {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
        }
    }

    /// Rows `first..first + count` (clamped).
    pub fn row_range(&mut self, first: usize, count: usize) -> Out<'_> {
        let first = first.min(self.rows);
        let count = count.min(self.rows - first);
        let start = if count == 0 {
            0
        } else {
            first * self.row_stride
        };
        Out {
            data: self.data.get_mut(start..).unwrap_or_default(),
            rows: count,
            cols: self.cols,
            row_stride: self.row_stride,
        }
    }

    /// Columns `first..first + count` (clamped).
    pub fn col_range(&mut self, first: usize, count: usize) -> Out<'_> {
        let first = first.min(self.cols);
        let count = count.min(self.cols - first);
        Out {
            data: self.data.get_mut(first..).unwrap_or_default(),
            rows: self.rows,
            cols: count,
            row_stride: self.row_stride,
        }
    }

    /// Splits into rows `..at` and `at..` (clamped), for workers on disjoint rows.
    pub fn split_rows(self, at: usize) -> (Out<'a>, Out<'a>) {
        let at = at.min(self.rows);
        let cut = (at * self.row_stride).min(self.data.len());
        let (head, tail) = self.data.split_at_mut(cut);
        (
            Out {
                data: head,
                rows: at,
                cols: self.cols,
                row_stride: self.row_stride,
            },
            Out {
                data: tail,
                rows: self.rows - at,
                cols: self.cols,
                row_stride: self.row_stride,
            },
        )
    }

    /// Row `i` (empty outside the view).
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        if i >= self.rows {
            return &mut [];
        }
        let at = i * self.row_stride;
        self.data.get_mut(at..at + self.cols).unwrap_or_default()
    }

    /// Row `i` (empty outside the view).
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        if i >= self.rows {
            return &[];
        }
        let at = i * self.row_stride;
        self.data.get(at..at + self.cols).unwrap_or_default()
    }
}

/// Where a GEMM's running sums start.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// +0.0.
    Zero,
    /// The bias of each column (int8: added after scaling, see the crate docs).
    Bias(Vector<'a>),
    /// The output's current values (float right operands only).
    Accumulate,
}
