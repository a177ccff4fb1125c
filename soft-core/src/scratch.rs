//! Scratch declared once: each step lists its buffers (name, element type, count) in one
//! [`scratch!`] declaration, from which come both its arena allocations and the planner's
//! bytes, so the two cannot drift apart.

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
}

/// Where the planner hands each buffer it counts.
pub(crate) type Emit<'e> = &'e mut dyn FnMut(Buffer);

/// A step of a phase, emitting its buffers.
pub(crate) type Step<'s> = &'s dyn Fn(Emit<'_>);

/// `copies` copies of the buffers of one declaration (one per worker).
pub(crate) fn emit_copies(emit: Emit<'_>, copies: usize, layout: &[Buffer]) {
    for _ in 0..copies {
        layout.iter().for_each(|b| emit(*b));
    }
}

/// Bytes of what `step` emits.
pub(crate) fn total(step: Step<'_>) -> usize {
    let mut bytes = 0;
    step(&mut |b| bytes += b.bytes);
    bytes
}

/// Emits the buffers of the largest of `steps` (the first of equals): steps that run one
/// after another reuse the same bytes, so only the largest counts.
pub(crate) fn largest(steps: &[Step<'_>], emit: Emit<'_>) {
    let mut best: Option<(usize, Step<'_>)> = None;
    for &step in steps {
        let bytes = total(step);
        if best.is_none_or(|(b, _)| bytes > b) {
            best = Some((bytes, step));
        }
    }
    if let Some((_, step)) = best {
        step(emit);
    }
}

/// Declares a step's scratch buffers:
///
/// ```text
/// scratch! {
///     /// Doc.
///     pub(crate) struct Name(dims: &Dims, chunk: usize) {
///         /// Doc.
///         field: [f32; dims.c * chunk],
///         ring: [E; dims.k * dims.row],     // E: the token type
///     }
/// }
/// ```
///
/// gives `struct Name<'a, E>` with one `&'a mut [T]` per field, `Name::alloc(arena, args)`
/// (allocates them in order), `Name::layout(args)` (name and bytes of each) and
/// `Name::bytes(args)` (their sum: the step's arena bytes).
macro_rules! scratch {
    (
        $(#[$doc:meta])*
        $vis:vis struct $name:ident($($arg:ident: $ty:ty),* $(,)?) {
            $( $(#[$fdoc:meta])* $field:ident: [$elem:ty; $count:expr], )*
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
                    $( $field: ar.alloc::<$elem>($count)?, )*
                    _token: core::marker::PhantomData,
                })
            }
        }
    };
}

pub(crate) use scratch;
