use std::collections::BTreeMap;

use super::*;

fn host(name: &str, capacity: f64, env: Option<&str>) -> Host {
    Host {
        name: name.into(),
        capacity,
        environment: env.map(String::from),
    }
}

/// A workload with one horizon (900 s) of demand N(mean, sd).
fn workload(mean: f64, sd: f64, env: Option<&str>) -> Workload {
    Workload {
        environment: env.map(String::from),
        demand: [(900, Demand { mean, sd })].into_iter().collect(),
    }
}

fn fleet_of(pairs: &[(&str, Workload)]) -> BTreeMap<String, Workload> {
    pairs
        .iter()
        .map(|(n, w)| (n.to_string(), w.clone()))
        .collect()
}

fn placed(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(w, h)| (w.to_string(), h.to_string()))
        .collect()
}

fn independent(_: &str, _: &str) -> f64 {
    0.0
}

#[test]
fn one_workload_too_many_moves_the_smallest_that_relieves_the_host_to_the_emptiest_host() {
    let hosts = [
        host("a", 10.0, None),
        host("b", 10.0, None),
        host("c", 10.0, None),
    ];
    let workloads = fleet_of(&[
        ("big", workload(6.0, 0.3, None)),
        ("small", workload(4.5, 0.3, None)),
        ("tiny", workload(1.0, 0.1, None)),
        ("on-b", workload(5.0, 0.3, None)),
    ]);
    let fleet = Fleet {
        hosts: &hosts,
        workloads: &workloads,
        rho: &independent,
    };
    let placement = placed(&[("big", "a"), ("small", "a"), ("tiny", "a"), ("on-b", "b")]);
    let (found, moves) = plan(&fleet, &placement, 0.05);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].host.as_str(), found[0].horizon_s), ("a", 900));
    assert!(
        found[0].risk > 0.99 && found[0].risk_after <= 0.05,
        "{found:?}"
    );
    assert!(!found[0].unresolved);
    // `tiny` alone does not relieve a (6 + 4.5 > 10); `small` does and is smaller than `big`.
    // b would hold 9.5 (too close to 10 with its spread), c is empty.
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(
        (moves[0].workload.as_str(), moves[0].to.as_str()),
        ("small", "c")
    );
    assert!(
        moves[0].reason.contains("with small on c"),
        "{}",
        moves[0].reason
    );
}

#[test]
fn a_move_keeps_to_the_workload_s_environment_and_may_find_no_host() {
    let hosts = [
        host("a", 10.0, Some("cpu")),
        host("gpu", 100.0, Some("gpu")),
    ];
    let workloads = fleet_of(&[
        ("w1", workload(6.0, 0.3, Some("cpu"))),
        ("w2", workload(6.0, 0.3, Some("cpu"))),
    ]);
    let fleet = Fleet {
        hosts: &hosts,
        workloads: &workloads,
        rho: &independent,
    };
    let (found, moves) = plan(&fleet, &placed(&[("w1", "a"), ("w2", "a")]), 0.05);
    assert!(moves.is_empty(), "{moves:?}");
    assert!(found[0].unresolved && found[0].risk_after > 0.99);
    // A workload of no environment goes anywhere.
    let workloads = fleet_of(&[
        ("w1", workload(6.0, 0.3, Some("cpu"))),
        ("w2", workload(6.0, 0.3, None)),
    ]);
    let fleet = Fleet {
        hosts: &hosts,
        workloads: &workloads,
        rho: &independent,
    };
    let (found, moves) = plan(&fleet, &placed(&[("w1", "a"), ("w2", "a")]), 0.05);
    assert_eq!((moves.len(), moves[0].to.as_str()), (1, "gpu"));
    assert!(!found[0].unresolved);
}

#[test]
fn workloads_that_peak_together_contend_where_independent_ones_do_not() {
    // Two N(4, 1) on a host of 10: sum mean 8; sd 2 if they move together, 1.41 if not.
    let hosts = [host("a", 10.0, None), host("b", 10.0, None)];
    let workloads = fleet_of(&[
        ("x", workload(4.0, 1.0, None)),
        ("y", workload(4.0, 1.0, None)),
    ]);
    let together = |_: &str, _: &str| 1.0;
    let placement = placed(&[("x", "a"), ("y", "a")]);
    let fleet = Fleet {
        hosts: &hosts,
        workloads: &workloads,
        rho: &together,
    };
    let (r, _) = fleet.risk(&hosts[0], &["x", "y"]);
    assert!((r - 0.158_655).abs() < 1e-5, "{r}");
    let (found, moves) = plan(&fleet, &placement, 0.1);
    assert_eq!((found.len(), moves.len()), (1, 1));
    let fleet = Fleet {
        hosts: &hosts,
        workloads: &workloads,
        rho: &independent,
    };
    let (r, _) = fleet.risk(&hosts[0], &["x", "y"]);
    assert!((r - 0.078_65).abs() < 1e-4, "{r}");
    assert_eq!(plan(&fleet, &placement, 0.1), (vec![], vec![]));
}

#[test]
fn the_risk_is_the_worst_horizon_s() {
    let hosts = [host("a", 10.0, None)];
    let mut w = workload(4.0, 0.1, None);
    w.demand.insert(
        3600,
        Demand {
            mean: 12.0,
            sd: 0.1,
        },
    );
    let workloads = fleet_of(&[("w", w)]);
    let fleet = Fleet {
        hosts: &hosts,
        workloads: &workloads,
        rho: &independent,
    };
    let (r, h) = fleet.risk(&hosts[0], &["w"]);
    assert_eq!(h, 3600);
    assert!(r > 0.999);
}
