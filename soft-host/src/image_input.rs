//! Images (PNG, JPEG) to normalised `[3, H, W]` input, exactly as torchvision's ImageNet
//! evaluation transform makes it from a PIL image:
//!
//! ```python
//! image = Image.open(path).convert("RGB")  # torchvision's ImageFolder loader
//! T.Compose([
//!     T.Resize(int(crop * 256 / 224), interpolation=BILINEAR, antialias=True),
//!     T.CenterCrop(crop),
//!     T.ToTensor(),
//!     T.Normalize(MEAN, STD),
//! ])(image)
//! ```
//!
//! On a PIL image, `Resize` is Pillow's `Image.resize` (torchvision passes no
//! `reducing_gap`, so there is no box pre-reduction): an antialiased triangle filter
//! whose support widens with the downscale factor, applied as a horizontal then a
//! vertical pass (vertical first for tall images since Pillow 13), each in 22-bit fixed
//! point and rounded to `u8`. [`resize_center_crop_u8`] reproduces that integer
//! arithmetic, so its bytes equal torchvision's; `ToTensor` and `Normalize` are then the
//! same f32 operations, so [`load`] equals torchvision's tensor bit for bit.
//! `soft-host/tests/resize_torchvision.rs` checks both on the cases that
//! `scripts/make_resize_cases.py` made with torchvision 0.29 and Pillow 13
//! (`tests/resize/`).
//!
//! A blob's metadata may ask for other preprocessing ([`Preprocess`]): Pillow's nearest
//! and bicubic filters, both sides resized (timm's `crop_mode 'squash'`), any crop
//! fraction, luminance or BGR channels, another value range, mean and std.
//! `soft-host/tests/resample_pillow.rs` checks those against Pillow 13 on the cases
//! `scripts/make_resample_cases.py` made (`tests/resample/`).
//!
//! Decoding is the `image` crate's, not Pillow's: PNGs decode to the same pixels, but
//! JPEGs can differ by a few levels per sample (another IDCT and chroma upsampling than
//! libjpeg-turbo's), and 16-bit PNGs are scaled to 8 bits where Pillow truncates or clips.
//!
//! Memory is bounded whatever the image's shape. Decoding is capped by [`DecodeLimits`],
//! and the resize never materialises the resized image (for a 60000×1 strip that would
//! be gigabytes): [`resize_center_crop_u8`] computes only the pixels inside the crop
//! window.

use std::io::{BufRead, Cursor, Seek};
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, OrFail, Result};
use crate::require;
use image::{DynamicImage, GenericImageView, ImageReader};
use soft_core::metadata::{Channels, Interpolation, Resize};

/// ImageNet channel means.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Output sides accepted by [`load`].
pub const CROP_RANGE: std::ops::RangeInclusive<usize> = 8..=4096;

/// What a decoder may allocate before it is stopped with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height.
    pub max_side: u32,
    /// Largest decoded image, in bytes.
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    /// 65535 px a side is JPEG's own maximum and admits stitched panoramas; 1 GiB holds a
    /// 100-megapixel photo even as 16-bit RGBA (800 MB). No camera image reaches either,
    /// while a few-hundred-byte PNG declaring 100000×100000 (a decompression bomb) does.
    fn default() -> Self {
        DecodeLimits {
            max_side: 65_535,
            max_bytes: 1 << 30,
        }
    }
}

/// How an image becomes a model's input: what a blob's metadata records, or the
/// ImageNet default ([`Preprocess::imagenet`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Side of the square input (the crop).
    pub size: usize,
    /// Resize rule and crop fraction.
    pub resize: Resize,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Channel order.
    pub channels: Channels,
    /// What an 8-bit sample of 255 becomes before the mean and std (1: `ToTensor`).
    pub value_range: f32,
    /// Per-channel mean, in the input's channel order.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

/// The crop fraction of torchvision's and timm's ImageNet evaluation (224 of 256).
pub const DEFAULT_CROP_PCT: f64 = 0.875;

impl Preprocess {
    /// torchvision's ImageNet evaluation at `size`: shorter side to `⌊size / 0.875⌋`,
    /// centre crop, bilinear, RGB, `ToTensor`, ImageNet mean and std.
    pub fn imagenet(size: usize) -> Preprocess {
        Preprocess {
            size,
            resize: Resize::ShorterSide {
                crop_pct: DEFAULT_CROP_PCT,
            },
            interpolation: Interpolation::Bilinear,
            channels: Channels::Rgb,
            value_range: 1.0,
            mean: MEAN,
            std: STD,
        }
    }

    /// The side resized to before the crop: `⌊size / crop_pct⌋`, as timm computes it.
    pub fn resize_side(&self) -> usize {
        let side = (self.size as f64 / self.resize.crop_pct()).floor();
        if side.is_finite() && side >= 0.0 {
            side.min(usize::MAX as f64) as usize
        } else {
            usize::MAX
        }
    }
}

