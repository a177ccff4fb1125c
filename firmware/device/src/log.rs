//! The lines `soft crosscheck` reads (see the crate's documentation for their grammar),
//! written once with `core::fmt` and sent both ways: as a defmt string (RTT or
//! semihosting, whichever logger the binary links) and on a serial port, so a `probe-rs
//! run` log and a plain UART capture say the same thing. Also the per-layer and per-step
//! clock (`LAYER`, `STEP`), which only go to defmt. The line writers are never inlined,
//! so their 256-byte buffers stay out of the frames that are live during an inference
//! (the stack meter would count them).

use core::fmt::{self, Write as _};

use defmt::println;
use soft_core::probe::{Activity, Checkpoint, Step, Tokens};
use soft_core::{Precision, Probe};

use crate::input::Input;

/// Logits per `LOGITS` line.
pub const LOGITS_PER_LINE: usize = 10;

/// Longest line: a `LOGITS` line with a 32-byte tag and ten logits is under 200 bytes.
const LINE_BYTES: usize = 256;

/// One log line, formatted in place; text beyond [`LINE_BYTES`] is cut (the host then
/// refuses the line as malformed rather than misreading it).
pub struct Line {
    buf: [u8; LINE_BYTES],
    len: usize,
}

impl Line {
    /// The line `args` formats to.
    pub fn new(args: fmt::Arguments<'_>) -> Line {
        let mut line = Line {
            buf: [0; LINE_BYTES],
            len: 0,
        };
        let _ = line.write_fmt(args);
        line
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole `str`s are copied in, so this never fails.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let Some(dst) = self.buf.get_mut(self.len..end) else {
            return Err(fmt::Error);
        };
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Sends one line to defmt and to `serial` (CR LF ended). A serial error is ignored:
/// the defmt copy still goes out.
#[inline(never)]
pub fn emit(line: &Line, serial: &mut impl embedded_io::Write) {
    println!("{=str}", line.as_str());
    let _ = serial.write_all(line.as_str().as_bytes());
    let _ = serial.write_all(b"\r\n");
}

/// `CLOCK <hz> <source>`: what a tick of the `LOGITS` lines is.
#[inline(never)]
pub fn clock(hz: u64, source: &str, serial: &mut impl embedded_io::Write) {
    emit(&Line::new(format_args!("CLOCK {hz} {source}")), serial);
}

/// The activations' name in a `BLOB` line.
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        _ => "f16",
    }
}

/// `BLOB <tag> <crc32> <bytes> <precision> <classes>`: the blob the following `LOGITS`
/// lines of `tag` come from.
#[inline(never)]
pub fn blob(
    tag: &str,
    crc32: u32,
    bytes: usize,
    precision: Precision,
    classes: usize,
    serial: &mut impl embedded_io::Write,
) {
    let p = precision_name(precision);
    emit(
        &Line::new(format_args!("BLOB {tag} {crc32:08x} {bytes} {p} {classes}")),
        serial,
    );
}

/// `LOGITS <tag> <input> <ticks> <first> <count> <bits…>`, as many lines as it takes.
#[inline(never)]
pub fn logits(
    tag: &str,
    input: Input,
    ticks: u64,
    logits: &[f32],
    serial: &mut impl embedded_io::Write,
) {
    for (i, chunk) in logits.chunks(LOGITS_PER_LINE).enumerate() {
        let mut line = Line::new(format_args!(
            "LOGITS {tag} {input} {ticks} {} {}",
            i * LOGITS_PER_LINE,
            chunk.len()
        ));
        for v in chunk {
            let _ = write!(line, " {:08x}", v.to_bits());
        }
        emit(&line, serial);
    }
}

/// Steps the per-step clock tells apart: [`Step`]'s variants, and one slot for any later.
const STEPS: usize = 11;

fn step_slot(step: Step) -> usize {
    match step {
        Step::Stem => 0,
        Step::PatchEmbed => 1,
        Step::Position => 2,
        Step::Projections => 3,
        Step::Landmarks => 4,
        Step::KeyValue => 5,
        Step::Newton => 6,
        Step::Attention => 7,
        Step::Mlp => 8,
        Step::Head => 9,
        _ => 10,
    }
}

/// A probe that logs each layer as the run passes it (`LAYER <tag> <input> <checkpoint>
/// <ticks since the start>`) and adds up the ticks each (stage, step) takes, for
/// [`Progress::log_steps`].
pub struct Progress<'a> {
    tag: &'a str,
    input: Input,
    clock: fn() -> u64,
    start: u64,
    /// The step running and when it started.
    current: Option<(Activity, u64)>,
    /// Ticks per stage (0–4) and step slot.
    steps: [[u64; STEPS]; 5],
    /// The step each slot holds, for the log.
    names: [Option<Step>; STEPS],
}

impl<'a> Progress<'a> {
    /// Starts counting now, on `clock`.
    pub fn new(tag: &'a str, input: Input, clock: fn() -> u64) -> Self {
        Progress {
            tag,
            input,
            clock,
            start: clock(),
            current: None,
            steps: [[0; STEPS]; 5],
            names: [None; STEPS],
        }
    }

    /// When the run began.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Charges the running step up to now.
    fn close(&mut self, now: u64) {
        if let Some((at, since)) = self.current.take() {
            let slot = step_slot(at.step);
            if let Some(t) = self
                .steps
                .get_mut(usize::from(at.stage))
                .and_then(|s| s.get_mut(slot))
            {
                *t += now - since;
            }
            if let Some(name) = self.names.get_mut(slot) {
                *name = Some(at.step);
            }
        }
    }

    /// Logs the ticks of every (stage, step) that ran:
    /// `STEP <tag> <input> <stage> <step> <ticks>`.
    pub fn log_steps(&self) {
        for (stage, steps) in self.steps.iter().enumerate() {
            for (&t, name) in steps.iter().zip(&self.names) {
                if let (Some(step), true) = (name, t > 0) {
                    println!(
                        "STEP {=str} {} {=usize} {} {=u64}",
                        self.tag, self.input, stage, step, t
                    );
                }
            }
        }
    }
}

impl Probe for Progress<'_> {
    fn enter(&mut self, at: Activity) {
        let now = (self.clock)();
        self.close(now);
        self.current = Some((at, now));
    }

    fn finish(&mut self) {
        self.close((self.clock)());
    }

    fn observe(&mut self, at: Checkpoint, _: Tokens<'_>, _: usize, _: usize) {
        println!(
            "LAYER {=str} {} {} {=u64}",
            self.tag,
            self.input,
            at,
            (self.clock)() - self.start
        );
    }
}
