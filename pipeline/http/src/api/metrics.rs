//! The metrics an anomaly names, followed so the UI can click through to their series.
//!
//! A workload may have dozens of metrics, and keeping every one's series for every workload
//! would be most of the API's memory. What an operator looks at is the few metrics the anomaly
//! segments name: those are followed ([`FOLLOWED_CAP`] per workload, [`METRIC_CAP`] points
//! each). A segment names its metrics at the step it opens, after that step's values went by,
//! so every metric's last [`PREROLL`] points are kept too, and a metric starts its series
//! with them: the chart shows the values just before the segment began.

use std::collections::BTreeMap;

use arrow_array::{Array, RecordBatch};
use serde::Serialize;
use wfe_contract::Result;
use wfe_contract::columns::{DictStrings, f64s, timestamps};

use super::view::{Ring, SERIES_CAP, State};

/// Points of every metric kept, from which a newly followed metric starts.
pub const PREROLL: usize = 12;
/// Metrics followed per workload (the first ones segments named), and points kept of each.
pub const FOLLOWED_CAP: usize = 8;
pub const METRIC_CAP: usize = SERIES_CAP;
/// Distinct metric names kept per workload: more are not followed (normalise bounds a
/// workload's metrics too; this holds whatever the topic carries).
pub const METRICS_PER_WORKLOAD: usize = 512;

/// One workload's followed metrics and every metric's newest points.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsView {
    /// `[event_time, value]` in the metric's own unit, per followed metric.
    pub followed: BTreeMap<String, Ring<(i64, f64)>>,
    /// The newest [`PREROLL`] points of every metric.
    pub recent: BTreeMap<String, Ring<(i64, f64)>>,
}

impl MetricsView {
    /// Adds one value of `metric` at `t`.
    fn push(&mut self, metric: &str, t: i64, v: f64) {
        if let Some(r) = self.followed.get_mut(metric) {
            r.push((t, v), METRIC_CAP);
        }
        let room = self.recent.len() < METRICS_PER_WORKLOAD;
        match self.recent.get_mut(metric) {
            Some(r) => r.push((t, v), PREROLL),
            None if room => {
                let mut r = Ring::default();
                r.push((t, v), PREROLL);
                self.recent.insert(metric.to_string(), r);
            }
            None => {}
        }
    }

    /// Follows `metric` from its recent points on, while fewer than [`FOLLOWED_CAP`] are.
    pub(super) fn follow(&mut self, metric: &str) {
        if self.followed.contains_key(metric) || self.followed.len() >= FOLLOWED_CAP {
            return;
        }
        let start = self.recent.get(metric).cloned().unwrap_or_default();
        self.followed.insert(metric.to_string(), start);
    }

    /// The points of `metric`: its followed series, else its recent points (`None`: never
    /// seen); and whether it is followed.
    pub fn series(&self, metric: &str) -> Option<(&Ring<(i64, f64)>, bool)> {
        match self.followed.get(metric) {
            Some(r) => Some((r, true)),
            None => self.recent.get(metric).map(|r| (r, false)),
        }
    }
}

/// Folds `metrics.norm` rows' values before scaling (a missing value adds no point).
pub(super) fn fold_metric_values(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (t, workload, metric) = (
        timestamps(b, "event_time")?,
        DictStrings::new(b, "workload")?,
        DictStrings::new(b, "metric")?,
    );
    let raw = f64s(b, "raw_value")?;
    for i in 0..b.num_rows() {
        let (Some(w), Some(m)) = (workload.get(i), metric.get(i)) else {
            continue;
        };
        let v = raw.value(i);
        if raw.is_null(i) || !v.is_finite() {
            continue;
        }
        // The resource fold made the workload's view already; a row it skipped makes it here.
        let view = match s.workloads.get_mut(w) {
            Some(view) => view,
            None => s.seen(w, t.value(i)),
        };
        view.metrics.push(m, t.value(i), v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_metric_starts_with_its_recent_points_and_stays_bounded() {
        let mut m = MetricsView::default();
        for t in 0..20 {
            m.push("cpu", t, t as f64);
            m.push("mem", t, 1.0);
        }
        // Not followed yet: its last PREROLL points.
        let (r, followed) = m.series("cpu").unwrap();
        assert!(!followed);
        assert_eq!(r.len(), PREROLL);
        assert_eq!(r.iter().next(), Some(&(8, 8.0)));
        m.follow("cpu");
        for t in 20..(20 + METRIC_CAP as i64) {
            m.push("cpu", t, t as f64);
        }
        let (r, followed) = m.series("cpu").unwrap();
        assert!(followed);
        assert_eq!(r.len(), METRIC_CAP);
        let last = 19 + METRIC_CAP as i64;
        assert_eq!(r.iter().last(), Some(&(last, last as f64)));
        assert!(m.series("disk").is_none());
        // At most FOLLOWED_CAP metrics followed, and METRICS_PER_WORKLOAD kept at all.
        for k in 0..(METRICS_PER_WORKLOAD + 10) {
            let name = format!("m{k}");
            m.push(&name, 0, 0.0);
            m.follow(&name);
        }
        assert_eq!(m.followed.len(), FOLLOWED_CAP);
        assert_eq!(m.recent.len(), METRICS_PER_WORKLOAD);
    }
}