/// Loads `path` and returns a `crop × crop` CHW tensor: shorter side resized to
/// [`resize_side`]`(crop)` (256 for 224), centre crop, ImageNet normalisation, as
/// torchvision's eval transform does (see the module documentation).
pub fn load(path: &Path, crop: usize) -> Result<Vec<f32>> {
    load_with(path, &Preprocess::imagenet(crop))
}

/// Loads `path` as `pre` says: a `pre.size × pre.size` CHW tensor.
pub fn load_with(path: &Path, pre: &Preprocess) -> Result<Vec<f32>> {
    check_crop(pre.size)?;
    let context = || format!("reading image {}", path.display());
    let reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .or_fail_with(Error::Image, context)?;
    let image = decode(reader, DecodeLimits::default()).or_fail_with(Error::Image, context)?;
    to_input(&image, pre)
}

/// [`load`] for an image already in memory.
pub fn load_bytes(bytes: &[u8], crop: usize) -> Result<Vec<f32>> {
    load_bytes_within(bytes, crop, DecodeLimits::default())
}

/// [`load_bytes`] with explicit decoding limits (the fuzz target uses smaller ones so
/// each input stays fast).
pub fn load_bytes_within(bytes: &[u8], crop: usize, limits: DecodeLimits) -> Result<Vec<f32>> {
    load_bytes_with(bytes, &Preprocess::imagenet(crop), limits)
}

/// [`load_with`] for an image in memory, within `limits`.
pub fn load_bytes_with(bytes: &[u8], pre: &Preprocess, limits: DecodeLimits) -> Result<Vec<f32>> {
    check_crop(pre.size)?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .or_fail(Error::Image, "reading image")?;
    let image = decode(reader, limits).or_fail(Error::Image, "reading image")?;
    to_input(&image, pre)
}

fn check_crop(crop: usize) -> Result<()> {
    require!(
        CROP_RANGE.contains(&crop),
        Image,
        "image size {crop} is out of range ({}..={})",
        CROP_RANGE.start(),
        CROP_RANGE.end()
    );
    Ok(())
}

/// Decodes within `limits`; the error is one line, and names the limits when it is theirs.
fn decode<R: BufRead + Seek>(
    mut reader: ImageReader<R>,
    limits: DecodeLimits,
) -> std::result::Result<DynamicImage, String> {
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    image_limits.max_alloc = Some(limits.max_bytes);
    reader.limits(image_limits);
    reader.decode().map_err(|e| {
        let text = e.to_string().replace(['\n', '\r'], " ");
        match e {
            image::ImageError::Limits(_) => format!(
                "{text} (at most {} px a side, {} MiB decoded)",
                limits.max_side,
                limits.max_bytes >> 20
            ),
            _ => text,
        }
    })
}

/// The side [`load`] resizes the shorter side to before cropping `crop`:
/// `⌊crop · 256/224⌋` (256 for 224, 109 for 96, 36 for 32), as torchvision's
/// `Resize(int(crop * 256 / 224))` and timm's eval transform (`crop_pct` 0.875) have it.
pub fn resize_side(crop: usize) -> usize {
    crop.saturating_mul(256) / 224
}

/// Largest shorter side [`resize_center_crop_u8`] accepts: far beyond any crop's (4681
/// for 4096), and small enough that positions on the longer axis (below 2⁴⁸) are exact
/// in f64.
pub const MAX_RESIZE: usize = 1 << 16;

/// `ToTensor()` then `Normalize(mean, std)` of CHW RGB bytes, in torchvision's f32
/// operations (`v / 255`, then `(x − mean) / std`), so the result is the same bits.
pub fn normalise(chw: &[u8], mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    normalise_range(chw, 1.0, mean, std)
}

/// [`normalise`] with the samples scaled to `[0, range]` first: `v / 255 · range` (for
/// `range` 1 exactly `ToTensor`'s `v / 255`; for 255 exactly `v`).
pub fn normalise_range(chw: &[u8], range: f32, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = (chw.len() / 3).max(1);
    chw.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane).min(2);
            let x = if range == 255.0 {
                f32::from(v)
            } else {
                f32::from(v) / 255.0 * range
            };
            (x - mean[c]) / std[c]
        })
        .collect()
}

