use std::collections::HashMap;

use super::*;

fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> Result<Query, ScalerError> {
    Query::parse(&meta(pairs), &Defaults::default())
}

fn key_of(e: ScalerError) -> String {
    match e {
        ScalerError::Metadata { key, .. } => key,
        other => panic!("not a metadata error: {other}"),
    }
}

#[test]
fn a_trigger_names_a_workload_and_a_replica_and_the_rest_has_defaults() {
    let q = parse(&[("workload", "omi-1"), ("targetPerReplica", "2")]).unwrap();
    let d = Defaults::default();
    assert_eq!(
        q,
        Query {
            workload: "omi-1".into(),
            resource: "cpu".into(),
            quantile: d.quantile,
            startup_s: d.startup_s,
            target_per_replica: 2.0,
            activation: 0.0,
            floor: Floor::Actual,
        }
    );
    let q = parse(&[
        ("workload", " machine-1-6 "),
        ("resource", "memory"),
        ("quantile", "0.5"),
        ("podStartupSeconds", "90.5"),
        ("targetPerReplica", "16"),
        ("activationValue", "1.5"),
        ("floor", "none"),
    ])
    .unwrap();
    assert_eq!(
        (
            q.workload.as_str(),
            q.resource.as_str(),
            q.quantile,
            q.startup_s
        ),
        ("machine-1-6", "memory", 0.5, 91)
    );
    assert_eq!((q.activation, q.floor), (1.5, Floor::None));
}

#[test]
fn wrong_metadata_names_its_key() {
    let base = [("workload", "w"), ("targetPerReplica", "1")];
    let with = |k: &'static str, v: &'static str| {
        let mut m: Vec<_> = base.iter().copied().filter(|(b, _)| *b != k).collect();
        m.push((k, v));
        key_of(parse(&m).unwrap_err())
    };
    assert_eq!(
        key_of(parse(&[("targetPerReplica", "1")]).unwrap_err()),
        "workload"
    );
    assert_eq!(
        key_of(parse(&[("workload", "w")]).unwrap_err()),
        "targetPerReplica"
    );
    assert_eq!(with("quantile", "1"), "quantile");
    assert_eq!(with("quantile", "NaN"), "quantile");
    assert_eq!(with("quantile", "high"), "quantile");
    assert_eq!(with("podStartupSeconds", "-1"), "podStartupSeconds");
    assert_eq!(with("podStartupSeconds", "1e9"), "podStartupSeconds");
    assert_eq!(with("targetPerReplica", "0"), "targetPerReplica");
    assert_eq!(with("targetPerReplica", "inf"), "targetPerReplica");
    assert_eq!(with("activationValue", "-2"), "activationValue");
    assert_eq!(with("floor", "forecast"), "floor");
    assert_eq!(with("podStartupSecond", "30"), "podStartupSecond");
}

#[test]
fn hostile_metadata_is_refused_before_it_is_read() {
    let long = "x".repeat(MAX_VALUE_BYTES + 1);
    let e = parse(&[("workload", &long), ("targetPerReplica", "1")]).unwrap_err();
    assert_eq!(key_of(e), "workload");
    let many: HashMap<String, String> = (0..MAX_ENTRIES + 1)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    let e = Query::parse(&many, &Defaults::default()).unwrap_err();
    assert!(e.to_string().contains("entries"), "{e}");
    // An unknown key's name is cut in the error, however long it is.
    let e = parse(&[
        ("workload", "w"),
        ("targetPerReplica", "1"),
        (&"k".repeat(10_000), "v"),
    ])
    .unwrap_err();
    assert!(e.to_string().len() < 400, "{e}");
}

#[test]
fn the_metric_name_is_one_kubernetes_accepts() {
    let q = parse(&[("workload", "Machine_1.6/a"), ("targetPerReplica", "1")]).unwrap();
    assert_eq!(q.metric_name(), "wfe-cpu-machine-1-6-a");
}

#[test]
fn keda_s_own_keys_pass_and_a_key_from_the_environment_counts_as_the_key() {
    let q = parse(&[
        ("scalerAddress", "wfe.wfe.svc:9465"),
        ("enableTLS", "false"),
        ("workloadFromEnv", "omi-7"),
        ("targetPerReplica", "1"),
    ])
    .unwrap();
    assert_eq!(q.workload, "omi-7");
    let e = parse(&[
        ("workload", "a"),
        ("workloadFromEnv", "b"),
        ("targetPerReplica", "1"),
    ])
    .unwrap_err();
    assert_eq!(key_of(e), "workload");
    assert_eq!(
        key_of(
            parse(&[
                ("workload", "a"),
                ("targetPerReplica", "1"),
                ("colourFromEnv", "x")
            ])
            .unwrap_err()
        ),
        "colourFromEnv"
    );
}
