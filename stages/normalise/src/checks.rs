//! Pure checks on samples: whether one can be used, and the step a series keeps.

use crate::config::MAX_ABS_VALUE;

/// Why a sample cannot be used, as (rejection kind, message); `None` when it can.
pub(crate) fn unusable(
    null: bool,
    v: f64,
    ts: i64,
    earliest: i64,
    latest: i64,
) -> Option<(&'static str, &'static str)> {
    if null || v.is_infinite() {
        Some(("nan", "infinite or null value"))
    } else if v.is_nan() {
        Some(("nan", "NaN value"))
    } else if v.abs() > MAX_ABS_VALUE {
        Some(("out_of_range", "value beyond ±1e150"))
    } else if ts < earliest {
        Some(("time", "time before stages.normalise.earliest_s"))
    } else if ts > latest {
        Some((
            "time",
            "time further ahead of the wall clock than stages.normalise.max_future_s",
        ))
    } else {
        None
    }
}
/// The step: the median difference between the first distinct timestamps, once four of them
/// are known (the median, so that one jittered sample does not set it).
pub(crate) fn infer_step(ts: &[i64]) -> Option<i64> {
    if ts.len() < 4 {
        return None;
    }
    let mut sorted = ts.to_vec();
    sorted.sort_unstable();
    let mut diffs: Vec<i64> = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    diffs.sort_unstable();
    diffs.get(diffs.len() / 2).copied()
}