/// Channels, resize, crop and normalisation as `pre` says.
fn to_input(image: &DynamicImage, pre: &Preprocess) -> Result<Vec<f32>> {
    let grey;
    let image = match pre.channels {
        Channels::Grey if !matches!(image, DynamicImage::ImageLuma8(_)) => {
            grey = luminance(image);
            &grey
        }
        _ => image,
    };
    let to = match pre.resize {
        Resize::ShorterSide { .. } => ResizeTo::ShorterSide(pre.resize_side()),
        Resize::BothSides { .. } => ResizeTo::BothSides(pre.resize_side()),
    };
    let mut pixels = resample_crop_u8(image, to, pre.size, pre.interpolation)?;
    if pre.channels == Channels::Bgr {
        let plane = pre.size * pre.size;
        let (red, rest) = pixels.split_at_mut(plane);
        if let Some(blue) = rest.get_mut(plane..2 * plane) {
            red.swap_with_slice(blue);
        }
    }
    Ok(normalise_range(&pixels, pre.value_range, pre.mean, pre.std))
}

/// Pillow's `convert("L")`: `(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16` of the RGB
/// samples (alpha dropped, grey kept, 16-bit scaled to 8 as elsewhere).
fn luminance(image: &DynamicImage) -> DynamicImage {
    let (width, height) = image.dimensions();
    let mut row = Vec::new();
    let mut out = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height as usize {
        read_row(image, y, 0..width as usize, &mut row);
        out.extend(row.chunks_exact(3).map(|p| {
            let l = u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471;
            ((l + 0x8000) >> 16) as u8
        }));
    }
    image::GrayImage::from_raw(width, height, out)
        .map_or_else(|| image.clone(), DynamicImage::ImageLuma8)
}

/// The length of each side once the shorter one (the width on a tie) is scaled to
/// `resize`, as torchvision's `_compute_resized_output_size` gives it: the longer side
/// becomes `int(resize * long / short)`. That float quotient truncates to the same
/// integer as the exact one here, since a non-integer quotient of numbers this size is
/// further from the next integer than the float's error. Either side can be far larger
/// than any buffer (60000 × 256 for a 60000×1 strip), hence u64.
fn resized_sides(width: u32, height: u32, resize: u64) -> (u64, u64) {
    let (w, h) = (u64::from(width).max(1), u64::from(height).max(1));
    if w <= h {
        (resize, (h * resize / w).max(1))
    } else {
        ((w * resize / h).max(1), resize)
    }
}

/// Where torchvision's `CenterCrop` starts on an axis of `resized` samples:
/// `int(round((resized - crop) / 2.0))`, Python's round taking halves to the even
/// neighbour (a margin of 3 starts at 2, of 5 at 2, of 7 at 4). `None` if the crop is
/// longer than the axis.
fn crop_start(resized: u64, crop: u64) -> Option<u64> {
    let margin = resized.checked_sub(crop)?;
    let half = margin / 2;
    Some(if margin % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    })
}

/// [`resize_center_crop_u8`] at [`load`]'s resize side, as `ToTensor` gives it: CHW
/// RGB values in `[0, 1]`.
pub fn resize_center_crop(image: &DynamicImage, crop: usize) -> Result<Vec<f32>> {
    let pixels = resize_center_crop_u8(image, resize_side(crop), crop)?;
    Ok(pixels.iter().map(|&v| f32::from(v) / 255.0).collect())
}

/// Resizes `image` so its shorter side is `resize` and returns the centred `crop × crop`
/// window as CHW RGB bytes, computing only those pixels; the bytes are those of
/// torchvision's `CenterCrop(crop)(Resize(resize, BILINEAR)(image))` on a PIL RGB image.
///
/// Pillow's resampler, reproduced: per axis, triangle-filter taps whose support widens
/// with the downscale factor (antialiasing), normalised to sum to one and rounded to
/// 22-bit fixed point; one pass over just the source samples the other axis's taps
/// reach, rounded to `u8`, then the other pass over those bytes, rounded to `u8`.
/// The horizontal pass goes first, unless (as Pillow 13 does) the height shrinks by more
/// than twice as many pixels as the width.
/// Memory is `O(crop × samples reached + crop²)` bytes: the rows reached (horizontal
/// first) are at most the source's height, the columns (vertical first) at most its
/// width, and more than `crop` of them only when the image is being shrunk.
pub fn resize_center_crop_u8(image: &DynamicImage, resize: usize, crop: usize) -> Result<Vec<u8>> {
    resample_crop_u8(
        image,
        ResizeTo::ShorterSide(resize),
        crop,
        Interpolation::Bilinear,
    )
}

/// What an image is resized to before the centre crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// The shorter side to this, the longer in proportion (torchvision's `Resize(int)`).
    ShorterSide(usize),
    /// Both sides to this (torchvision's `Resize((s, s))`).
    BothSides(usize),
}

