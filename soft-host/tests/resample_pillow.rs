//! The preprocessing a blob's metadata may ask for beyond the ImageNet default, against
//! Pillow 13 on the cases `scripts/make_resample_cases.py` made in `tests/resample/`:
//! the nearest and bicubic filters, both sides resized (timm's `'squash'`), crop
//! fractions 0.875, 0.9, 0.95 and 1, upsampling, and luminance (`convert("L")`).
//! Measured: every byte equal.

use std::path::PathBuf;

use image::DynamicImage;
use serde_json::Value;
use soft_core::metadata::{Channels, Interpolation, Resize};
use soft_host::image_input::{self, Preprocess};
use soft_tests::data;

fn cases() -> Vec<Value> {
    let manifest = soft_tests::json::read(&data("resample/cases.json"));
    manifest["cases"].as_array().unwrap().clone()
}

fn open(path: PathBuf) -> DynamicImage {
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Pillow's crop as CHW bytes (an L crop repeated in three channels).
fn pillow_pixels(case: &Value) -> Vec<u8> {
    let image = open(data("resample").join(case["pixels"].as_str().unwrap())).to_rgb8();
    let crop = image.width() as usize;
    let mut chw = vec![0; 3 * crop * crop];
    for (x, y, pixel) in image.enumerate_pixels() {
        for c in 0..3 {
            chw[c * crop * crop + y as usize * crop + x as usize] = pixel[c];
        }
    }
    chw
}

fn preprocess(case: &Value) -> Preprocess {
    let crop_pct = case["crop_pct"].as_f64().unwrap();
    Preprocess {
        size: case["crop"].as_u64().unwrap() as usize,
        resize: match case["mode"].as_str().unwrap() {
            "both" => Resize::BothSides { crop_pct },
            _ => Resize::ShorterSide { crop_pct },
        },
        interpolation: match case["filter"].as_str().unwrap() {
            "nearest" => Interpolation::Nearest,
            "bilinear" => Interpolation::Bilinear,
            _ => Interpolation::Bicubic,
        },
        channels: if case["grey"].as_bool().unwrap() {
            Channels::Grey
        } else {
            Channels::Rgb
        },
        // The identity on bytes: (v - 0) / 1 with v in 0..=255.
        value_range: 255.0,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

#[test]
fn resampled_pixels_equal_pillows() {
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in &cases {
        let pre = preprocess(case);
        assert_eq!(
            pre.resize_side() as u64,
            case["resize"].as_u64().unwrap(),
            "{case}"
        );
        let path = data("resize").join(case["source"].as_str().unwrap());
        let got: Vec<u8> = if case["source"].as_str().unwrap().starts_with("digit") {
            let bytes = std::fs::read(data("resample/digit8.png")).unwrap();
            image_input::load_bytes_with(&bytes, &pre, Default::default())
        } else {
            image_input::load_with(&path, &pre)
        }
        .unwrap()
        .iter()
        .map(|&v| v as u8)
        .collect();
        let want = pillow_pixels(case);
        let differing = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        if differing > 0 {
            failures.push(format!(
                "{}: {differing} of {} samples differ",
                case["name"].as_str().unwrap(),
                want.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// BGR is RGB with the first and last planes swapped; a value range of 1 is
/// `ToTensor`'s `v / 255` bit for bit.
#[test]
fn bgr_and_value_range() {
    let case = &cases()[1];
    let path = data("resize").join(case["source"].as_str().unwrap());
    let rgb = image_input::load_with(&path, &preprocess(case)).unwrap();
    let bgr = image_input::load_with(
        &path,
        &Preprocess {
            channels: Channels::Bgr,
            ..preprocess(case)
        },
    )
    .unwrap();
    let plane = rgb.len() / 3;
    assert_eq!(bgr[..plane], rgb[2 * plane..]);
    assert_eq!(bgr[plane..2 * plane], rgb[plane..2 * plane]);
    assert_eq!(bgr[2 * plane..], rgb[..plane]);
    let unit = image_input::load_with(
        &path,
        &Preprocess {
            value_range: 1.0,
            ..preprocess(case)
        },
    )
    .unwrap();
    for (u, r) in unit.iter().zip(&rgb) {
        assert_eq!(u.to_bits(), (r / 255.0).to_bits());
    }
}
