use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use wfe_contract::VecCollector;
use wfe_contract::columns::{dictionary, f64s, list_f64, strings, timestamp_column};

use super::*;

const MIN: i64 = 60;

/// CPU in vCPU: the metric `cpu` x 1.
fn cpu() -> Vec<ResourceMap> {
    vec![ResourceMap {
        name: "cpu".into(),
        metrics: vec!["cpu".into()],
        unit: "vcpu".into(),
        capacity: 1.0,
        workload_prefix: None,
    }]
}

fn host(name: &str, capacity: f64, environment: Option<&str>) -> HostConfig {
    HostConfig {
        name: name.into(),
        capacity,
        environment: environment.map(str::to_string),
    }
}

/// A `metrics.norm` batch: per (workload, labels, value of `cpu`), one step at `t_s`.
fn norm(t_s: i64, rows: &[(&str, &str, f64)]) -> RecordBatch {
    let n = rows.len() as i32;
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let v: Vec<f64> = rows.iter().map(|r| r.2).collect();
    RecordBatch::try_new(
        Topic::MetricsNorm.schema(),
        vec![
            timestamp_column(vec![t_s * 1000; rows.len()]),
            dictionary((0..n).collect(), &names).unwrap(),
            dictionary(vec![0; rows.len()], &["cpu"]).unwrap(),
            Arc::new(Float64Array::from(v.clone())) as ArrayRef,
            Arc::new(Float64Array::from(v)),
            Arc::new(Int64Array::from(vec![MIN * 1000; rows.len()])),
            Arc::new(BooleanArray::from(vec![false; rows.len()])),
            Arc::new(BooleanArray::from(vec![false; rows.len()])),
            dictionary((0..n).collect(), &labels).unwrap(),
        ],
    )
    .unwrap()
}

/// A `forecasts` batch issued at `t_s`, one horizon (1 h), per (workload, [p10, p50, p90]).
fn forecasts(t_s: i64, rows: &[(&str, [f64; 3])]) -> RecordBatch {
    let n = rows.len();
    let text = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    RecordBatch::try_new(
        Topic::Forecasts.schema(),
        vec![
            timestamp_column(vec![t_s * 1000; n]),
            timestamp_column(vec![(t_s + 3600) * 1000; n]),
            text(rows.iter().map(|r| r.0).collect()),
            text(vec!["cpu"; n]),
            text(vec!["vcpu"; n]),
            Arc::new(Int64Array::from(vec![3600; n])),
            list_f64(rows.iter().map(|_| vec![0.1, 0.5, 0.9])),
            list_f64(rows.iter().map(|r| r.1.to_vec())),
            text(vec!["ets"; n]),
            text(vec!["1"; n]),
            text(vec!["mae"; n]),
            Arc::new(Float64Array::from(vec![Some(0.1); n])),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
        ],
    )
    .unwrap()
}

/// a and b on h1 (labels), moving together; c on h2; d placed nowhere.
fn history(
    stage: &mut Contention,
    ctx: &mut Context,
    out: &mut VecCollector,
    steps: std::ops::Range<i64>,
) {
    for k in steps {
        let x = (k % 7) as f64 * 0.3;
        let b = norm(
            k * MIN,
            &[
                ("a", "env.zone=x,host=h1", 3.0 + x),
                ("b", "env.zone=x,host=h1", 2.0 + x),
                ("c", "env.zone=x,host=h2", 1.0 + ((k * 3) % 5) as f64 * 0.1),
                ("d", "env.zone=x", 9.0),
            ],
        );
        stage
            .process_batch(Topic::MetricsNorm, b, ctx, out)
            .unwrap();
    }
}

fn stage(hosts: Vec<HostConfig>) -> Contention {
    let cfg = ContentionConfig {
        hosts,
        ..Default::default()
    };
    Contention::new(cfg, cpu()).unwrap()
}

