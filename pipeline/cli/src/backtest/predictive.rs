//! `predictive`: EC2 Auto Scaling's predictive scaling as its documentation describes it, with
//! a seasonal profile standing in for its unpublished model.
//!
//! - **Forecast**: hourly load for the next 48 hours from up to `predictive_history_days` (14)
//!   of history (none before a day of it), made again every `predictive_refresh_s`: each
//!   hour's forecast is the mean, over those days, of the demand's hourly mean at the same
//!   hour of the day, times `1 + predictive_margin`.
//! - **Capacity**: forecast / target utilisation, as the group's minimum from
//!   `predictive_buffer_s` (`SchedulingBufferTime`, 300 s) before each hour.
//! - **With target tracking**: the reactive policy's HPA runs on top, and the fleet is the
//!   larger of the two: the forecast only raises the floor, so it never scales in on its own
//!   (a lower forecast lets target tracking scale in, no more).

use wfe_contract::Result;
use wfe_tier_select::Catalog;

use super::policies::{Hpa, Plan, ask, baseline, count_for};
use super::{BacktestConfig, Demand};

const HOUR_MS: i64 = 3_600_000;

/// Per clock hour (index = time / 1 h), per resource: the demand's sum and count of steps.
struct Hourly {
    first: i64,
    sums: Vec<Vec<f64>>,
    counts: Vec<u32>,
}

impl Hourly {
    fn of(d: &Demand) -> Self {
        let times = d.train_times.iter().chain(&d.times);
        let rows = d.train.iter().chain(&d.values);
        let first = d
            .train_times
            .first()
            .or(d.times.first())
            .map_or(0, |t| t.div_euclid(HOUR_MS));
        let last = d
            .times
            .last()
            .or(d.train_times.last())
            .map_or(0, |t| t.div_euclid(HOUR_MS));
        let n = (last - first + 1).max(0) as usize;
        let mut h = Hourly {
            first,
            sums: vec![vec![0.0; d.resources.len()]; n],
            counts: vec![0; n],
        };
        for (t, row) in times.zip(rows) {
            let i = (t.div_euclid(HOUR_MS) - first) as usize;
            for (s, v) in h.sums[i].iter_mut().zip(row) {
                *s += v;
            }
            h.counts[i] += 1;
        }
        h
    }

    /// Per hour of the day, per resource: the mean of the hourly means of the complete hours
    /// in `[from, to)` (clock-hour indices); None for an hour of the day without any.
    fn profile(&self, from: i64, to: i64) -> Vec<Option<Vec<f64>>> {
        let mut acc: Vec<(Vec<f64>, u32)> = vec![(Vec::new(), 0); 24];
        for hour in from.max(self.first)..to {
            let i = (hour - self.first) as usize;
            let Some(&c) = self.counts.get(i).filter(|c| **c > 0) else {
                continue;
            };
            let slot = &mut acc[hour.rem_euclid(24) as usize];
            if slot.0.is_empty() {
                slot.0 = vec![0.0; self.sums[i].len()];
            }
            for (a, s) in slot.0.iter_mut().zip(&self.sums[i]) {
                *a += s / f64::from(c);
            }
            slot.1 += 1;
        }
        acc.into_iter()
            .map(|(sum, n)| (n > 0).then(|| sum.iter().map(|s| s / f64::from(n)).collect()))
            .collect()
    }
}

/// The plan of predictive scaling with target tracking (see the module's comment).
pub fn predictive(d: &Demand, catalog: &Catalog, cfg: &BacktestConfig) -> Result<Plan> {
    let ty = baseline(catalog, cfg)?;
    let hourly = Hourly::of(d);
    let mut plan = Plan::new();
    let mut hpa = Hpa::default();
    let mut profile: Vec<Option<Vec<f64>>> = vec![None; 24];
    let mut next_refresh = i64::MIN;
    for (k, (&t, row)) in d.times.iter().zip(&d.values).enumerate() {
        if t >= next_refresh {
            next_refresh = t + cfg.predictive_refresh_s * 1000;
            let now = t.div_euclid(HOUR_MS);
            let from = now - cfg.predictive_history_days * 24;
            // A day of history before the first forecast, as the service asks.
            let held = now - from.max(hourly.first);
            profile = if held >= 24 {
                hourly.profile(from, now)
            } else {
                vec![None; 24]
            };
        }
        let hour = (t + cfg.predictive_buffer_s * 1000).div_euclid(HOUR_MS);
        let floor = profile[hour.rem_euclid(24) as usize]
            .as_ref()
            .map_or(0, |load| {
                let want: Vec<f64> = load
                    .iter()
                    .map(|v| v * (1.0 + cfg.predictive_margin))
                    .collect();
                count_for(catalog, ty, d, &want, cfg.target_utilisation)
            });
        let n = hpa.step(catalog, ty, d, cfg, (t, row), floor.max(cfg.min_instances));
        ask(&mut plan, k, vec![(ty, false, n)]);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::minute_demand as demand;

    #[test]
    fn the_profile_launches_ahead_of_a_daily_peak_and_never_scales_in_on_its_own() {
        let catalog = Catalog::shipped().unwrap();
        let cfg = BacktestConfig::default();
        // 8 vCPU all day, 40 vCPU from 09:00 to 10:00.
        let peak = |m: i64| {
            if (540..600).contains(&m.rem_euclid(1440)) {
                40.0
            } else {
                8.0
            }
        };
        let d = demand(3, 2, peak);
        let ty = baseline(&catalog, &cfg).unwrap();
        let count_at = |plan: &Plan, minute: i64| {
            let k = d.times.iter().position(|t| *t == minute * 60_000).unwrap();
            let (_, fleet) = plan.iter().rev().find(|(s, _)| *s <= k).unwrap();
            fleet.iter().map(|f| f.2).sum::<i64>()
        };
        let pred = predictive(&d, &catalog, &cfg).unwrap();
        let react = super::super::policies::reactive(&d, &catalog, &cfg).unwrap();
        let day = 3 * 1440 + 1440; // the second test day
        let need = count_for(&catalog, ty, &d, &[40.0], cfg.target_utilisation);
        // Five minutes before 09:00 the forecast has the peak's capacity asked for; reactive
        // has not moved yet.
        assert_eq!(count_at(&pred, day + 535), need);
        assert!(count_at(&react, day + 535) < need);
        // Overnight both follow the base load.
        assert_eq!(count_at(&pred, day + 180), count_at(&react, day + 180));
        // Without a day of history there is no forecast: target tracking alone.
        let young = demand(0, 1, peak);
        assert_eq!(
            predictive(&young, &catalog, &cfg).unwrap(),
            super::super::policies::reactive(&young, &catalog, &cfg).unwrap()
        );
    }

    #[test]
    fn hourly_means_are_averaged_per_hour_of_the_day() {
        let d = demand(2, 1, |m| (m / 60 % 24) as f64 + (m / 1440) as f64 * 10.0);
        let h = Hourly::of(&d);
        let p = h.profile(0, 48);
        // Hour 5 of day 0 is 5, of day 1 is 15: their mean.
        assert_eq!(p[5], Some(vec![10.0]));
        assert_eq!(h.profile(0, 3)[5], None);
    }
}
