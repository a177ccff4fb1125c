//! One caller-provided byte buffer (or two: fast and large memory), handed out as typed
//! scratch slices in strict LIFO scopes.
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
use crate::placement::{Class, Memory, Placement};

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

/// A bump allocator over the unused tail of one memory's buffer.
#[derive(Debug)]
struct Pool<'a> {
    free: &'a mut [u8],
    /// Bytes in use from the buffer's start to `free`.
    used: usize,
    peak: &'a Cell<usize>,
}

impl<'a> Pool<'a> {
    fn new(buf: &'a mut [u8], peak: &'a Cell<usize>) -> Pool<'a> {
        let skip = buf.as_ptr().align_offset(ARENA_ALIGN).min(buf.len());
        let free = buf.split_at_mut(skip).1;
        Pool {
            free,
            used: 0,
            peak,
        }
    }

    fn scope(&mut self) -> Pool<'_> {
        Pool {
            free: &mut *self.free,
            used: self.used,
            peak: self.peak,
        }
    }

    fn alloc<T: Pod>(&mut self, n: usize, memory: Memory) -> Result<&'a mut [T]> {
        let too_small = |needed, available| match memory {
            Memory::Fast => Error::ArenaTooSmall { needed, available },
            Memory::Large => Error::LargeArenaTooSmall { needed, available },
        };
        let bytes = n
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_next_multiple_of(ARENA_ALIGN))
            .ok_or(too_small(usize::MAX, self.free.len()))?;
        if bytes > self.free.len() {
            return Err(too_small(self.used + bytes, self.used + self.free.len()));
        }
        let (head, tail) = core::mem::take(&mut self.free).split_at_mut(bytes);
        self.free = tail;
        self.used += bytes;
        if self.used > self.peak.get() {
            self.peak.set(self.used);
        }
        let head = head.get_mut(..n * size_of::<T>()).unwrap_or_default();
        bytemuck::try_cast_slice_mut(head).map_err(|_| too_small(self.used, 0))
    }
}

/// Typed scratch from one or two memories, in LIFO scopes: each buffer goes to the
/// memory its [`Class`] is placed in.
#[derive(Debug)]
pub struct Arena<'a> {
    fast: Pool<'a>,
    /// The large memory, if the run has two.
    large: Option<Pool<'a>>,
    placement: Placement,
}

/// Tracks the high-water marks of an arena's memories and all its scopes.
#[derive(Debug, Default)]
pub struct Watermark {
    fast: Cell<usize>,
    large: Cell<usize>,
}

impl Watermark {
    /// A fresh mark at zero.
    pub const fn new() -> Self {
        Watermark {
            fast: Cell::new(0),
            large: Cell::new(0),
        }
    }

    /// Highest number of bytes in use at any one time so far (the fast memory's, with
    /// two).
    pub fn peak(&self) -> usize {
        self.fast.get()
    }

    /// The same for the large memory (0 with one arena).
    pub fn large_peak(&self) -> usize {
        self.large.get()
    }
}

impl<'a> Arena<'a> {
    /// One memory: wraps `buf`, skipping up to 15 leading bytes to reach 16-byte
    /// alignment. Every class of buffer is allocated in it.
    pub fn new(buf: &'a mut [u8], mark: &'a Watermark) -> Arena<'a> {
        Arena {
            fast: Pool::new(buf, &mark.fast),
            large: None,
            placement: Placement::ONE,
        }
    }

    /// Two memories: `fast` and `large` (each aligned as [`Arena::new`] does), with
    /// buffers placed by `placement`.
    pub fn split(
        fast: &'a mut [u8],
        large: &'a mut [u8],
        placement: Placement,
        mark: &'a Watermark,
    ) -> Arena<'a> {
        Arena {
            fast: Pool::new(fast, &mark.fast),
            large: Some(Pool::new(large, &mark.large)),
            placement,
        }
    }

    /// Bytes still free in the fast (or only) memory.
    pub fn available(&self) -> usize {
        self.fast.free.len()
    }

    /// Bytes still free in the large memory (0 with one arena).
    pub fn large_available(&self) -> usize {
        self.large.as_ref().map_or(0, |p| p.free.len())
    }

    /// A scope: allocations through it are released when it is dropped.
    pub fn scope(&mut self) -> Arena<'_> {
        Arena {
            fast: self.fast.scope(),
            large: self.large.as_mut().map(Pool::scope),
            placement: self.placement,
        }
    }

    /// `n` values of `T` for a [`Class::Working`] buffer, 16-byte aligned; their contents
    /// are unspecified.
    pub fn alloc<T: Pod>(&mut self, n: usize) -> Result<&'a mut [T]> {
        self.alloc_class(Class::Working, n)
    }

    /// `n` values of `T` for a buffer of `class`, in the memory it is placed in.
    pub fn alloc_class<T: Pod>(&mut self, class: Class, n: usize) -> Result<&'a mut [T]> {
        match (self.placement.memory(class), self.large.as_mut()) {
            (Memory::Large, Some(large)) => large.alloc(n, Memory::Large),
            _ => self.fast.alloc(n, Memory::Fast),
        }
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
    fn two_memories_take_their_classes_and_scope_together() {
        let (mut fast, mut large) = (ArenaBuffer::<128>::new(), ArenaBuffer::<256>::new());
        let mark = Watermark::new();
        let mut ar = Arena::split(&mut fast.0, &mut large.0, Placement::MAPS, &mark);
        let map: &mut [u16] = ar.alloc_class(Class::Tokens, 100).unwrap();
        let lm: &mut [f32] = ar.alloc_class(Class::Landmarks, 4).unwrap();
        map.fill(3);
        lm.fill(1.0);
        {
            let mut s = ar.scope();
            let _tile: &mut [f32] = s.alloc(20).unwrap();
            let _more: &mut [u8] = s.alloc_class(Class::Tokens, 40).unwrap();
            assert_eq!(
                (s.available(), s.large_available()),
                (128 - 16 - 80, 256 - 208 - 48)
            );
        }
        assert_eq!((ar.available(), ar.large_available()), (112, 48));
        assert_eq!((mark.peak(), mark.large_peak()), (96, 256));
        assert_eq!(
            ar.alloc_class::<u8>(Class::Tokens, 49).unwrap_err(),
            Error::LargeArenaTooSmall {
                needed: 208 + 64,
                available: 256
            }
        );
        assert_eq!(map, &[3; 100]);
    }

    #[test]
    fn one_memory_takes_every_class() {
        let mut buf = ArenaBuffer::<64>::new();
        let mark = Watermark::new();
        let mut ar = Arena::new(&mut buf.0, &mark);
        let _map: &mut [u8] = ar.alloc_class(Class::Tokens, 16).unwrap();
        let _lm: &mut [u8] = ar.alloc_class(Class::Landmarks, 16).unwrap();
        assert_eq!(
            (mark.peak(), mark.large_peak(), ar.large_available()),
            (32, 0, 0)
        );
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
