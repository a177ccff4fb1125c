//! What occupies the arena: every phase's buffers at its peak, from the planner's own
//! declarations (`soft_core::plan_buffers`), merged per worker and grouped into the
//! categories `soft plan` prints and draws.

use soft_core::{Buffer, Memory, ModelConfig, Phase, Placement, Precision, Schedule};

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

/// One memory's arena during one phase at its peak, from its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseParts {
    /// The memory (with one arena, [`Memory::Fast`]).
    pub memory: Memory,
    /// The phase.
    pub phase: Phase,
    /// Its buffers in arena order (the token map first, where it lives); their bytes add
    /// up to the plan's figure for the phase and memory.
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

/// Every phase's buffers at its peak, in run order: the fast (or only) memory's phases,
/// then, if `placement` uses it, the large memory's.
pub fn breakdown(
    cfg: &ModelConfig,
    (height, width): (usize, usize),
    precision: Precision,
    schedule: &Schedule,
    placement: Placement,
) -> Result<Vec<PhaseParts>> {
    let plan = soft_core::plan_placed(cfg, height, width, precision, schedule, placement)?;
    let mut phases: Vec<PhaseParts> = placement
        .memories()
        .iter()
        .flat_map(|&memory| {
            plan.phases.iter().map(move |&(phase, _)| PhaseParts {
                memory,
                phase,
                parts: Vec::new(),
            })
        })
        .collect();
    let mut visit = |memory: Memory, phase: Phase, b: Buffer| {
        let Some(current) = phases
            .iter_mut()
            .find(|p| p.memory == memory && p.phase == phase)
        else {
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
    };
    soft_core::plan_buffers(
        cfg, height, width, precision, schedule, placement, &mut visit,
    )?;
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
            let phases =
                breakdown(&cfg, (224, 224), Precision::F16, &schedule, Placement::ONE).unwrap();
            assert_eq!(phases.len(), plan.phases.len());
            for (parts, (phase, bytes)) in phases.iter().zip(plan.phases) {
                assert_eq!((parts.phase, parts.bytes()), (phase, bytes));
                assert_eq!(parts.parts[0].name, "token map");
            }
        }
        // The compact peak: stage 1's second pass (see the engine's exact-plan test).
        let compact = Schedule::COMPACT;
        let phases = breakdown(&cfg, (224, 224), Precision::F16, &compact, Placement::ONE).unwrap();
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

    #[test]
    fn two_memories_split_the_buffers_by_class() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let compact = Schedule::COMPACT;
        for placement in [Placement::MAPS, Placement::GROWING] {
            let plan = soft_core::plan_placed(&cfg, 448, 448, Precision::F16, &compact, placement)
                .unwrap();
            let phases = breakdown(&cfg, (448, 448), Precision::F16, &compact, placement).unwrap();
            let (fast, large) = phases.split_at(plan.phases.len());
            for (parts, (phase, bytes)) in fast.iter().zip(plan.phases) {
                assert_eq!(
                    (parts.memory, parts.phase, parts.bytes()),
                    (Memory::Fast, phase, bytes)
                );
                assert!(parts.parts.iter().all(|p| p.category != "token map"));
            }
            for (parts, (phase, bytes)) in large.iter().zip(plan.large_phases) {
                assert_eq!(
                    (parts.memory, parts.phase, parts.bytes()),
                    (Memory::Large, phase, bytes)
                );
                assert_eq!(parts.parts[0].name, "token map");
                let newton = parts
                    .parts
                    .iter()
                    .any(|p| p.category == "Newton-Schulz matrices");
                assert!(!newton || placement == Placement::GROWING);
            }
        }
    }
}
