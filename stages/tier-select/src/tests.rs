use wfe_contract::VecCollector;
use wfe_contract::columns::{f64s, list_f64};
use wfe_forecast::{Forecast, ForecastConfig, ResourceMap};
use wfe_normalise::testing::normalised;

use super::*;

/// (workload, issued s, resource, unit, horizon s, [p10, p50, p90]).
type Fc<'a> = (&'a str, i64, &'a str, &'a str, i64, [f64; 3]);

/// A forecasts batch of rows.
fn forecasts(rows: &[Fc<'_>]) -> RecordBatch {
    let n = rows.len();
    let s = |f: &dyn Fn(&Fc<'_>) -> String| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        Topic::Forecasts.schema(),
        vec![
            timestamp_column(rows.iter().map(|r| r.1 * 1000).collect()),
            timestamp_column(rows.iter().map(|r| (r.1 + r.4) * 1000).collect()),
            s(&|r| r.0.to_string()),
            s(&|r| r.2.to_string()),
            s(&|r| r.3.to_string()),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
            list_f64(rows.iter().map(|_| vec![0.1, 0.5, 0.9])),
            list_f64(rows.iter().map(|r| r.5.to_vec())),
            s(&|_| "persistence".into()),
            s(&|_| "1".into()),
            s(&|_| "mae".into()),
            Arc::new(Float64Array::from(vec![Some(0.1); n])),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
        ],
    )
    .unwrap()
}

fn decide(st: &mut TierSelect, batch: RecordBatch) -> (VecCollector, Context) {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("tier-select");
    st.process_batch(Topic::Forecasts, batch, &mut ctx, &mut out)
        .unwrap();
    (out, ctx)
}

fn col(out: &VecCollector, name: &str) -> Vec<String> {
    out.of(Topic::Decisions)
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap();
            (0..b.num_rows())
                .map(|r| arrow_cast_str(c.as_ref(), r))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn arrow_cast_str(a: &dyn arrow_array::Array, r: usize) -> String {
    use arrow_array::cast::AsArray;
    match a.data_type() {
        arrow_schema::DataType::Utf8 => a.as_string::<i32>().value(r).to_string(),
        arrow_schema::DataType::Int64 => a
            .as_primitive::<arrow_array::types::Int64Type>()
            .value(r)
            .to_string(),
        _ => a
            .as_primitive::<arrow_array::types::Float64Type>()
            .value(r)
            .to_string(),
    }
}

#[test]
fn cheapest_feasible_option_covers_the_p90() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    // p90 of 20 vCPU: the cheapest per vCPU is spot m7i (0.1613 / 8 vCPU) -> 3 x m7i.2xlarge
    // or 5 x m7i.xlarge (0.0806 x 5 = 0.403 < 3 x 0.1613 = 0.484).
    let (out, _) = decide(
        &mut st,
        forecasts(&[("w", 3600, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]),
    );
    assert_eq!(col(&out, "tier"), ["spot"]);
    assert_eq!(col(&out, "instance_type"), ["m7i.xlarge"]);
    assert_eq!(col(&out, "count"), ["5"]);
    assert_eq!(col(&out, "driver_resource"), ["cpu"]);
    let cost: f64 = col(&out, "expected_cost_per_hour")[0].parse().unwrap();
    assert!((cost - 5.0 * 0.0806).abs() < 1e-9);
    let considered: serde_json::Value = serde_json::from_str(&col(&out, "considered")[0]).unwrap();
    assert_eq!(
        considered.as_array().unwrap().len(),
        12,
        "6 types x (on-demand, spot)"
    );
    assert!(col(&out, "reason")[0].contains("p90"));
}

#[test]
fn a_strict_sla_excludes_spot_and_memory_can_drive() {
    let cfg = TierSelectConfig {
        max_risk: 0.1,
        ..Default::default()
    };
    let mut st = TierSelect::new(cfg).unwrap();
    let (out, _) = decide(
        &mut st,
        forecasts(&[
            ("w", 3600, "cpu", "vcpu", 3600, [1.0, 2.0, 4.0]),
            ("w", 3600, "memory", "gib", 3600, [100.0, 120.0, 200.0]),
        ]),
    );
    assert_ne!(col(&out, "tier")[0], "spot");
    assert_eq!(col(&out, "driver_resource"), ["memory"]);
    // 200 GiB on r7i.2xlarge (64 GiB, 0.5292/h) = 4 x = 2.1168/h is the cheapest on demand.
    assert_eq!(col(&out, "instance_type"), ["r7i.2xlarge"]);
    assert_eq!(col(&out, "count"), ["4"]);
}

#[test]
fn scale_in_waits_for_the_cooldown() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    let mk = |t: i64, p90: f64| forecasts(&[("w", t, "cpu", "vcpu", 3600, [1.0, 1.0, p90])]);
    let counts: Vec<String> = [(0, 40.0), (3600, 8.0), (4 * 3600, 8.0), (5 * 3600, 40.0)]
        .iter()
        .flat_map(|&(t, v)| col(&decide(&mut st, mk(t, v)).0, "count"))
        .collect();
    assert_eq!(counts, ["10", "10", "2", "10"]);
}

#[test]
fn an_issuance_delivered_again_is_not_decided_twice() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    let mk = |t: i64, p90: f64| forecasts(&[("w", t, "cpu", "vcpu", 3600, [1.0, 1.0, p90])]);
    let (out, _) = decide(&mut st, mk(0, 40.0));
    assert_eq!(out.rows(Topic::Decisions), 1);
    decide(&mut st, mk(3_600_000, 10.0));
    // The first issuance again (an at-least-once replay): skipped, so it cannot reset the
    // cooldown or scale out again.
    let (again, ctx) = decide(&mut st, mk(0, 40.0));
    assert_eq!(again.rows(Topic::Decisions), 0);
    assert_eq!(ctx.counters()["dropped.replayed_forecast"], 1);
    let (next, _) = decide(&mut st, mk(7_200_000, 10.0));
    assert_eq!(next.rows(Topic::Decisions), 1);
}

