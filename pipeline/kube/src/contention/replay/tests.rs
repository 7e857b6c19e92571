use std::collections::BTreeMap;

use super::*;
use crate::contention::hostsum::Demand;

const MIN: i64 = 60_000;

fn host(name: &str, capacity: f64) -> Host {
    Host {
        name: name.into(),
        capacity,
        environment: None,
    }
}

fn settings() -> Settings {
    Settings {
        bound: 0.05,
        max_horizon_s: 86_400,
        history_ms: 60 * MIN,
        min_points: 10,
        stale_ms: MIN,
    }
}

#[test]
fn a_forecast_peak_moves_a_workload_before_it_comes_and_the_contended_minutes_fall() {
    // Two hosts of 10. a holds x and y, b holds z. x and y use 4 each for an hour, then y
    // rises to 8 for an hour: a passes 10 (12), b (z at 2) has room.
    let mut actual: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for t in 0..120 {
        let at = t * MIN;
        actual
            .entry("x".into())
            .or_default()
            .push((at, 4.0 + (t % 3) as f64 * 0.1));
        let y = if t < 60 { 4.0 } else { 8.0 };
        actual
            .entry("y".into())
            .or_default()
            .push((at, y + (t % 2) as f64 * 0.1));
        actual.entry("z".into()).or_default().push((at, 2.0));
    }
    let placement: BTreeMap<String, String> = [("x", "a"), ("y", "a"), ("z", "b")]
        .iter()
        .map(|(w, h)| (w.to_string(), h.to_string()))
        .collect();
    let d = |mean| Demand { mean, sd: 0.2 };
    // At minute 50 the forecasts see y's rise (horizon 15 min: 8).
    let issued: Vec<Issued> = [("x", 4.1), ("y", 8.0), ("z", 2.0)]
        .iter()
        .map(|(w, m)| Issued {
            at: 50 * MIN,
            workload: w.to_string(),
            horizon_s: 900,
            demand: d(*m),
        })
        .collect();
    let hosts = [host("a", 10.0), host("b", 10.0)];
    let out = replay(&hosts, &placement, &actual, &issued, &settings());
    // Left as it was, a is over from minute 60 to 119 (the last time counts no span).
    assert_eq!(out.contended_minutes_static, 59.0);
    assert_eq!(out.contended_minutes_planned, 0.0, "{out:?}");
    assert_eq!((out.flagged, out.unresolved, out.moves.len()), (1, 0, 1));
    let (at, m) = &out.moves[0];
    assert_eq!(
        (*at, m.workload.as_str(), m.to.as_str()),
        (50 * MIN, "x", "b")
    );
}

#[test]
fn without_forecasts_nothing_moves_and_both_counts_agree() {
    let actual: BTreeMap<String, Vec<(i64, f64)>> =
        [("x".to_string(), (0..10).map(|t| (t * MIN, 12.0)).collect())].into();
    let placement: BTreeMap<String, String> = [("x".to_string(), "a".to_string())].into();
    let out = replay(&[host("a", 10.0)], &placement, &actual, &[], &settings());
    assert_eq!(
        (out.contended_minutes_static, out.contended_minutes_planned),
        (9.0, 9.0)
    );
    assert!(out.moves.is_empty());
    // An observation older than stale_ms stands for nothing.
    assert_eq!(value_at(&[(0, 5.0)], 2 * MIN, MIN), None);
    assert_eq!(value_at(&[(0, 5.0)], MIN, MIN), Some(5.0));
}

/// A workload whose newest forecast is older than the history has gone: its last forecast
/// no longer counts on its host. w (forecast 8 at minute 0) and v (forecast 8 at minute 90)
/// share host a of 10: at minute 30 both count and one moves; at minute 90, w's forecast is
/// 90 minutes old (history 60) and v alone fits.
#[test]
fn a_workload_not_forecast_within_the_history_counts_nowhere() {
    let actual: BTreeMap<String, Vec<(i64, f64)>> = ["w", "v"]
        .iter()
        .map(|w| (w.to_string(), (0..120).map(|t| (t * MIN, 1.0)).collect()))
        .collect();
    let placement: BTreeMap<String, String> = [("w", "a"), ("v", "a")]
        .iter()
        .map(|(w, h)| (w.to_string(), h.to_string()))
        .collect();
    let issue = |at: i64, w: &str| Issued {
        at: at * MIN,
        workload: w.into(),
        horizon_s: 900,
        demand: Demand { mean: 8.0, sd: 0.1 },
    };
    let hosts = [host("a", 10.0), host("b", 10.0)];
    let both = replay(
        &hosts,
        &placement,
        &actual,
        &[issue(0, "w"), issue(30, "v")],
        &settings(),
    );
    assert_eq!(both.moves.len(), 1, "{both:?}");
    let gone = replay(
        &hosts,
        &placement,
        &actual,
        &[issue(0, "w"), issue(90, "v")],
        &settings(),
    );
    assert!(gone.moves.is_empty(), "{gone:?}");
}
