//! What a model says about itself: read from a checkpoint (timm's or DeiT's saved
//! training `args`, a `config` dict, safetensors `__metadata__`), held while converting
//! ([`Description`]), written into and read back from a blob's metadata
//! ([`soft_core::metadata`]), shown by `inspect`, and turned into the preprocessing
//! `run --image` and `eval` apply ([`preprocess`]).

use std::collections::HashMap;

use soft_core::metadata::{
    Channels, Interpolation, Labels, Metadata, Origin, Resize, Variant, VariantNote,
};
use soft_core::ModelConfig;

use crate::image_input::{Preprocess, DEFAULT_CROP_PCT, MEAN, STD};
use crate::pickle::{Node, Pickle, Value};

/// A value a checkpoint gives, with where it was found (`args.mean`).
#[derive(Debug, Clone, PartialEq)]
pub struct Said<T> {
    /// The value.
    pub value: T,
    /// Where: `args.input_size`, `__metadata__.model`.
    pub at: String,
}

/// What a checkpoint says about its model besides the tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingInfo {
    /// Every statement of the variant: a published model name (`args.model =
    /// 'soft_norm_tiny'`), the reference's class name (`arch`), a config flag.
    pub variant: Vec<Said<Variant>>,
    /// Model names that do not tell the variant (`args.model = 'soft_micro'`).
    pub unknown_models: Vec<String>,
    /// Input size trained at (`input_size`, else `img_size`).
    pub input_size: Option<Said<[u32; 2]>>,
    /// `crop_pct`.
    pub crop_pct: Option<Said<f64>>,
    /// `crop_mode`: `center` (shorter side) or `squash` (both sides).
    pub both_sides: Option<Said<bool>>,
    /// `interpolation`.
    pub interpolation: Option<Said<Interpolation>>,
    /// `mean`.
    pub mean: Option<Said<[f32; 3]>>,
    /// `std`.
    pub std: Option<Said<[f32; 3]>>,
    /// Settings seen but not understood, for the user.
    pub ignored: Vec<String>,
    /// `img_size`, used when there is no `input_size`.
    img_size: Option<Said<[u32; 2]>>,
}

/// A scalar or a list of scalars from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
enum Setting {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Setting>),
    /// Python's `None` or an empty string: not set (timm's defaults for `mean`,
    /// `crop_pct`, `interpolation`).
    Unset,
    Other,
}

impl Setting {
    fn num(&self) -> Option<f64> {
        match self {
            Setting::Num(n) => Some(*n),
            _ => None,
        }
    }

    fn show(&self) -> String {
        match self {
            Setting::Str(s) => format!("'{s}'"),
            Setting::Num(n) => format!("{n}"),
            Setting::Bool(b) => if *b { "True" } else { "False" }.into(),
            Setting::List(l) => {
                let items: Vec<String> = l.iter().map(Setting::show).collect();
                format!("[{}]", items.join(", "))
            }
            Setting::Unset => "None".into(),
            Setting::Other => "an object".into(),
        }
    }
}

/// The variant a model name says: a published timm name (`soft_tiny`, `soft_norm_tiny`)
/// or the reference implementation's class name, which timm's checkpoint saver writes as
/// `arch` when it has no `args`.
pub fn variant_of_name(name: &str) -> Option<Variant> {
    if let Some(cfg) = ModelConfig::preset(name) {
        return Some(Variant::of(&cfg));
    }
    match name.to_ascii_lowercase().as_str() {
        "softmaxfreevisiontransformer" => Some(Variant::Plain),
        "softmaxfreenormvisiontransformer" => Some(Variant::Norm),
        _ => None,
    }
}

fn side(v: f64) -> Option<u32> {
    (v.fract() == 0.0 && (1.0..=65536.0).contains(&v)).then_some(v as u32)
}

