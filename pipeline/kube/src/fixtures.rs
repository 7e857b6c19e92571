//! A run's state made by hand, for the tests of [`crate::keda::metric`] and [`crate::keda::service`].

use wfe_http::api::{ForecastPoint, ForecastSeries, ResourceView, State, WorkloadView};

pub(crate) const LEVELS: [f64; 3] = [0.1, 0.5, 0.9];

fn point(issued_at: i64, horizon_s: i64, values: [f64; 3]) -> ForecastPoint {
    ForecastPoint {
        target_time: issued_at + horizon_s * 1000,
        issued_at,
        values: values.to_vec(),
        model: format!("m{issued_at}"),
    }
}

/// A horizon's forecasts: `(issued_at, values at LEVELS)`, oldest first.
pub(crate) fn series(horizon_s: i64, points: &[(i64, [f64; 3])]) -> (i64, ForecastSeries) {
    let s = ForecastSeries {
        levels: LEVELS.to_vec(),
        points: points
            .iter()
            .map(|(t, v)| point(*t, horizon_s, *v))
            .collect(),
    };
    (horizon_s, s)
}

/// One workload `w` with a `cpu` resource.
pub(crate) fn state(actual: &[(i64, f64)], forecasts: Vec<(i64, ForecastSeries)>) -> State {
    let cpu = ResourceView {
        unit: "vcpu".into(),
        actual: actual.iter().copied().collect(),
        forecasts: forecasts.into_iter().collect(),
    };
    let w = WorkloadView {
        resources: [("cpu".to_string(), cpu)].into_iter().collect(),
        ..Default::default()
    };
    State {
        workloads: [("w".to_string(), w)].into_iter().collect(),
        ..Default::default()
    }
}
