//! Optional model metadata: what a blob's model is (variant, name, licence, source), how
//! its input is made from an image (size, resize, interpolation, channels, value range,
//! mean and standard deviation) and what its classes are called.
//!
//! The metadata section (see `docs/FORMAT.md`) is a small header and a sequence of
//! tagged records, read in place: text and labels are borrowed from the blob, nothing is
//! copied or allocated, and every length is checked before use. A firmware reads a class
//! name with [`Metadata::label`]:
//!
//! ```
//! # fn show(blob: &soft_core::Blob<'_>) -> soft_core::Result<()> {
//! if let Some(meta) = blob.metadata()? {
//!     let name = meta.label(3).unwrap_or("?");
//!     # let _ = name;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same [`Metadata`] value is what a writer fills in and [`Metadata::encode`] writes,
//! so a writer cannot make a section the reader refuses.

use core::fmt;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// First four bytes of the metadata section.
pub const MAGIC: [u8; 4] = *b"SMET";
/// The metadata version this build reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the section header: magic, version (`u16`) and record count (`u16`).
pub const HEADER_BYTES: usize = 8;
/// Bytes of a record header: tag and value length.
const RECORD_HEADER: usize = 8;
/// Largest input side a record may give (the image reader's own bound is smaller).
const MAX_SIDE: u32 = 1 << 16;

/// Record tags of version 1. A reader skips tags it does not know, so later builds may
/// add records without a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum Tag {
    /// Free-text model name.
    Name = 1,
    /// Free-text licence (an SPDX identifier, say).
    Licence = 2,
    /// Free-text source (where the weights come from).
    Source = 3,
    /// The attention variant and where it was learnt.
    Variant = 4,
    /// Input height and width the model was trained at.
    InputSize = 5,
    /// How an image is resized and cropped.
    Resize = 6,
    /// The resampling filter.
    Interpolation = 7,
    /// Channel order.
    Channels = 8,
    /// What a full-scale 8-bit sample becomes before mean and std.
    ValueRange = 9,
    /// Per-channel mean.
    Mean = 10,
    /// Per-channel standard deviation.
    Std = 11,
    /// Class names.
    Labels = 12,
}

impl Tag {
    fn from_u32(v: u32) -> Option<Tag> {
        use Tag::*;
        Some(match v {
            1 => Name,
            2 => Licence,
            3 => Source,
            4 => Variant,
            5 => InputSize,
            6 => Resize,
            7 => Interpolation,
            8 => Channels,
            9 => ValueRange,
            10 => Mean,
            11 => Std,
            12 => Labels,
            _ => return None,
        })
    }
}

/// The attention of stages 1–3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Variant {
    /// SOFT: `K2 + 0.01·I` before the pseudo-inverse.
    Plain,
    /// SOFT-Norm: the symmetric normalised kernel.
    Norm,
}

impl Variant {
    /// The variant a config computes.
    pub fn of(config: &ModelConfig) -> Variant {
        if config.normalized {
            Variant::Norm
        } else {
            Variant::Plain
        }
    }

    /// `plain` or `norm`, as `soft convert --variant` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Norm => "norm",
        }
    }
}

/// Who said which variant the model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Origin {
    /// The checkpoint: its training arguments or a config it holds.
    Checkpoint,
    /// The person converting it (`soft convert --variant`, `--arch`).
    User,
    /// The program that wrote the blob built the model itself (the demo).
    Writer,
}

/// The variant, who said so, and how (`args.model = 'soft_norm_tiny'`, `--variant norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariantNote<'a> {
    /// The variant; it always agrees with the config's SOFT-Norm flag.
    pub variant: Variant,
    /// Who said so.
    pub origin: Origin,
    /// How, in a few words (may be empty).
    pub detail: &'a str,
}

