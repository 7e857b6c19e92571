//! Container sizes from a forecast distribution, in the shape of a VPA recommendation (lower
//! bound, target, upper bound): the one rule behind the `recommendations` topic (the forecast
//! stage, at each issuance), `wfe recommend` and the API's recommendation (a run's newest
//! forecasts).
//!
//! VPA recommends from a percentile of past usage, so a container is sized for the load it
//! had; here the sizes come from the forecasts over the horizons a resize must hold for, so a
//! container is sized for the load it will have:
//! - target (the request): the largest value at `quantile` over those horizons, plus `margin`;
//! - lower bound: the largest median (below it the container is short more often than not);
//! - upper bound (the limit): the largest value at the highest quantile level, plus `margin`.

use serde::{Deserialize, Serialize};

use crate::stats::level_at;

/// How sizes are read from the forecasts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Quantile level the request covers.
    pub quantile: f64,
    /// Share added to the request and the limit (0.15: 15 %).
    pub margin: f64,
    /// Horizons read: those up to this many seconds (the time a size is to hold for).
    pub max_horizon_s: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            quantile: 0.9,
            margin: 0.15,
            max_horizon_s: 86_400,
        }
    }
}

impl Policy {
    /// `Err((setting, why))` for a policy that cannot be applied.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err((
                "quantile",
                format!("must be in (0, 1), got {}", self.quantile),
            ));
        }
        if !(0.0..=10.0).contains(&self.margin) {
            return Err(("margin", format!("must be 0 to 10, got {}", self.margin)));
        }
        if self.max_horizon_s <= 0 {
            return Err((
                "max_horizon_s",
                format!("must be above 0, got {}", self.max_horizon_s),
            ));
        }
        Ok(())
    }
}

/// Level of the lower bound: the median.
const LOWER_LEVEL: f64 = 0.5;

/// One horizon's forecast: its quantile levels (ascending) and values.
#[derive(Debug, Clone, Copy)]
pub struct AtHorizon<'a> {
    pub horizon_s: i64,
    pub levels: &'a [f64],
    pub values: &'a [f64],
}

/// Sizes in the forecast's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizes {
    /// VPA's lowerBound, target and upperBound.
    pub lower_bound: f64,
    pub target: f64,
    pub upper_bound: f64,
    /// The horizon whose forecast set the target.
    pub horizon_s: i64,
}

/// The sizes `forecasts` ask for under `p`; horizons past `p.max_horizon_s` and forecasts
/// without a finite value at the quantile, the median and the top are passed over. None when
/// no forecast is left.
pub fn size<'a>(p: &Policy, forecasts: impl IntoIterator<Item = AtHorizon<'a>>) -> Option<Sizes> {
    let mut out: Option<Sizes> = None;
    for f in forecasts {
        if f.horizon_s > p.max_horizon_s {
            continue;
        }
        let at = |level| level_at(f.levels, f.values, level).map(|(_, v)| v);
        let (Some(q), Some(median)) = (at(p.quantile), at(LOWER_LEVEL)) else {
            continue;
        };
        let top = f.values.iter().copied().fold(f64::NAN, f64::max);
        if ![q, median, top].iter().all(|v| v.is_finite()) {
            continue;
        }
        let grow = |v: f64| v.max(0.0) * (1.0 + p.margin);
        let s = out.get_or_insert(Sizes {
            lower_bound: 0.0,
            target: 0.0,
            upper_bound: 0.0,
            horizon_s: f.horizon_s,
        });
        s.lower_bound = s.lower_bound.max(median.max(0.0));
        if grow(q) > s.target {
            s.target = grow(q);
            s.horizon_s = f.horizon_s;
        }
        s.upper_bound = s.upper_bound.max(grow(top));
    }
    out.map(|mut s| {
        // Bounds in order whatever the quantiles were (a crossing forecast).
        s.target = s.target.max(s.lower_bound);
        s.upper_bound = s.upper_bound.max(s.target);
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: [f64; 3] = [0.1, 0.5, 0.9];

    fn at(horizon_s: i64, values: &[f64]) -> AtHorizon<'_> {
        AtHorizon {
            horizon_s,
            levels: &LEVELS,
            values,
        }
    }

    #[test]
    fn the_request_covers_the_quantile_at_the_peak_horizon_and_the_limit_the_top() {
        let (a, b, far) = ([1.0, 2.5, 4.0], [1.0, 3.0, 5.0], [10.0, 20.0, 30.0]);
        let p = Policy {
            margin: 0.1,
            ..Default::default()
        };
        // The day-ahead horizon is past the policy's; not read.
        let s = size(&p, [at(900, &a), at(3600, &b), at(172_800, &far)]).unwrap();
        assert_eq!((s.horizon_s, s.lower_bound), (3600, 3.0));
        assert!((s.target - 5.5).abs() < 1e-12 && (s.upper_bound - 5.5).abs() < 1e-12);
        let p = Policy {
            quantile: 0.5,
            margin: 0.0,
            ..Default::default()
        };
        let s = size(&p, [at(900, &a), at(3600, &b)]).unwrap();
        assert_eq!((s.lower_bound, s.target, s.upper_bound), (3.0, 3.0, 5.0));
    }

    #[test]
    fn no_forecast_or_a_non_finite_one_sizes_nothing_and_crossed_quantiles_stay_ordered() {
        let p = Policy::default();
        assert_eq!(size(&p, []), None);
        assert_eq!(size(&p, [at(900, &[1.0, f64::NAN, 3.0])]), None);
        // p90 below the median (a crossing forecast): the target is the median at least.
        let s = size(&p, [at(900, &[1.0, 4.0, 2.0])]).unwrap();
        assert!(
            s.lower_bound <= s.target && s.target <= s.upper_bound,
            "{s:?}"
        );
        let bad = Policy { quantile: 1.0, ..p };
        assert_eq!(bad.check().unwrap_err().0, "quantile");
        let bad = Policy { margin: -0.1, ..p };
        assert_eq!(bad.check().unwrap_err().0, "margin");
    }
}
