//! Where a run's buffers live when it has two memories: a small fast one (SRAM) and a
//! large slower one (PSRAM, OctoSPI RAM). Every declared buffer has a [`Class`] saying
//! how it grows with the input; a [`Placement`] maps each class to a [`Memory`].

/// How a buffer's size grows with the input, which decides where it may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Class {
    /// Tiles, rings and per-chunk working buffers: a chunk of tokens' rows (some as wide
    /// as the landmark count, `heads·m`), or a few map rows. They grow with the input too,
    /// but slowly (soft_tiny: 133 KB at 224², 389 KB at 896²), and the hot loops read
    /// them, so they are always fast.
    Working,
    /// Grows with the landmark count `m` (∝ tokens): landmarks, `Z`, the `m×m`
    /// Newton–Schulz matrices.
    Landmarks,
    /// Grows with the token count: token maps, the whole image, whole-map queries and
    /// values, stage 4's keys and values.
    Tokens,
}

/// One of a run's two memories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Memory {
    /// The fast memory (SRAM); with one arena, the only one.
    Fast,
    /// The large memory (PSRAM).
    Large,
}

/// Which memory each [`Class`] of buffer lives in; [`Class::Working`] is always fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Placement {
    /// Where the landmark-sized buffers go.
    pub landmarks: Memory,
    /// Where the token-sized buffers go.
    pub tokens: Memory,
}

impl Placement {
    /// Everything in one memory: one arena.
    pub const ONE: Placement = Placement {
        landmarks: Memory::Fast,
        tokens: Memory::Fast,
    };
    /// Token-sized buffers in the large memory; landmarks and Newton–Schulz matrices stay
    /// fast, where the attention's hot products read them.
    pub const MAPS: Placement = Placement {
        landmarks: Memory::Fast,
        tokens: Memory::Large,
    };
    /// Everything that grows with the input in the large memory: the fast memory then
    /// needs only the working buffers, which grow far more slowly.
    pub const GROWING: Placement = Placement {
        landmarks: Memory::Large,
        tokens: Memory::Large,
    };

    /// The memory a buffer of `class` lives in.
    pub const fn memory(&self, class: Class) -> Memory {
        match class {
            Class::Working => Memory::Fast,
            Class::Landmarks => self.landmarks,
            Class::Tokens => self.tokens,
        }
    }

    /// The presets by name, as tools and logs spell them.
    pub const NAMED: [(&'static str, Placement); 3] = [
        ("one", Placement::ONE),
        ("maps", Placement::MAPS),
        ("growing", Placement::GROWING),
    ];

    /// The preset's name (`one`, `maps`, `growing`), or `custom`.
    pub fn name(&self) -> &'static str {
        Placement::NAMED
            .iter()
            .find(|(_, p)| p == self)
            .map_or("custom", |(name, _)| name)
    }

    /// The preset called `name`.
    pub fn from_name(name: &str) -> Option<Placement> {
        Placement::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }

    /// The memories it uses: the fast one, and the large one if anything goes there.
    pub fn memories(&self) -> &'static [Memory] {
        if self.uses_large() {
            &[Memory::Fast, Memory::Large]
        } else {
            &[Memory::Fast]
        }
    }

    /// Whether anything goes to the large memory.
    pub const fn uses_large(&self) -> bool {
        matches!(self.landmarks, Memory::Large) || matches!(self.tokens, Memory::Large)
    }
}

impl Default for Placement {
    fn default() -> Self {
        Placement::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_buffers_are_always_fast() {
        for p in [Placement::ONE, Placement::MAPS, Placement::GROWING] {
            assert_eq!(p.memory(Class::Working), Memory::Fast);
        }
        assert!(!Placement::ONE.uses_large());
        assert_eq!(Placement::MAPS.memory(Class::Tokens), Memory::Large);
        assert_eq!(Placement::MAPS.memory(Class::Landmarks), Memory::Fast);
        assert_eq!(Placement::GROWING.memory(Class::Landmarks), Memory::Large);
    }

    #[test]
    fn names_round_trip() {
        for (name, p) in Placement::NAMED {
            assert_eq!((Placement::from_name(name), p.name()), (Some(p), name));
        }
        let custom = Placement {
            landmarks: Memory::Large,
            tokens: Memory::Fast,
        };
        assert_eq!(
            (custom.name(), Placement::from_name("two")),
            ("custom", None)
        );
    }
}
