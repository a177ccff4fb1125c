//! The inputs a firmware runs: the demo's test digits and test patterns.

use soft_core::{Error, ImageSource, TestPattern};

/// Side of the demo's input: the 8×8 digits upsampled ×8, as in training.
pub const DIGIT_SIDE: usize = 64;

/// One 8×8 digit (pixels 0..=16), streamed as the normalised 3×64×64 image the model was
/// trained on: `pixel / 16`, nearest ×8 upsampling, `(x − 0.5) / 0.5`, the same plane in
/// all three channels. Matches `soft_host::demo::preprocess` operation for operation, so
/// no 3×64×64 frame is ever stored.
pub struct Digit<'a>(pub &'a [f32; 64]);

impl ImageSource for Digit<'_> {
    fn height(&self) -> usize {
        DIGIT_SIDE
    }

    fn width(&self) -> usize {
        DIGIT_SIDE
    }

    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> soft_core::Result<()> {
        if y >= DIGIT_SIDE || rgb.len() != 3 * DIGIT_SIDE {
            return Err(Error::InputSource);
        }
        let row = &self.0[(y / 8) * 8..][..8];
        for (x, px) in rgb.chunks_exact_mut(3).enumerate() {
            let v = row[x / 8] / 16.0;
            px.fill((v - 0.5) / 0.5);
        }
        Ok(())
    }
}

/// Either input behind one type, so the engine, generic over its image source, is
/// compiled once (a second source type would add a second copy of it, about 120 KB of code).
pub enum Image<'a> {
    /// A test digit.
    Digit(Digit<'a>),
    /// A test pattern.
    Pattern(TestPattern),
}

impl ImageSource for Image<'_> {
    fn height(&self) -> usize {
        match self {
            Image::Digit(d) => d.height(),
            Image::Pattern(p) => p.height(),
        }
    }

    fn width(&self) -> usize {
        match self {
            Image::Digit(d) => d.width(),
            Image::Pattern(p) => p.width(),
        }
    }

    fn read_row(&mut self, y: usize, rgb: &mut [f32]) -> soft_core::Result<()> {
        match self {
            Image::Digit(d) => d.read_row(y, rgb),
            Image::Pattern(p) => p.read_row(y, rgb),
        }
    }
}

/// One input as a log line names it, so the host can rebuild it (the format is
/// `soft_core::InputName`'s, which the host reads).
pub use soft_core::InputName as Input;

/// What a firmware runs through each model: test digits (when the model takes 64×64
/// inputs) and test patterns at the model's input size.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `(index in the test split, 8×8 pixels)`.
    pub digits: &'a [(usize, [f32; 64])],
    /// Test-pattern seeds.
    pub patterns: &'a [u32],
    /// The patterns' side.
    pub side: usize,
}
