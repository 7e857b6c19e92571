//! The slow level of a workload's score, which the threshold follows.
//!
//! Why: a workload's normal behaviour moves (a deploy, a new traffic mix, a metric that settles
//! at another value after an incident). Scored by models fitted on its history, every step
//! after such a move is "unusual", so a fixed threshold opens one segment that never closes:
//! on SMD's machine-1-6 the smoothed score of normal test steps climbs from 0 to 3-10 and 86 %
//! of them were over the threshold, and the UI shaded everything after the move.
//!
//! How: the median of the last `window` complete hours' mean scores, kept per workload. When
//! it is above the median score of the history the threshold was set on, the threshold is
//! raised by the difference: a move that lasts longer than half the window becomes the new
//! normal, while anomalies shorter than that (most last minutes to hours) stay above it.
//! Hours are event-time hours, so a replay raises the threshold exactly as the live run did.
//! The memory is bounded by the window (48 hours: 48 numbers per workload).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use wfe_domain::stats::quantiles_select;

const HOUR_MS: i64 = 3_600_000;

/// A workload's score level: the hours' means and the hour being filled.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Level {
    /// Median of the smoothed scores the threshold was set on (the history's held-out part).
    base: f64,
    /// Mean score of each of the last complete hours, oldest first.
    hours: VecDeque<f64>,
    /// The hour being filled (event time / 1 h), and its scores' sum and count.
    hour: i64,
    sum: f64,
    count: u32,
    /// How far the threshold is raised, recomputed when an hour completes.
    raise: f64,
}

impl Level {
    /// A level whose base is the median of `scores` (the history's smoothed scores).
    pub fn new(scores: &[f64]) -> Self {
        let mut finite: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
        let base = if finite.is_empty() {
            0.0
        } else {
            quantiles_select(&mut finite, &[0.5])[0]
        };
        Self {
            base,
            ..Self::default()
        }
    }

    /// Takes in the smoothed score of the step at event time `t` (ms); keeps at most
    /// `window` complete hours (0: the level is not followed).
    pub fn observe(&mut self, t: i64, score: f64, window: usize) {
        if window == 0 || !score.is_finite() {
            return;
        }
        let hour = t.div_euclid(HOUR_MS);
        if self.count > 0 && hour > self.hour {
            self.hours.push_back(self.sum / self.count as f64);
            while self.hours.len() > window {
                self.hours.pop_front();
            }
            self.sum = 0.0;
            self.count = 0;
            self.raise = self.compute_raise();
        }
        if self.count == 0 {
            self.hour = hour;
        }
        // A step of an earlier hour (steps come in time order; a late one) counts in this one.
        self.sum += score;
        self.count += 1;
    }

    /// How far the threshold is raised now: the hours' median above the base, or 0.
    pub fn raise(&self) -> f64 {
        self.raise
    }

    fn compute_raise(&self) -> f64 {
        if self.hours.is_empty() {
            return 0.0;
        }
        let mut v: Vec<f64> = self.hours.iter().copied().collect();
        let median = quantiles_select(&mut v, &[0.5])[0];
        (median - self.base).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Scores 0 for two days, then a move to 10 for two days, with a one-hour spike of 50 in
    /// the first day: the spike does not raise the threshold, the move does, once it has
    /// lasted more than half the window.
    #[test]
    fn a_lasting_move_raises_the_threshold_and_a_short_spike_does_not() {
        let mut l = Level::new(&[0.0, 0.1, -0.1, 0.0]);
        let window = 48;
        let mut raised_at = None;
        for m in 0..(4 * 24 * 60) {
            let t = m as i64 * MIN;
            let score = match m {
                m if (600..660).contains(&m) => 50.0,
                m if m >= 2 * 24 * 60 => 10.0,
                _ => 0.0,
            };
            l.observe(t, score, window);
            if m < 2 * 24 * 60 {
                assert_eq!(l.raise(), 0.0, "raised before the move, minute {m}");
            } else if raised_at.is_none() && l.raise() > 9.0 {
                raised_at = Some(m - 2 * 24 * 60);
            }
        }
        // The median of 48 hours passes 10 after 24 of them (plus the hour being filled).
        let after = raised_at.expect("the move never raised the threshold");
        assert!(
            (24 * 60..=26 * 60).contains(&after),
            "raised after {after} min"
        );
        assert!((l.raise() - 10.0).abs() < 1e-9, "{}", l.raise());
        assert_eq!(l.hours.len(), window, "bounded by the window");
    }

    #[test]
    fn a_level_below_the_base_lowers_nothing_and_window_zero_follows_nothing() {
        let mut l = Level::new(&[5.0; 10]);
        for m in 0..(3 * 60) {
            l.observe(m * MIN, 0.0, 48);
        }
        assert_eq!(l.raise(), 0.0);
        let mut off = Level::new(&[0.0]);
        for m in 0..(3 * 60) {
            off.observe(m * MIN, 100.0, 0);
        }
        assert_eq!(off.raise(), 0.0);
        assert_eq!(off, Level::new(&[0.0]), "window 0 keeps nothing");
    }
}
