//! Scratch declared once: each step lists its buffers (name, element type, count) in one
//! [`scratch!`] declaration, from which come both its arena allocations and the planner's
//! bytes, so the two cannot drift apart.

use crate::placement::{Class, Memory, Placement};

/// One buffer of a step's scratch, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Buffer {
    /// The declaration it belongs to (`EmitScratch`, `NewtonScratch`, …), or `map` for
    /// the token map.
    pub group: &'static str,
    /// What it holds (the declaration's field).
    pub name: &'static str,
    /// Arena bytes (16-byte granules).
    pub bytes: usize,
    /// How it grows with the input: which memory it lives in.
    pub class: Class,
}

/// Where the planner hands the buffers it counts: those of one memory of a placement.
pub(crate) struct Sink<'s> {
    placement: Placement,
    memory: Memory,
    out: &'s mut dyn FnMut(Buffer),
}

impl<'s> Sink<'s> {
    /// Hands `out` the buffers `placement` puts in `memory`.
    pub fn new(placement: Placement, memory: Memory, out: &'s mut dyn FnMut(Buffer)) -> Self {
        Sink {
            placement,
            memory,
            out,
        }
    }

    /// Counts `buffer` if it lives in this sink's memory.
    pub fn push(&mut self, buffer: Buffer) {
        if self.placement.memory(buffer.class) == self.memory {
            (self.out)(buffer);
        }
    }
}

/// Where a step's buffers go.
pub(crate) type Emit<'e, 's> = &'e mut Sink<'s>;

/// A step of a phase, emitting its buffers.
pub(crate) type Step<'s> = &'s dyn Fn(Emit<'_, '_>);

/// `copies` copies of the buffers of one declaration (one per worker).
pub(crate) fn emit_copies(emit: Emit<'_, '_>, copies: usize, layout: &[Buffer]) {
    for _ in 0..copies {
        layout.iter().for_each(|b| emit.push(*b));
    }
}

/// Bytes of what `step` emits, all memories together.
#[cfg(test)]
pub(crate) fn total(step: Step<'_>) -> usize {
    let mut bytes = 0;
    step(&mut Sink::new(Placement::ONE, Memory::Fast, &mut |b| {
        bytes += b.bytes
    }));
    bytes
}

/// Emits the buffers of the largest of `steps` in `emit`'s memory (the first of equals):
/// steps that run one after another reuse the same bytes, so only the largest counts.
pub(crate) fn largest(steps: &[Step<'_>], emit: Emit<'_, '_>) {
    let mut best: Option<(usize, Step<'_>)> = None;
    for &step in steps {
        let mut bytes = 0;
        step(&mut Sink::new(emit.placement, emit.memory, &mut |b| {
            bytes += b.bytes
        }));
        if best.is_none_or(|(b, _)| bytes > b) {
            best = Some((bytes, step));
        }
    }
    if let Some((_, step)) = best {
        step(emit);
    }
}

/// A field's [`Class`] in [`scratch!`]: `Working` unless it says `in Class`.
macro_rules! class {
    () => {
        crate::placement::Class::Working
    };
    ($class:ident) => {
        crate::placement::Class::$class
    };
}

pub(crate) use class;

/// Declares a step's scratch buffers:
///
/// ```text
/// scratch! {
///     /// Doc.
///     pub(crate) struct Name(dims: &Dims, chunk: usize) {
///         /// Doc.
///         field: [f32; dims.c * chunk],
///         ring: [E; dims.k * dims.row],     // E: the token type
///         map: [E; dims.n * dims.c] in Tokens, // a Class other than Working
///     }
/// }
/// ```
///
/// gives `struct Name<'a, E>` with one `&'a mut [T]` per field, `Name::alloc(arena, args)`
/// (allocates them in order, each in the memory its class is placed in),
/// `Name::layout(args)` (name, bytes and class of each) and
/// `Name::bytes(args)` (their sum: the step's arena bytes).
macro_rules! scratch {
    (
        $(#[$doc:meta])*
        $vis:vis struct $name:ident($($arg:ident: $ty:ty),* $(,)?) {
            $( $(#[$fdoc:meta])* $field:ident: [$elem:ty; $count:expr] $(in $class:ident)?, )*
        }
    ) => {
        $(#[$doc])*
        #[allow(dead_code)]
        $vis struct $name<'a, E> {
            $( $(#[$fdoc])* pub $field: &'a mut [$elem], )*
            _token: core::marker::PhantomData<E>,
        }

        #[allow(dead_code, clippy::too_many_arguments)]
        impl<'a, E: soft_kernels::TokenElem> $name<'a, E> {
            /// Number of buffers.
            pub const COUNT: usize = [$(stringify!($field)),*].len();

            /// Each buffer's name and arena bytes, in allocation order.
            pub fn layout($($arg: $ty),*) -> [crate::scratch::Buffer; [$(stringify!($field)),*].len()] {
                [$(crate::scratch::Buffer {
                    group: stringify!($name),
                    name: stringify!($field),
                    bytes: crate::arena::bytes_for::<$elem>($count),
                    class: crate::scratch::class!($($class)?),
                }),*]
            }

            /// Arena bytes of all the buffers.
            pub fn bytes($($arg: $ty),*) -> usize {
                Self::layout($($arg),*).iter().map(|b| b.bytes).sum()
            }

            /// Allocates the buffers, in the order of [`Self::layout`].
            pub fn alloc(
                ar: &mut crate::arena::Arena<'a>,
                $($arg: $ty),*
            ) -> crate::error::Result<Self> {
                Ok($name {
                    $( $field: ar.alloc_class::<$elem>(
                        crate::scratch::class!($($class)?),
                        $count,
                    )?, )*
                    _token: core::marker::PhantomData,
                })
            }
        }
    };
}

pub(crate) use scratch;
