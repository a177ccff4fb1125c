//! What every `soft` firmware shares: the QEMU image in `firmware/` and the board
//! templates in `boards/`.
//!
//! - [`input`]: the inputs a firmware runs, the demo's 8×8 test digits streamed as the
//!   64×64 image the model was trained on, and [`soft_core::TestPattern`] images;
//! - `run` (feature `device`): runs every input through a model and logs the result;
//! - `log` (feature `device`): the lines `soft crosscheck` reads, over defmt and a serial
//!   port, and the per-layer and per-step clock;
//! - `stack` (feature `device`): the whole RAM, statics and the stack's high-water mark;
//! - [`psram`]: the runs of the PSRAM image (two memories) and its SRAM arena's size;
//! - `build` (feature `build`, std): for build scripts, the test digits and the planner's
//!   exact arena size, as generated Rust.
//!
//! # The lines `soft crosscheck` reads
//!
//! One fact per line, fields separated by spaces; anything before the keyword (a log
//! viewer's timestamp or level) is ignored. `soft_host::crosscheck` parses them.
//!
//! ```text
//! CLOCK <ticks per second> <what a tick is>
//! BLOB <tag> <CRC-32 of the blob, 8 hex digits> <blob bytes> <activations f16|f32> <classes>
//! LOGITS <tag> <input> <ticks> <first class> <count> <count × f32::to_bits, 8 hex digits>
//! ```
//!
//! `<input>` is `digit:<index in the demo's test split>` or
//! `pattern:<seed>:<height>x<width>` (a [`soft_core::TestPattern`]). A run with more than
//! [`log::LOGITS_PER_LINE`] classes takes several `LOGITS` lines.

#![no_std]

#[cfg(feature = "build")]
extern crate std;

#[cfg(feature = "build")]
pub mod build;
pub mod input;
#[cfg(feature = "device")]
pub mod log;
pub mod psram;
#[cfg(feature = "device")]
pub mod run;
#[cfg(feature = "device")]
pub mod stack;