/// `224`, `[224, 224]` or `[3, 224, 224]`.
fn size_of(s: &Setting) -> Option<[u32; 2]> {
    match s {
        Setting::Num(n) => side(*n).map(|v| [v, v]),
        Setting::List(l) => {
            let n: Vec<u32> = l
                .iter()
                .map(|x| x.num().and_then(side))
                .collect::<Option<_>>()?;
            match n[..] {
                [h, w] | [_, h, w] => Some([h, w]),
                _ => None,
            }
        }
        _ => None,
    }
}

/// One number for every channel, or three.
fn channels_of(s: &Setting) -> Option<[f32; 3]> {
    let n: Vec<f64> = match s {
        Setting::Num(n) => vec![*n],
        Setting::List(l) => l.iter().map(Setting::num).collect::<Option<_>>()?,
        _ => return None,
    };
    let f = |x: f64| (x.is_finite()).then_some(x as f32);
    match n[..] {
        [a] => Some([f(a)?; 3]),
        [a, b, c] => Some([f(a)?, f(b)?, f(c)?]),
        _ => None,
    }
}

impl TrainingInfo {
    /// Takes `name = value` found at `at`, if it is a setting this tool uses.
    fn add(&mut self, at: &str, name: &str, value: &Setting) {
        if matches!(value, Setting::Unset) {
            return;
        }
        fn said<T>(value: T, at: &str) -> Option<Said<T>> {
            Some(Said {
                value,
                at: at.to_string(),
            })
        }
        let mut ignore = || {
            self.ignored
                .push(format!("{at} = {} (not understood)", value.show()))
        };
        match (name, value) {
            ("model" | "arch" | "model_name", Setting::Str(s)) => match variant_of_name(s) {
                Some(v) => self.variant.push(Said {
                    value: v,
                    at: format!("{at} = '{s}'"),
                }),
                None => self.unknown_models.push(format!("{at} = '{s}'")),
            },
            ("normalized_attention" | "normalized", Setting::Bool(b)) => self.variant.push(Said {
                value: if *b { Variant::Norm } else { Variant::Plain },
                at: format!("{at} = {}", value.show()),
            }),
            ("variant", Setting::Str(s)) => match s.as_str() {
                "plain" | "soft" => self.variant.push(Said {
                    value: Variant::Plain,
                    at: format!("{at} = '{s}'"),
                }),
                "norm" | "soft_norm" => self.variant.push(Said {
                    value: Variant::Norm,
                    at: format!("{at} = '{s}'"),
                }),
                _ => ignore(),
            },
            ("input_size", v) => match size_of(v) {
                Some(s) => self.input_size = said(s, at),
                None => ignore(),
            },
            ("img_size", v) => match size_of(v) {
                Some(s) => self.img_size = said(s, at),
                None => ignore(),
            },
            ("crop_pct", Setting::Num(p)) if *p > 0.0 && *p <= 1.0 => self.crop_pct = said(*p, at),
            ("crop_mode", Setting::Str(m)) => match m.as_str() {
                "center" => self.both_sides = said(false, at),
                "squash" => self.both_sides = said(true, at),
                _ => ignore(),
            },
            ("interpolation", Setting::Str(s)) => match interpolation_named(s) {
                Some(i) => self.interpolation = said(i, at),
                None => ignore(),
            },
            ("mean", v) => match channels_of(v) {
                Some(m) => self.mean = said(m, at),
                None => ignore(),
            },
            ("std", v) => match channels_of(v) {
                Some(s) if s.iter().all(|&x| x > 0.0) => self.std = said(s, at),
                _ => ignore(),
            },
            ("crop_pct", _) => ignore(),
            _ => {}
        }
    }

    fn finish(mut self) -> TrainingInfo {
        if self.input_size.is_none() {
            self.input_size = self.img_size.take();
        }
        self
    }

