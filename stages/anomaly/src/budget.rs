//! The alert budget: how many alerts (segments opened) per workload and day an operator
//! accepts (`alert_budget_per_day`; 0: no budget).
//!
//! Once a workload has opened that many segments in the trailing 24 hours of event time, a
//! new one opens only if its score is over the weakest peak among the day's strongest
//! `budget` alerts: the bar rises to what the day already showed, so a noisy workload stays
//! near its budget while an incident stronger than the day's alerts still gets through. What
//! the budget costs in missed incidents is in `wfe eval anomaly --config` (see docs/quality.md).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// The alerts a workload opened in the trailing day: (time opened, peak score so far).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Budget {
    opened: VecDeque<(i64, f64)>,
}

impl Budget {
    /// The score a new segment must pass at `now` on top of the threshold: the `per_day`-th
    /// highest peak of the alerts opened in the trailing day, or -inf while fewer were
    /// (or with no budget).
    pub fn bar(&mut self, now: i64, per_day: usize) -> f64 {
        while self.opened.front().is_some_and(|&(t, _)| t <= now - DAY_MS) {
            self.opened.pop_front();
        }
        if per_day == 0 || self.opened.len() < per_day {
            return f64::NEG_INFINITY;
        }
        let mut peaks: Vec<f64> = self.opened.iter().map(|&(_, p)| p).collect();
        peaks.sort_unstable_by(|a, b| b.total_cmp(a));
        peaks[per_day - 1]
    }

    /// A segment opened at `t` with score `score` (only kept with a budget).
    pub fn opened(&mut self, t: i64, score: f64, per_day: usize) {
        if per_day > 0 {
            self.opened.push_back((t, score));
        }
    }

    /// The open segment (the last one opened) reached a new peak.
    pub fn peak(&mut self, score: f64) {
        if let Some(last) = self.opened.back_mut() {
            last.1 = last.1.max(score);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn the_bar_is_the_days_weakest_kept_peak_and_old_alerts_age_out() {
        let mut b = Budget::default();
        assert_eq!(b.bar(0, 2), f64::NEG_INFINITY);
        b.opened(0, 3.0, 2);
        b.peak(5.0);
        assert_eq!(
            b.bar(H, 2),
            f64::NEG_INFINITY,
            "one alert of a budget of two"
        );
        b.opened(2 * H, 4.0, 2);
        // Two alerts today, peaks 5 and 4: a third must pass 4.
        assert_eq!(b.bar(3 * H, 2), 4.0);
        b.opened(4 * H, 9.0, 2);
        assert_eq!(b.bar(5 * H, 2), 5.0, "the two strongest are 9 and 5");
        // A day after the first, it no longer counts: 9 and 4 remain.
        assert_eq!(b.bar(24 * H, 2), 4.0);
        assert_eq!(b.bar(25 * H, 2), 4.0);
        assert_eq!(b.bar(26 * H, 2), f64::NEG_INFINITY, "only the 9 left");
        let mut none = Budget::default();
        none.opened(0, 1.0, 0);
        assert_eq!(none.bar(0, 0), f64::NEG_INFINITY);
        assert_eq!(none, Budget::default(), "no budget keeps nothing");
    }
}
