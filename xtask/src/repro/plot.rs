//! Minimal SVG line charts for reports. Written here rather than with plotters because
//! plotters needs a font backend (fontconfig, or a font embedded in the binary) for any axis
//! text; an SVG `<text>` element leaves fonts to the viewer.

use std::fmt::Write as _;

/// One line: points `(x, y)` and an optional horizontal reference (a baseline) drawn dashed
/// in the same colour.
pub struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    baseline: Option<f64>,
}

impl Series {
    pub fn new(name: &str, xs: &[f64], ys: &[f64]) -> Self {
        Self {
            name: name.to_string(),
            points: xs.iter().copied().zip(ys.iter().copied()).collect(),
            baseline: None,
        }
    }

    pub fn with_baseline(mut self, y: f64) -> Self {
        self.baseline = Some(y);
        self
    }
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A line chart with linear axes.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.baseline));
    let (x_min, x_max) = bounds(xs);
    let (y_min, y_max) = bounds(ys);
    let sx = |x: f64| MARGIN + (x - x_min) / (x_max - x_min) * (WIDTH - 2.0 * MARGIN);
    let sy = |y: f64| HEIGHT - MARGIN - (y - y_min) / (y_max - y_min) * (HEIGHT - 2.0 * MARGIN);

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
        WIDTH / 2.0,
        escape(title)
    );
    let (left, right, top, bottom) = (MARGIN, WIDTH - MARGIN, MARGIN, HEIGHT - MARGIN);
    let _ = writeln!(
        svg,
        "<path d=\"M{left} {top} V{bottom} H{right}\" stroke=\"black\" fill=\"none\"/>"
    );
    for i in 0..=4 {
        let fraction = i as f64 / 4.0;
        let (x, y) = (
            x_min + fraction * (x_max - x_min),
            y_min + fraction * (y_max - y_min),
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x:.3}</text>",
            sx(x),
            bottom + 18.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.3}</text>",
            left - 6.0,
            sy(y) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        WIDTH / 2.0,
        HEIGHT - 16.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        HEIGHT / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" stroke=\"{colour}\" stroke-width=\"2\" fill=\"none\"/>",
            path.join(" ")
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                sx(x),
                sy(y)
            );
        }
        if let Some(y) = s.baseline {
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{right}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"{colour}\" stroke-dasharray=\"6 4\"/>",
                sy(y)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            right - 150.0,
            top + 16.0 * (i as f64 + 1.0),
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The range of the values, widened so that a single value or a flat line still has height.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
