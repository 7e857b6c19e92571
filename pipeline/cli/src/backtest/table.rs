//! `wfe backtest`'s Markdown table.

use super::{BacktestReport, Figures, POLICIES};

/// The Markdown table: per policy, the totals, and cost relative to reactive and oracle.
pub fn render(r: &BacktestReport) -> String {
    let hours: f64 = r.hours.values().sum();
    let mut s = format!(
        "# wfe backtest: {} ({} entities, {:.0} test hours)\n\n",
        r.data,
        r.hours.len(),
        hours
    );
    s.push_str(
        "| policy | cost (USD) | x reactive | x oracle | slack | under-provisioned min | SLA violations (h) | changes |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let total = |p: &str| r.policies.get(p).and_then(|t| t.get("total"));
    let ratio = |a: f64, b: Option<&Figures>| {
        b.filter(|b| b.cost > 0.0)
            .map_or("-".to_string(), |b| format!("{:.3}", a / b.cost))
    };
    for p in POLICIES {
        let Some(f) = total(p) else { continue };
        s.push_str(&format!(
            "| {p} | {:.2} | {} | {} | {:.3} | {:.0} | {} | {} |\n",
            f.cost,
            ratio(f.cost, total("reactive")),
            ratio(f.cost, total("oracle")),
            f.slack,
            f.underprovisioned_minutes,
            f.sla_violations,
            f.changes
        ));
    }
    s
}
