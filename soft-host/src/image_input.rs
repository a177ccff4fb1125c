//! Images (PNG, JPEG) to normalised `[3, H, W]` input, the way ImageNet evaluation
//! prepares them: resize the shorter side (antialiased bilinear), centre crop, ImageNet
//! mean/std.
//!
//! Memory is bounded whatever the image's shape. Decoding is capped by [`DecodeLimits`],
//! and the resize never materialises the resized image (for a 60000×1 strip that would
//! be gigabytes): [`resize_center_crop`] computes only the pixels inside the crop window.

use std::io::{BufRead, Cursor, Seek};
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, OrFail, Result};
use crate::require;
use image::{DynamicImage, GenericImageView, ImageReader};

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

/// Loads `path` and returns a `crop × crop` CHW tensor: shorter side resized to
/// `crop · 256/224` (256 for 224), centre crop, normalised.
pub fn load(path: &Path, crop: usize) -> Result<Vec<f32>> {
    check_crop(crop)?;
    let context = || format!("reading image {}", path.display());
    let reader = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .or_fail_with(Error::Image, context)?;
    let image = decode(reader, DecodeLimits::default()).or_fail_with(Error::Image, context)?;
    to_input(&image, crop)
}

/// [`load`] for an image already in memory.
pub fn load_bytes(bytes: &[u8], crop: usize) -> Result<Vec<f32>> {
    load_bytes_within(bytes, crop, DecodeLimits::default())
}

