//! One small deterministic generator for everything that must be the same on every
//! machine and every run: test and benchmark operands, calibration inputs, synthetic
//! checkpoints. Not for anything that needs unpredictability.

/// xorshift64 (shifts 13, 7, 17). The state must not be zero (it would stay zero).
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from its raw state (callers mix their seeds as they like; `seed | 1`
    /// is never zero).
    pub const fn new(state: u64) -> Self {
        debug_assert!(state != 0, "a zero xorshift state stays zero");
        XorShift64(state)
    }

    /// The next state (`const`, so firmware can fill statics at compile time).
    pub const fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[0, 1)` on a 2⁻²⁴ grid: the state's top 24 bits, exact in f32.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-1, 1)`: `unit() · 2 − 1`.
    pub fn signed(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }

    /// Uniform in `0..n` (slightly biased for huge `n`; `n` must not be zero).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_xorshift64() {
        let mut r = XorShift64::new(1);
        // 1 ^ 1<<13 = 0x2001; ^ >>7 = 0x2041; ^ <<17 = 0x4082_2041.
        assert_eq!(r.next_u64(), 0x4082_2041);
        let mut a = XorShift64::new(7);
        let v: Vec<f32> = (0..1000).map(|_| a.signed()).collect();
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(v.iter().any(|&x| x < -0.9) && v.iter().any(|&x| x > 0.9));
    }
}
