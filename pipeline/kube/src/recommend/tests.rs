use wfe_http::api::WorkloadView;

use super::patch::{deployment_patch, object_name, quantity, vpa};
use super::*;
use crate::fixtures::{series, state};

fn view(forecasts: Vec<(i64, wfe_http::api::ForecastSeries)>) -> WorkloadView {
    state(&[(0, 1.0)], forecasts).workloads.remove("w").unwrap()
}

#[test]
fn the_request_covers_the_quantile_at_the_peak_horizon_and_the_limit_the_top() {
    let v = view(vec![
        series(900, &[(0, [1.0, 2.0, 3.0]), (3_600_000, [1.0, 2.5, 4.0])]),
        series(3600, &[(3_600_000, [1.0, 3.0, 5.0])]),
        // Past the policy's horizons: not read.
        series(172_800, &[(3_600_000, [10.0, 20.0, 30.0])]),
    ]);
    let p = Policy {
        margin: 0.1,
        ..Default::default()
    };
    let r = recommend("w", &v, &p);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!((r.resource.as_str(), r.unit.as_str()), ("cpu", "vcpu"));
    assert_eq!((r.issued_at, r.horizon_s), (3_600_000, 3600));
    assert!((r.target - 5.0 * 1.1).abs() < 1e-12, "{r:?}");
    assert_eq!(r.lower_bound, 3.0);
    assert!((r.upper_bound - 5.0 * 1.1).abs() < 1e-12);
    let p = Policy {
        quantile: 0.5,
        margin: 0.0,
        ..Default::default()
    };
    let r = &recommend("w", &v, &p)[0];
    assert_eq!((r.lower_bound, r.target, r.upper_bound), (3.0, 3.0, 5.0));
}

#[test]
fn nothing_is_recommended_from_no_forecast_or_a_non_finite_one() {
    assert!(recommend("w", &view(vec![]), &Policy::default()).is_empty());
    let nan = view(vec![series(900, &[(0, [1.0, f64::NAN, 3.0])])]);
    assert!(recommend("w", &nan, &Policy::default()).is_empty());
    let bad = Policy {
        quantile: 1.0,
        ..Default::default()
    };
    assert_eq!(bad.check().unwrap_err().0, "quantile");
    let bad = Policy {
        margin: -0.1,
        ..Default::default()
    };
    assert_eq!(bad.check().unwrap_err().0, "margin");
}

#[test]
fn kubernetes_gets_quantities_rounded_up_and_a_patch_of_one_container() {
    assert_eq!(quantity("vcpu", 1.2341), Some(("cpu", "1235m".into())));
    assert_eq!(quantity("gib", 2.0), Some(("memory", "2048Mi".into())));
    assert_eq!(quantity("vcpu", 0.0), Some(("cpu", "1m".into())));
    assert_eq!(quantity("gbps", 1.0), None);
    let rec = |resource: &str, unit: &str, t: f64| Recommendation {
        workload: "w".into(),
        resource: resource.into(),
        unit: unit.into(),
        issued_at: 0,
        lower_bound: t / 2.0,
        target: t,
        upper_bound: t * 2.0,
        horizon_s: 900,
    };
    let recs = [
        rec("cpu", "vcpu", 1.5),
        rec("memory", "gib", 4.0),
        rec("net", "gbps", 1.0),
    ];
    let p = deployment_patch("app", &recs);
    let c = &p["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["name"], "app");
    assert_eq!(c["resources"]["requests"]["cpu"], "1500m");
    assert_eq!(c["resources"]["limits"]["memory"], "8192Mi");
    assert_eq!(c["resources"]["requests"].as_object().unwrap().len(), 2);
    let v = vpa("app", &recs);
    let c = &v["containerRecommendations"][0];
    assert_eq!(
        (
            c["lowerBound"]["cpu"].as_str(),
            c["upperBound"]["cpu"].as_str()
        ),
        (Some("750m"), Some("3000m"))
    );
    assert_eq!(object_name("Machine_1.6"), "machine-1-6");
    assert_eq!(object_name("--"), "workload");
    assert_eq!(object_name(&"a".repeat(100)).len(), 63);
}
