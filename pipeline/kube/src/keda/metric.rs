//! The value KEDA gets for a [`Query`], from the run's state: the newest forecast of the
//! shortest horizon that covers a replica's start-up, at the trigger's quantile, and (unless
//! the trigger says `floor: none`) never below the demand observed last.
//!
//! Why that horizon: a replica asked for now serves after its start-up, so the demand to
//! provision for is the one forecast for then; a longer horizon would provision for demand
//! that has not come, a shorter one for demand that is gone before the replica serves.

use serde::Serialize;
use wfe_domain::stats::level_at;
use wfe_http::api::{ForecastSeries, ResourceView, State};

use crate::error::ScalerError;
use crate::keda::query::{Floor, Query};

/// What KEDA is told for one trigger, and where it came from (the server logs it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The metric value KEDA gets.
    pub value: f64,
    /// The forecast's value at `level` (the level at or above the trigger's quantile).
    pub forecast: f64,
    pub level: f64,
    pub horizon_s: i64,
    /// When the forecast was issued and the time it is for (ms since the epoch, event time).
    pub issued_at: i64,
    pub target_time: i64,
    pub model: String,
    /// The newest observed demand: `(event time, value)`.
    pub actual: Option<(i64, f64)>,
}

impl Reading {
    /// Whether the workload should have replicas at all (KEDA's IsActive).
    pub fn active(&self, q: &Query) -> bool {
        self.value > q.activation
    }
}

/// Reads `q` from `state`.
pub fn read(state: &State, q: &Query) -> Result<Reading, ScalerError> {
    let w = state
        .workloads
        .get(&q.workload)
        .ok_or_else(|| ScalerError::UnknownWorkload {
            workload: q.workload.clone(),
            known: state.workloads.len(),
        })?;
    let r = w
        .resources
        .get(&q.resource)
        .ok_or_else(|| ScalerError::UnknownResource {
            workload: q.workload.clone(),
            resource: q.resource.clone(),
            known: w.resources.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    let no_forecast = || ScalerError::NoForecast {
        workload: q.workload.clone(),
        resource: q.resource.clone(),
    };
    let (horizon_s, series) = covering(r, q.startup_s).ok_or_else(no_forecast)?;
    // The newest issuance; of several points issued together, the one folded last.
    let point = series
        .points
        .iter()
        .max_by_key(|p| p.issued_at)
        .ok_or_else(no_forecast)?;
    // A value that is not a number is no forecast: KEDA must not get NaN as a metric.
    let (level, forecast) = level_at(&series.levels, &point.values, q.quantile)
        .filter(|(_, v)| v.is_finite())
        .ok_or_else(no_forecast)?;
    let actual = r.actual.iter().last().copied();
    let value = match (q.floor, actual) {
        (Floor::Actual, Some((_, a))) if a.is_finite() => forecast.max(a),
        _ => forecast,
    };
    Ok(Reading {
        value,
        forecast,
        level,
        horizon_s,
        issued_at: point.issued_at,
        target_time: point.target_time,
        model: point.model.clone(),
        actual,
    })
}

/// The forecasts of the shortest horizon at or past `startup_s` that has any; else those of
/// the longest horizon (none covers start-up: the furthest look ahead there is).
fn covering(r: &ResourceView, startup_s: i64) -> Option<(i64, &ForecastSeries)> {
    let mut longest = None;
    // BTreeMap: ascending horizons.
    for (h, s) in r.forecasts.iter().filter(|(_, s)| !s.points.is_empty()) {
        if *h >= startup_s {
            return Some((*h, s));
        }
        longest = Some((*h, s));
    }
    longest
}

#[cfg(test)]
mod tests;