/// [`resize_center_crop_u8`] with any resize rule and filter: the bytes of
/// torchvision's `CenterCrop(crop)(Resize(to, filter)(image))` on a PIL RGB image
/// (Pillow's `Image.resize`). Nearest takes, per axis, the sample Pillow's affine
/// scaling picks (its running sum of the scale, as Pillow accumulates it); bilinear and
/// bicubic are Pillow's two-pass antialiased resampler.
pub fn resample_crop_u8(
    image: &DynamicImage,
    to: ResizeTo,
    crop: usize,
    filter: Interpolation,
) -> Result<Vec<u8>> {
    check_crop(crop)?;
    let (ResizeTo::ShorterSide(resize) | ResizeTo::BothSides(resize)) = to;
    require!(
        (crop..=MAX_RESIZE).contains(&resize),
        Image,
        "resize side {resize} is out of range ({crop}..={MAX_RESIZE})"
    );
    let (width, height) = image.dimensions();
    require!(width > 0 && height > 0, Image, "image is empty");
    let (resized_width, resized_height) = match to {
        ResizeTo::ShorterSide(_) => resized_sides(width, height, resize as u64),
        ResizeTo::BothSides(_) => (resize as u64, resize as u64),
    };
    let columns = axis_taps(width, resized_width, crop, filter)?;
    let rows = axis_taps(height, resized_height, crop, filter)?;
    let source_columns = span(&columns);
    let source_rows = span(&rows);

    let plane = crop * crop;
    let mut out = vec![0; 3 * plane];
    let mut put = |x: usize, y: usize, rgb: [u8; 3]| {
        for (channel, value) in rgb.into_iter().enumerate() {
            if let Some(slot) = out.get_mut(channel * plane + y * crop + x) {
                *slot = value;
            }
        }
    };
    let mut source = Vec::with_capacity(source_columns.len() * 3);
    if vertical_first(width, height, resized_width, resized_height) {
        // Vertical pass: each output row, over the reached source columns.
        let row_len = source_columns.len() * 3;
        let mut vertical = Vec::with_capacity(crop * row_len);
        let mut sums = vec![0; row_len];
        for taps in &rows {
            sums.fill(HALF);
            for (k, &w) in taps.weights.iter().enumerate() {
                read_row(image, taps.first + k, source_columns.clone(), &mut source);
                for (sum, &v) in sums.iter_mut().zip(&source) {
                    *sum += i64::from(v) * i64::from(w);
                }
            }
            vertical.extend(sums.iter().map(|&sum| clip8(sum)));
        }
        // Horizontal pass, written out as CHW.
        for (y, row) in vertical.chunks(row_len.max(1)).enumerate() {
            for (x, taps) in columns.iter().enumerate() {
                let first = (taps.first - source_columns.start) * 3;
                put(x, y, taps.apply_rgb(row, first, 3));
            }
        }
    } else {
        // Horizontal pass: each reached source row becomes `crop` RGB samples.
        let row_len = crop * 3;
        let mut horizontal = Vec::with_capacity(source_rows.len() * row_len);
        for y in source_rows.clone() {
            read_row(image, y, source_columns.clone(), &mut source);
            for taps in &columns {
                let first = (taps.first - source_columns.start) * 3;
                horizontal.extend(taps.apply_rgb(&source, first, 3));
            }
        }
        // Vertical pass, written out as CHW.
        for (y, taps) in rows.iter().enumerate() {
            let first_row = (taps.first - source_rows.start) * row_len;
            for x in 0..crop {
                put(
                    x,
                    y,
                    taps.apply_rgb(&horizontal, first_row + x * 3, row_len),
                );
            }
        }
    }
    Ok(out)
}

/// Whether Pillow resamples the vertical axis first: since Pillow 13
/// (python-pillow/Pillow#9549) it does when the height shrinks by more than twice as
/// many pixels as the width does (`ysize < in_h && in_h - ysize > 2 · (in_w - xsize)`;
/// read off Pillow 13.0.0's output, every one of some 4000 size combinations tried);
/// before, it always went horizontal first. Each pass rounds to `u8`, so the order
/// changes some pixels by a level. With the shorter side resized, this holds only for
/// shrinking images more than about twice as tall as wide.
fn vertical_first(width: u32, height: u32, resized_width: u64, resized_height: u64) -> bool {
    let (w, h) = (i128::from(width), i128::from(height));
    let (rw, rh) = (i128::from(resized_width), i128::from(resized_height));
    rh < h && h - rh > 2 * (w - rw)
}