    /// Whether the checkpoint says anything about preprocessing.
    pub fn has_preprocessing(&self) -> bool {
        self.input_size.is_some()
            || self.crop_pct.is_some()
            || self.both_sides.is_some()
            || self.interpolation.is_some()
            || self.mean.is_some()
            || self.std.is_some()
    }
}

/// `bilinear`, `bicubic` or `nearest` (timm's and torchvision's names).
pub fn interpolation_named(s: &str) -> Option<Interpolation> {
    match s {
        "bilinear" => Some(Interpolation::Bilinear),
        "bicubic" => Some(Interpolation::Bicubic),
        "nearest" => Some(Interpolation::Nearest),
        _ => None,
    }
}

/// Where a `torch.save` file keeps training settings: the top-level `args` (timm's
/// `argparse.Namespace`, or a dict), `config`, `cfg`, `hparams`, and timm's `arch`.
const SETTING_KEYS: [&str; 4] = ["args", "config", "cfg", "hparams"];

fn setting(p: &Pickle, v: &Value, depth: usize) -> Setting {
    match v {
        Value::Str(s) if s.is_empty() => Setting::Unset,
        Value::Str(s) => Setting::Str(s.to_string()),
        Value::Int(i) => Setting::Num(*i as f64),
        Value::Float(f) => Setting::Num(*f),
        Value::Bool(b) => Setting::Bool(*b),
        Value::None => Setting::Unset,
        _ => match p.items(v) {
            Some(items) if depth == 0 && items.len() <= 16 => {
                Setting::List(items.iter().map(|i| setting(p, i, 1)).collect())
            }
            _ => Setting::Other,
        },
    }
}

/// The entries of a dict or of an object rebuilt from a dict (`argparse.Namespace`).
fn entries<'p>(p: &'p Pickle, v: &Value) -> Option<&'p [(Value, Value)]> {
    p.dict(v).or_else(|| match p.node(v)? {
        Node::Build { state, .. } => p.dict(state),
        _ => None,
    })
}

/// What the settings of a `torch.save` checkpoint say (its `args`, `config`, `cfg` or `hparams` entry).
pub fn from_pickle(p: &Pickle) -> TrainingInfo {
    let mut info = TrainingInfo::default();
    let Some(root) = p.dict(p.root()) else {
        return info;
    };
    for (k, v) in root {
        match k.as_str() {
            Some(key) if SETTING_KEYS.contains(&key) => {
                for (name, value) in entries(p, v).unwrap_or_default() {
                    if let Some(name) = name.as_str() {
                        info.add(&format!("{key}.{name}"), name, &setting(p, value, 0));
                    }
                }
            }
            Some("arch") => info.add("arch", "arch", &setting(p, v, 0)),
            _ => {}
        }
    }
    info.finish()
}

fn json_setting(v: &serde_json::Value, depth: usize) -> Setting {
    match v {
        serde_json::Value::String(s) if s.is_empty() => Setting::Unset,
        serde_json::Value::Null => Setting::Unset,
        serde_json::Value::String(s) => Setting::Str(s.clone()),
        serde_json::Value::Number(n) => n.as_f64().map_or(Setting::Other, Setting::Num),
        serde_json::Value::Bool(b) => Setting::Bool(*b),
        serde_json::Value::Array(a) if depth == 0 && a.len() <= 16 => {
            Setting::List(a.iter().map(|x| json_setting(x, 1)).collect())
        }
        _ => Setting::Other,
    }
}

/// What a safetensors file's `__metadata__` (text → text) says: the same names as a
/// checkpoint's `args`, each value plain text or JSON (`"[0.5, 0.5, 0.5]"`, `"true"`); a
/// value that is a JSON object (`"config": "{...}"`) is read one level down.
pub fn from_safetensors_metadata(metadata: &HashMap<String, String>) -> TrainingInfo {
    let mut info = TrainingInfo::default();
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        let raw = &metadata[key];
        let at = format!("__metadata__.{key}");
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(fields)) => {
                for (name, value) in &fields {
                    info.add(&format!("{at}.{name}"), name, &json_setting(value, 0));
                }
            }
            Ok(value) => info.add(&at, key, &json_setting(&value, 0)),
            Err(_) if raw.is_empty() => {}
            Err(_) => info.add(&at, key, &Setting::Str(raw.clone())),
        }
    }
    info.finish()
}

