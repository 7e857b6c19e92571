//! Event-level quality: what an on-call engineer feels, beside the point-wise figures.
//!
//! An **alert** is a segment the anomaly stage would open on these scores (a step over the
//! threshold opens it, `close_after` steps under close it: [`wfe_anomaly::segment`]). A
//! **labelled segment** is a run of test steps labelled anomalous. Definitions (event-wise,
//! by overlap):
//! - a labelled segment is *detected* when an alert overlaps it; its *delay* is from its
//!   first step to the first step of the first alert that overlaps it (0 when that alert
//!   began before it);
//! - an alert is *true* when it overlaps a labelled segment;
//! - event recall = detected / labelled segments, alert precision = true alerts / alerts,
//!   event F1 their harmonic mean; alerts per day over the test split's duration.

use serde::Serialize;

/// Event-level figures of one entity, or their mean.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EventFigures {
    pub segments: f64,
    pub detected: f64,
    pub event_recall: f64,
    pub alerts: f64,
    pub alerts_per_day: f64,
    pub alert_precision: f64,
    pub event_f1: f64,
    /// Median delay to detection over the detected segments, minutes (NaN: none detected).
    pub median_delay_min: f64,
}

/// The labelled segments of `labels` as inclusive (first, last) step indices.
pub fn labelled_segments(labels: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < labels.len() {
        if labels[i] == 1 {
            let start = i;
            while i < labels.len() && labels[i] == 1 {
                i += 1;
            }
            out.push((start, i - 1));
        } else {
            i += 1;
        }
    }
    out
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// The figures of `alerts` (inclusive step ranges, in time order) against `labels`, with
/// steps of `step_ms`.
pub fn event_figures(alerts: &[(usize, usize)], labels: &[u8], step_ms: i64) -> EventFigures {
    let segments = labelled_segments(labels);
    let mut delays = Vec::new();
    for &seg in &segments {
        if let Some(a) = alerts.iter().find(|&&a| overlaps(a, seg)) {
            delays.push(a.0.saturating_sub(seg.0) as f64 * step_ms as f64 / 60_000.0);
        }
    }
    let true_alerts = alerts
        .iter()
        .filter(|&&a| segments.iter().any(|&s| overlaps(a, s)))
        .count();
    let days = labels.len() as f64 * step_ms as f64 / 86_400_000.0;
    let recall = ratio(delays.len(), segments.len());
    let precision = ratio(true_alerts, alerts.len());
    let f1 = if recall + precision > 0.0 {
        2.0 * recall * precision / (recall + precision)
    } else {
        0.0
    };
    EventFigures {
        segments: segments.len() as f64,
        detected: delays.len() as f64,
        event_recall: recall,
        alerts: alerts.len() as f64,
        alerts_per_day: if days > 0.0 {
            alerts.len() as f64 / days
        } else {
            f64::NAN
        },
        alert_precision: precision,
        event_f1: f1,
        median_delay_min: median(&mut delays),
    }
}

/// n / of, 0 when there is nothing to count (no alert: no false one either, but nothing
/// caught; no segment: nothing to catch).
fn ratio(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    wfe_domain::stats::quantiles_select(v, &[0.5])[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_on_a_hand_made_label_and_alert_sequence() {
        // Steps of 1 min, 2 days: segments at 10..=14, 100..=109, 2000..=2001.
        let mut labels = vec![0u8; 2 * 1440];
        for i in (10..=14).chain(100..=109).chain(2000..=2001) {
            labels[i] = 1;
        }
        assert_eq!(
            labelled_segments(&labels),
            [(10, 14), (100, 109), (2000, 2001)]
        );
        // An alert from before the first segment into it (delay 0), one 3 steps into the
        // second (delay 3 min) and another later in it, and two that touch nothing.
        let alerts = [(8, 11), (103, 104), (107, 120), (500, 505), (2500, 2500)];
        let f = event_figures(&alerts, &labels, 60_000);
        assert_eq!((f.segments, f.detected, f.alerts), (3.0, 2.0, 5.0));
        assert!((f.event_recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((f.alert_precision - 3.0 / 5.0).abs() < 1e-12);
        let f1 = 2.0 * (2.0 / 3.0) * 0.6 / (2.0 / 3.0 + 0.6);
        assert!((f.event_f1 - f1).abs() < 1e-12);
        assert!((f.alerts_per_day - 2.5).abs() < 1e-12);
        // Delays 0 and 3 min: the median of two is their mean.
        assert!(
            (f.median_delay_min - 1.5).abs() < 1e-12,
            "{}",
            f.median_delay_min
        );
    }

    #[test]
    fn no_alerts_and_no_segments_are_zeros_not_errors() {
        let f = event_figures(&[], &[0, 0, 1, 1, 0], 300_000);
        assert_eq!(
            (f.detected, f.event_recall, f.alert_precision, f.event_f1),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert!(f.median_delay_min.is_nan());
        let g = event_figures(&[(0, 1)], &[0, 0, 0], 300_000);
        assert_eq!(
            (g.segments, g.alert_precision, g.event_recall),
            (0.0, 0.0, 0.0)
        );
        assert!(
            (g.alerts_per_day - 96.0).abs() < 1e-9,
            "3 steps of 5 min: 1/96 day"
        );
    }
}
