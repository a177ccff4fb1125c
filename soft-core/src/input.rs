//! Streaming input: the engine pulls the image one row at a time, in order, so a firmware
//! can feed it from a camera or flash without holding the frame.

use crate::error::{Error, Result};

/// A source of normalised image rows.
pub trait ImageSource {
    /// Image height in pixels.
    fn height(&self) -> usize;
    /// Image width in pixels.
    fn width(&self) -> usize;
    /// Writes row `y` as `width × 3` values, pixel-major (`r, g, b, r, g, b, …`), already
    /// normalised. Rows are requested once each, in increasing order.
    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> Result<()>;
}

/// An image held whole as a `[3, H, W]` (channel-major, PyTorch layout) slice.
#[derive(Debug, Clone, Copy)]
pub struct ChwImage<'a> {
    data: &'a [f32],
    height: usize,
    width: usize,
}

impl<'a> ChwImage<'a> {
    /// Wraps `data`, which must hold exactly `3 · height · width` values.
    pub fn new(data: &'a [f32], height: usize, width: usize) -> Result<Self> {
        let plane = height.checked_mul(width);
        if height == 0 || width == 0 || plane.and_then(|p| p.checked_mul(3)) != Some(data.len()) {
            return Err(Error::InputShape { height, width });
        }
        Ok(ChwImage {
            data,
            height,
            width,
        })
    }
}

impl ImageSource for ChwImage<'_> {
    fn height(&self) -> usize {
        self.height
    }

    fn width(&self) -> usize {
        self.width
    }

    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> Result<()> {
        let (w, plane) = (self.width, self.height * self.width);
        if y >= self.height || rgb.len() != 3 * w {
            return Err(Error::InputSource);
        }
        for ch in 0..3 {
            let at = ch * plane + y * w;
            let src = self.data.get(at..at + w).ok_or(Error::InputSource)?;
            for (px, v) in rgb.chunks_exact_mut(3).zip(src) {
                if let Some(dst) = px.get_mut(ch) {
                    *dst = *v;
                }
            }
        }
        Ok(())
    }
}

/// A reproducible pseudo-random image with values in `[-1, 1)`, computed per pixel from
/// its coordinates: for benchmarks and host/device cross-checks without image files. Only
/// integer arithmetic and exact float scaling, so every target produces the same bits.
#[derive(Debug, Clone, Copy)]
pub struct TestPattern {
    height: usize,
    width: usize,
    seed: u32,
}

impl TestPattern {
    /// A `height × width` pattern; `seed` picks one of 2³² images.
    pub fn new(height: usize, width: usize, seed: u32) -> Self {
        TestPattern {
            height,
            width,
            seed,
        }
    }

    /// The value of channel `ch` at (`y`, `x`).
    pub fn value(&self, y: usize, x: usize, ch: usize) -> f32 {
        let index = ((y * self.width + x) * 3 + ch) as u32;
        // A 32-bit integer hash (lowbias32): well mixed, no floats involved.
        let mut h = index ^ self.seed;
        h ^= h >> 16;
        h = h.wrapping_mul(0x7feb_352d);
        h ^= h >> 15;
        h = h.wrapping_mul(0x846c_a68b);
        h ^= h >> 16;
        // 24 bits → [0, 2), exactly, then shift to [-1, 1).
        (h >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0
    }
}

impl ImageSource for TestPattern {
    fn height(&self) -> usize {
        self.height
    }

    fn width(&self) -> usize {
        self.width
    }

    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> Result<()> {
        if y >= self.height || rgb.len() != 3 * self.width {
            return Err(Error::InputSource);
        }
        for (i, v) in rgb.iter_mut().enumerate() {
            *v = self.value(y, i / 3, i % 3);
        }
        Ok(())
    }
}

/// An input as a device's log names it (`digit:<index>` or
/// `pattern:<seed>:<height>x<width>`), so the host can rebuild it: the firmware writes
/// it with `Display`, `soft crosscheck` reads it with [`InputName::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputName {
    /// The demo's test digit at this index of `models/digits/test_images.npy`, as the
    /// 64×64 image the demo's preprocessing makes of it.
    Digit(usize),
    /// [`TestPattern::new`]`(height, width, seed)`.
    Pattern {
        /// The seed.
        seed: u32,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

impl core::fmt::Display for InputName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InputName::Digit(index) => write!(f, "digit:{index}"),
            InputName::Pattern {
                seed,
                height,
                width,
            } => write!(f, "pattern:{seed}:{height}x{width}"),
        }
    }
}

/// The same text for defmt.
#[cfg(feature = "defmt")]
impl defmt::Format for InputName {
    fn format(&self, f: defmt::Formatter<'_>) {
        match *self {
            InputName::Digit(index) => defmt::write!(f, "digit:{=usize}", index),
            InputName::Pattern {
                seed,
                height,
                width,
            } => defmt::write!(f, "pattern:{=u32}:{=usize}x{=usize}", seed, height, width),
        }
    }
}

impl InputName {
    /// The name `Display` writes; `None` for anything else (a pattern needs both sides
    /// nonzero).
    pub fn parse(s: &str) -> Option<InputName> {
        let (kind, rest) = s.split_once(':')?;
        match kind {
            "digit" => rest.parse().ok().map(InputName::Digit),
            "pattern" => {
                let (seed, size) = rest.split_once(':')?;
                let (h, w) = size.split_once('x')?;
                let (height, width) = (h.parse().ok()?, w.parse().ok()?);
                if height == 0 || width == 0 {
                    return None;
                }
                Some(InputName::Pattern {
                    seed: seed.parse().ok()?,
                    height,
                    width,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_names_round_trip_and_refuse_anything_else() {
        extern crate std;
        use std::string::ToString;
        for name in [
            InputName::Digit(0),
            InputName::Digit(359),
            InputName::Pattern {
                seed: u32::MAX,
                height: 64,
                width: 7,
            },
        ] {
            assert_eq!(InputName::parse(&name.to_string()), Some(name));
        }
        for bad in [
            "",
            "digit",
            "digit:",
            "digit:-1",
            "digit:x",
            "pattern:1:0x4",
            "pattern:1:4x",
            "pattern:1:4",
            "pattern:-1:4x4",
            "pattern:1:4x4:5",
            "image:3",
        ] {
            assert_eq!(InputName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_pattern_is_reproducible_and_in_range() {
        let mut p = TestPattern::new(4, 5, 9);
        let mut row = [0.0; 15];
        p.read_row(3, &mut row).unwrap();
        assert_eq!(row[7], p.value(3, 2, 1));
        assert_ne!(row[7], TestPattern::new(4, 5, 10).value(3, 2, 1));
        let all: Vec<f32> = (0..4 * 5 * 3)
            .map(|i| p.value(i / 15, i / 3 % 5, i % 3))
            .collect();
        assert!(all.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = all.iter().sum::<f32>() / all.len() as f32;
        assert!(mean.abs() < 0.3, "{mean}");
        assert!(p.read_row(4, &mut row).is_err());
        assert!(p.read_row(0, &mut row[..3]).is_err());
    }

    #[test]
    fn chw_rows_are_interleaved() {
        let data: [f32; 12] = core::array::from_fn(|i| i as f32);
        let mut img = ChwImage::new(&data, 2, 2).unwrap();
        let mut row = [0.0; 6];
        img.read_row(1, &mut row).unwrap();
        assert_eq!(row, [2.0, 6.0, 10.0, 3.0, 7.0, 11.0]);
        assert!(img.read_row(2, &mut row).is_err());
        assert!(ChwImage::new(&data, 3, 2).is_err());
    }
}
