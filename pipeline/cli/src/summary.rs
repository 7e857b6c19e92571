//! The end-of-run summary.

use std::fmt::Write;

use wfe_contract::Topic;
use wfe_runtime::RunReport;

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn counter(report: &RunReport, stage: &str, name: &str) -> u64 {
    report
        .stages
        .iter()
        .find(|s| s.name == stage)
        .and_then(|s| s.counters.get(name))
        .copied()
        .unwrap_or(0)
}

/// Rows per topic, anomalies, decisions, bad input, and the files written.
pub fn render(report: &RunReport) -> String {
    let mut s = String::new();
    let secs = report.elapsed.as_secs_f64();
    let values = report.rows.get(&Topic::MetricsRaw).copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "\nwfe run {} in {secs:.2} s ({:.2} M values/s)",
        if report.stopped {
            "stopped early"
        } else {
            "finished"
        },
        values as f64 / secs.max(1e-9) / 1e6
    );
    let _ = writeln!(s, "\n{:<14} {:>14}", "topic", "rows");
    for t in Topic::ALL {
        let _ = writeln!(
            s,
            "{:<14} {:>14}",
            t.name(),
            thousands(report.rows.get(&t).copied().unwrap_or(0))
        );
    }
    let _ = writeln!(
        s,
        "\nanomalies found: {} segments opened; decisions: {} ({} changes of capacity); actions recorded: {}",
        thousands(counter(report, "anomaly", "segments.opened")),
        thousands(report.rows.get(&Topic::Decisions).copied().unwrap_or(0)),
        thousands(counter(report, "tier-select", "decisions.changes")),
        thousands(counter(report, "actuate", "actions.recorded")),
    );
    let mut bad: Vec<String> = Vec::new();
    for a in std::iter::once(&report.source).chain(&report.stages) {
        for (k, v) in &a.counters {
            if k.starts_with("rejected.") || k.starts_with("dropped.") || k.starts_with("unscored.")
            {
                bad.push(format!("{} {k}={}", a.name, thousands(*v)));
            }
        }
    }
    let _ = writeln!(
        s,
        "bad or dropped input: {}",
        if bad.is_empty() {
            "none".into()
        } else {
            bad.join(", ")
        }
    );
    if !report.outputs.is_empty() {
        let _ = writeln!(s, "outputs:");
        for p in &report.outputs {
            let _ = writeln!(s, "  {}", p.display());
        }
    }
    s
}
