//! Seasonal detector: how far each metric is from its usual value at this time of the season.
//!
//! Made for workloads with one metric (a CloudWatch metric, one Prometheus gauge), where a PCA
//! across metrics has nothing to work with and a band over the whole history misses what is
//! unusual for the hour: a night-time value at the day's level stays inside the band. Per
//! metric, the history gives a profile, the median in each of `buckets` slices of the season
//! (a day by default), and each step is scored by its residual from the profile in robust
//! units (1.4826 median absolute deviations of the history's residuals, as a z-score is in
//! standard deviations). A level shift is a run of large residuals, a lost daily pattern
//! too; what lasts becomes normal through the ensemble's level ([`crate::level`]).
//!
//! The profile is keyed by time (a step's offset in the season), so a gap in the data does not
//! shift it, and its size is `buckets` per metric whatever the step: 288 five-minute slices of
//! a day at one-minute steps hold five steps each. A slice the history never reached takes the
//! metric's overall median.

use serde::{Deserialize, Serialize};
use wfe_domain::stats::quantiles_select;

/// Smallest robust spread residuals are measured in (scaled units: 1 % of the history's range),
/// so a metric that never moved is not infinitely sensitive.
pub const MIN_SPREAD: f64 = 0.01;

/// The median absolute deviation's factor that makes it a standard deviation for normal data.
const MAD_TO_SD: f64 = 1.4826;

/// The times of a history's steps: where each lies in the season.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Event time (ms) of the history's last step.
    pub end_ms: i64,
    /// Time between steps (ms); the history's steps are consecutive.
    pub step_ms: i64,
}

impl Clock {
    /// The times of `n` consecutive steps ending at `end_ms`.
    pub fn times(&self, n: usize) -> Vec<i64> {
        (0..n)
            .map(|i| self.end_ms - (n - 1 - i) as i64 * self.step_ms)
            .collect()
    }
}

/// A fitted seasonal model for one workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeasonalModel {
    /// Length of the season (ms) and the slices it is cut into.
    pub season_ms: i64,
    pub buckets: usize,
    /// Per slice, per metric (`buckets` x width, row-major): the usual value.
    pub profile: Vec<f64>,
    /// Per metric: the median of the history's residuals, and their robust spread.
    pub center: Vec<f64>,
    pub spread: Vec<f64>,
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    quantiles_select(values, &[0.5])[0]
}

impl SeasonalModel {
    /// Fits on history rows (NaN = missing; rows may be shorter than `d`) at `times`.
    pub fn fit(
        history: &[Vec<f64>],
        times: &[i64],
        d: usize,
        season_ms: i64,
        buckets: usize,
    ) -> Result<Self, String> {
        if history.len() < 2 || d == 0 || history.len() != times.len() {
            return Err(format!(
                "need at least 2 timed steps of at least 1 metric, have {} x {d} ({} times)",
                history.len(),
                times.len()
            ));
        }
        if season_ms <= 0 || buckets == 0 {
            return Err(format!(
                "a season of {season_ms} ms in {buckets} slices is not a season"
            ));
        }
        let mut m = Self {
            season_ms,
            buckets,
            profile: vec![0.0; buckets * d],
            center: vec![0.0; d],
            spread: vec![MIN_SPREAD; d],
        };
        let slices: Vec<usize> = times.iter().map(|&t| m.bucket(t)).collect();
        let value = |i: usize, j: usize| history[i].get(j).copied().filter(|v| v.is_finite());
        let mut per_slice: Vec<Vec<f64>> = vec![Vec::new(); buckets];
        let mut all = Vec::with_capacity(history.len());
        for j in 0..d {
            per_slice.iter_mut().for_each(Vec::clear);
            all.clear();
            for (i, &b) in slices.iter().enumerate() {
                if let Some(v) = value(i, j) {
                    per_slice[b].push(v);
                    all.push(v);
                }
            }
            // Never observed: the residual is NaN, which scores 0 (see `deviations_into`).
            let overall = median(&mut all);
            for (b, values) in per_slice.iter_mut().enumerate() {
                let usual = median(values);
                m.profile[b * d + j] = if usual.is_finite() { usual } else { overall };
            }
            all.clear();
            all.extend(
                (0..history.len())
                    .filter_map(|i| Some(value(i, j)? - m.profile[slices[i] * d + j])),
            );
            let center = median(&mut all);
            for r in &mut all {
                *r = (*r - center).abs();
            }
            let mad = median(&mut all);
            if center.is_finite() {
                m.center[j] = center;
                m.spread[j] = (MAD_TO_SD * mad).max(MIN_SPREAD);
            }
        }
        Ok(m)
    }

