//! A device against the host, bit for bit: the lines a firmware logs (written by
//! `firmware/device`, the `soft-device` crate every firmware shares), parsed from a saved
//! log, and every logit compared with what the host build of the engine computes for the
//! same blob, input and token precision. Behind `soft crosscheck` and `cargo xtask
//! crosscheck` / `psram`, which run the QEMU firmware through it.
//!
//! The lines, one fact each, fields separated by spaces:
//!
//! ```text
//! CLOCK <ticks per second> <what a tick is>
//! BLOB <tag> <CRC-32, 8 hex digits> <blob bytes> <activations f16|f32> <classes>
//! LOGITS <tag> <input> <ticks> <first class> <count> <count × f32 bits, 8 hex digits>
//! ```
//!
//! `<input>` is `digit:<index>` (the demo's test split) or `pattern:<seed>:<h>x<w>`
//! ([`soft_core::TestPattern`]). A line is found by its keyword anywhere in it, so what a
//! log viewer puts in front (a timestamp, a level, colour codes) does not matter, nor does
//! anything after the declared fields (a location). A line that has the keyword but not
//! the fields, a class logged twice (the same input twice, or a board reset during the
//! capture), a `LOGITS` line of a tag no `BLOB` line declares and a run that lacks some
//! classes are errors naming the line: a bit-for-bit check must not guess.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use soft_core::config::MAX_CLASSES;
use soft_core::{argmax, ChwImage, ImageSource, Model, Precision, TestPattern};

use crate::demo::{load_split, preprocess, Split, SIDE};
use crate::error::{Context, Error, Result};

/// Inputs a device names in its log (one definition, shared with the firmware).
pub use soft_core::InputName as Input;

/// A device log's input name, or why it is not one.
fn parse_input(s: &str) -> std::result::Result<Input, String> {
    Input::parse(s)
        .ok_or_else(|| format!("{s:?} is not digit:<index> or pattern:<seed>:<height>x<width>"))
}

/// What a tick of the `LOGITS` lines is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// Ticks per second.
    pub hz: u64,
    /// What is counted (`dwt-cycles`, `systick`).
    pub source: String,
}

/// A `BLOB` line: a blob the device ran, under a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobLine {
    /// The firmware's name for it.
    pub tag: String,
    /// The CRC-32 the blob ends with.
    pub crc32: u32,
    /// Its bytes.
    pub bytes: usize,
    /// The token maps' precision the device ran it with.
    pub precision: Precision,
    /// Classes (logits per run).
    pub classes: usize,
    /// Line number in the log (from 1).
    pub line: usize,
}

/// One inference of the device: every class's logit, from one or more `LOGITS` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRun {
    /// The blob's tag.
    pub tag: String,
    /// The input.
    pub input: Input,
    /// The device's clock across the inference.
    pub ticks: u64,
    /// `f32::to_bits` of each class's logit.
    pub logits: Vec<u32>,
    /// The line of its first `LOGITS` line.
    pub line: usize,
}

/// What a device log says, checked for completeness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLog {
    /// The `CLOCK` line, if any.
    pub clock: Option<Clock>,
    /// The `BLOB` lines, in log order.
    pub blobs: Vec<BlobLine>,
    /// The inferences, in the order their first line appears.
    pub runs: Vec<DeviceRun>,
}

/// One `LOGITS` line before the runs are put together.
struct Chunk {
    line: usize,
    tag: String,
    input: Input,
    ticks: u64,
    first: usize,
    bits: Vec<u32>,
}

const KEYWORDS: [&str; 3] = ["CLOCK", "BLOB", "LOGITS"];

