use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use serde_json::json;
use wfe_contract::VecCollector;
use wfe_contract::columns::timestamp_column;

use super::*;

/// A decisions batch of (id, workload, tier, type, count).
fn decisions(rows: &[(&str, &str, &str, &str, i64)]) -> RecordBatch {
    let n = rows.len();
    let s = |i: usize| -> ArrayRef {
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| [r.0, r.1, r.2, r.3][i].to_string())
                .collect::<Vec<_>>(),
        ))
    };
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
    RecordBatch::try_new(
        Topic::Decisions.schema(),
        vec![
            s(0),
            timestamp_column(vec![0; n]),
            s(1),
            s(2),
            s(3),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![0; n])),
            Arc::new(Float64Array::from(vec![1.0; n])),
            Arc::new(Float64Array::from(vec![0.1; n])),
            text("cpu"),
            Arc::new(Float64Array::from(vec![0.9; n])),
            Arc::new(Int64Array::from(vec![3600; n])),
            Arc::new(Float64Array::from(vec![1.0; n])),
            text("[]"),
            text("test"),
            Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| if r.2 == "spot" { r.4 } else { 0 })
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// The record-only mode: the calls written, nothing sent.
fn recording() -> ActuateConfig {
    ActuateConfig {
        mode: Some(Mode::RecordOnly),
        ..Default::default()
    }
}

fn act(st: &mut Actuate, b: RecordBatch) -> (Vec<(String, serde_json::Value)>, Context) {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("actuate");
    st.process_batch(Topic::Decisions, b, &mut ctx, &mut out)
        .unwrap();
    let mut calls = vec![];
    for b in out.of(Topic::Actions) {
        let call = strings(&b, "api_call").unwrap();
        let params = strings(&b, "parameters").unwrap();
        let mode = strings(&b, "mode").unwrap();
        for r in 0..b.num_rows() {
            assert_eq!(mode.value(r), "record-only");
            calls.push((
                call.value(r).to_string(),
                serde_json::from_str(params.value(r)).unwrap(),
            ));
        }
    }
    (calls, ctx)
}

#[test]
fn scales_out_in_and_switches_type_with_the_right_calls() {
    let mut st = Actuate::new(recording()).unwrap();
    let (c, _) = act(&mut st, decisions(&[("d1", "w", "spot", "m7i.xlarge", 5)]));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, "ec2:RunInstances");
    assert_eq!(c[0].1["MinCount"], 5);
    assert_eq!(c[0].1["InstanceMarketOptions"]["MarketType"], "spot");
    assert_eq!(c[0].1["DryRun"], false);
    assert_eq!(c[0].1["ClientToken"], action_id("d1", 0));

    let (c, _) = act(&mut st, decisions(&[("d2", "w", "spot", "m7i.xlarge", 3)]));
    assert_eq!(
        (c[0].0.as_str(), &c[0].1["Select"]["Count"]),
        ("ec2:TerminateInstances", &json!(2))
    );

    let (c, _) = act(&mut st, decisions(&[("d3", "w", "spot", "m7i.xlarge", 3)]));
    assert!(c.is_empty(), "no change, no call");

    let (c, _) = act(
        &mut st,
        decisions(&[("d4", "w", "on-demand", "r7i.2xlarge", 2)]),
    );
    let names: Vec<&str> = c.iter().map(|x| x.0.as_str()).collect();
    // Make before break: the new type is launched before the old one is terminated.
    assert_eq!(names, ["ec2:RunInstances", "ec2:TerminateInstances"]);
    assert!(c[0].1.get("InstanceMarketOptions").is_none());
}

#[test]
fn a_replayed_decision_is_never_acted_on_twice_even_after_a_restart() {
    let mut st = Actuate::new(recording()).unwrap();
    let b = decisions(&[("d1", "w", "spot", "m7i.xlarge", 5)]);
    assert_eq!(act(&mut st, b.clone()).0.len(), 1);
    let (again, ctx) = act(&mut st, b.clone());
    assert!(again.is_empty());
    assert_eq!(ctx.counters()["dropped.replayed_decision"], 1);
    let snap = st.snapshot().unwrap().unwrap();
    let mut restarted = Actuate::new(recording()).unwrap();
    restarted.restore(&snap).unwrap();
    assert!(act(&mut restarted, b.clone()).0.is_empty());
    // The changelog's form (entries per workload) restores the same record.
    let mut restarted = Actuate::new(recording()).unwrap();
    restarted
        .restore_split(st.snapshot_split().unwrap().unwrap())
        .unwrap();
    assert_eq!(restarted.state.applied, st.state.applied);
    assert_eq!(restarted.state.fleets, st.state.fleets);
    assert!(act(&mut restarted, b).0.is_empty());
}

#[test]
fn a_restart_that_lost_its_snapshot_learns_what_it_did_from_its_own_actions() {
    let mut st = Actuate::new(recording()).unwrap();
    let script = [
        ("d1", "w", "spot", "m7i.xlarge", 5),
        ("d2", "w", "spot", "m7i.xlarge", 3),
        ("d3", "v", "on-demand", "c7i.4xlarge", 4),
        ("d4", "w", "on-demand", "r7i.2xlarge", 2),
        ("d5", "v", "on-demand", "c7i.4xlarge", 0),
    ];
    let mut actions = Vec::new();
    for d in script {
        let mut out = VecCollector::new();
        let mut ctx = Context::new("actuate");
        st.process_batch(Topic::Decisions, decisions(&[d]), &mut ctx, &mut out)
            .unwrap();
        actions.extend(out.of(Topic::Actions));
    }
    assert_eq!(actions.len(), 5, "every decision changed the fleet");
    let mut restarted = Actuate::new(recording()).unwrap();
    let mut ctx = Context::new("actuate");
    for b in actions {
        restarted.recover(Topic::Actions, b, &mut ctx).unwrap();
    }
    assert_eq!(restarted.state.fleets, st.state.fleets);
    assert_eq!(restarted.state.applied, st.state.applied);
    for d in script {
        assert!(
            act(&mut restarted, decisions(&[d])).0.is_empty(),
            "{} acted on twice",
            d.0
        );
    }
    // The next new decision is planned from the same fleet as without the restart.
    let next = decisions(&[("d6", "w", "on-demand", "r7i.2xlarge", 7)]);
    assert_eq!(act(&mut restarted, next.clone()).0, act(&mut st, next).0);
}

