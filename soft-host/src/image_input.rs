//! Images (PNG, JPEG) to normalised `[3, H, W]` input, the way ImageNet evaluation
//! prepares them: resize the shorter side (bilinear), centre crop, ImageNet mean/std.

use std::path::Path;

use crate::error::{Error, OrFail, Result};
use crate::require;
use image::imageops::{self, FilterType};

/// ImageNet channel means.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Loads `path` and returns a `crop × crop` CHW tensor: shorter side resized to
/// `crop · 256/224` (256 for 224), centre crop, normalised.
pub fn load(path: &Path, crop: usize) -> Result<Vec<f32>> {
    require!(
        (8..=4096).contains(&crop),
        Image,
        "image size {crop} is out of range (8..=4096)"
    );
    let img = image::open(path)
        .or_fail_with(Error::Image, || format!("reading image {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    require!(w > 0 && h > 0, Image, "image {} is empty", path.display());
    let short = (crop * 256).div_ceil(224) as u32;
    let (nw, nh) = if w <= h {
        (
            short,
            ((u64::from(h) * u64::from(short)) / u64::from(w)).max(1) as u32,
        )
    } else {
        (
            ((u64::from(w) * u64::from(short)) / u64::from(h)).max(1) as u32,
            short,
        )
    };
    let resized = imageops::resize(&img, nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw - crop as u32) / 2, (nh - crop as u32) / 2);
    let cropped = imageops::crop_imm(&resized, x0, y0, crop as u32, crop as u32).to_image();
    let mut out = vec![0.0; 3 * crop * crop];
    for (x, y, px) in cropped.enumerate_pixels() {
        for c in 0..3 {
            out[c * crop * crop + y as usize * crop + x as usize] =
                (f32::from(px[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_and_normalises() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("red.png");
        image::RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 0]))
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
}