/// [`load_bytes`] with explicit decoding limits (the fuzz target uses smaller ones so
/// each input stays fast).
pub fn load_bytes_within(bytes: &[u8], crop: usize, limits: DecodeLimits) -> Result<Vec<f32>> {
    check_crop(crop)?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .or_fail(Error::Image, "reading image")?;
    let image = decode(reader, limits).or_fail(Error::Image, "reading image")?;
    to_input(&image, crop)
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

/// Resize, crop and normalise with the ImageNet mean and standard deviation.
fn to_input(image: &DynamicImage, crop: usize) -> Result<Vec<f32>> {
    let mut out = resize_center_crop(image, crop)?;
    let plane = crop * crop;
    for (c, values) in out.chunks_mut(plane.max(1)).enumerate().take(3) {
        for v in values {
            *v = (*v - MEAN[c]) / STD[c];
        }
    }
    Ok(out)
}

/// The length of each side once the shorter one is scaled to `crop · 256/224`, rounded
/// down like the integer arithmetic the previous resize-then-crop used. Either can be
/// far larger than any buffer (60000 × 256 for a 60000×1 strip), hence u64.
fn resized_sides(width: u32, height: u32, crop: usize) -> (u64, u64) {
    let short = (crop as u64 * 256).div_ceil(224);
    let (w, h) = (u64::from(width), u64::from(height));
    if w <= h {
        (short, (h * short / w.max(1)).max(1))
    } else {
        ((w * short / h.max(1)).max(1), short)
    }
}

/// Resizes `image` so its shorter side is `crop · 256/224` and returns the centred
/// `crop × crop` window as CHW RGB values in `[0, 1]`, computing only those pixels.
///
/// The filter is the antialiased bilinear ("triangle") one of PIL and torchvision's
/// `Resize(antialias=True)`, applied separably: a horizontal pass over just the source
/// rows the vertical taps reach, then a vertical pass. Memory is
/// `O(crop × rows reached + crop²)`; the rows reached are at most the source's height,
/// and more than `crop` of them only when the image is being shrunk.
pub fn resize_center_crop(image: &DynamicImage, crop: usize) -> Result<Vec<f32>> {
    check_crop(crop)?;
    let (width, height) = image.dimensions();
    require!(width > 0 && height > 0, Image, "image is empty");
    let (resized_width, resized_height) = resized_sides(width, height, crop);
    let columns = axis_taps(width, resized_width, crop)?;
    let rows = axis_taps(height, resized_height, crop)?;
    let source_columns = span(&columns);
    let source_rows = span(&rows);

    // Horizontal pass: each reached source row becomes `crop` RGB samples.
    let row_len = crop * 3;
    let mut horizontal = Vec::with_capacity(source_rows.len() * row_len);
    let mut source = Vec::with_capacity(source_columns.len() * 3);
    for y in source_rows.clone() {
        read_row(image, y, source_columns.clone(), &mut source);
        for taps in &columns {
            let first = (taps.first - source_columns.start) * 3;
            horizontal.extend(taps.apply_rgb(&source, first, 3));
        }
    }

    // Vertical pass, written out as CHW.
    let plane = crop * crop;
    let mut out = vec![0.0; 3 * plane];
    for (y, taps) in rows.iter().enumerate() {
        let first_row = (taps.first - source_rows.start) * row_len;
        for x in 0..crop {
            let rgb = taps.apply_rgb(&horizontal, first_row + x * 3, row_len);
            for (channel, value) in rgb.into_iter().enumerate() {
                if let Some(slot) = out.get_mut(channel * plane + y * crop + x) {
                    *slot = value;
                }
            }
        }
    }
    Ok(out)
}

/// Appends source row `y`, columns `xs`, to `out` as interleaved RGB in `[0, 1]`
/// (alpha dropped, 16-bit samples scaled to 8 bits, as `to_rgb8` does).
fn read_row(image: &DynamicImage, y: usize, xs: Range<usize>, out: &mut Vec<f32>) {
    out.clear();
    let to_unit = |v: u8| f32::from(v) / 255.0;
    if let DynamicImage::ImageRgb8(rgb) = image {
        let row_start = y.checked_mul(rgb.width() as usize * 3);
        let start = row_start.and_then(|r| r.checked_add(xs.start.checked_mul(3)?));
        let end = row_start.and_then(|r| r.checked_add(xs.end.checked_mul(3)?));
        if let Some(bytes) = start.zip(end).and_then(|(s, e)| rgb.as_raw().get(s..e)) {
            out.extend(bytes.iter().map(|&v| to_unit(v)));
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
        out.extend(pixel[..3].iter().map(|&v| to_unit(v)));
    }
}

/// The source samples one output sample is made of: `weights[k]` for source index
/// `first + k`.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

impl Taps {
    /// `Σ wₖ · sₖ` for each channel of the RGB samples at `first + k · stride` in
    /// `samples`, computed as `s₀ + Σ wₖ (sₖ − s₀)`: the weights sum to one, so this is
    /// the same value, and it is exactly `s₀` on a flat region however the weights round.
    /// Samples past the end of `samples` (never, by construction) read as `s₀`.
    fn apply_rgb(&self, samples: &[f32], first: usize, stride: usize) -> [f32; 3] {
        let rgb_at = |at: usize| -> Option<[f32; 3]> {
            match samples.get(at..at.checked_add(3)?)? {
                &[r, g, b] => Some([r, g, b]),
                _ => None,
            }
        };
        let base = rgb_at(first).unwrap_or_default();
        let mut sum = [0.0f32; 3];
        for (k, w) in self.weights.iter().enumerate() {
            let sample = k
                .checked_mul(stride)
                .and_then(|offset| rgb_at(first.checked_add(offset)?))
                .unwrap_or(base);
            for c in 0..3 {
                sum[c] += w * (sample[c] - base[c]);
            }
        }
        [base[0] + sum[0], base[1] + sum[1], base[2] + sum[2]]
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

/// Taps of the `crop` output samples centred in an axis of `input` samples resized to
/// `resized` samples, following PIL's `precompute_coeffs` with the triangle filter:
/// the support widens with the downscale factor so shrinking averages (antialiasing).
/// Positions are f64 so a resized length of billions still places taps exactly enough.
fn axis_taps(input: u32, resized: u64, crop: usize) -> Result<Vec<Taps>> {
    let crop_u64 = crop as u64;
    let offset = resized
        .checked_sub(crop_u64)
        .or_fail_with(Error::Image, || {
            format!("resized side {resized} is shorter than the crop {crop}")
        })?
        / 2;
    require!(input > 0, Image, "image is empty");
    let input_len = input as usize;
    let scale = f64::from(input) / resized as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    let triangle = |x: f64| (1.0 - x.abs()).max(0.0);
    (0..crop_u64)
        .map(|i| {
            let center = ((offset + i) as f64 + 0.5) * scale;
            // `as` saturates (and sends NaN to 0), so these stay in 0..=input.
            let first = ((center - support + 0.5).floor().max(0.0) as usize).min(input_len - 1);
            let end =
                ((center + support + 0.5).floor().max(0.0) as usize).clamp(first + 1, input_len);
            let raw: Vec<f64> = (first..end)
                .map(|j| triangle((j as f64 - center + 0.5) / filter_scale))
                .collect();
            // Zero weights at either end read rows for nothing.
            let lead = raw.iter().take_while(|&&w| w == 0.0).count();
            let trail = raw.iter().rev().take_while(|&&w| w == 0.0).count();
            let kept = raw.len().saturating_sub(lead + trail);
            let total: f64 = raw.iter().sum();
            if kept == 0 || total <= 0.0 {
                // Unreachable for a centre inside the axis; nearest sample rather than NaN.
                let nearest = (center.floor().max(0.0) as usize).min(input_len - 1);
                return Ok(Taps {
                    first: nearest,
                    weights: vec![1.0],
                });
            }
            let weights = raw
                .iter()
                .skip(lead)
                .take(kept)
                .map(|w| (w / total) as f32)
                .collect();
            Ok(Taps {
                first: first + lead,
                weights,
            })
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

    /// The old path: full resize with the image crate (rounds to u8), then crop.
    fn reference(image: &RgbImage, crop: usize) -> Vec<f32> {
        let (w, h) = image.dimensions();
        let (nw, nh) = resized_sides(w, h, crop);
        let (nw, nh) = (nw as u32, nh as u32);
        let resized = imageops::resize(image, nw, nh, FilterType::Triangle);
        let (x0, y0) = ((nw - crop as u32) / 2, (nh - crop as u32) / 2);
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
        for (w, h) in [(40, 30), (30, 40), (7, 300), (1, 1), (301, 199)] {
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
        ];
        for (image, crop) in cases {
            let want = reference(&image, crop);
            let got = resize_center_crop(&DynamicImage::ImageRgb8(image.clone()), crop).unwrap();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // The image crate rounds its result to u8: half a level, plus float noise.
            assert!(
                worst <= 0.5 / 255.0 + 1e-4,
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
        let (w, h) = resized_sides(60_000, 1, 4096);
        assert_eq!(span(&axis_taps(1, h, 4096).unwrap()), 0..1);
        assert!(span(&axis_taps(60_000, w, 4096).unwrap()).len() < 60);
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