#[test]
fn bad_forecasts_are_rejected_and_never_decided_on() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    let (out, ctx) = decide(
        &mut st,
        forecasts(&[
            ("a", 0, "cpu", "vcpu", 3600, [f64::NAN, f64::NAN, f64::NAN]),
            ("b", 0, "cpu", "vcpu", 3600, [-3.0, -2.0, -1.0]),
            ("c", 0, "power", "watts", 3600, [1.0, 2.0, 3.0]),
        ]),
    );
    assert_eq!(out.rows(Topic::Decisions), 0);
    assert_eq!(ctx.counters()["rejected.bad_forecast"], 2);
    assert_eq!(ctx.counters()["rejected.unknown_unit"], 1);
}

#[test]
fn bad_catalogs_are_clear_errors() {
    let err = |t: &str| Catalog::parse(t, "test.toml").unwrap_err().to_string();
    assert!(err("region = \"x\"\nsnapshot = \"d\"\ninstance = []").contains("no instance types"));
    let bad_price = "region = \"x\"\nsnapshot = \"d\"\n[[instance]]\ntype = \"t\"\nfamily_tier = \"on-demand\"\nvcpu = 2\nmemory_gib = 4\nnetwork_gbps = 1\non_demand_price = -1\nperformance = 1\n";
    assert!(err(bad_price).contains("t") && err(bad_price).contains("prices"));
    assert!(err("not toml [").contains("test.toml"));
    let cfg = TierSelectConfig {
        catalog: Some("/nonexistent/catalog.toml".into()),
        ..Default::default()
    };
    assert!(
        TierSelect::new(cfg)
            .err()
            .unwrap()
            .to_string()
            .contains("/nonexistent/catalog.toml")
    );
}

#[test]
fn decides_on_real_forecasts_of_an_asd_server() {
    let norm = normalised("asd", &["omi-5"], usize::MAX);
    let res = vec![ResourceMap {
        name: "cpu".into(),
        metrics: vec!["m00".into()],
        unit: "vcpu".into(),
        capacity: 64.0,
        workload_prefix: None,
    }];
    let mut fc = Forecast::new(ForecastConfig::default(), res).unwrap();
    let mut fout = VecCollector::new();
    let mut ctx = Context::new("forecast");
    for b in norm {
        fc.process_batch(Topic::MetricsNorm, b, &mut ctx, &mut fout)
            .unwrap();
    }
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    let mut out = VecCollector::new();
    for b in fout.of(Topic::Forecasts) {
        st.process_batch(Topic::Forecasts, b, &mut ctx, &mut out)
            .unwrap();
    }
    let issuances = fout.rows(Topic::Forecasts) / 2; // two horizons per issuance
    assert_eq!(out.rows(Topic::Decisions), issuances);
    for b in out.of(Topic::Decisions) {
        let cost = f64s(&b, "expected_cost_per_hour").unwrap();
        assert!(cost.values().iter().all(|c| *c > 0.0 && c.is_finite()));
    }
}
