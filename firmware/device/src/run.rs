//! Runs a firmware's inputs through one model and logs what `soft crosscheck` needs.

use soft_core::{argmax, Arenas, Error, Model, Placement, Precision, RunOptions, TestPattern};

use crate::input::{Digit, Image, Input, Inputs, DIGIT_SIDE};
use crate::log::{self, Progress};

/// One blob: its tag in the log, the parsed model, and what the `BLOB` line says of it.
pub struct Blob<'m, 'b> {
    /// A short name without spaces (`w8a8`, `psram`), at most 32 bytes.
    pub tag: &'m str,
    /// The model.
    pub model: &'m Model<'b>,
    /// Its CRC-32 ([`soft_core::Blob::stored_crc32`]).
    pub crc32: u32,
}

/// Where a run's buffers live.
pub enum Memories<'a> {
    /// One arena.
    One(&'a mut [u8]),
    /// Two memories, the buffers placed by `placement` ([`soft_core::Model::run_split`]).
    Two {
        /// The fast memory's arena (SRAM).
        fast: &'a mut [u8],
        /// The large memory's arena (PSRAM).
        large: &'a mut [u8],
        /// Which buffers go where.
        placement: Placement,
    },
}

/// Runs every input of `inputs` through `blob` with `precision` token maps in `memory`
/// (`logits` holds one per class), timing each on `clock`, and logs a `BLOB` line, each run's `LOGITS` lines and a
/// human-readable line on `serial` (`soft <tag>: <input> -> class <k> (<ticks> ticks)`);
/// `LAYER` lines as it goes, and the first input's `STEP` lines. Digits are skipped unless
/// the model takes 64×64 inputs. Returns the runs' ticks added up.
pub fn run(
    blob: &Blob<'_, '_>,
    inputs: &Inputs<'_>,
    memory: &mut Memories<'_>,
    precision: Precision,
    logits: &mut [f32],
    clock: fn() -> u64,
    serial: &mut impl embedded_io::Write,
) -> soft_core::Result<u64> {
    let Blob { tag, model, crc32 } = *blob;
    let classes = model.config().num_classes;
    if logits.len() != classes {
        return Err(Error::LogitsLength {
            expected: classes,
            got: logits.len(),
        });
    }
    log::blob(tag, crc32, model.blob().len(), precision, classes, serial);

    let digits = inputs
        .digits
        .iter()
        .map(|(index, pixels)| (Input::Digit(*index), Some(pixels)));
    let patterns = inputs.patterns.iter().map(|&seed| {
        let (height, width) = (inputs.side, inputs.side);
        let input = Input::Pattern {
            seed,
            height,
            width,
        };
        (input, None)
    });
    let mut total = 0;
    for (n, (input, pixels)) in digits.chain(patterns).enumerate() {
        let (height, width) = match input {
            Input::Digit(_) => (DIGIT_SIDE, DIGIT_SIDE),
            Input::Pattern { height, width, .. } => (height, width),
        };
        if pixels.is_some() && model.config().pos_grids[0] * 4 != DIGIT_SIDE {
            continue;
        }
        let options = RunOptions::new(precision);
        let placement = match memory {
            Memories::One(_) => Placement::ONE,
            Memories::Two { placement, .. } => *placement,
        };
        let plan = model.plan_placed(height, width, &options, placement)?;
        let mut progress = Progress::new(tag, input, clock);
        let mut image = match (input, pixels) {
            (_, Some(pixels)) => Image::Digit(Digit(pixels)),
            (Input::Pattern { seed, .. }, None) => {
                Image::Pattern(TestPattern::new(height, width, seed))
            }
            (Input::Digit(_), None) => return Err(Error::InputSource),
        };
        // Each arena is checked against the plan before any work.
        let report = match memory {
            Memories::One(arena) => {
                model.run_with(&options, &mut image, arena, logits, &mut progress)?
            }
            Memories::Two {
                fast,
                large,
                placement,
            } => {
                let arenas = Arenas {
                    fast,
                    large,
                    placement: *placement,
                };
                model.run_split(&options, &mut image, arenas, logits, &mut progress)?
            }
        };
        let elapsed = clock() - progress.start();
        total += elapsed;
        if n == 0 {
            progress.log_steps();
        }
        let marks = [report.peak_bytes, report.large_peak_bytes];
        if marks != [plan.peak_bytes, plan.large_bytes] {
            defmt::println!(
                "WARN {=str} peaks {=usize} {=usize} != plan {=usize} {=usize}",
                tag,
                report.peak_bytes,
                report.large_peak_bytes,
                plan.peak_bytes,
                plan.large_bytes
            );
        }
        log_run(tag, input, elapsed, logits, serial);
    }
    Ok(total)
}

/// Logs one run's `LOGITS` lines and its human-readable line. Never inlined: its line
/// buffers and formatting must not sit in [`run`]'s frame, which is live during the
/// inference and so counts towards the stack's high-water mark.
#[inline(never)]
fn log_run(
    tag: &str,
    input: Input,
    elapsed: u64,
    logits: &[f32],
    serial: &mut impl embedded_io::Write,
) {
    log::logits(tag, input, elapsed, logits, serial);
    let _ = writeln!(
        serial,
        "soft {tag}: {input} -> class {} ({elapsed} ticks)\r",
        argmax(logits)
    );
}