/// A blob's metadata while it is being assembled: owned, every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Description {
    /// Model name.
    pub name: Option<String>,
    /// Licence.
    pub licence: Option<String>,
    /// Source.
    pub source: Option<String>,
    /// Variant, who said so, how.
    pub variant: Option<(Variant, Origin, String)>,
    /// Input `[height, width]`.
    pub input_size: Option<[u32; 2]>,
    /// Resize rule and crop fraction.
    pub resize: Option<Resize>,
    /// Filter.
    pub interpolation: Option<Interpolation>,
    /// Channel order.
    pub channels: Option<Channels>,
    /// Value range.
    pub value_range: Option<f32>,
    /// Mean.
    pub mean: Option<[f32; 3]>,
    /// Std.
    pub std: Option<[f32; 3]>,
    /// Class names.
    pub labels: Option<Vec<String>>,
}

impl Description {
    /// Calls `f` with the borrowed [`Metadata`] this describes.
    pub fn with_metadata<R>(&self, f: impl FnOnce(&Metadata<'_>) -> R) -> R {
        let labels: Option<Vec<&str>> = self
            .labels
            .as_ref()
            .map(|l| l.iter().map(String::as_str).collect());
        let meta = Metadata {
            name: self.name.as_deref(),
            licence: self.licence.as_deref(),
            source: self.source.as_deref(),
            variant: self
                .variant
                .as_ref()
                .map(|(variant, origin, detail)| VariantNote {
                    variant: *variant,
                    origin: *origin,
                    detail,
                }),
            input_size: self.input_size,
            resize: self.resize,
            interpolation: self.interpolation,
            channels: self.channels,
            value_range: self.value_range,
            mean: self.mean,
            std: self.std,
            labels: labels.as_deref().map(Labels::from_strs),
        };
        f(&meta)
    }

    /// An owned copy of `meta`.
    pub fn from_metadata(meta: &Metadata<'_>) -> Description {
        Description {
            name: meta.name.map(str::to_string),
            licence: meta.licence.map(str::to_string),
            source: meta.source.map(str::to_string),
            variant: meta
                .variant
                .map(|v| (v.variant, v.origin, v.detail.to_string())),
            input_size: meta.input_size,
            resize: meta.resize,
            interpolation: meta.interpolation,
            channels: meta.channels,
            value_range: meta.value_range,
            mean: meta.mean,
            std: meta.std,
            labels: meta.labels.map(|l| l.iter().map(str::to_string).collect()),
        }
    }
}

/// The preprocessing fields a command line may set, each overriding the blob's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overrides {
    /// Input side.
    pub size: Option<usize>,
    /// Resize both sides instead of the shorter.
    pub both_sides: Option<bool>,
    /// Crop fraction.
    pub crop_pct: Option<f64>,
    /// Filter.
    pub interpolation: Option<Interpolation>,
    /// Channel order.
    pub channels: Option<Channels>,
    /// Value range.
    pub value_range: Option<f32>,
    /// Mean.
    pub mean: Option<[f32; 3]>,
    /// Std.
    pub std: Option<[f32; 3]>,
}

/// Where each part of a [`Preprocess`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// A command-line flag.
    Flag,
    /// The blob's metadata.
    Blob,
    /// The default: the model's position grid for the size, ImageNet's evaluation for
    /// the rest.
    Default,
}