fn column(out: &VecCollector, name: &str) -> Vec<String> {
    out.of(Topic::Migrations)
        .iter()
        .flat_map(|b| {
            let c = strings(b, name).unwrap();
            (0..b.num_rows())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// a (6) and b (5) peak together on h1 (10): the smallest that relieves it, b, moves to h2,
/// where c leaves room. An issuance is planned once every placed workload's forecasts have
/// reached it (b's come last), and the move stands: the next issuance plans none.
#[test]
fn two_workloads_that_peak_together_overfill_a_host_and_the_smaller_moves() {
    let mut st = stage(vec![host("h1", 10.0, None), host("h2", 10.0, None)]);
    let (mut ctx, mut out) = (Context::new("contention"), VecCollector::new());
    history(&mut st, &mut ctx, &mut out, 0..61);
    let (a, b, c) = (
        ("a", [5.5, 6.0, 6.5]),
        ("b", [4.5, 5.0, 5.5]),
        ("c", [1.5, 2.0, 2.5]),
    );
    let d = ("d", [8.0, 9.0, 10.0]);
    let mut send = |st: &mut Contention, t: i64, rows: &[(&str, [f64; 3])]| {
        st.process_batch(Topic::Forecasts, forecasts(t, rows), &mut ctx, &mut out)
            .unwrap();
    };
    send(&mut st, 3600, &[a, c, d]);
    send(&mut st, 7200, &[a, c, d]);
    assert_eq!(
        st.state.shared.planned, None,
        "planned before b's forecast came"
    );
    send(&mut st, 3600, &[b]);
    assert_eq!(st.state.shared.planned, Some(3_600_000));
    send(&mut st, 7200, &[b]);
    st.flush(&mut ctx, &mut out).unwrap();
    assert_eq!(st.state.shared.planned, Some(7_200_000));
    assert_eq!(column(&out, "workload"), ["b"], "the move did not stand");
    assert_eq!(column(&out, "from_host"), ["h1"]);
    assert_eq!(column(&out, "to_host"), ["h2"]);
    let reason = &column(&out, "reason")[0];
    // 11 against 10, each spread 0.39 (their 10 % to 90 % over the normal's), moving
    // together (correlation 1): a 0.90 chance.
    assert!(reason.starts_with("h1: a 0.900 chance"), "{reason}");
    let m = &out.of(Topic::Migrations)[0];
    assert!((f64s(m, "from_risk").unwrap().value(0) - 0.9).abs() < 1e-3);
    assert!(f64s(m, "to_risk_after").unwrap().value(0) <= 0.05);
    assert_eq!(
        st.state.workloads.len(),
        3,
        "d runs nowhere known: not kept"
    );
}

/// Live (no source batch numbers), a placed workload observed at an issuance but not yet
/// forecast there holds it back, until it is observed more than `max_wait_s` past it: it
/// is then planned without it (a alone fits on h1).
#[test]
fn an_issuance_waits_for_a_silent_workload_no_longer_than_max_wait() {
    let cfg = ContentionConfig {
        hosts: vec![host("h1", 10.0, None), host("h2", 10.0, None)],
        max_wait_s: 600,
        ..Default::default()
    };
    let mut st = Contention::new(cfg, cpu()).unwrap();
    let (mut ctx, mut out) = (Context::new("contention"), VecCollector::new());
    history(&mut st, &mut ctx, &mut out, 0..61);
    let (a, c) = (("a", [5.5, 6.0, 6.5]), ("c", [1.5, 2.0, 2.5]));
    st.process_batch(
        Topic::Forecasts,
        forecasts(3600, &[a, c]),
        &mut ctx,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        st.state.shared.planned, None,
        "b was observed at 3600: its forecast may come"
    );
    history(&mut st, &mut ctx, &mut out, 61..72);
    st.process_batch(
        Topic::Forecasts,
        forecasts(4200, &[a, c]),
        &mut ctx,
        &mut out,
    )
    .unwrap();
    assert_eq!(st.state.shared.planned, Some(3_600_000));
    assert_eq!(out.rows(Topic::Migrations), 0);
    assert_eq!(ctx.counters().get("hosts.contended"), None);
}

/// The only host with room is of another environment: nothing moves, and the host is
/// counted as contended and unresolved.
#[test]
fn a_move_goes_only_to_a_host_of_the_workloads_environment() {
    let mut st = stage(vec![
        host("h1", 10.0, None),
        host("h2", 10.0, Some("zone=y")),
    ]);
    let (mut ctx, mut out) = (Context::new("contention"), VecCollector::new());
    history(&mut st, &mut ctx, &mut out, 0..60);
    let fc = [("a", [5.5, 6.0, 6.5]), ("b", [4.5, 5.0, 5.5])];
    st.process_batch(Topic::Forecasts, forecasts(3600, &fc), &mut ctx, &mut out)
        .unwrap();
    st.flush(&mut ctx, &mut out).unwrap();
    assert_eq!(out.rows(Topic::Migrations), 0);
    assert_eq!(ctx.counters()["hosts.unresolved"], 1);
}

/// Stopped after the first issuance and restored from its changelog entries, the stage plans
/// what it would have planned without the stop.
#[test]
fn a_restored_stage_plans_what_it_would_have() {
    let hosts = || vec![host("h1", 10.0, None), host("h2", 10.0, None)];
    let fc = [("a", [5.5, 6.0, 6.5]), ("b", [4.5, 5.0, 5.5])];
    let run = |stop: bool| {
        let mut st = stage(hosts());
        let (mut ctx, mut out) = (Context::new("contention"), VecCollector::new());
        history(&mut st, &mut ctx, &mut out, 0..60);
        st.process_batch(Topic::Forecasts, forecasts(3600, &fc), &mut ctx, &mut out)
            .unwrap();
        if stop {
            let split = st.snapshot_split().unwrap().unwrap();
            let entries = wfe_contract::state::Split::from_entries(split.into_entries());
            st = stage(hosts());
            st.restore_split(entries).unwrap();
        }
        st.process_batch(Topic::Forecasts, forecasts(7200, &fc), &mut ctx, &mut out)
            .unwrap();
        st.flush(&mut ctx, &mut out).unwrap();
        (column(&out, "workload"), column(&out, "reason"))
    };
    let whole = run(false);
    assert_eq!(whole.0, ["b"]);
    assert_eq!(run(true), whole);
}

/// The configured placement wins over the label; a planned move ends when the label changes
/// (whoever runs the workload placed it anew).
#[test]
fn placement_comes_from_the_config_else_the_label() {
    let mut cfg = ContentionConfig {
        hosts: vec![host("h1", 10.0, None), host("h2", 10.0, None)],
        placement: BTreeMap::from([("c".to_string(), "h1".to_string())]),
        ..Default::default()
    };
    let mut st = Contention::new(cfg.clone(), cpu()).unwrap();
    let (mut ctx, mut out) = (Context::new("contention"), VecCollector::new());
    history(&mut st, &mut ctx, &mut out, 0..2);
    assert_eq!(st.state.workloads["c"].host("c", &cfg), Some("h1"));
    assert_eq!(st.state.workloads["a"].host("a", &cfg), Some("h1"));
    cfg.placement.clear();
    assert_eq!(st.state.workloads["c"].host("c", &cfg), Some("h2"));
}

/// A workload whose label names a host the config does not list counts nowhere, and says
/// so once (its labels do not change after).
#[test]
fn a_label_naming_an_unknown_host_is_rejected_with_where() {
    let mut st = stage(vec![host("h1", 10.0, None)]);
    let (mut ctx, mut out) = (Context::new("contention"), VecCollector::new());
    history(&mut st, &mut ctx, &mut out, 0..3);
    assert_eq!(
        ctx.counters().get("rejected.unknown_host"),
        Some(&1),
        "{:?}",
        ctx.counters()
    );
}

#[test]
fn bad_settings_are_clear_errors() {
    let bad = |cfg: ContentionConfig, resources: Vec<ResourceMap>, what: &str| {
        let e = Contention::new(cfg, resources)
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains(what), "{e}");
    };
    let hosts = vec![host("h1", 10.0, None)];
    let with = |f: &dyn Fn(&mut ContentionConfig)| {
        let mut c = ContentionConfig {
            hosts: hosts.clone(),
            ..Default::default()
        };
        f(&mut c);
        c
    };
    bad(
        with(&|c| c.resource = "gpu".into()),
        cpu(),
        "`gpu` is not one of",
    );
    bad(with(&|c| c.bound = 1.0), cpu(), "contention.bound");
    bad(
        with(&|c| {
            c.placement.insert("w".into(), "h9".into());
        }),
        cpu(),
        "`w` on `h9`",
    );
    bad(
        with(&|c| c.hosts.push(host("h1", 5.0, None))),
        cpu(),
        "repeated",
    );
    bad(with(&|c| c.hosts[0].capacity = f64::NAN), cpu(), "capacity");
    let unknown = toml::from_str::<ContentionConfig>("hostz = []").unwrap_err();
    assert!(unknown.to_string().contains("hostz"), "{unknown}");
}