/// How an image is brought to the model's input size `S` (the crop).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Resize {
    /// The shorter side to `⌊S / crop_pct⌋` (aspect ratio kept), then the centred
    /// `S × S` window: torchvision's `Resize` + `CenterCrop`, timm's `crop_mode
    /// 'center'`. `crop_pct` 0.875 resizes to 256 for 224; 1 crops nothing off a square.
    ShorterSide {
        /// Fraction of the resized shorter side the crop keeps, in `(0, 1]`; an f64 like
        /// the Python float timm divides by.
        crop_pct: f64,
    },
    /// Both sides to `⌊S / crop_pct⌋` (aspect ratio not kept), then the centred `S × S`
    /// window: timm's `crop_mode 'squash'`; with `crop_pct` 1, a plain stretch.
    BothSides {
        /// As for [`Resize::ShorterSide`].
        crop_pct: f64,
    },
}

impl Resize {
    /// The crop fraction.
    pub fn crop_pct(self) -> f64 {
        match self {
            Resize::ShorterSide { crop_pct } | Resize::BothSides { crop_pct } => crop_pct,
        }
    }
}

/// The resampling filter, as Pillow implements it (what torchvision uses on images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Interpolation {
    /// The nearest sample, no antialiasing.
    Nearest,
    /// Antialiased triangle filter.
    Bilinear,
    /// Antialiased cubic filter (`a = −0.5`).
    Bicubic,
}

impl Interpolation {
    /// `nearest`, `bilinear` or `bicubic`, as torchvision and timm spell it.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }
}

/// The input's three channels, from the decoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Channels {
    /// Red, green, blue (PIL's `convert("RGB")`).
    Rgb,
    /// Blue, green, red (OpenCV's order).
    Bgr,
    /// Luminance (PIL's `convert("L")`) in all three.
    Grey,
}

impl Channels {
    /// `rgb`, `bgr` or `grey`.
    pub fn name(self) -> &'static str {
        match self {
            Channels::Rgb => "rgb",
            Channels::Bgr => "bgr",
            Channels::Grey => "grey",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelsRepr<'a> {
    /// As stored: `count` little-endian `u32` end offsets into `text`.
    Table { ends: &'a [u8], text: &'a [u8] },
    /// As a writer gives them.
    List(&'a [&'a str]),
}

/// Class names: read in place from a blob, or given by a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels<'a>(LabelsRepr<'a>);

impl<'a> Labels<'a> {
    /// Labels to write.
    pub fn from_strs(labels: &'a [&'a str]) -> Labels<'a> {
        Labels(LabelsRepr::List(labels))
    }

    /// How many there are (one per class in a parsed blob).
    pub fn len(&self) -> usize {
        match self.0 {
            LabelsRepr::Table { ends, .. } => ends.len() / 4,
            LabelsRepr::List(l) => l.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class `index`'s name, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<&'a str> {
        match self.0 {
            LabelsRepr::List(l) => l.get(index).copied(),
            LabelsRepr::Table { ends, text } => {
                let end = |i: usize| u32_at(ends, i.checked_mul(4)?).map(|e| e as usize);
                let start = match index {
                    0 => 0,
                    i => end(i - 1)?,
                };
                let bytes = text.get(start..end(index)?)?;
                core::str::from_utf8(bytes).ok()
            }
        }
    }

    /// Every label in class order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or(""))
    }
}

/// A blob's metadata: every field is optional. Parsed with [`Metadata::parse`] (or
/// [`Blob::metadata`](crate::Blob::metadata)) it borrows from the blob; filled in by a
/// writer it is what [`Metadata::encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metadata<'a> {
    /// Model name.
    pub name: Option<&'a str>,
    /// Licence.
    pub licence: Option<&'a str>,
    /// Where the weights come from.
    pub source: Option<&'a str>,
    /// The variant and who said so.
    pub variant: Option<VariantNote<'a>>,
    /// Input `[height, width]` the model was trained at.
    pub input_size: Option<[u32; 2]>,
    /// How an image is resized and cropped to the input size.
    pub resize: Option<Resize>,
    /// The resampling filter.
    pub interpolation: Option<Interpolation>,
    /// Channel order.
    pub channels: Option<Channels>,
    /// What an 8-bit sample of 255 becomes before mean and std: 1 for torchvision's
    /// `ToTensor` (`v / 255`), 255 for raw values.
    pub value_range: Option<f32>,
    /// Per-channel mean, subtracted after scaling.
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation, divided by after the mean.
    pub std: Option<[f32; 3]>,
    /// Class names, one per class.
    pub labels: Option<Labels<'a>>,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

