//! Charts as standalone SVG documents: the memory plan as stacked bars (what occupies
//! the arena in each phase), and `soft eval`'s confusion matrix.

use soft_core::Phase;

use crate::plan::{PhaseParts, CATEGORIES};

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

/// The memory plan as a standalone SVG document: one bar per phase, stacked from the
/// arena's start by what occupies it (the categories of [`crate::plan`], each with its own
/// colour and a legend; every segment's tooltip names the buffer and its bytes). The
/// peak phase's label is bold.
pub fn plan_svg(phases: &[PhaseParts], title: &str) -> String {
    const COLOURS: [&str; 8] = [
        "#4e79a7", "#9c755f", "#f28e2b", "#59a14f", "#edc948", "#e15759", "#b07aa1", "#bab0ac",
    ];
    let colour = |category: &str| {
        CATEGORIES
            .iter()
            .position(|c| *c == category)
            .and_then(|i| COLOURS.get(i))
            .copied()
            .unwrap_or("#888888")
    };
    let (bar, gap, left, top, width) = (22.0, 6.0, 90.0, 40.0, 480.0);
    let peak = phases.iter().map(PhaseParts::bytes).max().unwrap_or(0);
    let max = peak.max(1) as f64;
    let legend_top = top + phases.len() as f64 * (bar + gap) + 10.0;
    let height = legend_top + CATEGORIES.len().div_ceil(2) as f64 * 18.0 + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n",
        left + width + 120.0,
        escape(title)
    );
    for (i, phase) in phases.iter().enumerate() {
        let y = top + i as f64 * (bar + gap);
        let bytes = phase.bytes();
        let weight = if bytes == peak { "bold" } else { "normal" };
        s += &format!(
            "<text x=\"10\" y=\"{}\" font-weight=\"{weight}\">{}</text>\n",
            y + 15.0,
            phase_name(phase.phase)
        );
        let mut x = left;
        for part in &phase.parts {
            let w = part.bytes as f64 / max * width;
            s += &format!(
                "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"{}\" stroke=\"white\" stroke-width=\"0.5\"><title>{}: {} bytes ({})</title></rect>\n",
                colour(part.category),
                escape(&part.name),
                part.bytes,
                part.category
            );
            x += w;
        }
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\">{:.1} KiB</text>\n",
            x + 6.0,
            y + 15.0,
            bytes as f64 / 1024.0
        );
    }
    for (i, category) in CATEGORIES.iter().enumerate() {
        let (x, y) = (
            10.0 + (i % 2) as f64 * 260.0,
            legend_top + (i / 2) as f64 * 18.0,
        );
        s += &format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{category}</text>\n",
            colour(category),
            x + 18.0,
            y + 10.0
        );
    }
    s + "</svg>\n"
}

/// A confusion matrix: rows are true classes, columns predicted ones, both named by
/// `labels` in order; `cells` are the non-zero cells as ((row, column), samples). A
/// cell's shade is its share of its row, blue on the diagonal (right) and red off it
/// (wrong); each cell has a tooltip. Names are written on the axes, and counts in the
/// cells, while they fit (up to 56 and 28 classes); a larger matrix shrinks to at least
/// 2 px a cell.
pub fn confusion_svg(title: &str, labels: &[String], cells: &[((usize, usize), usize)]) -> String {
    const NAME_CHARS: usize = 20;
    let n = labels.len().max(1);
    let cell = (560.0 / n as f64).clamp(2.0, 32.0);
    let (show_names, show_counts) = (cell >= 10.0, cell >= 20.0);
    let names: Vec<String> = labels
        .iter()
        .map(|l| {
            let l = crate::console::one_line(l);
            if l.chars().count() > NAME_CHARS {
                l.chars().take(NAME_CHARS - 1).chain(['…']).collect()
            } else {
                l
            }
        })
        .collect();
    let longest = if show_names {
        names.iter().map(|l| l.chars().count()).max().unwrap_or(0)
    } else {
        0
    };
    let margin = longest as f64 * 7.0 + 10.0;
    let (left, top, side) = (30.0 + margin, 50.0 + margin, cell * n as f64);
    let mut row_totals = vec![0usize; n];
    for &((r, _), count) in cells {
        if let Some(t) = row_totals.get_mut(r) {
            *t += count;
        }
    }
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n\
         <text x=\"{left}\" y=\"40\">predicted class</text>\n\
         <text transform=\"translate(18,{top}) rotate(90)\">true class</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{side}\" height=\"{side}\" fill=\"#f7f7f7\" stroke=\"#cccccc\"/>\n",
        (left + side + 20.0).max(400.0),
        top + side + 20.0,
        escape(title)
    );
    if show_names {
        for (i, name) in names.iter().enumerate() {
            let middle = i as f64 * cell + cell / 2.0 + 4.0;
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
                 <text transform=\"translate({},{}) rotate(-90)\">{}</text>\n",
                left - 4.0,
                top + middle,
                escape(name),
                left + middle,
                top - 4.0,
                escape(name)
            );
        }
    }
    for &((r, c), count) in cells {
        if r >= n || c >= n || count == 0 {
            continue;
        }
        let share = count as f64 / row_totals[r].max(1) as f64;
        let fill = if r == c { "#5b8def" } else { "#d9534f" };
        let (x, y) = (left + c as f64 * cell, top + r as f64 * cell);
        s += &format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" fill-opacity=\"{:.3}\">\
             <title>{} as {}: {count} ({:.1} %)</title></rect>\n",
            0.15 + 0.85 * share,
            escape(&names[r]),
            escape(&names[c]),
            100.0 * share
        );
        if show_counts {
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{count}</text>\n",
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    s + "</svg>\n"
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_matrices_name_their_classes_and_shade_by_row() {
        let labels: Vec<String> = ["cat", "dog", "<fish & chips>\n"]
            .map(String::from)
            .to_vec();
        let svg = confusion_svg("m.soft", &labels, &[((0, 0), 3), ((0, 1), 1), ((2, 2), 2)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(
            svg.contains("&lt;fish &amp; chips&gt;\\n"),
            "escaped: {svg}"
        );
        assert!(svg.contains("cat as dog: 1 (25.0 %)"));
        assert!(svg.contains("cat as cat: 3 (75.0 %)"));
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 3,
            "a frame and three cells"
        );
        // 200 classes: no names, no counts, cells of 2.8 px.
        let many: Vec<String> = (0..200).map(|i| format!("class {i}")).collect();
        let svg = confusion_svg("big", &many, &[((5, 7), 1)]);
        assert!(!svg.contains("class 5</text>") && svg.contains("width=\"2.8\""));
    }
}
