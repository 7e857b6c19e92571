use std::collections::HashMap;

use super::*;
use crate::fixtures::{series, state};
use crate::keda::query::Defaults;

fn query(pairs: &[(&str, &str)]) -> Query {
    let m: HashMap<String, String> = [("workload", "w"), ("targetPerReplica", "2")]
        .iter()
        .chain(pairs)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Query::parse(&m, &Defaults::default()).unwrap()
}

#[test]
fn the_newest_forecast_of_the_shortest_horizon_covering_start_up_at_the_quantile() {
    let s = state(
        &[(1_000, 1.0)],
        vec![
            series(60, &[(0, [1.0, 2.0, 3.0])]),
            series(900, &[(0, [4.0, 5.0, 6.0]), (3_600_000, [7.0, 8.0, 9.0])]),
            series(3600, &[(0, [10.0, 11.0, 12.0])]),
        ],
    );
    // Start-up 120 s: 60 s is too short, 900 s is the first that covers it.
    let r = read(&s, &query(&[("podStartupSeconds", "120")])).unwrap();
    assert_eq!(
        (r.horizon_s, r.issued_at, r.level, r.forecast),
        (900, 3_600_000, 0.9, 9.0)
    );
    assert_eq!((r.value, r.model.as_str()), (9.0, "m3600000"));
    assert_eq!(r.target_time, 3_600_000 + 900_000);
    // A quantile between levels reads the level above it (as tier-select reads its SLA).
    let r = read(&s, &query(&[("quantile", "0.3")])).unwrap();
    assert_eq!((r.horizon_s, r.level, r.forecast), (60, 0.5, 2.0));
    // Past every horizon: the longest there is.
    let r = read(&s, &query(&[("podStartupSeconds", "7200")])).unwrap();
    assert_eq!((r.horizon_s, r.forecast), (3600, 12.0));
}

#[test]
fn the_value_never_falls_below_the_demand_observed_last_unless_the_trigger_says_so() {
    let s = state(
        &[(0, 50.0), (1_000, 20.0)],
        vec![series(900, &[(0, [4.0, 5.0, 6.0])])],
    );
    let r = read(&s, &query(&[])).unwrap();
    assert_eq!(
        (r.value, r.forecast, r.actual),
        (20.0, 6.0, Some((1_000, 20.0)))
    );
    let r = read(&s, &query(&[("floor", "none")])).unwrap();
    assert_eq!(r.value, 6.0);
    // Active while the value passes the activation value.
    assert!(r.active(&query(&[("activationValue", "5.9")])));
    assert!(!r.active(&query(&[("activationValue", "6")])));
}

#[test]
fn what_is_not_there_yet_is_an_error_that_says_to_wait() {
    let empty = state(&[(0, 1.0)], vec![]);
    let e = read(&empty, &query(&[])).unwrap_err();
    assert!(
        matches!(e, ScalerError::NoForecast { .. }) && e.retry_helps(),
        "{e}"
    );
    let e = read(&empty, &query(&[("workload", "nobody")])).unwrap_err();
    assert!(matches!(e, ScalerError::UnknownWorkload { known: 1, .. }) && e.retry_helps());
    let nan = state(&[(0, 1.0)], vec![series(900, &[(0, [1.0, 2.0, f64::NAN])])]);
    let e = read(&nan, &query(&[])).unwrap_err();
    assert!(matches!(e, ScalerError::NoForecast { .. }), "{e}");
    let e = read(&empty, &query(&[("resource", "gpu")])).unwrap_err();
    assert!(e.to_string().contains("it has: cpu"), "{e}");
    assert!(!e.retry_helps());
}