impl DeviceLog {
    /// Parses a log; see the module documentation for what is an error.
    pub fn parse(text: &str) -> Result<DeviceLog> {
        let mut log = DeviceLog::default();
        let mut clock_line = 0;
        let mut chunks = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let n = index + 1;
            let clean = strip_ansi(raw);
            let words: Vec<&str> = clean.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| KEYWORDS.contains(w)) else {
                continue;
            };
            let (keyword, fields) = (words[at], &words[at + 1..]);
            let malformed = |why: String| {
                Error::DeviceLog(format!("line {n}: malformed {keyword} line: {why}"))
            };
            match keyword {
                "CLOCK" => {
                    let [hz, source, ..] = fields else {
                        return Err(malformed("expected CLOCK <hz> <source>".into()));
                    };
                    let hz = number::<u64>(hz, "ticks per second").map_err(malformed)?;
                    if hz == 0 {
                        return Err(malformed("0 ticks per second".into()));
                    }
                    if log.clock.is_some() {
                        return Err(twice("the CLOCK line", clock_line, n));
                    }
                    log.clock = Some(Clock {
                        hz,
                        source: (*source).to_string(),
                    });
                    clock_line = n;
                }
                "BLOB" => {
                    let [tag, crc, bytes, precision, classes, ..] = fields else {
                        return Err(malformed(
                            "expected BLOB <tag> <crc32> <bytes> <f16|f32> <classes>".into(),
                        ));
                    };
                    let blob = BlobLine {
                        tag: (*tag).to_string(),
                        crc32: hex_word(crc).map_err(malformed)?,
                        bytes: number(bytes, "blob bytes").map_err(malformed)?,
                        precision: match *precision {
                            "f16" => Precision::F16,
                            "f32" => Precision::F32,
                            other => {
                                return Err(malformed(format!(
                                    "activations {other:?}, expected f16 or f32"
                                )))
                            }
                        },
                        classes: number(classes, "classes").map_err(malformed)?,
                        line: n,
                    };
                    // The engine's own bound (`ModelConfig::validate`): a log cannot make
                    // the host allocate more than a model could have.
                    if !(1..=MAX_CLASSES).contains(&blob.classes) {
                        return Err(malformed(format!(
                            "{} classes, expected 1..={MAX_CLASSES}",
                            blob.classes
                        )));
                    }
                    if let Some(old) = log.blobs.iter().find(|b| b.tag == blob.tag) {
                        return Err(twice(&format!("blob {}", blob.tag), old.line, n));
                    }
                    log.blobs.push(blob);
                }
                _ => {
                    let [tag, input, ticks, first, count, values @ ..] = fields else {
                        return Err(malformed(
                            "expected LOGITS <tag> <input> <ticks> <first> <count> <bits>…".into(),
                        ));
                    };
                    let count: usize = number(count, "count").map_err(malformed)?;
                    if count == 0 {
                        return Err(malformed("a count of 0 logits".into()));
                    }
                    let values = values.get(..count).ok_or_else(|| {
                        malformed(format!(
                            "{} of its {count} logits (is the line cut short?)",
                            values.len()
                        ))
                    })?;
                    chunks.push(Chunk {
                        line: n,
                        tag: (*tag).to_string(),
                        input: parse_input(input).map_err(malformed)?,
                        ticks: number(ticks, "ticks").map_err(malformed)?,
                        first: number(first, "first class").map_err(malformed)?,
                        bits: values
                            .iter()
                            .map(|v| hex_word(v))
                            .collect::<Result<_, _>>()
                            .map_err(malformed)?,
                    });
                }
            }
        }
        log.runs = assemble(&log.blobs, chunks)?;
        Ok(log)
    }

    /// The `BLOB` line of `tag`.
    pub fn blob(&self, tag: &str) -> Option<&BlobLine> {
        self.blobs.iter().find(|b| b.tag == tag)
    }

    /// The runs of `tag`, in log order.
    pub fn runs_of<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a DeviceRun> + 'a {
        self.runs.iter().filter(move |r| r.tag == tag)
    }
}

