use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use wfe_contract::columns::{list_row_f64, list_row_str, strings, timestamp_column};

use crate::cold::cold_values;
use wfe_contract::VecCollector;
use wfe_contract::columns::{f64s, list_f64};
use wfe_forecast::{Forecast, ForecastConfig, ResourceMap};
use wfe_normalise::testing::normalised;

use super::*;

/// (workload, issued s, resource, unit, horizon s, [p10, p50, p90]).
pub(crate) type Fc<'a> = (&'a str, i64, &'a str, &'a str, i64, [f64; 3]);

/// A forecasts batch of rows.
pub(crate) fn forecasts(rows: &[Fc<'_>]) -> RecordBatch {
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

pub(crate) fn decide(st: &mut TierSelect, batch: RecordBatch) -> (VecCollector, Context) {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("tier-select");
    st.process_batch(Topic::Forecasts, batch, &mut ctx, &mut out)
        .unwrap();
    (out, ctx)
}

pub(crate) fn col(out: &VecCollector, name: &str) -> Vec<String> {
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
fn cheapest_mix_covers_the_p90_with_spot_up_to_its_share() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    // p90 of 20 vCPU. On m7i.xlarge (4 vCPU) that is 5 instances, of which 4 may be spot
    // (max_spot_share 0.8): 4 x 0.0806 + 1 x 0.2016 = 0.524/h, less than any mix of the
    // larger types (3 x m7i.2xlarge with 2 spot: 0.7258/h).
    let (out, _) = decide(
        &mut st,
        forecasts(&[("w", 3600, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]),
    );
    assert_eq!(col(&out, "instance_type"), ["m7i.xlarge"]);
    assert_eq!(col(&out, "count"), ["5"]);
    assert_eq!(col(&out, "spot_count"), ["4"]);
    assert_eq!(col(&out, "tier"), ["on-demand"]);
    assert_eq!(col(&out, "driver_resource"), ["cpu"]);
    let cost: f64 = col(&out, "expected_cost_per_hour")[0].parse().unwrap();
    assert!((cost - (4.0 * 0.0806 + 0.2016)).abs() < 1e-9);
    // Risk: demand passes 20 vCPU with 0.1, 16 with 0.42, 12 with 0.74, 8 with 0.92, 4 with
    // 0.96; k of the 4 spot instances interrupted within the hour is Binomial(4, 0.0008).
    let passed = [0.1, 0.42, 0.74, 0.92, 0.96];
    let q: f64 = 0.0008;
    let choose = [1.0, 4.0, 6.0, 4.0, 1.0];
    let want: f64 = (0..5)
        .map(|k| choose[k] * q.powi(k as i32) * (1.0 - q).powi(4 - k as i32) * passed[k])
        .sum();
    let risk: f64 = col(&out, "risk")[0].parse().unwrap();
    assert!((risk - want).abs() < 1e-9, "{risk} vs {want}");
    let considered: serde_json::Value = serde_json::from_str(&col(&out, "considered")[0]).unwrap();
    assert_eq!(
        considered.as_array().unwrap().len(),
        6,
        "one best mix per type"
    );
    let reason = &col(&out, "reason")[0];
    assert!(
        reason.contains("p90") && reason.contains("4 spot + 1 on-demand"),
        "{reason}"
    );
    assert!(reason.contains("max_spot_share"), "{reason}");
}

#[test]
fn the_expected_cost_objective_prices_the_shortfall_and_says_so() {
    // The same forecast as above at a dear shortfall: capacity past the p90 pays for itself
    // (the tail above 20 vCPU costs more short than a fifth instance's price), and the row
    // says what the choice weighed.
    let cfg = |price: f64| TierSelectConfig {
        objective: Objective::ExpectedCost,
        shortfall_price: price,
        ..TierSelectConfig::default()
    };
    let fc = || forecasts(&[("w", 3600, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]);
    let catalog = Catalog::shipped().unwrap();
    let (dear, _) = decide(&mut TierSelect::new(cfg(1.0)).unwrap(), fc());
    let (cheap, _) = decide(&mut TierSelect::new(cfg(0.0001)).unwrap(), fc());
    // vCPU decided, performance included.
    let vcpu = |out: &VecCollector| {
        let n: f64 = col(out, "count")[0].parse().unwrap();
        let inst = catalog.get(&col(out, "instance_type")[0]).unwrap();
        n * inst.vcpu * inst.performance
    };
    assert!(vcpu(&dear) > 20.0, "{:?}", col(&dear, "reason"));
    assert!(vcpu(&cheap) < 20.0, "{:?}", col(&cheap, "reason"));
    let reason = &col(&dear, "reason")[0];
    assert!(
        reason.contains("least expected cost") && reason.contains("shortfall"),
        "{reason}"
    );
    let considered: serde_json::Value = serde_json::from_str(&col(&dear, "considered")[0]).unwrap();
    assert!(
        considered[0]["expected"]["short_unit_minutes"].is_number(),
        "{considered}"
    );
    // A price that is not a number is refused, naming the setting.
    let err = TierSelect::new(cfg(f64::NAN)).err().unwrap().to_string();
    assert!(err.contains("shortfall_price"), "{err}");
}

/// A one-type catalog with the given spot interruption rate per hour.
fn one_type_catalog(dir: &std::path::Path, rate: f64) -> std::path::PathBuf {
    let path = dir.join("catalog.toml");
    std::fs::write(
        &path,
        format!(
            "region = \"test\"\nsnapshot = \"2026-11-24\"\n[[instance]]\ntype = \"t.large\"\n\
             family_tier = \"on-demand\"\nvcpu = 4\nmemory_gib = 16\nnetwork_gbps = 10\n\
             on_demand_price = 1.0\nspot_price = 0.3\ninterruption_rate = {rate}\nperformance = 1\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn interruption_risk_limits_the_spot_share_and_on_demand_carries_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let calm = TierSelectConfig {
        catalog: Some(one_type_catalog(dir.path(), 0.0)),
        ..Default::default()
    };
    let fc = || forecasts(&[("w", 0, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]);
    let (out, _) = decide(&mut TierSelect::new(calm).unwrap(), fc());
    assert_eq!(
        col(&out, "spot_count"),
        ["4"],
        "no risk: spot up to the share"
    );
    // Half of the spot instances interrupted within the hour: every spot instance adds
    // risk, so the share stops below max_spot_share and the risk stays within max_risk.
    let stormy = TierSelectConfig {
        catalog: Some(one_type_catalog(dir.path(), 0.5)),
        ..Default::default()
    };
    let st = TierSelect::new(stormy).unwrap();
    let rules = st.rules();
    let mut st = st;
    let (out, _) = decide(&mut st, fc());
    let count: i64 = col(&out, "count")[0].parse().unwrap();
    let spot: i64 = col(&out, "spot_count")[0].parse().unwrap();
    let risk: f64 = col(&out, "risk")[0].parse().unwrap();
    assert!(
        spot > 0 && spot < (0.8 * count as f64).floor() as i64,
        "{spot} of {count}"
    );
    assert!(risk <= 0.15, "{risk}");
    assert!(col(&out, "reason")[0].contains("interruption risk"));
    // Brute force over every count and spot share the rules allow: nothing feasible is
    // cheaper than what was chosen.
    let cost: f64 = col(&out, "expected_cost_per_hour")[0].parse().unwrap();
    let inst = &st.catalog().instance[0];
    let need = plan::Need {
        resource: "cpu".into(),
        unit: "vcpu".into(),
        horizon_s: 3600,
        levels: vec![0.1, 0.5, 0.9],
        values: vec![10.0, 15.0, 20.0],
    };
    for n in 5..=7i64 {
        for s in 0..=((0.8 * n as f64).floor() as i64) {
            let r = rules.risk(inst, std::slice::from_ref(&need), n, s);
            let c = 0.3 * s as f64 + (n - s) as f64;
            assert!(
                r > 0.15 + 1e-12 || c >= cost - 1e-9,
                "n {n} s {s}: {c} < {cost}"
            );
        }
    }
}

#[test]
fn memory_can_drive_the_count() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    let (out, _) = decide(
        &mut st,
        forecasts(&[
            ("w", 3600, "cpu", "vcpu", 3600, [1.0, 2.0, 4.0]),
            ("w", 3600, "memory", "gib", 3600, [100.0, 120.0, 200.0]),
        ]),
    );
    assert_eq!(col(&out, "driver_resource"), ["memory"]);
    // 200 GiB: 4 x r7i.2xlarge (64 GiB), 3 of them spot = 3 x 0.2117 + 0.5292 per hour,
    // cheaper than 4 x m7i.4xlarge (64 GiB) in the same mix.
    assert_eq!(col(&out, "instance_type"), ["r7i.2xlarge"]);
    assert_eq!(col(&out, "count"), ["4"]);
    assert_eq!(col(&out, "spot_count"), ["3"]);
}

#[test]
fn the_budget_holds_against_an_absurd_forecast() {
    let cfg = TierSelectConfig {
        budget_per_hour: Some(5.0),
        ..Default::default()
    };
    let mut st = TierSelect::new(cfg).unwrap();
    let (out, _) = decide(
        &mut st,
        forecasts(&[("w", 0, "cpu", "vcpu", 3600, [1e5, 5e5, 1e6])]),
    );
    let cost: f64 = col(&out, "expected_cost_per_hour")[0].parse().unwrap();
    assert!(cost <= 5.0 && cost > 4.0, "{cost}");
    assert!(col(&out, "reason")[0].contains("budget"));
    let bad = TierSelectConfig {
        budget_per_hour: Some(f64::NAN),
        ..Default::default()
    };
    assert!(
        TierSelect::new(bad)
            .err()
            .unwrap()
            .to_string()
            .contains("budget_per_hour")
    );
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
fn scale_in_waits_until_demand_is_clearly_below_the_smaller_fleet() {
    let mut st = TierSelect::new(TierSelectConfig::default()).unwrap();
    let mk = |t: i64, p90: f64| forecasts(&[("w", t, "cpu", "vcpu", 3600, [1.0, 1.0, p90])]);
    let h = 4 * 3600; // past the cooldown
    let (first, _) = decide(&mut st, mk(0, 40.0));
    assert_eq!(col(&first, "count"), ["10"]);
    // 35 vCPU would fit 9 x 4 = 36, but not with the 10 % margin (32.4): held.
    let (held, _) = decide(&mut st, mk(h, 35.0));
    assert_eq!(col(&held, "count"), ["10"]);
    assert!(col(&held, "reason")[0].contains("scale_in_margin"));
    let (down, _) = decide(&mut st, mk(h + 3600, 30.0));
    assert_eq!(col(&down, "count"), ["8"]);
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

#[test]
fn spot_prices_are_refreshed_from_ec2_and_the_reason_says_where_they_came_from() {
    let moto = wfe_ec2::testing::Moto::start();
    let cfg = TierSelectConfig {
        spot_prices: Some(SpotPriceSource {
            region: None,
            endpoint: Some(moto.url.clone()),
            refresh_s: 3600,
        }),
        ..Default::default()
    };
    let mut st = TierSelect::with_cloud(cfg, Box::new(moto.client())).unwrap();
    let types: Vec<String> = st
        .catalog()
        .instance
        .iter()
        .map(|i| i.r#type.clone())
        .collect();
    let (out, ctx) = decide(
        &mut st,
        forecasts(&[("w", 0, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]),
    );
    // What EC2 (moto) says now is what the stage priced with.
    let mut check = moto.client();
    let prices = wfe_ec2::Cloud::spot_prices(&mut check, &types).unwrap();
    assert!(!prices.is_empty());
    for (t, p) in &prices {
        let inst = st
            .catalog()
            .instance
            .iter()
            .find(|i| &i.r#type == t)
            .unwrap();
        assert_eq!(inst.spot_price, Some(*p), "{t}");
    }
    assert_eq!(ctx.counters()["spot_prices.refreshed"], prices.len() as u64);
    assert!(col(&out, "reason")[0].contains("DescribeSpotPriceHistory"));

    // No source: the snapshot's prices, and the reason says so.
    let mut plain = TierSelect::new(TierSelectConfig::default()).unwrap();
    let (out, _) = decide(
        &mut plain,
        forecasts(&[("w", 0, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]),
    );
    assert!(col(&out, "reason")[0].contains("catalog snapshot 2026-11-01"));

    // A source that cannot be reached: reported, the prices in use kept, decisions go on.
    drop(moto);
    let mut st2 = TierSelect::with_cloud(
        TierSelectConfig {
            spot_prices: Some(SpotPriceSource {
                region: None,
                endpoint: Some("http://127.0.0.1:9".into()),
                refresh_s: 3600,
            }),
            ..Default::default()
        },
        Box::new(
            wfe_ec2::Ec2::with_credentials(
                &wfe_ec2::Ec2Settings {
                    region: "us-east-1".into(),
                    endpoint: Some("http://127.0.0.1:9".into()),
                    max_attempts: 1,
                    max_calls_per_s: 100.0,
                },
                "testing",
                "testing",
            )
            .unwrap(),
        ),
    )
    .unwrap();
    let (out, ctx) = decide(
        &mut st2,
        forecasts(&[("w", 0, "cpu", "vcpu", 3600, [10.0, 15.0, 20.0])]),
    );
    assert_eq!(out.rows(Topic::Decisions), 1);
    assert_eq!(ctx.counters()["rejected.spot_price_refresh_failed"], 1);
    assert!(col(&out, "reason")[0].contains("catalog snapshot"));
}

/// A stage with the reactive floor on (bursts past 80 %, to 70 %) over ASD's CPU (m00 x 32
/// vCPU).
fn reactive_stage() -> TierSelect {
    let cfg = TierSelectConfig {
        burst_utilisation: 0.8,
        burst_target: 0.7,
        ..Default::default()
    };
    TierSelect::new(cfg)
        .unwrap()
        .with_resources(vec![asd_cpu()])
}

/// ASD's CPU as a resource: m00 x 32 vCPU.
pub(crate) fn asd_cpu() -> ResourceMap {
    ResourceMap {
        name: "cpu".into(),
        metrics: vec!["m00".into()],
        unit: "vcpu".into(),
        capacity: 32.0,
        workload_prefix: None,
    }
}

#[test]
fn the_reactive_floor_scales_up_on_observed_demand_and_forecasts_stay_above_it() {
    let mut st = reactive_stage();
    assert_eq!(st.inputs(), [Topic::Forecasts, Topic::MetricsNorm]);
    // A forecast of about 1 vCPU: one m7i.xlarge (4 vCPU).
    let (first, _) = decide(
        &mut st,
        forecasts(&[("omi-5", 0, "cpu", "vcpu", 3600, [0.5, 0.8, 1.0])]),
    );
    assert_eq!(col(&first, "count"), ["1"]);
    // omi-5's real CPU (m00 x 32 vCPU) soon passes 80 % of 4 vCPU.
    let norm = normalised("asd", &["omi-5"], 2);
    let mut out = VecCollector::new();
    let mut ctx = Context::new("tier-select");
    for b in &norm {
        st.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    let reasons = col(&out, "reason");
    assert!(
        !reasons.is_empty(),
        "observed demand never passed 3.2 vCPU?"
    );
    assert!(reasons.iter().all(|r| r.starts_with("reactive floor")));
    let counts: Vec<i64> = col(&out, "count")
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let required: Vec<f64> = col(&out, "required")
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    for (n, v) in counts.iter().zip(&required) {
        // Enough for the observed demand at 70 %, and only ever up.
        assert!(*n as f64 * 4.0 * 0.7 >= *v - 1e-9, "{n} for {v}");
    }
    assert!(counts.windows(2).all(|w| w[1] > w[0]), "{counts:?}");
    assert_eq!(ctx.counters()["decisions.bursts"], counts.len() as u64);
    // The same steps again (a redelivery): nothing new.
    let mut again = VecCollector::new();
    for b in &norm {
        st.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut again)
            .unwrap();
    }
    assert_eq!(again.rows(Topic::Decisions), 0);
    // A later forecast of 1 vCPU does not take the fleet below what the demand last
    // observed needs at 70 %.
    let late = 4_000_000_000;
    let (next, _) = decide(
        &mut st,
        forecasts(&[("omi-5", late, "cpu", "vcpu", 3600, [0.5, 0.8, 1.0])]),
    );
    let n: i64 = col(&next, "count")[0].parse().unwrap();
    assert!(n > 1, "{n}");
    assert!(col(&next, "reason")[0].contains("reactive floor"));
}

/// Steps seen before a workload's first decision and delivered again after it (a restarted
/// normalise replays what it sent since its last commit; the first forecast came from the same
/// message as those steps) are not judged against the fleet decided since: the embedded run
/// saw them once, with nothing in place, and decided nothing on them.
#[test]
fn steps_seen_before_the_first_decision_are_not_judged_again_when_redelivered() {
    let mut st = reactive_stage();
    let norm = normalised("asd", &["omi-5"], 2);
    let observe = |st: &mut TierSelect| {
        let mut out = VecCollector::new();
        let mut ctx = Context::new("tier-select");
        for b in &norm {
            st.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
                .unwrap();
        }
        out.rows(Topic::Decisions)
    };
    assert_eq!(observe(&mut st), 0, "nothing in place: nothing to raise");
    // The first forecast: one m7i.xlarge, which omi-5's steps above would overload.
    let (first, _) = decide(
        &mut st,
        forecasts(&[("omi-5", 0, "cpu", "vcpu", 3600, [0.5, 0.8, 1.0])]),
    );
    assert_eq!(col(&first, "count"), ["1"]);
    assert_eq!(observe(&mut st), 0, "a redelivered step was judged again");
}

#[test]
fn private_capacity_comes_first_and_bursting_pays_for_transfer() {
    let cfg = TierSelectConfig {
        private: vec![PrivateCapacity {
            workload_prefix: Some("onprem-".into()),
            vcpu: 16.0,
            memory_gib: 64.0,
            network_gbps: 10.0,
        }],
        transfer_cost_per_gb: 0.09,
        ..Default::default()
    };
    let mut st = TierSelect::new(cfg).unwrap();
    // p90 of 12 vCPU: the 16 private vCPU carry it, no public instance.
    let (out, _) = decide(
        &mut st,
        forecasts(&[("onprem-a", 0, "cpu", "vcpu", 3600, [8.0, 10.0, 12.0])]),
    );
    assert_eq!(col(&out, "count"), ["0"]);
    assert_eq!(col(&out, "expected_cost_per_hour"), ["0"]);
    assert!(col(&out, "reason")[0].contains("private capacity carries"));
    // p90 of 20 vCPU: 4 above the private 16, so one m7i.xlarge bursts out; its share of
    // the capacity (4 of 20) of the 1 Gbit/s median traffic crosses to the cloud:
    // 0.2 x 1 x 450 GB/h x 0.09 USD/GB = 8.1 USD/h on top of the instance.
    let (out, _) = decide(
        &mut st,
        forecasts(&[
            ("onprem-b", 0, "cpu", "vcpu", 3600, [14.0, 17.0, 20.0]),
            ("onprem-b", 0, "network", "gbps", 3600, [0.5, 1.0, 2.0]),
        ]),
    );
    assert_eq!(col(&out, "count"), ["1"]);
    assert_eq!(col(&out, "instance_type"), ["m7i.xlarge"]);
    let cost: f64 = col(&out, "expected_cost_per_hour")[0].parse().unwrap();
    assert!((cost - (0.2016 + 8.1)).abs() < 1e-9, "{cost}");
    assert!(col(&out, "reason")[0].contains("hybrid burst"));
    // Workloads without private capacity are provisioned from the catalog as before.
    let (out, _) = decide(
        &mut st,
        forecasts(&[("cloud-c", 0, "cpu", "vcpu", 3600, [8.0, 10.0, 12.0])]),
    );
    assert_eq!(col(&out, "count"), ["3"]);
    let bad = TierSelectConfig {
        private: vec![PrivateCapacity {
            workload_prefix: None,
            vcpu: -1.0,
            memory_gib: 0.0,
            network_gbps: 0.0,
        }],
        ..Default::default()
    };
    assert!(
        TierSelect::new(bad)
            .err()
            .unwrap()
            .to_string()
            .contains("private")
    );
}

/// The default job's SMD mapping: cpu = m00 of 64 vCPU, memory = m05 of 256 GiB.
fn smd_resources() -> Vec<ResourceMap> {
    let map = |name: &str, metric: &str, unit: &str, capacity: f64| ResourceMap {
        name: name.into(),
        metrics: vec![metric.into()],
        unit: unit.into(),
        capacity,
        workload_prefix: None,
    };
    vec![
        map("cpu", "m00", "vcpu", 64.0),
        map("memory", "m05", "gib", 256.0),
    ]
}

/// Every fingerprint row of a run, one row per batch, in order.
fn fingerprint_rows(norm: &[RecordBatch]) -> Vec<RecordBatch> {
    let mut fp = wfe_fingerprint::Fingerprint::new(Default::default()).unwrap();
    let mut out = VecCollector::new();
    let mut ctx = Context::new("fingerprint");
    for b in norm {
        fp.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    fp.flush(&mut ctx, &mut out).unwrap();
    out.of(Topic::Fingerprints)
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|r| b.slice(r, 1)).collect::<Vec<_>>())
        .collect()
}

fn feed(
    st: &mut TierSelect,
    topic: Topic,
    rows: &[RecordBatch],
    ctx: &mut Context,
) -> VecCollector {
    let mut out = VecCollector::new();
    for b in rows {
        st.process_batch(topic, b.clone(), ctx, &mut out).unwrap();
    }
    out
}

#[test]
fn a_new_workload_is_sized_from_its_nearest_fingerprints() {
    // Three SMD machines are known when machine-2-2 arrives: its first fingerprint is cold and
    // carries its neighbours' allocation (per metric, raw units).
    let mut norm = normalised("smd", &["machine-2-1", "machine-2-7", "machine-3-3"], 12);
    norm.extend(normalised("smd", &["machine-2-2"], 6));
    let rows = fingerprint_rows(&norm);
    let of = |b: &RecordBatch| strings(b, "workload").unwrap().value(0).to_string();
    let is_cold = |b: &RecordBatch| {
        wfe_contract::columns::bools(b, "cold_start")
            .unwrap()
            .value(0)
    };
    let new = |b: &RecordBatch| of(b) == "machine-2-2";
    let first_cold = rows
        .iter()
        .position(|b| new(b) && is_cold(b))
        .expect("a cold row");
    let warm = rows
        .iter()
        .position(|b| new(b) && !is_cold(b))
        .expect("machine-2-2 is known after its learning period");
    // What the neighbours' allocation says, read here from the row itself.
    let row = &rows[first_cold];
    let names = list_row_str(
        row.column_by_name("allocation_metrics").unwrap().as_ref(),
        0,
    )
    .unwrap();
    let alloc = list_row_f64(row.column_by_name("allocation").unwrap().as_ref(), 0).unwrap();
    let raw = |m: &str| alloc[names.iter().position(|n| n == m).unwrap()];
    let (cpu, mem) = (raw("m00") * 64.0, raw("m05") * 256.0);
    let neighbours = list_row_str(row.column_by_name("neighbours").unwrap().as_ref(), 0).unwrap();
    assert!(!neighbours.is_empty());

    let cfg = TierSelectConfig {
        cold_start: true,
        ..Default::default()
    };
    let mut st = TierSelect::new(cfg)
        .unwrap()
        .with_resources(smd_resources());
    assert_eq!(st.inputs(), [Topic::Forecasts, Topic::Fingerprints]);
    let mut ctx = Context::new("tier-select");
    let out = feed(&mut st, Topic::Fingerprints, &rows[..warm], &mut ctx);
    let (w, reason, count, required) = (
        col(&out, "workload"),
        col(&out, "reason"),
        col(&out, "count"),
        col(&out, "required"),
    );
    let mine: Vec<usize> = (0..w.len()).filter(|&i| w[i] == "machine-2-2").collect();
    assert_eq!(mine.len(), 1, "one cold-start decision: {reason:?}");
    let i = mine[0];
    assert!(
        reason[i].starts_with("cold start: no forecast of machine-2-2 yet"),
        "{}",
        reason[i]
    );
    for n in &neighbours {
        assert!(reason[i].contains(n.as_str()), "{n} named in {}", reason[i]);
    }
    // Sized to cover the borrowed cpu and memory, driven by the larger of the two.
    let ty = col(&out, "instance_type")[i].clone();
    let inst = st
        .catalog()
        .instance
        .iter()
        .find(|x| x.r#type == ty)
        .unwrap()
        .clone();
    let n: i64 = count[i].parse().unwrap();
    let per = |unit: &str| inst.capacity(unit).unwrap() * inst.performance;
    assert!(
        n as f64 * per("vcpu") >= cpu - 1e-9,
        "{n} x {ty} for {cpu} vCPU"
    );
    assert!(
        n as f64 * per("gib") >= mem - 1e-9,
        "{n} x {ty} for {mem} GiB"
    );
    let req: f64 = required[i].parse().unwrap();
    assert!(
        (req - cpu).abs() < 1e-6 || (req - mem).abs() < 1e-6,
        "{req} vs {cpu}, {mem}"
    );
    assert!(ctx.counters()["decisions.cold_start"] >= 1);

    // While cold, a first forecast of a fraction of that is raised to the borrowed sizing.
    let at = 9_000_000_000;
    let tiny = [cpu * 0.1, cpu * 0.2, cpu * 0.3];
    let (raised, _) = decide(
        &mut st,
        forecasts(&[("machine-2-2", at, "cpu", "vcpu", 3600, tiny)]),
    );
    assert!(col(&raised, "reason")[0].contains("cold start: forecast raised"));
    let m: i64 = col(&raised, "count")[0].parse().unwrap();
    assert!(m as f64 * per("vcpu") >= cpu - 1e-9 || col(&raised, "instance_type")[0] != ty);
    // The same rows again (a redelivery) decide nothing.
    let again = feed(&mut st, Topic::Fingerprints, &rows[..warm], &mut ctx);
    assert_eq!(again.rows(Topic::Decisions), 0);
    assert!(ctx.counters()["dropped.replayed_fingerprint"] >= 1);
    // Once its own fingerprint is no longer cold, forecasts alone decide.
    feed(&mut st, Topic::Fingerprints, &rows[warm..=warm], &mut ctx);
    let (own, _) = decide(
        &mut st,
        forecasts(&[("machine-2-2", at + 3_600_000, "cpu", "vcpu", 3600, tiny)]),
    );
    assert!(
        !col(&own, "reason")[0].contains("cold start"),
        "{:?}",
        col(&own, "reason")
    );
}

#[test]
fn cold_rows_without_neighbours_or_usable_allocations_decide_nothing() {
    let maps = smd_resources();
    // NaN and negative allocations are left out; what is left sizes the resource.
    let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let got = cold_values(&maps, "w", &m(&["m00", "m05"]), &[f64::NAN, 0.5]);
    assert_eq!(got, [None, Some(128.0)]);
    assert_eq!(cold_values(&maps, "w", &m(&["m00"]), &[-1.0]), [None, None]);
    // The first machine of a fleet has no known neighbour: its cold row decides nothing.
    let rows = fingerprint_rows(&normalised("asd", &["omi-1"], 2));
    assert!(!rows.is_empty());
    let cfg = TierSelectConfig {
        cold_start: true,
        ..Default::default()
    };
    let mut st = TierSelect::new(cfg)
        .unwrap()
        .with_resources(smd_resources());
    let mut ctx = Context::new("tier-select");
    let out = feed(&mut st, Topic::Fingerprints, &rows, &mut ctx);
    assert_eq!(out.rows(Topic::Decisions), 0);
    assert!(ctx.counters()["cold_start.no_neighbours"] >= 1);
}

/// A burst after a restart prices its risk with the last issuance's needs, as the stage that
/// never stopped does: the needs are in the state's entries (a restored stage had none and
/// said risk 0, the fleet then differing from the embedded run under chaos).
#[test]
fn a_restored_stage_prices_a_burst_with_the_needs_it_had() {
    let norm = normalised("asd", &["omi-5"], 2);
    let bursts = |restart: bool| {
        let mut st = reactive_stage();
        decide(
            &mut st,
            forecasts(&[("omi-5", 0, "cpu", "vcpu", 3600, [0.5, 2.0, 3.5])]),
        );
        if restart {
            let split = st.snapshot_split().unwrap().unwrap();
            assert!(split.entries().contains_key("needs/omi-5"));
            st = reactive_stage();
            wfe_contract::state::restore(&mut st, split).unwrap();
        }
        let mut out = VecCollector::new();
        let mut ctx = Context::new("tier-select");
        for b in &norm {
            st.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
                .unwrap();
        }
        col(&out, "risk")
    };
    let risks = bursts(false);
    assert!(
        risks.iter().any(|r| r.parse::<f64>().unwrap() > 0.0),
        "{risks:?}"
    );
    assert_eq!(bursts(true), risks);
}

/// `hold_h`: a forecast after a jump keeps the capacity the highest demand of the window
/// needs, not only what the step last observed needs; the hold survives a restart.
#[test]
fn with_hold_h_a_forecast_keeps_what_the_window_s_peak_needs_across_a_restart() {
    let norm = normalised("asd", &["omi-5"], 2);
    let steps: Vec<(i64, f64)> = (norm.iter())
        .flat_map(|b| wfe_domain::resources::resource_steps(&[asd_cpu()], b).unwrap())
        .filter_map(|s| Some((s.time, s.values[0]?)))
        .collect();
    let last_hour = steps.iter().map(|s| s.0).max().unwrap() / 3_600_000;
    // The highest demand of the clock hours from `window` before the last step's.
    let peak = |window: i64| {
        (steps.iter())
            .filter(|(t, _)| t / 3_600_000 >= last_hour - window)
            .fold(0.0, |m: f64, (_, v)| m.max(*v))
    };
    let at = |v: f64| (v / (4.0 * 0.7) - 1e-9).ceil() as i64;
    let after = |hold_h: u32, restart: bool| {
        let cfg = TierSelectConfig {
            burst_utilisation: 0.8,
            burst_target: 0.7,
            hold_h,
            ..Default::default()
        };
        let make = || (TierSelect::new(cfg.clone()).unwrap()).with_resources(vec![asd_cpu()]);
        let mut st = make();
        decide(
            &mut st,
            forecasts(&[("omi-5", 0, "cpu", "vcpu", 3600, [0.5, 0.8, 1.0])]),
        );
        feed(
            &mut st,
            Topic::MetricsNorm,
            &norm,
            &mut Context::new("tier-select"),
        );
        if restart {
            let split = st.snapshot_split().unwrap().unwrap();
            assert!(split.entries().contains_key("hold/omi-5"));
            st = make();
            wfe_contract::state::restore(&mut st, split).unwrap();
        }
        let (next, ctx) = decide(
            &mut st,
            forecasts(&[("omi-5", 4_000_000_000, "cpu", "vcpu", 3600, [0.5, 0.8, 1.0])]),
        );
        let n: i64 = col(&next, "count")[0].parse().unwrap();
        let why = col(&next, "reason")[0].clone();
        // Counted on /metrics where the memory raised it.
        let held = ctx.counters().get("decisions.held").copied().unwrap_or(0);
        assert_eq!(
            held,
            u64::from(why.contains("the highest of the last")),
            "{why}"
        );
        (n, why)
    };
    let (last_only, _) = after(0, false);
    let (held, why) = after(720, false);
    // One m7i.xlarge is 4 vCPU: the peak at 70 % (the two days are within the window).
    assert_eq!(held, at(peak(720)), "peak {}", peak(720));
    assert!(
        held > last_only,
        "{held} vs {last_only}: the last step was the peak?"
    );
    // A shorter window forgets the older peak.
    assert!(
        peak(12) < peak(720),
        "the two days' peak was in their last 12 h"
    );
    assert_eq!(after(12, false).0, at(peak(12)).max(last_only));
    assert!(why.contains("the highest of the last 720 h"), "{why}");
    assert_eq!(after(720, true), (held, why));
    // Restored where `hold_h` is off: the holds are not kept (nor written again).
    let mut held_st = (TierSelect::new(TierSelectConfig {
        burst_utilisation: 0.8,
        hold_h: 720,
        ..Default::default()
    }))
    .unwrap()
    .with_resources(vec![asd_cpu()]);
    feed(
        &mut held_st,
        Topic::MetricsNorm,
        &norm,
        &mut Context::new("tier-select"),
    );
    let split = held_st.snapshot_split().unwrap().unwrap();
    assert!(split.entries().contains_key("hold/omi-5"));
    let mut off = reactive_stage();
    wfe_contract::state::restore(&mut off, split).unwrap();
    let again = off.snapshot_split().unwrap().unwrap();
    assert!(!again.entries().keys().any(|k| k.starts_with("hold/")));
    // The memory is bounded: a window past 90 days is refused, naming the setting.
    let long = TierSelectConfig {
        hold_h: 2_161,
        ..Default::default()
    };
    let err = TierSelect::new(long).err().unwrap().to_string();
    assert!(err.contains("stages.tier-select.hold_h"), "{err}");
}

/// `hold_margin`: headroom over the held peak is a least demand the objective buys with the
/// forecast's mix (spot where it pays), not on-demand instances the floor adds.
#[test]
fn hold_margin_buys_headroom_over_the_held_peak_with_the_forecast_s_mix() {
    let norm = normalised("asd", &["omi-5"], 2);
    let peak = (norm.iter())
        .flat_map(|b| wfe_domain::resources::resource_steps(&[asd_cpu()], b).unwrap())
        .filter_map(|s| s.values[0])
        .fold(0.0, f64::max);
    let after = |hold_margin: f64| {
        let cfg = TierSelectConfig {
            burst_utilisation: 0.8,
            burst_target: 0.7,
            hold_h: 720,
            hold_margin,
            ..Default::default()
        };
        // Another workload family's `cpu` first: the held peak is looked up in omi-5's own.
        let machines = ResourceMap {
            workload_prefix: Some("machine-".into()),
            ..asd_cpu()
        };
        let mut st = (TierSelect::new(cfg).unwrap()).with_resources(vec![machines, asd_cpu()]);
        feed(
            &mut st,
            Topic::MetricsNorm,
            &norm,
            &mut Context::new("tier-select"),
        );
        let (next, ctx) = decide(
            &mut st,
            forecasts(&[("omi-5", 4_000_000_000, "cpu", "vcpu", 3600, [0.5, 0.8, 1.0])]),
        );
        let n: i64 = col(&next, "count")[0].parse().unwrap();
        let spot: i64 = col(&next, "spot_count")[0].parse().unwrap();
        let why = col(&next, "reason")[0].clone();
        let inst = st.catalog().get(&col(&next, "instance_type")[0]).unwrap();
        let vcpu = n as f64 * inst.capacity("vcpu").unwrap() * inst.performance;
        let counted = ctx.counters().get("decisions.hold_margin").copied();
        (vcpu, spot, why, counted.unwrap_or(0))
    };
    let (plain, _, plain_why, none) = after(0.0);
    assert_eq!(none, 0);
    assert!(!plain_why.contains("hold_margin"), "{plain_why}");
    // Twice the peak, more than the floor's peak at 70 % asks.
    let (vcpu, spot, why, counted) = after(2.0);
    assert!(vcpu >= 2.0 * peak, "{vcpu} vCPU for twice {peak}: {why}");
    assert!(vcpu > plain, "{vcpu} vs {plain}");
    assert!(
        spot > 0,
        "the headroom is bought with the forecast's mix: {why}"
    );
    assert!(
        why.contains("2 x the highest demand of the last 720 h (hold_margin)"),
        "{why}"
    );
    assert_eq!(counted, 1);
    // A margin the forecast already passes raises nothing.
    let (small, _, small_why, small_counted) = after(0.01);
    assert_eq!((small, small_counted), (plain, 0), "{small_why}");
    // Bounded, and meaningless without the floor's memory: refused, naming the setting.
    for (hold_h, hold_margin) in [(720, 11.0), (720, f64::NAN), (720, -1.0), (0, 2.0)] {
        let cfg = TierSelectConfig {
            burst_utilisation: 0.8,
            hold_h,
            hold_margin,
            ..Default::default()
        };
        let err = TierSelect::new(cfg).err().unwrap().to_string();
        assert!(err.contains("stages.tier-select.hold_margin"), "{err}");
    }
}
