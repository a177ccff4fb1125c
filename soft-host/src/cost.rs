//! Multiply-accumulate counts of a SOFT model, for benchmark tables.
//!
//! [`macs`] counts the multiply-accumulates one inference performs *as this engine
//! computes it* on the streaming layout (the compact schedule), which is more than the
//! paper's count because that layout trades work for memory (it never stores `Q`, `V` or
//! the `N×m` kernel matrix `K1`); [`macs_for`] counts any schedule's (the whole-map
//! layout computes each block's queries and values once):
//!
//! - **Counted**: every product that is summed into an accumulator — the weight products
//!   of linear layers and convolutions, dot products and squared distances (one MAC per
//!   coordinate of `|q - l|²`), matrix products, the depthwise V-convolution, the softmax
//!   attention's scores and weighted sums.
//! - **Not counted**: elementwise work that is linear in the activations — biases,
//!   LayerNorm, GELU, `exp`, query scaling, residual adds, the bilinear position
//!   embedding, the int8 per-output scale, SOFT-Norm's `diag(s)·V·diag(s)` and row sums.
//! - **Padding**: convolution taps that fall outside the image are skipped by the engine
//!   and so are not counted (this is exact, and slightly below `out·k²·cin·cout`).
//!
//! Per SOFT block (stages 1–3; `N` tokens, width `C`, `h` heads of `d`, `m` landmarks,
//! ratio `r`, V-conv `k`):
//!
//! | part | MACs |
//! |---|---|
//! | queries: landmark pass over `m·r²` tokens, pass 1 and pass 2 over `N` (whole maps: once, `N·C²`) | `(m·r² + 2N)·C²` |
//! | values: pass 1 and the V ring of pass 2 (whole maps: once, `N·C²`) | `2N·C²` |
//! | landmark conv (one `d×d×r×r` weight, applied per head) | `m·r²·h·d²` |
//! | `K1` rows (both passes), `K1ᵀV` (pass 1), `K1·Z` (pass 2) | `4·N·m·C` |
//! | `K2` and `Z = pinv·S`, per head | `2·h·m²·d` |
//! | Newton–Schulz, per head | `h·iters·2·m³` |
//! | where the plan has it form `P` again at every step (`MemoryPlan::newton_keeps_p`), per head | `h·iters·m²·d` |
//! | SOFT-Norm only: `K2` of the alpha search and one trial `K2·V` | `h·(2·m²·d + m³)` |
//! | depthwise V-conv (in-image taps only) | `≈ N·k²·C` |
//! | output projection, MLP `C→4C→C` | `N·C² + 8·N·C²` |
//!
//! Stage-4 blocks over `n = 1 + N4` tokens (class token included, as the engine runs it):
//! `q` `n·C²`, `kv` `2n·C²`, scores and weighted sums `2·n²·C`, `proj` `n·C²`,
//! MLP `2·n·C·hidden`. Then the head, `C4·classes`.

use soft_core::plan_placed;
use soft_core::{ModelConfig, Placement, Precision, Schedule};

/// Output size of a 3×3, pad-1, stride-2 convolution, as the engine computes it.
const fn half(x: usize) -> usize {
    x.div_ceil(2)
}

/// In-image taps along one axis of a `k`-wide convolution with padding `k/2` and
/// `stride`, summed over all `out` output positions of an input of length `len`.
fn taps(len: usize, out: usize, k: usize, stride: usize) -> u64 {
    let pad = k / 2;
    let mut n = 0u64;
    for o in 0..out {
        for t in 0..k {
            if let Some(i) = (o * stride + t).checked_sub(pad) {
                if i < len {
                    n += 1;
                }
            }
        }
    }
    n
}

/// MACs of a 3×3 pad-1 convolution `(h, w)` → `(oh, ow)`, `cin → cout`.
fn conv3x3(
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    cin: usize,
    cout: usize,
) -> u64 {
    taps(h, oh, 3, stride) * taps(w, ow, 3, stride) * (cin * cout) as u64
}

/// MACs of one SOFT block over a `rows × cols` map of stage `s` (0-based, 0..3), with
/// whole maps or streamed, `forms_p` where Newton–Schulz forms `P` again at every step.
fn soft_block(
    cfg: &ModelConfig,
    s: usize,
    (rows, cols): (usize, usize),
    whole: bool,
    forms_p: bool,
) -> u64 {
    let u = |x: usize| x as u64;
    let (n, c, h, d) = (
        u(rows * cols),
        u(cfg.embed_dims[s]),
        u(cfg.heads[s]),
        u(cfg.head_dim(s)),
    );
    let (r, k) = (cfg.landmark_ratios[s], cfg.vconv_sizes[s]);
    let m = u((rows / r) * (cols / r));
    let patch = m * u(r * r);
    let iters = u(cfg.newton_iters);
    let (queries, values) = if whole {
        (n * c * c, n * c * c)
    } else {
        ((patch + 2 * n) * c * c, 2 * n * c * c)
    };
    let landmark_conv = patch * h * d * d;
    let kernel = 4 * n * m * c;
    let k2_and_z = 2 * h * m * m * d;
    let newton = h * iters * (2 * m * m * m + u64::from(forms_p) * m * m * d);
    let norm_search = if cfg.normalized {
        h * (2 * m * m * d + m * m * m)
    } else {
        0
    };
    let vconv = taps(rows, rows, k, 1) * taps(cols, cols, k, 1) * c;
    let proj_mlp = n * c * c + 8 * n * c * c;
    queries + values + landmark_conv + kernel + k2_and_z + newton + norm_search + vconv + proj_mlp
}