/// Puts `LOGITS` lines together into runs, every class exactly once.
fn assemble(blobs: &[BlobLine], chunks: Vec<Chunk>) -> Result<Vec<DeviceRun>> {
    struct Partial {
        line: usize,
        ticks: u64,
        /// Per class: the bits and the line they came from.
        classes: Vec<Option<(u32, usize)>>,
    }
    let mut order: Vec<(String, Input)> = Vec::new();
    let mut partial: BTreeMap<(String, Input), Partial> = BTreeMap::new();
    for c in chunks {
        let n = c.line;
        let blob = blobs.iter().find(|b| b.tag == c.tag).ok_or_else(|| {
            Error::DeviceLog(format!(
                "line {n}: LOGITS of blob {}, which no BLOB line declares",
                c.tag
            ))
        })?;
        let end = c.first.saturating_add(c.bits.len());
        if end > blob.classes {
            return Err(Error::DeviceLog(format!(
                "line {n}: classes {}..{end} of {} {}, whose blob has {} classes (line {})",
                c.first, c.tag, c.input, blob.classes, blob.line
            )));
        }
        let key = (c.tag.clone(), c.input);
        let run = partial.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Partial {
                line: n,
                ticks: c.ticks,
                classes: vec![None; blob.classes],
            }
        });
        if run.ticks != c.ticks {
            return Err(Error::DeviceLog(format!(
                "line {n}: {} {} took {} ticks here and {} on line {}: two runs of one input?",
                c.tag, c.input, c.ticks, run.ticks, run.line
            )));
        }
        for (i, bits) in c.bits.into_iter().enumerate() {
            let class = c.first + i;
            if let Some((_, old)) = run.classes[class] {
                return Err(twice(
                    &format!("class {class} of {} {}", c.tag, c.input),
                    old,
                    n,
                ));
            }
            run.classes[class] = Some((bits, n));
        }
    }
    order
        .into_iter()
        .map(|key| {
            let run = partial.remove(&key).expect("every key has a partial run");
            let missing: Vec<usize> = (0..run.classes.len())
                .filter(|&c| run.classes[c].is_none())
                .collect();
            if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
                return Err(Error::DeviceLog(format!(
                    "{} {} (line {}): no logit for {} of its {} classes ({}), is the log cut short?",
                    key.0,
                    key.1,
                    run.line,
                    missing.len(),
                    run.classes.len(),
                    if first == last {
                        format!("class {first}")
                    } else {
                        format!("classes {first} to {last}")
                    }
                )));
            }
            Ok(DeviceRun {
                tag: key.0,
                input: key.1,
                ticks: run.ticks,
                logits: run.classes.iter().flatten().map(|&(b, _)| b).collect(),
                line: run.line,
            })
        })
        .collect()
}

/// The error for something logged twice.
fn twice(what: &str, first: usize, again: usize) -> Error {
    Error::DeviceLog(format!(
        "line {again}: {what} is logged twice (lines {first} and {again}): two captures in \
         one file, or the board reset during the capture?"
    ))
}

fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not a whole number"))
}

/// Exactly 8 hex digits.
fn hex_word(s: &str) -> Result<u32, String> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not 8 hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|e| format!("{s:?}: {e}"))
}

/// `text` without ANSI escape sequences (`ESC [ … letter`), which terminals' log viewers add.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Distance between two f32 bit patterns in units in the last place, along the number
/// line (+0 and −0 are 0 apart).
pub fn ulps(a: u32, b: u32) -> u64 {
    let ordered = |bits: u32| {
        let i = i64::from(bits as i32);
        if i < 0 {
            i64::from(i32::MIN) - i
        } else {
            i
        }
    };
    (ordered(a) - ordered(b)).unsigned_abs()
}

/// The first logit that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    /// Its class.
    pub class: usize,
    /// The host's bits.
    pub host: u32,
    /// The device's bits.
    pub device: u32,
    /// [`ulps`] between them.
    pub ulps: u64,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "class {}: host {:08x} ({:e}), device {:08x} ({:e}), {} ulp{} apart",
            self.class,
            self.host,
            f32::from_bits(self.host),
            self.device,
            f32::from_bits(self.device),
            self.ulps,
            if self.ulps == 1 { "" } else { "s" }
        )
    }
}

