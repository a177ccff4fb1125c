//! Outputs pinned bit for bit: FNV-1a digests of bytes, and the pinned lists (one line an
//! entry) that tests compare their digests with.

/// FNV-1a (64-bit) over `bytes`.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a over the values' bit patterns (little-endian).
pub fn bits_digest(values: &[f32]) -> u64 {
    fnv1a(values.iter().flat_map(|v| v.to_bits().to_le_bytes()))
}

/// The entries of a pinned list: its lines, trimmed, without the empty ones.
pub fn lines(pinned: &str) -> Vec<&str> {
    pinned
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_and_lines_are_what_the_pins_were_made_with() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a([]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(bits_digest(&[1.0]), fnv1a(0x3f80_0000u32.to_le_bytes()));
        assert_eq!(lines("\n  a 1\n\n  b 2\n"), ["a 1", "b 2"]);
    }
}