/// The preprocessing for an image: each field from `flags`, else the blob's
/// `metadata`, else the default (`native` side, ImageNet's evaluation transform).
/// Returns it with whether every field that was not a flag came from the blob.
pub fn preprocess(
    metadata: Option<&Metadata<'_>>,
    flags: &Overrides,
    native: usize,
) -> crate::Result<(Preprocess, Provenance)> {
    let m = metadata.copied().unwrap_or_default();
    let mut used_default = false;
    let mut used_blob = false;
    let mut pick = |flag_set: bool, blob_set: bool| {
        if !flag_set {
            if blob_set {
                used_blob = true;
            } else {
                used_default = true;
            }
        }
    };
    let size = match (flags.size, m.input_size) {
        (Some(s), _) => s,
        (None, Some([h, w])) if h == w => h as usize,
        (None, Some([h, w])) => crate::fail!(
            Usage,
            "the model was trained at {h}x{w}; images are cropped square: give --image-size"
        ),
        (None, None) => native,
    };
    pick(flags.size.is_some(), m.input_size.is_some());
    let both = flags
        .both_sides
        .or(m.resize.map(|r| matches!(r, Resize::BothSides { .. })))
        .unwrap_or(false);
    pick(flags.both_sides.is_some(), m.resize.is_some());
    let crop_pct = flags
        .crop_pct
        .or(m.resize.map(Resize::crop_pct))
        .unwrap_or(DEFAULT_CROP_PCT);
    pick(flags.crop_pct.is_some(), m.resize.is_some());
    let resize = if both {
        Resize::BothSides { crop_pct }
    } else {
        Resize::ShorterSide { crop_pct }
    };
    macro_rules! field {
        ($name:ident, $default:expr) => {{
            pick(flags.$name.is_some(), m.$name.is_some());
            flags.$name.or(m.$name).unwrap_or($default)
        }};
    }
    let pre = Preprocess {
        size,
        resize,
        interpolation: field!(interpolation, Interpolation::Bilinear),
        channels: field!(channels, Channels::Rgb),
        value_range: field!(value_range, 1.0),
        mean: field!(mean, MEAN),
        std: field!(std, STD),
    };
    let from = match (used_default, used_blob) {
        (true, _) => Provenance::Default,
        (false, true) => Provenance::Blob,
        (false, false) => Provenance::Flag,
    };
    Ok((pre, from))
}

/// Whether a blob's metadata says anything about preprocessing.
pub fn has_preprocessing(m: &Metadata<'_>) -> bool {
    m.input_size.is_some()
        || m.resize.is_some()
        || m.interpolation.is_some()
        || m.channels.is_some()
        || m.value_range.is_some()
        || m.mean.is_some()
        || m.std.is_some()
}

fn floats(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", items.join(", "))
}

/// `shorter side to 256 (224 / 0.875), centre 224x224 crop, bilinear, RGB, v/255, mean
/// [...], std [...]`.
pub fn describe_preprocess(p: &Preprocess) -> String {
    let side = p.resize_side();
    let crop_pct = p.resize.crop_pct();
    let rule = match p.resize {
        Resize::ShorterSide { .. } => "shorter side",
        Resize::BothSides { .. } => "both sides",
    };
    let range = if p.value_range == 1.0 {
        "v/255".to_string()
    } else if p.value_range == 255.0 {
        "v".to_string()
    } else {
        format!("v/255*{}", p.value_range)
    };
    format!(
        "{rule} to {side} ({} / {crop_pct}), centre {}x{} crop, {}, {}, {range}, mean {}, std {}",
        p.size,
        p.size,
        p.size,
        p.interpolation.name(),
        p.channels.name().to_uppercase(),
        floats(&p.mean),
        floats(&p.std)
    )
}