fn corrupt(what: &'static str) -> Error {
    Error::CorruptMetadata(what)
}

/// Metadata text: UTF-8 without control characters (so it prints safely anywhere).
fn text_ok(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

fn parse_text<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str> {
    let s = core::str::from_utf8(bytes).map_err(|_| corrupt(what))?;
    if text_ok(s) {
        Ok(s)
    } else {
        Err(corrupt(what))
    }
}

fn f32s<const N: usize>(value: &[u8]) -> Option<[f32; N]> {
    if value.len() != 4 * N {
        return None;
    }
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = f32::from_bits(u32_at(value, 4 * i)?);
    }
    Some(out)
}

fn crop_pct_ok(p: f64) -> bool {
    p > 0.0 && p <= 1.0
}

fn range_ok(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

fn mean_ok(m: &[f32; 3]) -> bool {
    m.iter().all(|v| v.is_finite())
}

fn std_ok(s: &[f32; 3]) -> bool {
    s.iter().all(|&v| range_ok(v))
}

fn side_ok(v: u32) -> bool {
    (1..=MAX_SIDE).contains(&v)
}

/// Checks labels stored as a table: `count` ends, non-decreasing, the last at the end of
/// the text, each label UTF-8 without control characters.
fn parse_labels<'a>(value: &'a [u8], classes: usize) -> Result<Labels<'a>> {
    let count = u32_at(value, 0).ok_or(corrupt("labels record too short"))? as usize;
    if count != classes {
        return Err(corrupt("label count differs from the model's classes"));
    }
    let ends_len = count
        .checked_mul(4)
        .ok_or(corrupt("labels record too short"))?;
    let text_at = ends_len
        .checked_add(4)
        .ok_or(corrupt("labels record too short"))?;
    let ends = value
        .get(4..text_at)
        .ok_or(corrupt("labels record too short"))?;
    let text = value.get(text_at..).unwrap_or_default();
    let mut start = 0usize;
    for index in 0..count {
        let end = u32_at(ends, 4 * index).ok_or(corrupt("labels record too short"))? as usize;
        let bad = |what| Error::CorruptLabel {
            index: index as u32,
            what,
        };
        if end < start || end > text.len() {
            return Err(bad("ends outside the label text"));
        }
        let bytes = text
            .get(start..end)
            .ok_or(bad("ends outside the label text"))?;
        let s = core::str::from_utf8(bytes).map_err(|_| bad("is not UTF-8"))?;
        if !text_ok(s) {
            return Err(bad("holds a control character"));
        }
        start = end;
    }
    if start != text.len() {
        return Err(corrupt("label text continues past the last label"));
    }
    Ok(Labels(LabelsRepr::Table { ends, text }))
}

