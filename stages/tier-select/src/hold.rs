//! The reactive floor's memory (`hold_h`): the highest demand observed over the last hours,
//! so a workload that jumped once keeps the capacity for it, as Kubernetes' scale-down
//! stabilisation keeps the highest recommendation of its window (here over hours of observed
//! demand, not minutes of recommendations).
//!
//! Kept as the maxima of clock hours, newest last, each below every one before it (an hour
//! whose maximum a later hour passes can never be the window's peak again): the peak is the
//! first, and a workload holds at most `hold_h + 1` of them, whatever its step.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

const HOUR_MS: i64 = 3_600_000;

/// One resource's highest demand per clock hour over a window of hours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PeakHold {
    /// `(hour, highest value)`, hours ascending, values descending.
    hours: VecDeque<(i64, f64)>,
}

impl PeakHold {
    /// Files the demand observed at `time_ms` (a non-finite value is not demand).
    pub(crate) fn observe(&mut self, time_ms: i64, value: f64, window_h: u32) {
        if !value.is_finite() {
            return;
        }
        let hour = time_ms.div_euclid(HOUR_MS);
        // The hours from this step's on: the first is their highest. At or above this value,
        // it outlasts the step's (a late step of an hour already passed is often so).
        let at = self.hours.partition_point(|(h, _)| *h < hour);
        if self.hours.get(at).is_some_and(|(_, v)| *v >= value) {
            return;
        }
        // Below it: the step's own hour, if kept, leads no more, nor do the earlier hours
        // whose maxima it passes (the last ones before it, values descending).
        if self.hours.get(at).is_some_and(|(h, _)| *h == hour) {
            self.hours.remove(at);
        }
        let first = self
            .hours
            .range(..at)
            .rposition(|(_, v)| *v > value)
            .map_or(0, |i| i + 1);
        self.hours.drain(first..at);
        self.hours.insert(first, (hour, value));
        // The newest hour observed is the last: the window ends there.
        let newest = self.hours.back().map_or(hour, |(h, _)| *h);
        self.expire(newest, window_h);
    }

    /// The highest demand of the `window_h` hours before `time_ms` and of its own hour.
    pub(crate) fn peak(&self, time_ms: i64, window_h: u32) -> Option<f64> {
        let from = time_ms.div_euclid(HOUR_MS) - i64::from(window_h);
        (self.hours.iter())
            .find(|(h, _)| *h >= from)
            .map(|(_, v)| *v)
    }

    /// Hours kept (at most `window_h + 1` once the newest hour has been observed).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hours.len()
    }

    fn expire(&mut self, hour: i64, window_h: u32) {
        let from = hour - i64::from(window_h);
        while self.hours.front().is_some_and(|(h, _)| *h < from) {
            self.hours.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_domain::stats::SplitMix;

    /// The plain definition: the largest value observed within the window's hours.
    fn naive(seen: &[(i64, f64)], now: i64, window_h: u32) -> Option<f64> {
        let from = now.div_euclid(HOUR_MS) - i64::from(window_h);
        (seen.iter())
            .filter(|(t, _)| t.div_euclid(HOUR_MS) >= from)
            .map(|(_, v)| *v)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    }

    #[test]
    fn the_peak_is_the_window_s_highest_demand_and_the_hours_kept_stay_bounded() {
        let mut rng = SplitMix(7);
        for window_h in [0, 1, 3, 24] {
            let mut hold = PeakHold::default();
            let mut seen = Vec::new();
            let mut newest = 0i64;
            for _ in 0..5_000 {
                newest += 60_000 * (1 + (rng.next_u64() % 30) as i64);
                // Now and then a step arrives late, up to three hours after its time.
                let t = match rng.next_u64() % 10 {
                    0 => newest - (rng.next_u64() % (3 * HOUR_MS as u64)) as i64,
                    _ => newest,
                };
                // Mostly low, now and then a jump: the shapes the hold exists for.
                let v = match rng.next_u64() % 50 {
                    0 => 40.0 + rng.unit() * 20.0,
                    _ => rng.unit() * 5.0,
                };
                hold.observe(t, v, window_h);
                seen.push((t, v));
                let want = naive(&seen, newest, window_h);
                assert_eq!(hold.peak(newest, window_h), want, "at {newest}");
                assert!(hold.len() <= window_h as usize + 1, "{} hours", hold.len());
            }
        }
    }

    #[test]
    fn a_late_step_counts_in_its_own_hour_and_nan_is_not_demand() {
        let mut hold = PeakHold::default();
        hold.observe(5 * HOUR_MS, 3.0, 2);
        hold.observe(2 * HOUR_MS + 1, 9.0, 2);
        hold.observe(5 * HOUR_MS + 10, f64::NAN, 2);
        // Hour 2 is outside the window of hour 5 (hours 3 to 5): the late step does not count.
        assert_eq!(hold.peak(5 * HOUR_MS + 10, 2), Some(3.0));
        hold.observe(4 * HOUR_MS, 7.0, 2);
        assert_eq!(hold.peak(5 * HOUR_MS + 20, 2), Some(7.0));
        assert_eq!(hold.peak(6 * HOUR_MS, 2), Some(7.0));
        assert_eq!(hold.peak(7 * HOUR_MS, 2), Some(3.0));
        assert_eq!(hold.peak(8 * HOUR_MS, 2), None);
    }
}
