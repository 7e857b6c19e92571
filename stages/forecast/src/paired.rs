//! The baselines' errors at the origins the fitted models forecast from, so that the choice
//! ([`crate::choice`]) compares every model on the same forecasts.
//!
//! A baseline's errors come at every step (they cost nothing), a fitted model's at its
//! origins, `every_s` apart. Judged on those two samples (the last `residual_window` steps
//! against a longer span of origins), each model's MAE carries noise of its own and the choice
//! followed it: on the shared data the selected model lost 1-2 % to gbm at 1 h. On the same
//! origins the noise is common to every model and cancels in the comparison
//! (`docs/quality.md`). The every-step errors still calibrate the baselines' quantiles (there
//! are more of them), and judge a baseline until `min_residuals` paired errors exist.
//!
//! Kept per series beside its state, in entries of their own (`pairs/<workload>`,
//! [`crate::snapshot`]): snapshots are postcard, where a new field in `Series` would make
//! every state written before it unreadable.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::ForecastConfig;
use crate::job::Env;
use crate::ring::Errors;

/// What the baselines forecast from one origin for one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Expected {
    pub(crate) origin: i64,
    pub(crate) target: i64,
    /// The origin's value (persistence's forecast), where observed.
    pub(crate) persistence: Option<f64>,
    /// The value a season before the target and its time (seasonal naive's forecast), where
    /// held and the horizon is within a season.
    pub(crate) seasonal: Option<(i64, f64)>,
}

impl Expected {
    /// What persistence and seasonal naive forecast from index `o` of `history` for `h` steps
    /// ahead (from the values as observed: None where missing); `time_of` gives an index's time
    /// (past the history's end too).
    pub(crate) fn at(
        history: &[f64],
        o: usize,
        h: usize,
        season: usize,
        time_of: impl Fn(usize) -> i64,
    ) -> Expected {
        let seen = |i: usize| history.get(i).copied().filter(|v| v.is_finite());
        Expected {
            origin: time_of(o),
            target: time_of(o + h),
            persistence: seen(o),
            seasonal: (h <= season)
                .then(|| (o + h).checked_sub(season))
                .flatten()
                .and_then(|i| seen(i).map(|v| (time_of(i), v))),
        }
    }
}

/// One horizon's paired errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Paired {
    pub(crate) persistence: Errors,
    pub(crate) seasonal: Errors,
    /// Issued origins whose targets have not come yet (a horizon's worth of origins).
    waiting: VecDeque<Expected>,
}

impl Paired {
    pub(crate) fn new(cfg: &ForecastConfig) -> Self {
        Self {
            persistence: Errors::new(cfg.residual_window),
            seasonal: Errors::new(cfg.residual_window),
            waiting: VecDeque::new(),
        }
    }

    /// The same pairs with each ring replaced by `f` of it (a changelog's tails).
    pub(crate) fn map_rings(&self, f: impl Fn(&Errors) -> Errors) -> Paired {
        Paired {
            persistence: f(&self.persistence),
            seasonal: f(&self.seasonal),
            waiting: self.waiting.clone(),
        }
    }

    /// Whether anything is held (a series without fitted models never pairs).
    pub(crate) fn is_empty(&self) -> bool {
        self.persistence.values.is_empty()
            && self.seasonal.values.is_empty()
            && self.waiting.is_empty()
    }

    /// Drops the errors filed for targets up to `t` (the cross-validation replaces them).
    pub(crate) fn clear_until(&mut self, t: i64) {
        self.persistence.clear_until(t);
        self.seasonal.clear_until(t);
    }

    /// Masks the errors that a flagged span `[start, end]` touches (at the target or at the
    /// value the baseline forecast from); `h` and `season` in ms. Returns how many.
    pub(crate) fn mask(&mut self, start: i64, end: i64, h: i64, season: i64) -> u64 {
        self.persistence.mask(start, end + h)
            + self.seasonal.mask(start, end)
            + self.seasonal.mask(start + season, end + season)
    }

    /// Files one origin's errors, masked like every other error.
    fn file(&mut self, env: &mut Env<'_>, name: &str, e: &Expected, actual: f64) {
        if let Some(v) = e.persistence {
            let err = env.error(name, e.target, e.origin, actual - v);
            self.persistence.push(e.target, err);
        }
        if let Some((t, v)) = e.seasonal {
            let err = env.error(name, e.target, t, actual - v);
            self.seasonal.push(e.target, err);
        }
    }
}

/// Horizon `hi`'s pairs of a series (made where a new or restored series has none).
fn at_mut<'a>(cfg: &ForecastConfig, paired: &'a mut Vec<Paired>, hi: usize) -> &'a mut Paired {
    if paired.len() <= hi {
        paired.resize(hi + 1, Paired::new(cfg));
    }
    &mut paired[hi]
}

/// Files, in a series' pairs, the errors of an origin whose actual is known now (the
/// cross-validation's).
pub(crate) fn file(
    env: &mut Env<'_>,
    paired: &mut Vec<Paired>,
    name: &str,
    hi: usize,
    e: &Expected,
    actual: f64,
) {
    at_mut(env.cfg, paired, hi).file(env, name, e, actual);
}

