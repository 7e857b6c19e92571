//! Container-size recommendations (vertical scaling): per workload and resource, the
//! requests and limits its forecast distribution asks for, in the shape of a VPA
//! recommendation (lower bound, target, upper bound).
//!
//! VPA recommends from a percentile of past usage, so a container is sized for the load it
//! had; here the sizes come from the newest forecasts over the horizons a resize must hold
//! for, so a container is sized for the load it will have:
//! - target (the request): the largest value at `quantile` over those horizons, plus `margin`;
//! - lower bound: the largest median (below it the container is short more often than not);
//! - upper bound (the limit): the largest value at the highest quantile level, plus `margin`.
//!
//! [`patch`] turns them into what Kubernetes takes.

pub mod patch;

use serde::Serialize;
use wfe_domain::stats::level_at;
use wfe_http::api::WorkloadView;

/// How a recommendation is read from the forecasts.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// One resource of one workload, sized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub workload: String,
    pub resource: String,
    pub unit: String,
    /// The newest forecast read (ms since the epoch, event time).
    pub issued_at: i64,
    /// In `unit`: VPA's lowerBound, target and upperBound.
    pub lower_bound: f64,
    pub target: f64,
    pub upper_bound: f64,
    /// The horizon whose forecast set the target.
    pub horizon_s: i64,
}

/// The recommendations for each resource of `view` with forecasts within the policy's
/// horizons, by resource name.
pub fn recommend(workload: &str, view: &WorkloadView, p: &Policy) -> Vec<Recommendation> {
    view.resources
        .iter()
        .filter_map(|(name, r)| {
            let mut out: Option<Recommendation> = None;
            for (h, s) in r.forecasts.range(..=p.max_horizon_s) {
                let Some(point) = s.points.iter().max_by_key(|pt| pt.issued_at) else {
                    continue;
                };
                let at = |level| level_at(&s.levels, &point.values, level).map(|(_, v)| v);
                let (Some(q), Some(median)) = (at(p.quantile), at(LOWER_LEVEL)) else {
                    continue;
                };
                let top = point.values.iter().copied().fold(f64::NAN, f64::max);
                if ![q, median, top].iter().all(|v| v.is_finite()) {
                    continue;
                }
                let grow = |v: f64| v.max(0.0) * (1.0 + p.margin);
                let rec = out.get_or_insert_with(|| Recommendation {
                    workload: workload.to_string(),
                    resource: name.clone(),
                    unit: r.unit.clone(),
                    issued_at: point.issued_at,
                    lower_bound: 0.0,
                    target: 0.0,
                    upper_bound: 0.0,
                    horizon_s: *h,
                });
                rec.issued_at = rec.issued_at.max(point.issued_at);
                rec.lower_bound = rec.lower_bound.max(median.max(0.0));
                if grow(q) > rec.target {
                    rec.target = grow(q);
                    rec.horizon_s = *h;
                }
                rec.upper_bound = rec.upper_bound.max(grow(top));
            }
            out.map(|mut r| {
                // Bounds in order whatever the quantiles were (a crossing forecast).
                r.target = r.target.max(r.lower_bound);
                r.upper_bound = r.upper_bound.max(r.target);
                r
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