/// [`Preprocess`] as JSON: `size`, `resize` (`shorter_side` or `both_sides`),
/// `resize_to`, `crop_pct`, `interpolation`, `channels`, `value_range`, `mean`, `std`.
pub fn preprocess_json(p: &Preprocess) -> serde_json::Value {
    serde_json::json!({
        "size": p.size,
        "resize": match p.resize {
            Resize::ShorterSide { .. } => "shorter_side",
            Resize::BothSides { .. } => "both_sides",
        },
        "resize_to": p.resize_side(),
        "crop_pct": p.resize.crop_pct(),
        "interpolation": p.interpolation.name(),
        "channels": p.channels.name(),
        "value_range": p.value_range,
        "mean": p.mean,
        "std": p.std,
    })
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Checkpoint => "checkpoint",
        Origin::User => "user",
        Origin::Writer => "writer",
    }
}

/// A blob's metadata as JSON (`inspect --json`'s `"metadata"`): every field, null where
/// the blob does not say.
pub fn metadata_json(m: &Metadata<'_>) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "licence": m.licence,
        "source": m.source,
        "variant": m.variant.map(|v| serde_json::json!({
            "variant": v.variant.name(),
            "origin": origin_name(v.origin),
            "detail": v.detail,
        })),
        "input_size": m.input_size,
        "resize": m.resize.map(|r| serde_json::json!({
            "mode": match r {
                Resize::ShorterSide { .. } => "shorter_side",
                Resize::BothSides { .. } => "both_sides",
            },
            "crop_pct": r.crop_pct(),
        })),
        "interpolation": m.interpolation.map(Interpolation::name),
        "channels": m.channels.map(Channels::name),
        "value_range": m.value_range,
        "mean": m.mean,
        "std": m.std,
        "labels": m.labels.map(|l| l.iter().collect::<Vec<_>>()),
    })
}