/// MACs of one stage-4 block over `n` tokens (class token included).
fn stage4_block(cfg: &ModelConfig, n: usize) -> u64 {
    let (n, c, hid) = (
        n as u64,
        cfg.embed_dims[3] as u64,
        cfg.stage4_mlp_hidden as u64,
    );
    let q = n * c * c;
    let kv = 2 * n * c * c;
    let attention = 2 * n * n * c;
    let proj = n * c * c;
    let mlp = 2 * n * c * hid;
    q + kv + attention + proj + mlp
}

/// Multiply-accumulates of one inference of `cfg` on a `height × width` image on the
/// compact (streaming) schedule, counted as described in the [module docs](self). Sizes
/// the engine would reject (a stage smaller than its landmark ratio) count zero landmarks
/// rather than failing.
pub fn macs(cfg: &ModelConfig, height: usize, width: usize) -> u64 {
    macs_for(cfg, height, width, &Schedule::COMPACT)
}

/// [`macs`] for a run with `schedule` (f16 token maps, one arena).
pub fn macs_for(cfg: &ModelConfig, height: usize, width: usize, schedule: &Schedule) -> u64 {
    macs_placed(cfg, height, width, Precision::F16, schedule, Placement::ONE)
}

/// [`macs`] for a run with `precision` token maps, `schedule` and `placement`: they decide
/// where the pseudo-inverse forms `P` again (`MemoryPlan::newton_keeps_p`).
pub fn macs_placed(
    cfg: &ModelConfig,
    height: usize,
    width: usize,
    precision: Precision,
    schedule: &Schedule,
    placement: Placement,
) -> u64 {
    let keeps_p = plan_placed(cfg, height, width, precision, schedule, placement)
        .map_or([true; 3], |plan| plan.newton_keeps_p);
    let c = cfg.embed_dims;
    let sw = cfg.stem_width;
    let stem = (half(height), half(width));
    let mut stage = [(half(stem.0), half(stem.1)); 4];
    for s in 1..4 {
        stage[s] = (half(stage[s - 1].0), half(stage[s - 1].1));
    }
    let mut total = conv3x3(height, width, stem.0, stem.1, 2, 3, sw)
        + conv3x3(stem.0, stem.1, stem.0, stem.1, 1, sw, sw)
        + conv3x3(stem.0, stem.1, stage[0].0, stage[0].1, 2, sw, c[0]);
    for s in 1..4 {
        let ((h, w), (oh, ow)) = (stage[s - 1], stage[s]);
        total += conv3x3(h, w, oh, ow, 2, c[s - 1], c[s]);
    }
    for (s, &size) in stage.iter().enumerate().take(3) {
        let forms_p = !keeps_p[s];
        total += cfg.depths[s] as u64 * soft_block(cfg, s, size, schedule.whole_maps, forms_p);
    }
    let n4 = stage[3].0 * stage[3].1 + 1;
    total += cfg.depths[3] as u64 * stage4_block(cfg, n4);
    total + (c[3] * cfg.num_classes) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage at the smallest size the engine accepts: one landmark per stage.
    fn tiny() -> ModelConfig {
        let mut c = ModelConfig::preset("soft_tiny").unwrap();
        c.stem_width = 2;
        c.embed_dims = [2, 4, 4, 4];
        c.heads = [1, 2, 2, 2];
        c.depths = [1, 1, 1, 1];
        c.vconv_sizes = [3, 3, 3];
        c.stage4_mlp_hidden = 8;
        c.num_classes = 3;
        c.newton_iters = 2;
        c.pos_grids = [8, 4, 2, 1];
        c.validate().unwrap();
        c
    }

    #[test]
    fn hand_computed_tiny_config() {
        // 32×32 input: stem 16², stages 8², 4², 2², 1² (+ class token).
        // In-image taps per axis: stride 2 on an even length L is 3·(L/2) - 1, stride 1
        // with k = 3 is 3L - 2.
        let stem = 47 * 47 * 3 * 2 // conv 3→2, 32 → 16
            + 46 * 46 * 2 * 2 // conv 2→2, 16 → 16
            + 23 * 23 * 2 * 2; // conv 2→2, 16 → 8
        let embeds = 11 * 11 * 2 * 4 // 8 → 4
            + 5 * 5 * 4 * 4 // 4 → 2
            + 2 * 2 * 4 * 4; // 2 → 1
                             // Stage 1: N 64, C 2, h 1, d 2, r 8, m 1, k 3, 2 Newton iterations.
        let stage1 = (64 + 128) * 4 // queries
            + 128 * 4 // values
            + 64 * 4 // landmark conv
            + 4 * 64 * 2 // K1 rows ×2, K1ᵀV, K1·Z
            + 2 * 2 // K2, Z
            + 2 * 2 // Newton–Schulz
            + 22 * 22 * 2 // vconv
            + 64 * 4 // out projection
            + 8 * 64 * 4; // MLP
                          // Stage 2: N 16, C 4, h 2, d 2, r 4, m 1.
        let stage2 = (16 + 32) * 16
            + 32 * 16
            + 16 * 2 * 4
            + 4 * 16 * 4
            + 2 * 2 * 2
            + 2 * 2 * 2
            + 10 * 10 * 4
            + 16 * 16
            + 8 * 16 * 16;
        // Stage 3: N 4, C 4, h 2, d 2, r 2, m 1.
        let stage3 = (4 + 8) * 16
            + 8 * 16
            + 4 * 2 * 4
            + 4 * 4 * 4
            + 2 * 2 * 2
            + 2 * 2 * 2
            + 4 * 4 * 4
            + 4 * 16
            + 8 * 4 * 16;
        // Stage 4: n 2, C 4, hidden 8.
        let stage4 = 2 * 16 + 2 * 2 * 16 + 2 * 2 * 2 * 4 + 2 * 16 + 2 * 2 * 4 * 8;
        let head = 4 * 3;
        assert_eq!(stage1, 5328);
        assert_eq!(stage2, 4384);
        assert_eq!(stage3, 1072);
        assert_eq!(stage4, 288);
        let want = stem + embeds + stage1 + stage2 + stage3 + stage4 + head;
        assert_eq!(want, 36350);
        assert_eq!(macs(&tiny(), 32, 32), want);

        // SOFT-Norm adds, per head and block, K2 twice and one trial K2·V (m = 1, d = 2).
        let mut norm = tiny();
        norm.normalized = true;
        let extra = (2 * 2 + 1) * (1 + 2 + 2);
        assert_eq!(macs(&norm, 32, 32), want + extra);
    }

    #[test]
    fn whole_maps_skip_recomputed_queries_and_values() {
        let cfg = tiny();
        // Streamed: queries (patch + 2N)·C², values 2N·C²; whole maps: N·C² each.
        let saved = |n: u64, c: u64, patch: u64| (patch + 2 * n) * c * c;
        let want = saved(64, 2, 64) + saved(16, 4, 16) + saved(4, 4, 4);
        let whole = Schedule::fast(1);
        assert_eq!(macs(&cfg, 32, 32) - macs_for(&cfg, 32, 32, &whole), want);
    }

    #[test]
    fn soft_tiny_224_is_near_the_papers_count() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let g = macs(&cfg, 224, 224) as f64 / 1e9;
        // The paper reports ~1.9 G for the reference; this engine recomputes queries and
        // values (twice each) and K1 rows (twice), so it does somewhat more.
        println!("soft_tiny 224x224: {g:.3} GMAC");
        assert!((1.5..3.0).contains(&g), "{g}");
        // At 448² the landmark count is 196 and Newton–Schulz dominates.
        let g448 = macs(&cfg, 448, 448) as f64 / 1e9;
        println!("soft_tiny 448x448: {g448:.3} GMAC");
        assert!(g448 > 4.0 * g);
    }

    #[test]
    fn newton_counts_p_formed_again_where_the_plan_has_it() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let compact = Schedule::COMPACT;
        // At 224² other steps are larger and `P` is kept; at 448² stage 1's
        // pseudo-inverse sets the model's peak and forms `P` again at each of its 20
        // steps, while stages 2–3, under that peak, keep it.
        let keeps = |side| plan_placed(&cfg, side, side, Precision::F16, &compact, Placement::ONE);
        assert_eq!(keeps(224).unwrap().newton_keeps_p, [true; 3]);
        assert_eq!(keeps(448).unwrap().newton_keeps_p, [false, true, true]);
        // Newton–Schulz alone: 20 steps of two m×m products per head, and at 448² `P`
        // formed again (m²·d squared-distance terms) at each.
        let newton = |side: usize| {
            let none = ModelConfig {
                newton_iters: 0,
                ..cfg
            };
            macs(&cfg, side, side) - macs(&none, side, side)
        };
        let want = |m: u64, forms_p: [bool; 3]| -> u64 {
            (0..3)
                .map(|s| {
                    let (n, h, d) = (cfg.depths[s], cfg.heads[s], cfg.head_dim(s));
                    let step = 2 * m * m * m + u64::from(forms_p[s]) * m * m * d as u64;
                    (n * h) as u64 * 20 * step
                })
                .sum()
        };
        assert_eq!(newton(224), want(49, [false; 3]));
        assert_eq!(newton(448), want(196, [true, false, false]));
    }
}