/// One device run beside the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCheck {
    /// The input.
    pub input: Input,
    /// The device's ticks.
    pub ticks: u64,
    /// Its first line in the log.
    pub line: usize,
    /// The host's logits' bits.
    pub host: Vec<u32>,
    /// The device's.
    pub device: Vec<u32>,
}

impl RunCheck {
    /// Logits with the same bits.
    pub fn equal(&self) -> usize {
        self.host
            .iter()
            .zip(&self.device)
            .filter(|(a, b)| a == b)
            .count()
    }

    /// The largest distance in ulps.
    pub fn max_ulps(&self) -> u64 {
        let pairs = self.host.iter().zip(&self.device);
        pairs.map(|(&a, &b)| ulps(a, b)).max().unwrap_or(0)
    }

    /// The lowest class whose bits differ.
    pub fn first_difference(&self) -> Option<Difference> {
        let (class, (&host, &device)) = self
            .host
            .iter()
            .zip(&self.device)
            .enumerate()
            .find(|(_, (a, b))| a != b)?;
        Some(Difference {
            class,
            host,
            device,
            ulps: ulps(host, device),
        })
    }

    /// The host's top-1 class.
    pub fn host_top1(&self) -> usize {
        top1(&self.host)
    }

    /// The device's top-1 class.
    pub fn device_top1(&self) -> usize {
        top1(&self.device)
    }
}

fn top1(bits: &[u32]) -> usize {
    argmax(&bits.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>())
}

/// One blob of the log against the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobCheck {
    /// Its `BLOB` line.
    pub blob: BlobLine,
    /// Each of its runs, in log order.
    pub runs: Vec<RunCheck>,
}

impl BlobCheck {
    /// The first run with a differing logit, and that logit.
    pub fn first_mismatch(&self) -> Option<(&RunCheck, Difference)> {
        self.runs
            .iter()
            .find_map(|r| r.first_difference().map(|d| (r, d)))
    }

    /// Logits compared, and how many of them differ.
    pub fn counts(&self) -> (usize, usize) {
        let total = self.runs.iter().map(|r| r.host.len()).sum::<usize>();
        let equal = self.runs.iter().map(RunCheck::equal).sum::<usize>();
        (total, total - equal)
    }
}

