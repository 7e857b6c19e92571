//! The sweep's picture: each policy's points and frontier, cost against under-provisioned
//! minutes, as an SVG file (text, no fonts or plotting stack needed to write it; any browser
//! shows it). Minutes on a log scale (of 1 + minutes): the settings that matter are short for
//! minutes, the loosest for days, and a linear axis squeezed the first against zero.

use std::fmt::Write;

use super::frontier::{Point, frontier};

const W: f64 = 760.0;
const H: f64 = 480.0;
/// Plot area: left, top, right, bottom.
const AREA: (f64, f64, f64, f64) = (80.0, 40.0, 600.0, 420.0);
const COLOURS: [&str; 9] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#555555", "#e377c2", "#8c564b",
    "#17becf",
];

/// `title`, then per policy (name, its points) a marker per point and a line along its
/// frontier; axes from zero to the largest value.
pub fn svg(title: &str, policies: &[(String, Vec<Point>)]) -> String {
    let all = policies.iter().flat_map(|(_, p)| p);
    let finite = |v: f64| v.is_finite().then_some(v);
    let max_x = all
        .clone()
        .filter_map(|p| finite(p.underprovisioned_minutes))
        .fold(0.0, f64::max);
    let max_y = all.filter_map(|p| finite(p.cost)).fold(0.0, f64::max);
    // Decades of 1 + minutes: at least one.
    let (decades, sy) = ((1.0 + max_x).log10().ceil().max(1.0), nice(max_y));
    let (l, t, r, b) = AREA;
    let x = |v: f64| l + (r - l) * (1.0 + v.max(0.0)).log10() / decades;
    let y = |v: f64| b - (b - t) * v / sy;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{l}" y="24" font-size="14">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<path d="M{l},{t} L{l},{b} L{r},{b}" fill="none" stroke="black"/>"#
    );
    for k in 0..=decades as i32 {
        let vx = if k == 0 { 0.0 } else { 10f64.powi(k) };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(vx),
            b + 16.0,
            tick(vx)
        );
    }
    for k in 0..=5 {
        let vy = sy * k as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            l - 6.0,
            y(vy) + 4.0,
            tick(vy)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">under-provisioned minutes (log scale of 1 + minutes)</text>"#,
        (l + r) / 2.0,
        b + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">cost (USD)</text>"#,
        (t + b) / 2.0,
        (t + b) / 2.0
    );
    for (k, (name, points)) in policies.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let line: Vec<String> = frontier(points)
            .iter()
            .map(|&i| {
                let p = &points[i];
                format!("{:.1},{:.1}", x(p.underprovisioned_minutes), y(p.cost))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            line.join(" ")
        );
        for p in points.iter().filter(|p| p.cost.is_finite()) {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{} {}: {:.2} USD, {:.0} min</title></circle>"#,
                x(p.underprovisioned_minutes),
                y(p.cost),
                escape(name),
                escape(&p.setting),
                p.cost,
                p.underprovisioned_minutes
            );
        }
        let ly = t + 10.0 + 20.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            r + 20.0,
            r + 44.0,
            r + 50.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis end at or above `v` (1, 2 or 5 times a power of ten).
fn nice(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_gets_its_frontier_line_markers_and_a_legend() {
        let p = |setting: &str, cost: f64, minutes: f64| Point {
            setting: setting.into(),
            cost,
            underprovisioned_minutes: minutes,
            sla_violations: 0,
        };
        let policies = vec![
            (
                "wfe".to_string(),
                vec![p("risk=0.1", 40.0, 10.0), p("risk=0.2", 30.0, 35.0)],
            ),
            (
                "a<b".to_string(),
                vec![p("x", 90.0, 0.0), p("y", 95.0, 5.0)],
            ),
        ];
        let s = svg("smd & asd", &policies);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 4);
        assert!(s.contains("smd &amp; asd") && s.contains("a&lt;b"));
        // The dominated point (95 USD, 5 min) is a marker but not on the line.
        assert!(s.contains(r#"<polyline points="80.0,78.0""#), "{s}");
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(95.0), 100.0);
        assert_eq!(nice(35.0), 50.0);
        assert_eq!(nice(101.0), 200.0);
    }
}