impl<'a> Metadata<'a> {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Metadata::default()
    }

    /// Class `index`'s name, if the metadata has labels and `index` is a class.
    pub fn label(&self, index: usize) -> Option<&'a str> {
        self.labels?.get(index)
    }

    /// The metadata version of a section, read from its header, or `None` if `section`
    /// does not start like one.
    pub fn version_of(section: &[u8]) -> Option<u32> {
        if section.get(..4)? != MAGIC {
            return None;
        }
        Some(u32::from(u16::from_le_bytes(
            section.get(4..6)?.try_into().ok()?,
        )))
    }

    /// Reads a metadata section (everything from its magic to its last record's padding)
    /// of a model of `config`: the labels must number its classes and the variant agree
    /// with its SOFT-Norm flag. Nothing is copied; a malformed section is an error, never
    /// a panic.
    pub fn parse(section: &'a [u8], config: &ModelConfig) -> Result<Metadata<'a>> {
        if section.len() < HEADER_BYTES {
            return Err(corrupt("section shorter than its header"));
        }
        let version = Metadata::version_of(section).ok_or(corrupt("bad magic"))?;
        if version != VERSION {
            return Err(Error::UnsupportedMetadataVersion(version));
        }
        let count = section
            .get(6..8)
            .map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
        let mut meta = Metadata::default();
        let mut seen = 0u32;
        let mut at = HEADER_BYTES;
        for _ in 0..count {
            let (Some(tag), Some(len)) = (u32_at(section, at), u32_at(section, at + 4)) else {
                return Err(corrupt("fewer records than the header counts"));
            };
            let start = at + RECORD_HEADER;
            let end = start
                .checked_add(len as usize)
                .filter(|&e| e <= section.len())
                .ok_or(corrupt("record runs past the end of the section"))?;
            let next = end
                .checked_next_multiple_of(4)
                .filter(|&n| n <= section.len())
                .ok_or(corrupt("record padding runs past the end of the section"))?;
            let value = section.get(start..end).unwrap_or_default();
            if section
                .get(end..next)
                .is_none_or(|pad| pad.iter().any(|&b| b != 0))
            {
                return Err(corrupt("nonzero record padding"));
            }
            at = next;
            let Some(tag) = Tag::from_u32(tag) else {
                continue; // a later build's record
            };
            let bit = 1u32 << (tag as u32);
            if seen & bit != 0 {
                return Err(corrupt("a record appears twice"));
            }
            seen |= bit;
            meta.read_record(tag, value, config)?;
        }
        if at != section.len() {
            return Err(corrupt("bytes after the last record"));
        }
        Ok(meta)
    }

    fn read_record(&mut self, tag: Tag, value: &'a [u8], config: &ModelConfig) -> Result<()> {
        let word = |i: usize| u32_at(value, 4 * i);
        let exact = |n: usize, what| {
            if value.len() == n {
                Ok(())
            } else {
                Err(corrupt(what))
            }
        };
        match tag {
            Tag::Name => self.name = Some(parse_text(value, "name is not plain UTF-8 text")?),
            Tag::Licence => {
                self.licence = Some(parse_text(value, "licence is not plain UTF-8 text")?)
            }
            Tag::Source => self.source = Some(parse_text(value, "source is not plain UTF-8 text")?),
            Tag::Variant => {
                let (Some(v), Some(o)) = (word(0), word(1)) else {
                    return Err(corrupt("variant record too short"));
                };
                let variant = match v {
                    0 => Variant::Plain,
                    1 => Variant::Norm,
                    _ => return Err(corrupt("unknown variant")),
                };
                let origin = match o {
                    1 => Origin::Checkpoint,
                    2 => Origin::User,
                    3 => Origin::Writer,
                    _ => return Err(corrupt("unknown variant origin")),
                };
                if variant != Variant::of(config) {
                    return Err(corrupt(
                        "the variant disagrees with the config's SOFT-Norm flag",
                    ));
                }
                let detail = parse_text(
                    value.get(8..).unwrap_or_default(),
                    "variant detail is not plain UTF-8 text",
                )?;
                self.variant = Some(VariantNote {
                    variant,
                    origin,
                    detail,
                });
            }
            Tag::InputSize => {
                exact(8, "input size record is not 8 bytes")?;
                let size = [word(0).unwrap_or(0), word(1).unwrap_or(0)];
                if !size.iter().all(|&s| side_ok(s)) {
                    return Err(corrupt("input size out of range"));
                }
                self.input_size = Some(size);
            }
            Tag::Resize => {
                exact(12, "resize record is not 12 bytes")?;
                let bits = u64::from(word(1).unwrap_or(0)) | u64::from(word(2).unwrap_or(0)) << 32;
                let crop_pct = f64::from_bits(bits);
                if !crop_pct_ok(crop_pct) {
                    return Err(corrupt("crop fraction outside (0, 1]"));
                }
                self.resize = Some(match word(0) {
                    Some(0) => Resize::ShorterSide { crop_pct },
                    Some(1) => Resize::BothSides { crop_pct },
                    _ => return Err(corrupt("unknown resize mode")),
                });
            }
            Tag::Interpolation => {
                exact(4, "interpolation record is not 4 bytes")?;
                self.interpolation = Some(match word(0) {
                    Some(0) => Interpolation::Nearest,
                    Some(1) => Interpolation::Bilinear,
                    Some(2) => Interpolation::Bicubic,
                    _ => return Err(corrupt("unknown interpolation")),
                });
            }
            Tag::Channels => {
                exact(4, "channels record is not 4 bytes")?;
                self.channels = Some(match word(0) {
                    Some(0) => Channels::Rgb,
                    Some(1) => Channels::Bgr,
                    Some(2) => Channels::Grey,
                    _ => return Err(corrupt("unknown channel order")),
                });
            }
            Tag::ValueRange => {
                let [v] = f32s::<1>(value).ok_or(corrupt("value range record is not 4 bytes"))?;
                if !range_ok(v) {
                    return Err(corrupt("value range is not a positive number"));
                }
                self.value_range = Some(v);
            }
            Tag::Mean => {
                let m = f32s::<3>(value).ok_or(corrupt("mean record is not 12 bytes"))?;
                if !mean_ok(&m) {
                    return Err(corrupt("mean is not finite"));
                }
                self.mean = Some(m);
            }
            Tag::Std => {
                let s = f32s::<3>(value).ok_or(corrupt("std record is not 12 bytes"))?;
                if !std_ok(&s) {
                    return Err(corrupt("std is not a positive number"));
                }
                self.std = Some(s);
            }
            Tag::Labels => self.labels = Some(parse_labels(value, config.num_classes)?),
        }
        Ok(())
    }

    /// Checks what [`Metadata::parse`] would: text without control characters, values
    /// in range, labels one per class, the variant the config's.
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        let texts = [
            (self.name, "name holds a control character"),
            (self.licence, "licence holds a control character"),
            (self.source, "source holds a control character"),
            (
                self.variant.map(|v| v.detail),
                "variant detail holds a control character",
            ),
        ];
        for (text, what) in texts {
            if text.is_some_and(|t| !text_ok(t)) {
                return Err(corrupt(what));
            }
        }
        if self
            .variant
            .is_some_and(|v| v.variant != Variant::of(config))
        {
            return Err(corrupt(
                "the variant disagrees with the config's SOFT-Norm flag",
            ));
        }
        if self
            .input_size
            .is_some_and(|s| !s.iter().all(|&v| side_ok(v)))
        {
            return Err(corrupt("input size out of range"));
        }
        if self.resize.is_some_and(|r| !crop_pct_ok(r.crop_pct())) {
            return Err(corrupt("crop fraction outside (0, 1]"));
        }
        if self.value_range.is_some_and(|v| !range_ok(v)) {
            return Err(corrupt("value range is not a positive number"));
        }
        if self.mean.is_some_and(|m| !mean_ok(&m)) {
            return Err(corrupt("mean is not finite"));
        }
        if self.std.is_some_and(|s| !std_ok(&s)) {
            return Err(corrupt("std is not a positive number"));
        }
        if let Some(labels) = self.labels {
            if labels.len() != config.num_classes {
                return Err(corrupt("label count differs from the model's classes"));
            }
            for (index, label) in labels.iter().enumerate() {
                if !text_ok(label) {
                    return Err(Error::CorruptLabel {
                        index: index as u32,
                        what: "holds a control character",
                    });
                }
            }
        }
        Ok(())
    }

    /// Bytes [`Metadata::encode`] writes, or `None` past 4 GiB.
    pub fn encoded_len(&self) -> Option<usize> {
        let mut w = Writer { out: None, at: 0 };
        self.write(&mut w).ok()?;
        u32::try_from(w.at).ok().map(|_| w.at)
    }

    /// Writes the section for a model of `config` into `out`, which must be exactly
    /// [`Metadata::encoded_len`] bytes.
    pub fn encode(&self, config: &ModelConfig, out: &mut [u8]) -> Result<()> {
        self.validate(config)?;
        if Some(out.len()) != self.encoded_len() {
            return Err(corrupt("output buffer size"));
        }
        out.fill(0);
        let mut w = Writer {
            out: Some(out),
            at: 0,
        };
        self.write(&mut w)
    }

    /// Records [`Metadata::encode`] writes.
    fn record_count(&self) -> u16 {
        let present = [
            self.name.is_some(),
            self.licence.is_some(),
            self.source.is_some(),
            self.variant.is_some(),
            self.input_size.is_some(),
            self.resize.is_some(),
            self.interpolation.is_some(),
            self.channels.is_some(),
            self.value_range.is_some(),
            self.mean.is_some(),
            self.std.is_some(),
            self.labels.is_some(),
        ];
        present.iter().filter(|&&p| p).count() as u16
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        w.put(&MAGIC)?;
        w.put(&(VERSION as u16).to_le_bytes())?;
        w.put(&self.record_count().to_le_bytes())?;
        for (tag, text) in [
            (Tag::Name, self.name),
            (Tag::Licence, self.licence),
            (Tag::Source, self.source),
        ] {
            if let Some(t) = text {
                w.record(tag, t.len(), |w| w.put(t.as_bytes()))?;
            }
        }
        if let Some(v) = self.variant {
            let variant: u32 = match v.variant {
                Variant::Plain => 0,
                Variant::Norm => 1,
            };
            let origin: u32 = match v.origin {
                Origin::Checkpoint => 1,
                Origin::User => 2,
                Origin::Writer => 3,
            };
            let len = v.detail.len().checked_add(8).ok_or(corrupt("too long"))?;
            w.record(Tag::Variant, len, |w| {
                w.words(&[variant, origin])?;
                w.put(v.detail.as_bytes())
            })?;
        }
        if let Some([h, wd]) = self.input_size {
            w.record(Tag::InputSize, 8, |w| w.words(&[h, wd]))?;
        }
        if let Some(r) = self.resize {
            let mode = match r {
                Resize::ShorterSide { .. } => 0,
                Resize::BothSides { .. } => 1,
            };
            let bits = r.crop_pct().to_bits();
            w.record(Tag::Resize, 12, |w| {
                w.words(&[mode, bits as u32, (bits >> 32) as u32])
            })?;
        }
        if let Some(i) = self.interpolation {
            let code = match i {
                Interpolation::Nearest => 0,
                Interpolation::Bilinear => 1,
                Interpolation::Bicubic => 2,
            };
            w.record(Tag::Interpolation, 4, |w| w.words(&[code]))?;
        }
        if let Some(c) = self.channels {
            let code = match c {
                Channels::Rgb => 0,
                Channels::Bgr => 1,
                Channels::Grey => 2,
            };
            w.record(Tag::Channels, 4, |w| w.words(&[code]))?;
        }
        if let Some(v) = self.value_range {
            w.record(Tag::ValueRange, 4, |w| w.words(&[v.to_bits()]))?;
        }
        for (tag, values) in [(Tag::Mean, self.mean), (Tag::Std, self.std)] {
            if let Some(v) = values {
                w.record(tag, 12, |w| w.words(&v.map(f32::to_bits)))?;
            }
        }
        if let Some(labels) = self.labels {
            let text: usize = labels.iter().map(str::len).sum();
            let len = labels
                .len()
                .checked_add(1)
                .and_then(|n| n.checked_mul(4))
                .and_then(|n| n.checked_add(text))
                .ok_or(corrupt("too long"))?;
            w.record(Tag::Labels, len, |w| {
                w.word(labels.len())?;
                let mut end = 0usize;
                for l in labels.iter() {
                    end += l.len();
                    w.word(end)?;
                }
                for l in labels.iter() {
                    w.put(l.as_bytes())?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// Writes into a buffer, or only counts when there is none (so one routine gives both
/// the length and the bytes).
struct Writer<'o> {
    out: Option<&'o mut [u8]>,
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self
            .at
            .checked_add(bytes.len())
            .ok_or(corrupt("too long"))?;
        if let Some(out) = self.out.as_deref_mut() {
            out.get_mut(self.at..end)
                .ok_or(corrupt("output buffer size"))?
                .copy_from_slice(bytes);
        }
        self.at = end;
        Ok(())
    }

    fn word(&mut self, v: usize) -> Result<()> {
        let v = u32::try_from(v).map_err(|_| corrupt("too long"))?;
        self.put(&v.to_le_bytes())
    }

    fn words(&mut self, v: &[u32]) -> Result<()> {
        v.iter().try_for_each(|w| self.put(&w.to_le_bytes()))
    }

    /// A record of `len` value bytes that `body` writes, then zero padding to 4 bytes.
    fn record(
        &mut self,
        tag: Tag,
        len: usize,
        body: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.word(tag as usize)?;
        self.word(len)?;
        let start = self.at;
        body(self)?;
        if self.at - start != len {
            return Err(corrupt("record length"));
        }
        let pad = len.next_multiple_of(4) - len;
        self.put(&[0; 3][..pad])
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::Plain => "SOFT",
            Variant::Norm => "SOFT-Norm",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(classes: usize, normalized: bool) -> ModelConfig {
        ModelConfig {
            num_classes: classes,
            normalized,
            ..ModelConfig::preset("soft_tiny").unwrap()
        }
    }

    const LABELS: [&str; 3] = ["zero", "", "zwei – ü"];

    fn full() -> Metadata<'static> {
        Metadata {
            name: Some("digits"),
            licence: Some("MIT"),
            source: Some("models/train_digits.py"),
            variant: Some(VariantNote {
                variant: Variant::Norm,
                origin: Origin::Checkpoint,
                detail: "args.model = 'soft_norm_tiny'",
            }),
            input_size: Some([64, 48]),
            resize: Some(Resize::ShorterSide { crop_pct: 0.875 }),
            interpolation: Some(Interpolation::Bicubic),
            channels: Some(Channels::Grey),
            value_range: Some(1.0),
            mean: Some([0.5, 0.25, -1.0]),
            std: Some([0.5, 2.0, 1e-3]),
            labels: Some(Labels::from_strs(&LABELS)),
        }
    }

    fn encode(meta: &Metadata<'_>, cfg: &ModelConfig) -> Vec<u8> {
        let mut out = vec![0; meta.encoded_len().unwrap()];
        meta.encode(cfg, &mut out).unwrap();
        out
    }

    #[test]
    fn every_field_round_trips() {
        let cfg = config(3, true);
        let meta = full();
        let bytes = encode(&meta, &cfg);
        assert_eq!(bytes.len() % 4, 0);
        let back = Metadata::parse(&bytes, &cfg).unwrap();
        let labels: Vec<&str> = back.labels.unwrap().iter().collect();
        assert_eq!(labels, LABELS);
        assert_eq!(back.label(2), Some("zwei – ü"));
        assert_eq!(back.label(1), Some(""));
        assert_eq!(back.label(3), None);
        assert_eq!(back.label(usize::MAX), None);
        assert_eq!(
            Metadata {
                labels: None,
                ..back
            },
            Metadata {
                labels: None,
                ..meta
            }
        );
        // An empty section is just the header.
        let empty = encode(&Metadata::default(), &cfg);
        assert_eq!(empty, b"SMET\x01\0\0\0");
        assert_eq!(&bytes[4..8], &[1, 0, 12, 0]);
        assert!(Metadata::parse(&empty, &cfg).unwrap().is_empty());
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would() {
        let cfg = config(3, true);
        let bad = [
            Metadata {
                name: Some("a\nb"),
                ..full()
            },
            Metadata {
                labels: Some(Labels::from_strs(&["a", "b"])),
                ..full()
            },
            Metadata {
                labels: Some(Labels::from_strs(&["a", "b\u{7}", "c"])),
                ..full()
            },
            Metadata {
                std: Some([1.0, 0.0, 1.0]),
                ..full()
            },
            Metadata {
                mean: Some([f32::NAN, 0.0, 1.0]),
                ..full()
            },
            Metadata {
                resize: Some(Resize::BothSides { crop_pct: 1.5 }),
                ..full()
            },
            Metadata {
                input_size: Some([0, 3]),
                ..full()
            },
            Metadata {
                value_range: Some(f32::INFINITY),
                ..full()
            },
        ];
        for meta in bad {
            let mut out = vec![0; meta.encoded_len().unwrap()];
            assert!(meta.encode(&cfg, &mut out).is_err(), "{meta:?}");
        }
        // The variant must be the config's.
        let mut out = vec![0; full().encoded_len().unwrap()];
        assert!(full().encode(&config(3, false), &mut out).is_err());
    }

    /// Byte offset of the record with `tag` in `section`.
    fn record_at(section: &[u8], tag: Tag) -> usize {
        let mut at = HEADER_BYTES;
        loop {
            let t = u32_at(section, at).unwrap();
            let len = u32_at(section, at + 4).unwrap() as usize;
            if t == tag as u32 {
                return at;
            }
            at += RECORD_HEADER + len.next_multiple_of(4);
        }
    }

    fn parse_err(bytes: &[u8], cfg: &ModelConfig) -> String {
        Metadata::parse(bytes, cfg).unwrap_err().to_string()
    }

    #[test]
    fn hostile_sections_are_one_clear_error() {
        let cfg = config(3, true);
        let good = encode(&full(), &cfg);
        // Every truncation.
        for n in 0..good.len() {
            assert!(Metadata::parse(&good[..n], &cfg).is_err(), "cut at {n}");
        }
        let labels = record_at(&good, Tag::Labels);
        let edit = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let cases: [(Vec<u8>, &str); 11] = [
            (edit(0, b"XMET"), "corrupt model metadata: bad magic"),
            (edit(4, &[2, 0]), "unsupported model metadata version 2"),
            // A record length that runs past the section.
            (
                edit(labels + 4, &u32::MAX.to_le_bytes()),
                "record runs past the end of the section",
            ),
            // The label count.
            (
                edit(labels + 8, &4u32.to_le_bytes()),
                "label count differs from the model's classes",
            ),
            // Label ends that overlap (go backwards) and run past the text.
            (
                edit(labels + 16, &1u32.to_le_bytes()),
                "label 1 ends outside the label text",
            ),
            (
                edit(labels + 20, &999u32.to_le_bytes()),
                "label 2 ends outside the label text",
            ),
            (
                edit(labels + 20, &9u32.to_le_bytes()),
                "label text continues past the last label",
            ),
            // Bad UTF-8 and a control character inside label 0.
            (edit(labels + 24, &[0xff]), "label 0 is not UTF-8"),
            (
                edit(labels + 24, &[0x1b]),
                "label 0 holds a control character",
            ),
            (
                edit(record_at(&good, Tag::Name) + 8, &[0xc3]),
                "name is not plain UTF-8 text",
            ),
            (
                edit(record_at(&good, Tag::Interpolation) + 8, &[9]),
                "unknown interpolation",
            ),
        ];
        for (bytes, want) in cases {
            let got = parse_err(&bytes, &cfg);
            assert!(got.contains(want), "{got:?} lacks {want:?}");
        }
        // A record twice.
        let name = record_at(&good, Tag::Name);
        let name_end = record_at(&good, Tag::Licence);
        let mut twice = edit(6, &[13, 0]);
        twice.extend_from_slice(&good[name..name_end]);
        assert!(parse_err(&edit(6, &[13, 0]), &cfg).contains("fewer records"));
        assert!(parse_err(&twice[..twice.len() - 4], &cfg).contains("record runs past"));
        assert!(parse_err(&edit(6, &[11, 0]), &cfg).contains("bytes after the last record"));
        assert!(parse_err(&twice, &cfg).contains("a record appears twice"));
        // Nonzero padding after the 6-byte name.
        assert!(parse_err(&edit(name + 8 + 6, &[1]), &cfg).contains("nonzero record padding"));
        // The variant against another config.
        assert!(parse_err(&good, &config(3, false)).contains("disagrees"));
    }

    #[test]
    fn unknown_records_are_skipped() {
        let cfg = config(3, true);
        let mut bytes = encode(&full(), &cfg);
        bytes[6] += 1;
        bytes.extend_from_slice(&99u32.to_le_bytes());
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(b"later\0\0\0");
        let back = Metadata::parse(&bytes, &cfg).unwrap();
        assert_eq!(back.name, Some("digits"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let cfg = config(3, false);
        let mut state = 0x1234_5678_9abc_def0u64;
        let good = encode(
            &Metadata {
                variant: None,
                ..full()
            },
            &cfg,
        );
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % b.len();
                b[at] = (state >> 32) as u8;
            }
            if let Ok(m) = Metadata::parse(&b, &cfg) {
                for i in 0..4 {
                    let _ = m.label(i);
                }
            }
        }
    }
}
