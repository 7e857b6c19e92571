//! What the plans would have done: a placement replayed over the workloads' observed demand,
//! once left as it is and once changed by the moves [`plan`](super::plan) makes at each
//! forecast issuance, counting the minutes a host's observed total passed its capacity.
//!
//! At each issuance time every workload's newest forecast is read (horizons up to
//! `max_horizon_s`; a workload whose newest is older than `history_ms` has gone and counts
//! nowhere), the correlations of each pair come from their observed demand over the
//! `history_ms` before it (a pair with less history counts as moving together: the careful
//! guess), and the moves planned are in place from then on. Observed demand is summed per host
//! at each time any workload was observed, each workload with its latest value no older than
//! `stale_ms`; a time counts as contended for the span to the next time (at most `stale_ms`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::hostsum::correlation;
pub use super::issued::Issued;
use super::plan::{Fleet, Host, Move, Workload, plan};

/// The replay's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Chance of passing capacity above which a host is contended.
    pub bound: f64,
    pub max_horizon_s: i64,
    /// History the correlations are read from, before each issuance (ms).
    pub history_ms: i64,
    /// Common times a pair needs for its correlation to be read.
    pub min_points: usize,
    /// How long an observation stands for (ms).
    pub stale_ms: i64,
}

/// What the replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Minutes some host's observed total passed its capacity, placement left as it was.
    pub contended_minutes_static: f64,
    /// The same with the planned moves in place.
    pub contended_minutes_planned: f64,
    /// Issuances at which some host was over the bound, and how many of those left one over.
    pub flagged: usize,
    pub unresolved: usize,
    /// Every move, with the time it was planned.
    pub moves: Vec<(i64, Move)>,
}

/// Replays `placement` (workload -> host) on `hosts` over `actual` (per workload, in time
/// order) with the forecasts `issued` (in time order).
pub fn replay(
    hosts: &[Host],
    placement: &BTreeMap<String, String>,
    actual: &BTreeMap<String, Vec<(i64, f64)>>,
    issued: &[Issued],
    s: &Settings,
) -> Outcome {
    let mut planned = placement.clone();
    // Per workload: its newest issuance, and that issuance's demand per horizon.
    let mut latest: BTreeMap<String, (i64, Workload)> = BTreeMap::new();
    let times = observation_times(actual);
    let mut out = Outcome {
        contended_minutes_static: 0.0,
        contended_minutes_planned: 0.0,
        flagged: 0,
        unresolved: 0,
        moves: Vec::new(),
    };
    let mut next = 0;
    for (k, &t) in times.iter().enumerate() {
        // Every issuance up to t: fold it in, and plan at the end of each issuance time.
        while next < issued.len() && issued[next].at <= t {
            let at = issued[next].at;
            while next < issued.len() && issued[next].at == at {
                let i = &issued[next];
                if i.horizon_s <= s.max_horizon_s {
                    let w = latest.entry(i.workload.clone()).or_default();
                    if w.0 != i.at {
                        *w = (i.at, Workload::default());
                    }
                    w.1.demand.insert(i.horizon_s, i.demand);
                }
                next += 1;
            }
            // A workload not forecast within the history counts on no host: it has gone.
            let since = at.saturating_sub(s.history_ms);
            let current: BTreeMap<String, Workload> = latest
                .iter()
                .filter(|(_, (t, _))| *t >= since)
                .map(|(w, (_, d))| (w.clone(), d.clone()))
                .collect();
            let pairs = correlations(actual, current.keys(), at, s);
            let rho = |a: &str, b: &str| {
                let key = if a < b { (a, b) } else { (b, a) };
                pairs.get(&key).copied().unwrap_or(1.0)
            };
            let fleet = Fleet {
                hosts,
                workloads: &current,
                rho: &rho,
            };
            let (found, moves) = plan(&fleet, &planned, s.bound);
            out.flagged += usize::from(!found.is_empty());
            out.unresolved += usize::from(found.iter().any(|c| c.unresolved));
            for m in moves {
                planned.insert(m.workload.clone(), m.to.clone());
                out.moves.push((at, m));
            }
        }
        let span = times.get(k + 1).map_or(0, |n| (n - t).min(s.stale_ms)) as f64 / 60_000.0;
        if contended(hosts, placement, actual, t, s.stale_ms) {
            out.contended_minutes_static += span;
        }
        if contended(hosts, &planned, actual, t, s.stale_ms) {
            out.contended_minutes_planned += span;
        }
    }
    out
}

/// Every time some workload was observed, ascending.
fn observation_times(actual: &BTreeMap<String, Vec<(i64, f64)>>) -> Vec<i64> {
    let mut t: Vec<i64> = actual.values().flatten().map(|(t, _)| *t).collect();
    t.sort_unstable();
    t.dedup();
    t
}

/// `w`'s newest observation at or before `t`, if no older than `stale_ms`.
fn value_at(series: &[(i64, f64)], t: i64, stale_ms: i64) -> Option<f64> {
    let i = series.partition_point(|(x, _)| *x <= t);
    let (at, v) = *series.get(i.checked_sub(1)?)?;
    (t - at <= stale_ms && v.is_finite()).then_some(v)
}

/// Whether some host's observed total at `t` passes its capacity.
fn contended(
    hosts: &[Host],
    placement: &BTreeMap<String, String>,
    actual: &BTreeMap<String, Vec<(i64, f64)>>,
    t: i64,
    stale_ms: i64,
) -> bool {
    let mut load: BTreeMap<&str, f64> = BTreeMap::new();
    for (w, h) in placement {
        let v = actual.get(w).and_then(|s| value_at(s, t, stale_ms));
        *load.entry(h.as_str()).or_default() += v.unwrap_or(0.0);
    }
    hosts
        .iter()
        .any(|h| load.get(h.name.as_str()).copied().unwrap_or(0.0) > h.capacity)
}

/// The correlation of each pair of `workloads` over the history before `at` (keys in name
/// order; a pair without enough history is left out, and counts as moving together). Read
/// once per issuance: the planner asks for the same pairs many times.
fn correlations<'a>(
    actual: &BTreeMap<String, Vec<(i64, f64)>>,
    workloads: impl Iterator<Item = &'a String>,
    at: i64,
    s: &Settings,
) -> BTreeMap<(&'a str, &'a str), f64> {
    let window = |w: &str| -> &[(i64, f64)] {
        let Some(series) = actual.get(w) else {
            return &[];
        };
        let lo = series.partition_point(|(t, _)| *t < at - s.history_ms);
        let hi = series.partition_point(|(t, _)| *t < at);
        &series[lo..hi]
    };
    let names: Vec<&str> = workloads.map(String::as_str).collect();
    let mut out = BTreeMap::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if let Some(r) = correlation(window(a), window(b), s.min_points) {
                out.insert(if a < b { (*a, *b) } else { (*b, *a) }, r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