/// Appends source row `y`, columns `xs`, to `out` as interleaved RGB bytes (alpha
/// dropped and grey repeated, as Pillow's `convert("RGB")` does; 16-bit samples scaled
/// to 8 bits, as `to_rgb8` does).
fn read_row(image: &DynamicImage, y: usize, xs: Range<usize>, out: &mut Vec<u8>) {
    out.clear();
    if let DynamicImage::ImageLuma8(grey) = image {
        let row_start = y.checked_mul(grey.width() as usize);
        let start = row_start.and_then(|r| r.checked_add(xs.start));
        let end = row_start.and_then(|r| r.checked_add(xs.end));
        if let Some(bytes) = start.zip(end).and_then(|(s, e)| grey.as_raw().get(s..e)) {
            out.extend(bytes.iter().flat_map(|&v| [v, v, v]));
            return;
        }
    }
    if let DynamicImage::ImageRgb8(rgb) = image {
        let row_start = y.checked_mul(rgb.width() as usize * 3);
        let start = row_start.and_then(|r| r.checked_add(xs.start.checked_mul(3)?));
        let end = row_start.and_then(|r| r.checked_add(xs.end.checked_mul(3)?));
        if let Some(bytes) = start.zip(end).and_then(|(s, e)| rgb.as_raw().get(s..e)) {
            out.extend_from_slice(bytes);
            return;
        }
    }
    for x in xs {
        // Taps are clamped to the image's sides, so this always holds; `get_pixel`
        // would panic if it did not.
        let (x, y) = (x as u32, y as u32);
        let pixel = if image.in_bounds(x, y) {
            image.get_pixel(x, y).0
        } else {
            [0; 4]
        };
        out.extend_from_slice(&pixel[..3]);
    }
}

/// Pillow's fixed-point precision for 8-bit images (`PRECISION_BITS`, 32 − 8 − 2): a
/// weight of one is `1 << 22`.
const PRECISION_BITS: u32 = 22;

/// Half a unit of the last place, where Pillow starts each sum so the shift rounds.
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// A fixed-point sum as a byte: shifted down by [`PRECISION_BITS`], clipped to `0..=255`.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The source samples one output sample is made of: fixed-point `weights[k]` for
/// source index `first + k`.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

impl Taps {
    /// Pillow's sum for each channel of the RGB samples at `first + k · stride` in
    /// `samples`: [`HALF`] plus `Σ sₖ wₖ`, through [`clip8`]. Pillow sums in `int`; i64
    /// gives the same result wherever Pillow's sum does not overflow, which triangle
    /// weights (non-negative, summing to about one) never make it do. Samples past the
    /// end of `samples` (never, by construction) count as zero.
    fn apply_rgb(&self, samples: &[u8], first: usize, stride: usize) -> [u8; 3] {
        let mut sum = [HALF; 3];
        for (k, &w) in self.weights.iter().enumerate() {
            let at = k.checked_mul(stride).and_then(|o| first.checked_add(o));
            let rgb = at.and_then(|at| samples.get(at..at.checked_add(3)?));
            if let Some(&[r, g, b]) = rgb {
                for (s, v) in sum.iter_mut().zip([r, g, b]) {
                    *s += i64::from(v) * i64::from(w);
                }
            }
        }
        sum.map(clip8)
    }

    fn end(&self) -> usize {
        self.first + self.weights.len()
    }
}

/// The range of source indices some tap reads.
fn span(taps: &[Taps]) -> Range<usize> {
    let start = taps.iter().map(|t| t.first).min().unwrap_or(0);
    let end = taps.iter().map(Taps::end).max().unwrap_or(start);
    start..end
}