    /// The season's slice that `t` (ms) falls in.
    fn bucket(&self, t: i64) -> usize {
        let offset = i128::from(t.rem_euclid(self.season_ms));
        let b = offset * self.buckets as i128 / i128::from(self.season_ms);
        (b as usize).min(self.buckets - 1)
    }

    /// Deviation per metric of `row` at time `t` into `out` (a missing value deviates by 0);
    /// returns their sum.
    pub fn deviations_into(&self, t: i64, row: &[f64], out: &mut [f64]) -> f64 {
        let d = self.center.len();
        let usual = &self.profile[self.bucket(t) * d..][..d];
        let mut sum = 0.0;
        for (j, o) in out.iter_mut().enumerate().take(d) {
            let r = row.get(j).copied().unwrap_or(f64::NAN) - usual[j];
            *o = if r.is_finite() {
                (r - self.center[j]).abs() / self.spread[j]
            } else {
                0.0
            };
            sum += *o;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const STEP: i64 = 3_600_000;

    /// Three days of an hourly series, high by day and low by night, a little noise.
    fn daily(days: usize) -> (Vec<Vec<f64>>, Vec<i64>) {
        let n = days * 24;
        let times = Clock {
            end_ms: (n as i64 - 1) * STEP,
            step_ms: STEP,
        }
        .times(n);
        let rows = (0..n)
            .map(|i| {
                let hour = i % 24;
                let base = if (8..20).contains(&hour) { 0.8 } else { 0.2 };
                vec![base + 0.01 * ((i * 7 % 5) as f64 - 2.0)]
            })
            .collect();
        (rows, times)
    }

    #[test]
    fn a_value_usual_by_day_is_unusual_at_night() {
        let (rows, times) = daily(3);
        let m = SeasonalModel::fit(&rows, &times, 1, DAY, 24).unwrap();
        let mut out = [0.0];
        let noon = 3 * DAY + 12 * STEP;
        let night = 3 * DAY + 2 * STEP;
        let at_noon = m.deviations_into(noon, &[0.8], &mut out);
        let at_night = m.deviations_into(night, &[0.8], &mut out);
        assert!(at_noon < 3.0, "{at_noon}");
        assert!(at_night > 20.0, "{at_night}");
        assert_eq!(out[0], at_night);
        // The same value lies inside the history's band: a range detector would not see it.
        assert_eq!(m.deviations_into(night, &[f64::NAN], &mut out), 0.0);
    }

    #[test]
    fn slices_follow_time_not_step_count() {
        let (rows, times) = daily(3);
        let m = SeasonalModel::fit(&rows, &times, 1, DAY, 24).unwrap();
        let mut out = [0.0];
        // A week later, the same hour: the profile is where it was, gap or not.
        let later = 10 * DAY + 12 * STEP;
        assert!(m.deviations_into(later, &[0.8], &mut out) < 3.0);
        // Times before the epoch fall in their slice too.
        assert!(m.deviations_into(-DAY + 12 * STEP, &[0.8], &mut out) < 3.0);
        assert_eq!(m.bucket(-1), 23);
    }

    #[test]
    fn a_short_history_falls_back_to_the_median_and_a_flat_one_to_the_least_spread() {
        // Six hours: most slices never seen take the overall median.
        let rows: Vec<Vec<f64>> = (0..6).map(|_| vec![0.5]).collect();
        let times = Clock {
            end_ms: 5 * STEP,
            step_ms: STEP,
        }
        .times(6);
        let m = SeasonalModel::fit(&rows, &times, 2, DAY, 24).unwrap();
        assert!(m.profile.chunks(2).all(|p| p[0] == 0.5));
        assert_eq!(m.spread, vec![MIN_SPREAD; 2]);
        let mut out = [0.0; 2];
        // 0.1 above a flat history: ten least spreads; the metric never seen scores 0.
        let s = m.deviations_into(20 * STEP, &[0.6, 0.9], &mut out);
        assert!((s - 10.0).abs() < 1e-9 && out[1] == 0.0, "{s} {out:?}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (rows, times) = daily(1);
        assert!(SeasonalModel::fit(&rows, &times[1..], 1, DAY, 24).is_err());
        assert!(SeasonalModel::fit(&rows[..1], &times[..1], 1, DAY, 24).is_err());
        assert!(SeasonalModel::fit(&rows, &times, 1, 0, 24).is_err());
        assert!(SeasonalModel::fit(&rows, &times, 1, DAY, 0).is_err());
    }
}
