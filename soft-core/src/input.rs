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
        for (ch, px) in (0..3).flat_map(|ch| (0..w).map(move |x| (ch, x))) {
            let src = self
                .data
                .get(ch * plane + y * w + px)
                .ok_or(Error::InputSource)?;
            if let Some(dst) = rgb.get_mut(px * 3 + ch) {
                *dst = *src;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