#[test]
fn caps_hold_against_an_absurd_decision_and_bad_rows_do_nothing() {
    let mut st = Actuate::new(ActuateConfig {
        max_instances: 10,
        max_step: 4,
        ..recording()
    })
    .unwrap();
    let (c, _) = act(&mut st, decisions(&[("d1", "w", "spot", "m7i.xlarge", 60)]));
    assert_eq!(c[0].1["MaxCount"], 4);
    assert!(
        c[0].1["wfe:guardrails"]
            .to_string()
            .contains("max_instances")
    );
    let (c, ctx) = act(
        &mut st,
        decisions(&[
            ("d2", "w", "spot", "", 3),
            ("d3", "w", "spot", "m7i.xlarge", -1),
        ]),
    );
    // Refused decisions each leave an error row saying why, and nothing else.
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|(call, _)| call == REFUSE_CALL));
    assert_eq!(ctx.counters()["rejected.bad_decision"], 2);
    // A count far past any cap is a fault upstream: refused, not capped.
    let (c, ctx) = act(
        &mut st,
        decisions(&[("d4", "w", "spot", "m7i.xlarge", 1_000_000)]),
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, REFUSE_CALL);
    assert!(
        c[0].1["wfe:refused"].as_str().unwrap().contains("over 100"),
        "{}",
        c[0].1
    );
    assert_eq!(ctx.counters()["rejected.bad_decision"], 1);
    // ...and a replay of it is dropped like any applied decision: one error row, not two.
    let (c, _) = act(
        &mut st,
        decisions(&[("d4", "w", "spot", "m7i.xlarge", 1_000_000)]),
    );
    assert!(c.is_empty());
    assert!(
        Actuate::new(ActuateConfig {
            max_step: 0,
            ..recording()
        })
        .is_err()
    );
    // Modes that call EC2 need an AMI: a clear error, not a launch that fails later.
    let dry = ActuateConfig {
        mode: Some(Mode::DryRun),
        ..Default::default()
    };
    let err = Actuate::new(dry).err().unwrap().to_string();
    assert!(err.contains("image_id") && err.contains("dry-run"), "{err}");
    // Unset: record-only without an AMI, dry-run with one; never apply.
    assert_eq!(ActuateConfig::default().mode(), Mode::RecordOnly);
    let with_ami = ActuateConfig {
        image_id: Some("ami-1".into()),
        ..Default::default()
    };
    assert_eq!(with_ami.mode(), Mode::DryRun);
}

#[test]
fn the_fleet_wide_instance_cap_holds_across_workloads() {
    let mut st = Actuate::new(ActuateConfig {
        max_fleet_instances: 10,
        ..recording()
    })
    .unwrap();
    let (c, _) = act(&mut st, decisions(&[("d1", "a", "spot", "m7i.xlarge", 7)]));
    assert_eq!(c[0].1["MinCount"], 7);
    let (c, _) = act(
        &mut st,
        decisions(&[("d2", "b", "on-demand", "m7i.xlarge", 6)]),
    );
    assert_eq!(c[0].1["MinCount"], 3, "10 in all, 7 of them elsewhere");
    assert!(
        c[0].1["wfe:guardrails"]
            .to_string()
            .contains("max_fleet_instances")
    );
    let (c, _) = act(
        &mut st,
        decisions(&[("d3", "c", "on-demand", "m7i.xlarge", 2)]),
    );
    assert!(c.is_empty(), "no room left: {c:?}");
    // Room comes back when a workload scales in.
    act(&mut st, decisions(&[("d4", "a", "spot", "m7i.xlarge", 2)]));
    let (c, _) = act(
        &mut st,
        decisions(&[("d5", "c", "on-demand", "m7i.xlarge", 2)]),
    );
    assert_eq!(c[0].1["MinCount"], 2);
}

#[test]
fn decisions_older_than_the_remembered_window_are_dropped_unacted() {
    let mut st = Actuate::new(ActuateConfig {
        remember_s: 3600,
        ..recording()
    })
    .unwrap();
    let at = |id: &str, n: i64, t_ms: i64| {
        let b = decisions(&[(id, "w", "spot", "m7i.xlarge", n)]);
        let mut cols = b.columns().to_vec();
        cols[1] = timestamp_column(vec![t_ms]);
        RecordBatch::try_new(b.schema(), cols).unwrap()
    };
    assert_eq!(act(&mut st, at("d1", 2, 0)).0.len(), 1);
    assert_eq!(act(&mut st, at("d2", 3, 7_200_000)).0.len(), 1);
    // d1 is two hours behind d2: stale, whether or not its id is still remembered.
    let (c, ctx) = act(&mut st, at("d0", 9, 1_000));
    assert!(c.is_empty());
    assert_eq!(ctx.counters()["dropped.stale_decision"], 1);
}