/// A blob's metadata for people, one `(field, text)` per line; nothing for an absent
/// field.
pub fn metadata_lines(m: &Metadata<'_>) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    for (key, text) in [
        ("name", m.name),
        ("licence", m.licence),
        ("source", m.source),
    ] {
        if let Some(t) = text {
            lines.push((key, t.to_string()));
        }
    }
    if let Some(v) = m.variant {
        let from = match v.origin {
            Origin::Checkpoint => "the checkpoint",
            Origin::User => "the command line",
            Origin::Writer => "the program that wrote the blob",
        };
        let how = if v.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", v.detail)
        };
        lines.push(("variant", format!("{} (from {from}{how})", v.variant)));
    }
    if let Some([h, w]) = m.input_size {
        lines.push(("input size", format!("{h}x{w}")));
    }
    if let Some(r) = m.resize {
        let rule = match r {
            Resize::ShorterSide { .. } => "shorter side",
            Resize::BothSides { .. } => "both sides",
        };
        lines.push((
            "resize",
            format!("{rule} to size / {}, centre crop", r.crop_pct()),
        ));
    }
    if let Some(i) = m.interpolation {
        lines.push(("interpolation", i.name().to_string()));
    }
    if let Some(c) = m.channels {
        lines.push(("channels", c.name().to_string()));
    }
    if let Some(v) = m.value_range {
        lines.push(("value range", format!("0..{v}")));
    }
    if let Some(v) = m.mean {
        lines.push(("mean", floats(&v)));
    }
    if let Some(v) = m.std {
        lines.push(("std", floats(&v)));
    }
    if let Some(l) = m.labels {
        let shown: Vec<&str> = l.iter().take(5).collect();
        let more = if l.len() > 5 { ", …" } else { "" };
        lines.push((
            "labels",
            format!("{} ({}{more})", l.len(), shown.join(", ")),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_tell_the_variant_only_when_they_are_known() {
        assert_eq!(variant_of_name("soft_norm_small"), Some(Variant::Norm));
        assert_eq!(variant_of_name("soft_huge"), Some(Variant::Plain));
        assert_eq!(
            variant_of_name("softmaxfreenormvisiontransformer"),
            Some(Variant::Norm)
        );
        assert_eq!(variant_of_name("soft"), None);
        assert_eq!(variant_of_name("soft_micro"), None);
    }

    #[test]
    fn safetensors_metadata_reads_like_args() {
        let info = from_safetensors_metadata(&meta(&[
            ("model", "soft_norm_tiny"),
            ("input_size", "[3, 96, 96]"),
            ("mean", "[0.5, 0.5, 0.5]"),
            ("std", "0.25"),
            ("interpolation", "bicubic"),
            ("crop_pct", "0.9"),
            (
                "config",
                r#"{"normalized_attention": true, "crop_mode": "squash"}"#,
            ),
            ("lr", "0.1"),
        ]));
        let variants: Vec<(Variant, &str)> = info
            .variant
            .iter()
            .map(|s| (s.value, s.at.as_str()))
            .collect();
        assert_eq!(
            variants,
            [
                (
                    Variant::Norm,
                    "__metadata__.config.normalized_attention = True"
                ),
                (Variant::Norm, "__metadata__.model = 'soft_norm_tiny'"),
            ]
        );
        assert_eq!(info.input_size.unwrap().value, [96, 96]);
        assert_eq!(info.mean.unwrap().value, [0.5; 3]);
        assert_eq!(info.std.unwrap().value, [0.25; 3]);
        assert_eq!(info.interpolation.unwrap().value, Interpolation::Bicubic);
        assert_eq!(info.crop_pct.unwrap().value, 0.9);
        assert!(info.both_sides.unwrap().value);
        assert!(info.ignored.is_empty(), "{:?}", info.ignored);
        // What it cannot use it says.
        let odd = from_safetensors_metadata(&meta(&[
            ("mean", "[1, 2]"),
            ("interpolation", "random"),
            ("model", "soft"),
            ("img_size", "64"),
        ]));
        assert_eq!(odd.ignored.len(), 2, "{:?}", odd.ignored);
        assert_eq!(odd.unknown_models, ["__metadata__.model = 'soft'"]);
        assert_eq!(odd.input_size.unwrap().value, [64, 64]);
        // timm's unset defaults (None, '') are not set, and not worth a note.
        let unset = from_safetensors_metadata(&meta(&[
            ("mean", "null"),
            ("interpolation", ""),
            ("crop_pct", "null"),
            ("input_size", "null"),
        ]));
        assert_eq!(unset, TrainingInfo::default());
    }

    #[test]
    fn flags_override_the_blob_which_overrides_the_defaults() {
        let labels = ["a", "b"];
        let m = Metadata {
            input_size: Some([64, 64]),
            resize: Some(Resize::ShorterSide { crop_pct: 1.0 }),
            interpolation: Some(Interpolation::Nearest),
            channels: Some(Channels::Grey),
            value_range: Some(1.0),
            mean: Some([0.5; 3]),
            std: Some([0.5; 3]),
            labels: Some(Labels::from_strs(&labels)),
            ..Metadata::default()
        };
        let (p, from) = preprocess(Some(&m), &Overrides::default(), 224).unwrap();
        assert_eq!(from, Provenance::Blob);
        assert_eq!((p.size, p.resize_side()), (64, 64));
        assert_eq!(p.interpolation, Interpolation::Nearest);
        let flags = Overrides {
            size: Some(32),
            interpolation: Some(Interpolation::Bicubic),
            ..Overrides::default()
        };
        let (p, from) = preprocess(Some(&m), &flags, 224).unwrap();
        assert_eq!(from, Provenance::Blob);
        assert_eq!(
            (p.size, p.interpolation, p.mean),
            (32, Interpolation::Bicubic, [0.5; 3])
        );
        let (p, from) = preprocess(None, &Overrides::default(), 96).unwrap();
        assert_eq!(from, Provenance::Default);
        assert_eq!(p, Preprocess::imagenet(96));
        let wide = Metadata {
            input_size: Some([64, 96]),
            ..Metadata::default()
        };
        assert!(preprocess(Some(&wide), &Overrides::default(), 96).is_err());
    }
}
