//! The memory plan drawn as an SVG bar chart: arena bytes in use in each phase.

use soft_core::{MemoryPlan, Phase};

/// Short label of a phase.
pub fn phase_name(p: Phase) -> String {
    match p {
        Phase::Stem => "stem".into(),
        Phase::Embed(s) => format!("embed {s}"),
        Phase::Position(s) => format!("pos {s}"),
        Phase::Blocks(s) => format!("stage {s}"),
        Phase::Head => "head".into(),
        _ => "other".into(),
    }
}

/// A standalone SVG document.
pub fn plan_svg(plan: &MemoryPlan, title: &str) -> String {
    let (bar, gap, left, top, width) = (22.0, 6.0, 90.0, 40.0, 480.0);
    let max = plan.peak_bytes.max(1) as f64;
    let height = top + plan.phases.len() as f64 * (bar + gap) + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n",
        left + width + 120.0,
        escape(title)
    );
    for (i, (phase, bytes)) in plan.phases.iter().enumerate() {
        let y = top + i as f64 * (bar + gap);
        let w = *bytes as f64 / max * width;
        let fill = if *bytes == plan.peak_bytes {
            "#d9534f"
        } else {
            "#5b8def"
        };
        s += &format!(
            "<text x=\"10\" y=\"{}\">{}</text><rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"{fill}\"/>\
             <text x=\"{}\" y=\"{}\">{:.1} KiB</text>\n",
            y + 15.0,
            phase_name(*phase),
            left + w + 6.0,
            y + 15.0,
            *bytes as f64 / 1024.0
        );
    }
    s + "</svg>\n"
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
