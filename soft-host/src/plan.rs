//! What occupies the arena: every phase's buffers at its peak, from the planner's own
//! declarations (`soft_core::plan_buffers`), merged per worker and grouped into the
//! categories `soft plan` prints and draws.

use soft_core::{Buffer, ModelConfig, Phase, Precision, Schedule};

use crate::error::Result;

/// One buffer of a phase, its copies (one per worker) added up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its declaration and field, e.g. `EmitScratch.hidden`, or `token map`.
    pub name: String,
    /// What kind of memory it is (see [`category`]).
    pub category: &'static str,
    /// Arena bytes of all its copies.
    pub bytes: usize,
    /// Copies (workers).
    pub copies: usize,
}

/// The arena of one phase at its peak, from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseParts {
    /// The phase.
    pub phase: Phase,
    /// Its buffers in arena order (the token map first); their bytes add up to the
    /// plan's figure for the phase.
    pub parts: Vec<Part>,
}

impl PhaseParts {
    /// Arena bytes of the phase.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// The categories, in the order the chart stacks them.
pub const CATEGORIES: [&str; 8] = [
    "token map",
    "input image",
    "V ring",
    "landmarks and Z",
    "kept queries and values",
    "Newton-Schulz matrices",
    "stage-4 keys and values",
    "tiles",
];

/// What kind of memory a buffer is.
pub fn category(b: &Buffer) -> &'static str {
    match (b.group, b.name) {
        ("map", _) => "token map",
        ("WholeImage" | "ImageRing", _) => "input image",
        ("RingScratch", _) => "V ring",
        ("BlockState", "landmarks" | "z") => "landmarks and Z",
        ("BlockState", _) => "kept queries and values",
        ("NewtonScratch", _) => "Newton-Schulz matrices",
        ("Stage4Scratch", "keys" | "values") => "stage-4 keys and values",
        _ => "tiles",
    }
}

/// Every phase's buffers at its peak, in run order.
pub fn breakdown(
    cfg: &ModelConfig,
    (height, width): (usize, usize),
    precision: Precision,
    schedule: &Schedule,
) -> Result<Vec<PhaseParts>> {
    let mut phases: Vec<PhaseParts> = Vec::new();
    soft_core::plan_buffers(cfg, height, width, precision, schedule, &mut |phase, b| {
        if phases.last().is_none_or(|p| p.phase != phase) {
            // Every phase has its token map, so a phase is never left out.
            phases.push(PhaseParts {
                phase,
                parts: Vec::new(),
            });
        }
        let Some(current) = phases.last_mut() else {
            return;
        };
        // Declared but empty in this configuration (a float model's quantisation
        // scratch, the whole-map stores when streaming).
        if b.bytes == 0 {
            return;
        }
        let name = if b.group == "map" {
            b.name.to_string()
        } else {
            format!("{}.{}", b.group, b.name)
        };
        match current.parts.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                p.bytes += b.bytes;
                p.copies += 1;
            }
            None => current.parts.push(Part {
                name,
                category: category(&b),
                bytes: b.bytes,
                copies: 1,
            }),
        }
    })?;
    Ok(phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_to_the_plan_and_name_the_peak() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        for schedule in [Schedule::COMPACT, Schedule::fast(2)] {
            let plan = soft_core::plan_with(&cfg, 224, 224, Precision::F16, &schedule).unwrap();
            let phases = breakdown(&cfg, (224, 224), Precision::F16, &schedule).unwrap();
            assert_eq!(phases.len(), plan.phases.len());
            for (parts, (phase, bytes)) in phases.iter().zip(plan.phases) {
                assert_eq!((parts.phase, parts.bytes()), (phase, bytes));
                assert_eq!(parts.parts[0].name, "token map");
            }
        }
        // The compact peak: stage 1's second pass (see the engine's exact-plan test).
        let phases = breakdown(&cfg, (224, 224), Precision::F16, &Schedule::COMPACT).unwrap();
        let peak = phases.iter().max_by_key(|p| p.bytes()).unwrap();
        assert_eq!(peak.phase, Phase::Blocks(1));
        let bytes = |name: &str| {
            peak.parts
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.bytes)
                .unwrap()
        };
        assert_eq!(bytes("token map"), 56 * 56 * 64 * 2);
        assert_eq!(bytes("RingScratch.ring"), 9 * 56 * 64 * 2);
        assert_eq!(bytes("BlockState.landmarks"), 49 * 64 * 4);
        let categories: Vec<_> = peak.parts.iter().map(|p| p.category).collect();
        assert!(categories.contains(&"V ring") && categories.contains(&"landmarks and Z"));
    }
}
