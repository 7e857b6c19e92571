//! Container-size recommendations (vertical scaling) from a run's newest forecasts: per
//! workload and resource, the requests and limits of [`wfe_domain::sizing`] (VPA's shape:
//! lower bound, target, upper bound) over the newest forecast of each horizon the API holds.
//! The forecast stage writes the same sizes at each issuance on the `recommendations` topic.
//!
//! [`patch`] turns them into what Kubernetes takes.

pub mod patch;

use serde::Serialize;
pub use wfe_domain::sizing::Policy;
use wfe_domain::sizing::{AtHorizon, size};
use wfe_http::api::WorkloadView;

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
            // The newest forecast of each horizon.
            let newest: Vec<_> = (r.forecasts.iter())
                .filter_map(|(h, s)| Some((*h, s, s.points.iter().max_by_key(|p| p.issued_at)?)))
                .collect();
            let sizes = size(
                p,
                newest.iter().map(|(h, s, point)| AtHorizon {
                    horizon_s: *h,
                    levels: &s.levels,
                    values: &point.values,
                }),
            )?;
            let issued_at = (newest.iter())
                .filter(|(h, ..)| *h <= p.max_horizon_s)
                .map(|(_, _, point)| point.issued_at)
                .max()?;
            Some(Recommendation {
                workload: workload.to_string(),
                resource: name.clone(),
                unit: r.unit.clone(),
                issued_at,
                lower_bound: sizes.lower_bound,
                target: sizes.target,
                upper_bound: sizes.upper_bound,
                horizon_s: sizes.horizon_s,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