/// At an issuance where a fitted model forecast: what the baselines forecast, filed in a
/// series' pairs when the target comes ([`resolve`]).
pub(crate) fn expect(cfg: &ForecastConfig, paired: &mut Vec<Paired>, hi: usize, e: Expected) {
    at_mut(cfg, paired, hi).waiting.push_back(e);
}

/// Files the errors of the origins whose targets have come by `time`; `value_at` reads the
/// series' value at a time (None: not held or missing, and the pair is dropped).
pub(crate) fn resolve(
    env: &mut Env<'_>,
    paired: &mut [Paired],
    name: &str,
    time: i64,
    value_at: impl Fn(i64) -> Option<f64>,
) {
    for pair in paired {
        while let Some(e) = pair.waiting.front().copied().filter(|e| e.target <= time) {
            pair.waiting.pop_front();
            if let Some(actual) = value_at(e.target) {
                pair.file(env, name, &e, actual);
            }
        }
    }
}

/// What a baseline is judged by at a forecast issued at `until`: its errors in `pairs` (at
/// the fitted models' origins, targets up to `until`) once there are `min` of them, before
/// that `own` (errors and MAE over every step).
pub(crate) fn judged(
    pairs: Option<&Errors>,
    until: i64,
    min: usize,
    own: (usize, f64),
) -> (usize, f64) {
    pairs
        .map(|r| r.stats_until(until))
        .filter(|(n, _)| *n >= min.max(1))
        .unwrap_or(own)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_domain::spans::AnomalySpans;

    fn expected(origin: i64, persistence: Option<f64>, seasonal: Option<f64>) -> Expected {
        Expected {
            origin,
            target: origin + 60_000,
            persistence,
            seasonal: seasonal.map(|v| (origin - 86_340_000, v)),
        }
    }

    #[test]
    fn baselines_are_paired_at_their_targets_masked_and_judged_on_pairs_once_enough() {
        let cfg = ForecastConfig {
            min_residuals: 2,
            ..Default::default()
        };
        let mut spans = AnomalySpans::default();
        spans.add("w", 300_000, 300_000); // flags the third origin
        let mut scratch = Vec::new();
        let mut env = Env::new(&cfg, &[], &spans, &mut scratch);
        let mut paired = Vec::new();
        expect(&cfg, &mut paired, 0, expected(0, Some(4.0), Some(7.0)));
        // Persistence had no value at the second origin: only seasonal naive's is filed.
        expect(&cfg, &mut paired, 0, expected(120_000, None, Some(2.0)));
        expect(&cfg, &mut paired, 0, expected(300_000, Some(1.0), None));
        let actual = |t: i64| match t {
            60_000 => Some(5.0),
            180_000 => Some(3.0),
            360_000 => Some(9.0),
            _ => None,
        };
        resolve(&mut env, &mut paired, "w", 200_000, actual);
        assert_eq!(paired[0].waiting.len(), 1, "the third target has not come");
        resolve(&mut env, &mut paired, "w", 400_000, actual);
        let pair = &paired[0];
        assert!(pair.waiting.is_empty());
        assert_eq!(pair.persistence.values.len(), 2);
        assert_eq!(
            pair.persistence.finite, 1,
            "the flagged origin's error is masked"
        );
        let seasonal: Vec<f64> = pair.seasonal.values.iter().map(|&v| v.into()).collect();
        assert_eq!(seasonal, [-2.0, 1.0]);
        assert_eq!(env.masked, 1);
        // Judged on the pairs once there are `min_residuals` of them, up to the issue time.
        let own = (500, 9.9);
        assert_eq!(judged(Some(&pair.seasonal), i64::MAX, 2, own), (2, 1.5));
        assert_eq!(judged(Some(&pair.seasonal), 60_000, 2, own), own);
        assert_eq!(judged(Some(&pair.persistence), i64::MAX, 2, own), own);
        assert_eq!(judged(None, i64::MAX, 2, own), own);
        // What the baselines forecast from an index of a history (missing values: none).
        let history = [1.0, f64::NAN, 3.0, 4.0];
        let at = |o, h, season| Expected::at(&history, o, h, season, |i| i as i64 * 60_000);
        let e = at(3, 2, 4);
        assert_eq!(
            (e.origin, e.target, e.persistence, e.seasonal),
            (180_000, 300_000, Some(4.0), None)
        );
        assert_eq!(at(3, 2, 2).seasonal, Some((180_000, 4.0)));
        assert_eq!(at(1, 1, 2).persistence, None);
        assert_eq!(at(3, 3, 2).seasonal, None, "a horizon past the season");
        // The cross-validation files at once; clearing drops what it replaces.
        let mut other = Vec::new();
        file(
            &mut env,
            &mut other,
            "w",
            1,
            &expected(0, Some(1.0), None),
            2.0,
        );
        assert_eq!(other.len(), 2);
        other[1].clear_until(60_000);
        assert!(other[1].is_empty() && other[0].is_empty());
    }
}