/// The blobs of `log` that `model` is, each run on the host and compared: the one tagged
/// `tag`, or else every blob whose CRC-32 is `crc32` (the model's, [`soft_core::Blob::stored_crc32`]).
/// `digits` is the directory with the demo's test split, read only if a run names a digit.
/// Differing bits are not an error: they are in the result ([`BlobCheck::first_mismatch`]);
/// a blob that is not the model, a run on an input the host cannot rebuild, or a
/// class count that differs are.
pub fn check(
    model: &Model<'_>,
    crc32: u32,
    log: &DeviceLog,
    tag: Option<&str>,
    digits: &Path,
) -> Result<Vec<BlobCheck>> {
    let ran = || {
        log.blobs
            .iter()
            .map(|b| format!("{} (CRC-32 {:08x}, line {})", b.tag, b.crc32, b.line))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let blobs: Vec<&BlobLine> = match tag {
        Some(tag) => {
            let blob = log.blob(tag).ok_or_else(|| {
                Error::DeviceLog(if log.blobs.is_empty() {
                    "the device log has no BLOB line".to_string()
                } else {
                    format!("the device log has no blob tagged {tag}; it has {}", ran())
                })
            })?;
            if blob.crc32 != crc32 {
                return Err(Error::Check(format!(
                    "the device's blob {tag} (line {}) has CRC-32 {:08x}, the model {crc32:08x}: \
                     the device ran another blob",
                    blob.line, blob.crc32
                )));
            }
            vec![blob]
        }
        None => {
            let blobs: Vec<&BlobLine> = log.blobs.iter().filter(|b| b.crc32 == crc32).collect();
            if blobs.is_empty() {
                return Err(Error::Check(if log.blobs.is_empty() {
                    "the device log has no BLOB line".to_string()
                } else {
                    format!(
                        "the device ran no blob with the model's CRC-32 {crc32:08x}; it ran {}",
                        ran()
                    )
                }));
            }
            blobs
        }
    };
    let classes = model.config().num_classes;
    let mut split: Option<Split> = None;
    let mut checks = Vec::new();
    for blob in blobs {
        if blob.classes != classes {
            return Err(Error::Check(format!(
                "the device's blob {} has {} classes (line {}), the model {classes}",
                blob.tag, blob.classes, blob.line
            )));
        }
        let mut runs = Vec::new();
        for run in log.runs_of(&blob.tag) {
            let host = host_logits(model, run.input, blob.precision, digits, &mut split)
                .with_context(|| format!("{} {} (line {})", blob.tag, run.input, run.line))?;
            runs.push(RunCheck {
                input: run.input,
                ticks: run.ticks,
                line: run.line,
                host,
                device: run.logits.clone(),
            });
        }
        if runs.is_empty() {
            return Err(Error::DeviceLog(format!(
                "the device log has no LOGITS line of blob {} (declared on line {})",
                blob.tag, blob.line
            )));
        }
        checks.push(BlobCheck {
            blob: blob.clone(),
            runs,
        });
    }
    Ok(checks)
}

/// The host's logits for `input`, in the compact schedule the device runs.
fn host_logits(
    model: &Model<'_>,
    input: Input,
    precision: Precision,
    digits: &Path,
    split: &mut Option<Split>,
) -> Result<Vec<u32>> {
    fn run(
        model: &Model<'_>,
        image: &mut impl ImageSource,
        precision: Precision,
        logits: &mut [f32],
    ) -> Result<()> {
        let need = model.plan(image.height(), image.width(), precision)?;
        let mut arena = vec![0u8; need.peak_bytes + soft_core::ARENA_ALIGN];
        model.run(image, &mut arena, precision, logits, &mut ())?;
        Ok(())
    }
    let mut logits = vec![0.0f32; model.config().num_classes];
    match input {
        Input::Digit(index) => {
            if split.is_none() {
                *split =
                    Some(load_split(digits).with_context(|| {
                        format!("the demo's test split in {}", digits.display())
                    })?);
            }
            let images = &split.as_ref().expect("loaded above").images;
            let digit = images.get(index).ok_or_else(|| {
                Error::DeviceLog(format!(
                    "the test split has {} digits, no digit {index}",
                    images.len()
                ))
            })?;
            let pixels = preprocess(digit);
            let mut image = ChwImage::new(&pixels, SIDE, SIDE)?;
            run(model, &mut image, precision, &mut logits)?;
        }
        Input::Pattern {
            seed,
            height,
            width,
        } => {
            let mut image = TestPattern::new(height, width, seed);
            run(model, &mut image, precision, &mut logits)?;
        }
    }
    Ok(logits.iter().map(|v| v.to_bits()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{micro_config, synthetic_blob};

    const BITS: &str = "bf1749e6 bf217a04 bf20bad7 bea45d89 bf4e4910 bf63fa60 bf25118a \
                        4075695a bf306489 bf621e8b";

    fn log_with(body: &str) -> String {
        format!("CLOCK 64000000 dwt-cycles\nBLOB w8a8 1a2b3c4d 360344 f16 10\n{body}")
    }

    fn error(text: &str) -> String {
        DeviceLog::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_lines_behind_prefixes_and_split_runs() {
        let text = format!(
            "\u{1b}[32m0.000001 INFO\u{1b}[0m CLOCK 25000000 systick\r\n\
             junk line without keywords\n\
             [00:01] BLOB big 0000abcd 999 f32 12\n\
             LOGITS big pattern:7:32x48 55 10 2 3f800000 40000000 (soft_board src/main.rs:9)\n\
             └─ soft_board::run @ src/main.rs:12\n\
             LOGITS big pattern:7:32x48 55 0 10 {BITS}\n\
             BLOB w8a8 1a2b3c4d 360344 f16 10\n\
             LOGITS w8a8 digit:3 1234 0 10 {BITS}\n"
        );
        let log = DeviceLog::parse(&text).unwrap();
        assert_eq!(
            log.clock,
            Some(Clock {
                hz: 25_000_000,
                source: "systick".into()
            })
        );
        assert_eq!(log.blobs.len(), 2);
        assert_eq!(log.blobs[0].precision, Precision::F32);
        assert_eq!((log.blobs[0].crc32, log.blobs[0].line), (0xabcd, 3));
        assert_eq!(log.runs.len(), 2);
        let big = &log.runs[0];
        assert_eq!(
            big.input,
            Input::Pattern {
                seed: 7,
                height: 32,
                width: 48
            }
        );
        assert_eq!((big.ticks, big.line, big.logits.len()), (55, 4, 12));
        assert_eq!(big.logits[7], 0x4075_695a);
        assert_eq!(&big.logits[10..], &[0x3f80_0000, 0x4000_0000]);
        assert_eq!(log.runs[1].input, Input::Digit(3));
        assert_eq!(log.runs_of("w8a8").count(), 1);
        assert_eq!(log.blob("w8a8").unwrap().bytes, 360_344);
        assert!(DeviceLog::parse("").unwrap().runs.is_empty());
    }

    #[test]
    fn inputs_print_as_they_parse() {
        for input in [
            Input::Digit(0),
            Input::Digit(359),
            Input::Pattern {
                seed: u32::MAX,
                height: 224,
                width: 160,
            },
        ] {
            assert_eq!(parse_input(&input.to_string()), Ok(input));
        }
        for bad in [
            "digit",
            "digit:",
            "digit:-1",
            "digit:3:4",
            "pattern:1:0x4",
            "pattern:1:4",
            "pattern:x:4x4",
            "pattern:1:4x4x4",
            "image:3",
        ] {
            assert!(parse_input(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases = [
            (
                "CLOCK fast cycles",
                "line 1: malformed CLOCK line: ticks per second",
            ),
            ("CLOCK 0 cycles", "0 ticks per second"),
            ("CLOCK 100", "expected CLOCK <hz> <source>"),
            ("BLOB w8a8 1a2b3c4d 360344 f16", "expected BLOB"),
            (
                "BLOB w8a8 1a2b3c4 360344 f16 10",
                "\"1a2b3c4\" is not 8 hex digits",
            ),
            ("BLOB w8a8 1a2b3c4d 360344 bf16 10", "activations \"bf16\""),
            (
                "BLOB w8a8 1a2b3c4d 360344 f16 0",
                "0 classes, expected 1..=1048576",
            ),
            // More classes than any model has: refused before anything is allocated.
            (
                "BLOB w8a8 1a2b3c4d 360344 f16 99999999999999999",
                "99999999999999999 classes, expected 1..=1048576",
            ),
            ("BLOB w8a8 1a2b3c4d -1 f16 10", "blob bytes \"-1\""),
        ];
        for (line, want) in cases {
            let e = error(line);
            assert!(e.contains(want), "{line}: {e}");
        }
        let logits = [
            ("LOGITS w8a8 digit:3 1234 0", "expected LOGITS"),
            (
                "LOGITS w8a8 digit:x 1 0 1 3f800000",
                "\"digit:x\" is not digit:",
            ),
            ("LOGITS w8a8 digit:3 -5 0 1 3f800000", "ticks \"-5\""),
            ("LOGITS w8a8 digit:3 5 0 0", "a count of 0"),
            ("LOGITS w8a8 digit:3 5 0 10 3f800000", "1 of its 10 logits"),
            (
                "LOGITS w8a8 digit:3 5 0 1 3f80000g",
                "\"3f80000g\" is not 8 hex",
            ),
            ("LOGITS w8a8 digit:3 5 0 1 3f8000000", "is not 8 hex"),
            ("LOGITS w8a8 digit:3 5 0 1 +f800000", "is not 8 hex"),
        ];
        for (line, want) in logits {
            let e = error(&log_with(line));
            assert!(
                e.starts_with("line 3: malformed LOGITS line"),
                "{line}: {e}"
            );
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn missing_classes_are_an_error() {
        let e = error(&log_with(
            "LOGITS w8a8 digit:3 5 0 4 3f800000 3f800000 3f800000 3f800000",
        ));
        assert!(
            e.contains("w8a8 digit:3 (line 3): no logit for 6 of its 10 classes (classes 4 to 9)"),
            "{e}"
        );
        let e = error(&log_with(&format!(
            "LOGITS w8a8 digit:3 5 0 9 {}",
            &BITS[..BITS.len() - 9]
        )));
        assert!(
            e.contains("no logit for 1 of its 10 classes (class 9)"),
            "{e}"
        );
        let e = error(&log_with(
            "LOGITS w8a8 digit:3 5 8 3 3f800000 3f800000 3f800000",
        ));
        assert!(
            e.contains("line 3: classes 8..11 of w8a8 digit:3, whose blob has 10"),
            "{e}"
        );
        let e = error(&log_with(
            "LOGITS w8a8 digit:3 5 18446744073709551615 1 3f800000",
        ));
        assert!(e.contains("whose blob has 10 classes"), "{e}");
    }

    #[test]
    fn duplicates_are_an_error() {
        let run = format!("LOGITS w8a8 digit:3 5 0 10 {BITS}");
        let e = error(&log_with(&format!("{run}\n{run}\n")));
        assert!(
            e.contains("line 4: class 0 of w8a8 digit:3 is logged twice (lines 3 and 4)"),
            "{e}"
        );
        let other = run.replace(" 5 0 ", " 6 0 ");
        let e = error(&log_with(&format!("{run}\n{other}\n")));
        assert!(e.contains("took 6 ticks here and 5 on line 3"), "{e}");
        let e = error(&log_with("BLOB w8a8 1a2b3c4d 360344 f16 10"));
        assert!(
            e.contains("blob w8a8 is logged twice (lines 2 and 3)"),
            "{e}"
        );
        let e = error(&log_with("CLOCK 1 x"));
        assert!(
            e.contains("the CLOCK line is logged twice (lines 1 and 3)"),
            "{e}"
        );
        // The same digit under two tags is two runs.
        let two = format!(
            "{run}\nBLOB f16 00000001 671560 f16 10\n{}",
            run.replace("w8a8", "f16")
        );
        assert_eq!(DeviceLog::parse(&log_with(&two)).unwrap().runs.len(), 2);
    }

    #[test]
    fn logits_need_their_blob() {
        let e = error(&format!("LOGITS f16 digit:0 5 0 10 {BITS}"));
        assert!(
            e.contains("line 1: LOGITS of blob f16, which no BLOB line declares"),
            "{e}"
        );
    }

    #[test]
    fn ulps_follow_the_number_line() {
        let one = 1.0f32.to_bits();
        assert_eq!(ulps(one, one), 0);
        assert_eq!(ulps(one, one + 3), 3);
        assert_eq!(ulps(0.0f32.to_bits(), (-0.0f32).to_bits()), 0);
        let tiny = f32::from_bits(1);
        assert_eq!(ulps(tiny.to_bits(), (-tiny).to_bits()), 2);
        let d = Difference {
            class: 7,
            host: one,
            device: one + 1,
            ulps: 1,
        };
        assert_eq!(
            d.to_string(),
            "class 7: host 3f800000 (1e0), device 3f800001 (1.0000001e0), 1 ulp apart"
        );
    }

    /// The micro model with 12 classes, random W8A8 weights.
    fn micro_blob() -> crate::AlignedBlob {
        let cfg = soft_core::ModelConfig {
            num_classes: 12,
            ..micro_config()
        };
        synthetic_blob(&cfg, 5, crate::WeightDtype::W8A8)
    }

    /// The host's own logits, as a device would log them.
    fn device_lines(model: &Model<'_>, crc: u32, digit_dir: &Path, flip: Option<usize>) -> String {
        let mut text = format!("BLOB m {crc:08x} 1 f16 12\n");
        let inputs = [
            Input::Digit(2),
            Input::Pattern {
                seed: 9,
                height: 64,
                width: 48,
            },
        ];
        for input in inputs {
            let mut bits = host_logits(model, input, Precision::F16, digit_dir, &mut None).unwrap();
            if let Some(class) = flip {
                bits[class] ^= 1;
            }
            for (first, chunk) in bits.chunks(10).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:08x}")).collect();
                text += &format!(
                    "LOGITS m {input} 77 {} {} {}\n",
                    first * 10,
                    chunk.len(),
                    hex.join(" ")
                );
            }
        }
        text
    }

    #[test]
    fn check_compares_every_bit_and_names_the_blob() {
        let blob = micro_blob();
        let model = Model::from_blob(blob.as_bytes()).unwrap();
        let crc = soft_core::Blob::stored_crc32(blob.as_bytes()).unwrap();
        let digits = crate::demo::default_dir();
        let log = DeviceLog::parse(&device_lines(&model, crc, &digits, None)).unwrap();
        let checks = check(&model, crc, &log, None, &digits).unwrap();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].runs.len(), 2);
        assert_eq!(checks[0].first_mismatch(), None);
        assert_eq!(checks[0].counts(), (24, 0));
        assert_eq!(
            check(&model, crc, &log, Some("m"), &digits).unwrap(),
            checks
        );

        let log = DeviceLog::parse(&device_lines(&model, crc, &digits, Some(11))).unwrap();
        let checks = check(&model, crc, &log, None, &digits).unwrap();
        let (run, d) = checks[0].first_mismatch().unwrap();
        assert_eq!((run.input, d.class, d.ulps), (Input::Digit(2), 11, 1));
        assert_eq!(d.device, d.host ^ 1);
        assert_eq!((run.equal(), run.max_ulps()), (11, 1));
        assert_eq!(checks[0].counts(), (24, 2));

        let e = check(&model, crc ^ 1, &log, None, &digits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no blob with the model's CRC-32"), "{e}");
        assert!(
            e.contains(&format!("it ran m (CRC-32 {crc:08x}, line 1)")),
            "{e}"
        );
        let e = check(&model, crc ^ 1, &log, Some("m"), &digits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("the device ran another blob"), "{e}");
        let e = check(&model, crc, &log, Some("x"), &digits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no blob tagged x"), "{e}");
        let wrong = DeviceLog::parse(&format!("BLOB m {crc:08x} 1 f16 10\n")).unwrap();
        let e = check(&model, crc, &wrong, None, &digits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 10 classes (line 1), the model 12"), "{e}");
        let silent = DeviceLog::parse(&format!("BLOB m {crc:08x} 1 f16 12\n")).unwrap();
        let e = check(&model, crc, &silent, None, &digits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no LOGITS line of blob m"), "{e}");
        let zeros = " 00000000".repeat(12);
        let far = format!("BLOB m {crc:08x} 1 f16 12\nLOGITS m digit:100000 1 0 12{zeros}\n");
        let log = DeviceLog::parse(&far).unwrap();
        let e = check(&model, crc, &log, None, &digits)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m digit:100000 (line 2): the test split has 360 digits"),
            "{e}"
        );
    }

    #[test]
    fn crc_is_the_trailer() {
        let blob = micro_blob();
        let bytes = blob.as_bytes();
        let len = Model::from_blob(bytes).unwrap().blob().len();
        let trailer = u32::from_le_bytes(bytes[len - 4..len].try_into().unwrap());
        assert_eq!(soft_core::Blob::stored_crc32(bytes), Some(trailer));
        assert_eq!(soft_core::Blob::stored_crc32(&bytes[..30]), None);
        assert_eq!(soft_core::Blob::stored_crc32(&bytes[..len - 1]), None);
    }
}
