//! One caller-provided byte buffer, handed out as typed scratch slices in strict LIFO scopes.
//!
//! No `unsafe`: slices are split off the front of the remaining `&mut [u8]` and cast with
//! `bytemuck`, and a scope is a re-borrow, so its slices are provably dead when it ends and
//! its bytes go back to the parent. Every allocation is rounded to 16 bytes, which makes
//! the high-water mark a pure function of the allocation sizes: the planner computes it
//! exactly with [`bytes_for`], and a run reports it.

use core::cell::Cell;
use core::mem::size_of;

use bytemuck::Pod;

use crate::error::{Error, Result};

/// Alignment of the arena start and of every allocation.
pub const ARENA_ALIGN: usize = 16;

/// Bytes an allocation of `n` values of `T` takes from the arena.
pub const fn bytes_for<T>(n: usize) -> usize {
    (n * size_of::<T>()).div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

/// A statically sized, 16-byte aligned arena buffer for firmware `static`s and tests.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
pub struct ArenaBuffer<const N: usize>(pub [u8; N]);

impl<const N: usize> ArenaBuffer<N> {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        ArenaBuffer([0; N])
    }
}

impl<const N: usize> Default for ArenaBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A bump allocator over the unused tail of the caller's buffer.
#[derive(Debug)]
pub struct Arena<'a> {
    free: &'a mut [u8],
    /// Bytes in use from the arena's start to `free`.
    used: usize,
    peak: &'a Cell<usize>,
}

/// Tracks the high-water mark of an arena and all its scopes.
#[derive(Debug, Default)]
pub struct Watermark(Cell<usize>);

impl Watermark {
    /// A fresh mark at zero.
    pub const fn new() -> Self {
        Watermark(Cell::new(0))
    }

    /// Highest number of bytes in use at any one time so far.
    pub fn peak(&self) -> usize {
        self.0.get()
    }
}

impl<'a> Arena<'a> {
    /// Wraps `buf`, skipping up to 15 leading bytes to reach 16-byte alignment.
    pub fn new(buf: &'a mut [u8], mark: &'a Watermark) -> Arena<'a> {
        let skip = buf.as_ptr().align_offset(ARENA_ALIGN).min(buf.len());
        let free = buf.split_at_mut(skip).1;
        Arena {
            free,
            used: 0,
            peak: &mark.0,
        }
    }

    /// Bytes still free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// A scope: allocations through it are released when it is dropped.
    pub fn scope(&mut self) -> Arena<'_> {
        Arena {
            free: &mut *self.free,
            used: self.used,
            peak: self.peak,
        }
    }

    /// `n` values of `T`, 16-byte aligned; their contents are unspecified.
    pub fn alloc<T: Pod>(&mut self, n: usize) -> Result<&'a mut [T]> {
        let bytes = n
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_next_multiple_of(ARENA_ALIGN))
            .ok_or(Error::ArenaTooSmall {
                needed: usize::MAX,
                available: self.free.len(),
            })?;
        if bytes > self.free.len() {
            return Err(Error::ArenaTooSmall {
                needed: self.used + bytes,
                available: self.used + self.free.len(),
            });
        }
        let (head, tail) = core::mem::take(&mut self.free).split_at_mut(bytes);
        self.free = tail;
        self.used += bytes;
        if self.used > self.peak.get() {
            self.peak.set(self.used);
        }
        let head = head.get_mut(..n * size_of::<T>()).unwrap_or_default();
        bytemuck::try_cast_slice_mut(head).map_err(|_| Error::ArenaTooSmall {
            needed: self.used,
            available: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_release_and_peak_is_tracked() {
        let mut buf = ArenaBuffer::<256>::new();
        let mark = Watermark::new();
        let mut ar = Arena::new(&mut buf.0, &mark);
        let a: &mut [f32] = ar.alloc(3).unwrap();
        a.fill(1.0);
        {
            let mut s = ar.scope();
            let b: &mut [u16] = s.alloc(40).unwrap();
            b.fill(7);
            assert_eq!(s.available(), 256 - 16 - 80);
        }
        assert_eq!(ar.available(), 240);
        let c: &mut [f32] = ar.alloc(4).unwrap();
        c.fill(2.0);
        assert_eq!(a, &[1.0; 3]);
        assert_eq!(mark.peak(), 96);
    }

    #[test]
    fn too_small_reports_needed_and_available() {
        let mut buf = ArenaBuffer::<64>::new();
        let mark = Watermark::new();
        let mut ar = Arena::new(&mut buf.0, &mark);
        let _a: &mut [f32] = ar.alloc(8).unwrap();
        let err = ar.alloc::<f32>(9).unwrap_err();
        assert_eq!(
            err,
            Error::ArenaTooSmall {
                needed: 32 + 48,
                available: 64
            }
        );
        assert!(ar.alloc::<f32>(usize::MAX).is_err());
    }

    #[test]
    fn misaligned_start_is_skipped() {
        let mut buf = ArenaBuffer::<64>::new();
        let mark = Watermark::new();
        let mut ar = Arena::new(&mut buf.0[3..], &mark);
        assert_eq!(ar.available(), 48);
        let x: &mut [f32] = ar.alloc(12).unwrap();
        assert_eq!(x.as_ptr() as usize % ARENA_ALIGN, 0);
    }
}