/// A normalised weight in Pillow's fixed point (`normalize_coeffs_8bpc`): scaled by
/// `1 << 22`, rounded half away from zero.
fn fixed_point(weight: f64) -> i32 {
    let scaled = weight * f64::from(1u32 << PRECISION_BITS);
    // `as` truncates toward zero, as C's `(int)` does.
    if weight < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Pillow's bilinear filter: a triangle of support one.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's bicubic filter (`a = −0.5`, support two), operation for operation.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Taps of the `crop` output samples centred (as `CenterCrop` centres them) in an axis
/// of `input` samples resized to `resized` samples: for bilinear and bicubic, Pillow's
/// `precompute_coeffs` with that filter, operation for operation in f64 so that the
/// weights, and hence their fixed-point roundings, are the same bits (zero weights at
/// either end are dropped: they read samples for nothing); for nearest, one sample each.
fn axis_taps(input: u32, resized: u64, crop: usize, filter: Interpolation) -> Result<Vec<Taps>> {
    let crop_u64 = crop as u64;
    let start = crop_start(resized, crop_u64).or_fail_with(Error::Image, || {
        format!("resized side {resized} is shorter than the crop {crop}")
    })?;
    require!(input > 0, Image, "image is empty");
    let input_len = input as usize;
    // Pillow: scale = (in1 - in0) / outSize with in0 = 0, in1 = the input's length.
    let scale = f64::from(input) / resized as f64;
    let (kernel, kernel_support): (fn(f64) -> f64, f64) = match filter {
        Interpolation::Nearest => return Ok(nearest_taps(input_len, scale, start, crop)),
        Interpolation::Bilinear => (triangle, 1.0),
        Interpolation::Bicubic => (bicubic, 2.0),
    };
    let filter_scale = scale.max(1.0);
    let support = kernel_support * filter_scale;
    let inv_filter_scale = 1.0 / filter_scale;
    Ok((0..crop_u64)
        .map(|i| {
            let center = ((start + i) as f64 + 0.5) * scale;
            // `as` truncates like C's `(int)` (and saturates, sending NaN to 0), so
            // these are Pillow's xmin and xmin + xmax, clamped to the axis.
            let first = ((center - support + 0.5) as usize).min(input_len - 1);
            let end = ((center + support + 0.5) as usize).clamp(first + 1, input_len);
            let raw: Vec<f64> = (first..end)
                .map(|j| kernel((j as f64 - center + 0.5) * inv_filter_scale))
                .collect();
            let mut total = 0.0;
            for w in &raw {
                total += w;
            }
            let weights: Vec<i32> = raw
                .iter()
                .map(|&w| fixed_point(if total != 0.0 { w / total } else { w }))
                .collect();
            let lead = weights.iter().take_while(|&&w| w == 0).count();
            let trail = weights.iter().rev().take_while(|&&w| w == 0).count();
            let kept = weights.len().saturating_sub(lead + trail);
            if kept == 0 {
                // Unreachable for a centre inside the axis; nearest sample rather than 0.
                let nearest = (center as usize).min(input_len - 1);
                return Taps {
                    first: nearest,
                    weights: vec![1 << PRECISION_BITS],
                };
            }
            Taps {
                first: first + lead,
                weights: weights[lead..lead + kept].to_vec(),
            }
        })
        .collect())
}

/// Pillow's `NEAREST` resize of an axis (`ImagingScaleAffine`): output sample `i` reads
/// source sample `⌊x_i⌋`, with `x_0 = scale / 2` and `x_{i+1} = x_i + scale` summed in
/// f64 as Pillow sums it (not `(i + ½)·scale`, which can round the other way). The sum
/// runs over the samples before the crop too: at most the resized axis's length.
fn nearest_taps(input: usize, scale: f64, start: u64, crop: usize) -> Vec<Taps> {
    let mut x = scale * 0.5;
    for _ in 0..start {
        x += scale;
    }
    (0..crop)
        .map(|_| {
            let first = (x as usize).min(input.saturating_sub(1));
            x += scale;
            Taps {
                first,
                weights: vec![1 << PRECISION_BITS],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{self, FilterType};
    use image::{ImageFormat, Rgb, RgbImage};

    fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    /// An independent path: full resize with the image crate (the same triangle filter,
    /// in f32, rounded to u8 once), then crop.
    fn reference(image: &RgbImage, crop: usize) -> Vec<f32> {
        let (w, h) = image.dimensions();
        let (nw, nh) = resized_sides(w, h, resize_side(crop) as u64);
        let c = crop as u64;
        let (x0, y0) = (crop_start(nw, c).unwrap(), crop_start(nh, c).unwrap());
        let (nw, nh) = (nw as u32, nh as u32);
        let resized = imageops::resize(image, nw, nh, FilterType::Triangle);
        let (x0, y0) = (x0 as u32, y0 as u32);
        let cropped = imageops::crop_imm(&resized, x0, y0, crop as u32, crop as u32).to_image();
        let mut out = vec![0.0; 3 * crop * crop];
        for (x, y, px) in cropped.enumerate_pixels() {
            for c in 0..3 {
                out[c * crop * crop + y as usize * crop + x as usize] = f32::from(px[c]) / 255.0;
            }
        }
        out
    }

    /// Deterministic noise.
    fn noise(width: u32, height: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let mut v = x.wrapping_mul(0x9e37_79b9) ^ y.wrapping_mul(0x85eb_ca6b) ^ seed;
            v ^= v >> 15;
            v = v.wrapping_mul(0x2c1b_3c6d);
            v ^= v >> 12;
            Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        })
    }

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 255 / width.max(2).saturating_sub(1).max(1)) as u8,
                (y * 255 / height.max(2).saturating_sub(1).max(1)) as u8,
                ((x + y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn crops_and_normalises() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("red.png");
        RgbImage::from_pixel(40, 30, Rgb([255, 0, 0]))
            .save(&p)
            .unwrap();
        let x = load(&p, 16).unwrap();
        assert_eq!(x.len(), 3 * 16 * 16);
        assert!((x[0] - (1.0 - MEAN[0]) / STD[0]).abs() < 1e-5);
        assert!((x[16 * 16] - (0.0 - MEAN[1]) / STD[1]).abs() < 1e-5);
        assert!(load(&dir.path().join("missing.png"), 16).is_err());
        std::fs::write(dir.path().join("bad.png"), b"\x89PNG garbage").unwrap();
        assert!(load(&dir.path().join("bad.png"), 16).is_err());
    }

    #[test]
    fn crop_size_range_is_checked() {
        let png = encode(
            &RgbImage::from_pixel(4, 4, Rgb([1, 2, 3])),
            ImageFormat::Png,
        );
        for crop in [0, 7, 4097, usize::MAX] {
            let e = load_bytes(&png, crop).unwrap_err();
            assert!(matches!(e, Error::Image(_)), "{e}");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        assert!(load_bytes(&png, 8).is_ok());
    }

    #[test]
    fn solid_colours_stay_exact() {
        // (40, 3000) is resampled vertically first.
        for (w, h) in [(40, 30), (30, 40), (7, 300), (1, 1), (301, 199), (40, 3000)] {
            for colour in [[0u8, 0, 0], [255, 255, 255], [12, 128, 201], [1, 254, 77]] {
                let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(colour)));
                let out = resize_center_crop(&image, 16).unwrap();
                for c in 0..3 {
                    let want = f32::from(colour[c]) / 255.0;
                    let plane = &out[c * 256..(c + 1) * 256];
                    assert!(plane.iter().all(|&v| v == want), "{w}x{h} {colour:?}");
                }
            }
        }
    }

    #[test]
    fn geometry_is_torchvisions() {
        // int(crop * 256 / 224)
        for (crop, side) in [
            (224, 256),
            (96, 109),
            (32, 36),
            (8, 9),
            (7, 8),
            (4096, 4681),
        ] {
            assert_eq!(resize_side(crop), side, "{crop}");
        }
        // The shorter side (the width on a tie) becomes the target; int(size * long / short).
        assert_eq!(resized_sides(300, 200, 256), (384, 256));
        assert_eq!(resized_sides(200, 300, 256), (256, 384));
        assert_eq!(resized_sides(7, 5, 36), (50, 36));
        assert_eq!(resized_sides(5, 5, 36), (36, 36));
        assert_eq!(resized_sides(60_000, 1, 256), (15_360_000, 256));
        // int(round(margin / 2.0)), halves to even.
        let starts: Vec<u64> = (0..10).map(|m| crop_start(100 + m, 100).unwrap()).collect();
        assert_eq!(starts, [0, 0, 1, 2, 2, 2, 3, 4, 4, 4]);
        assert_eq!(crop_start(99, 100), None);
    }

    #[test]
    fn pass_order_is_pillow_13s() {
        // Both shrink, the height by more than twice as many pixels: vertical first.
        assert!(vertical_first(40, 900, 18, 405));
        assert!(vertical_first(100, 400, 60, 279));
        // Exactly twice, or less, or not shrinking: horizontal first.
        assert!(!vertical_first(100, 400, 60, 320));
        assert!(!vertical_first(300, 400, 256, 341));
        assert!(!vertical_first(400, 300, 341, 256));
        assert!(!vertical_first(7, 300, 18, 771));
        assert!(!vertical_first(60_000, 1, 15_360_000, 256));
        for (w, h) in [(40, 900), (130, 400), (1, 60_000)] {
            let (rw, rh) = resized_sides(w, h, 18);
            assert_eq!(vertical_first(w, h, rw, rh), w > 18, "{w}x{h}");
        }
    }

    #[test]
    fn resize_side_is_checked() {
        let image = DynamicImage::ImageRgb8(noise(20, 10, 9));
        assert_eq!(
            resize_center_crop_u8(&image, 16, 16).unwrap().len(),
            3 * 256
        );
        for resize in [0, 15, MAX_RESIZE + 1, usize::MAX] {
            let e = resize_center_crop_u8(&image, resize, 16).unwrap_err();
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        // The largest resize of the widest image still places its taps.
        let wide = DynamicImage::ImageRgb8(RgbImage::from_pixel(65_535, 1, Rgb([3, 4, 5])));
        let out = resize_center_crop_u8(&wide, MAX_RESIZE, 8).unwrap();
        assert!(out
            .chunks(64)
            .zip([3, 4, 5])
            .all(|(p, v)| p.iter().all(|&x| x == v)));
    }

    #[test]
    fn agrees_with_resize_then_crop() {
        let cases = [
            (gradient(40, 30), 16),
            (noise(40, 30, 1), 16),
            (gradient(300, 200), 64),
            (noise(300, 200, 2), 64),
            (noise(200, 300, 3), 100),
            (noise(17, 90, 4), 24),
            (noise(256, 256, 5), 224),
            (noise(64, 64, 6), 56),
            (noise(40, 900, 10), 16),
            (noise(130, 400, 11), 96),
        ];
        for (image, crop) in cases {
            let want = reference(&image, crop);
            let got = resize_center_crop(&DynamicImage::ImageRgb8(image.clone()), crop).unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // Both round to u8, Pillow's arithmetic (reproduced here) after each pass:
            // within a level.
            assert!(
                worst <= 1.0 / 255.0 + 1e-6,
                "{:?} crop {crop}: worst difference {worst}",
                image.dimensions()
            );
        }
    }

    #[test]
    fn other_pixel_formats_read_like_rgb8() {
        let rgb = noise(50, 40, 7);
        let want = resize_center_crop(&DynamicImage::ImageRgb8(rgb.clone()), 16).unwrap();
        let rgba = DynamicImage::ImageRgb8(rgb).into_rgba8();
        let got = resize_center_crop(&DynamicImage::ImageRgba8(rgba), 16).unwrap();
        assert_eq!(want, got);
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(30, 20, image::Luma([9])));
        let out = resize_center_crop(&gray, 8).unwrap();
        assert!(out.iter().all(|&v| v == 9.0 / 255.0));
    }

    #[test]
    fn extreme_aspect_ratios_load_quickly() {
        let colour = Rgb([200, 30, 90]);
        let wide = RgbImage::from_pixel(60_000, 1, colour);
        let tall = RgbImage::from_pixel(1, 60_000, colour);
        for (image, format, tolerance) in [
            (&wide, ImageFormat::Png, 0u8),
            (&tall, ImageFormat::Png, 0),
            (&wide, ImageFormat::Jpeg, 4),
            (&tall, ImageFormat::Jpeg, 4),
        ] {
            let bytes = encode(image, format);
            let start = std::time::Instant::now();
            let x = load_bytes(&bytes, 224).unwrap();
            assert!(start.elapsed().as_secs() < 10, "{format:?} took too long");
            assert_eq!(x.len(), 3 * 224 * 224);
            for c in 0..3 {
                let want = f32::from(colour[c]) / 255.0;
                let tolerance = f32::from(tolerance) / 255.0 + 1e-6;
                for v in &x[c * 224 * 224..(c + 1) * 224 * 224] {
                    let got = v * STD[c] + MEAN[c];
                    assert!(
                        (got - want).abs() <= tolerance,
                        "{format:?}: {got} vs {want}"
                    );
                }
            }
        }
        // Taps stay few: a 60000×1 strip at the largest crop needs one source row.
        let (w, h) = resized_sides(60_000, 1, resize_side(4096) as u64);
        assert_eq!(
            span(&axis_taps(1, h, 4096, Interpolation::Bilinear).unwrap()),
            0..1
        );
        assert!(span(&axis_taps(60_000, w, 4096, Interpolation::Bilinear).unwrap()).len() < 60);
    }

    /// A PNG that only declares its size: signature, IHDR and an empty IDAT and IEND, so
    /// the decoder gets as far as the size checks and then runs out of pixel data.
    fn png_declaring(width: u32, height: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xedb8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for chunk in [&ihdr[..], b"IDAT", b"IEND"] {
            png.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
            png.extend_from_slice(chunk);
            png.extend_from_slice(&crc32(chunk).to_be_bytes());
        }
        png
    }

    #[test]
    fn declared_sizes_beyond_the_limits_are_one_line_errors() {
        // A real 1×1 PNG built the same way decodes only as far as its missing data.
        let small = load_bytes(&png_declaring(1, 1), 16)
            .unwrap_err()
            .to_string();
        assert!(!small.contains("limit"), "{small}");
        for (w, h) in [
            (100_000, 1),
            (1, 70_000),
            (40_000, 40_000),
            (u32::MAX, u32::MAX),
        ] {
            let e = load_bytes(&png_declaring(w, h), 16).unwrap_err();
            assert!(matches!(e, Error::Image(_)), "{e}");
            let text = e.to_string();
            assert!(!text.contains('\n'), "{text:?}");
            assert!(text.to_lowercase().contains("limit"), "{w}x{h}: {text}");
        }
        // A JPEG whose frame header claims 65535×65535: within the side limit, but
        // 12 GiB decoded.
        let mut jpeg = encode(
            &RgbImage::from_pixel(8, 8, Rgb([1, 2, 3])),
            ImageFormat::Jpeg,
        );
        let sof = jpeg.windows(2).position(|m| m == [0xff, 0xc0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let e = load_bytes(&jpeg, 16).unwrap_err();
        assert!(matches!(e, Error::Image(_)), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        // Tighter limits apply as given.
        let png = encode(&noise(64, 64, 8), ImageFormat::Png);
        let tight = DecodeLimits {
            max_side: 32,
            max_bytes: 1 << 20,
        };
        assert!(load_bytes_within(&png, 16, tight).is_err());
        assert!(load_bytes(&png, 16).is_ok());
    }
}
