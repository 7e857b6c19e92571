//! `wfe backtest` end to end on the shared ASD set: every policy priced over the test split,
//! and the target held (wfe at most 0.8 x the reactive policy's cost with no more
//! under-provisioned minutes, the oracle the lower bound). No model folder here: the LSTM
//! stands aside and the statistical models forecast.

use std::path::Path;

mod common;
use common::{shared_data, wfe};

fn json_of(args: &[&str], dir: &Path) -> serde_json::Value {
    let o = wfe(args, dir);
    assert!(
        o.status.success(),
        "wfe {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

#[test]
fn every_policy_is_priced_and_wfe_beats_reactive_at_equal_or_better_sla() {
    let dir = tempfile::tempdir().unwrap();
    let asd = shared_data().join("asd");
    let r = json_of(
        &["backtest", "--data", asd.to_str().unwrap(), "--json"],
        dir.path(),
    );
    let total = |p: &str, k: &str| -> f64 {
        r["policies"][p]["total"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{p}.total.{k} in {r}"))
    };
    for p in [
        "wfe",
        "wfe-tuned",
        "reactive",
        "static",
        "vpa",
        "predictive",
        "autopilot",
        "oracle",
    ] {
        for k in [
            "cost",
            "slack",
            "underprovisioned_minutes",
            "sla_violations",
            "changes",
        ] {
            let v = total(p, k);
            assert!(v.is_finite() && v >= 0.0, "{p}.{k} = {v}");
        }
        // Per entity too: the 12 servers and the total.
        assert_eq!(r["policies"][p].as_object().unwrap().len(), 13, "{p}");
    }
    let (wfe_cost, reactive_cost) = (total("wfe", "cost"), total("reactive", "cost"));
    assert!(
        wfe_cost <= 0.8 * reactive_cost,
        "wfe {wfe_cost} > 0.8 x reactive {reactive_cost}"
    );
    assert!(
        total("wfe", "underprovisioned_minutes") <= total("reactive", "underprovisioned_minutes")
    );
    // The oracle is the lower bound: least cost, never short.
    for p in ["wfe", "reactive", "static", "vpa"] {
        assert!(total("oracle", "cost") < total(p, "cost"), "{p}");
    }
    assert_eq!(total("oracle", "underprovisioned_minutes"), 0.0);
    assert_eq!(total("static", "changes"), 0.0);
    // A test split of 30 days on each of 12 servers.
    let hours: f64 = r["hours"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|h| h.as_f64())
        .sum();
    assert!(hours > 4000.0, "{hours}");
}

#[test]
fn bad_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let asd = shared_data().join("asd");
    let asd = asd.to_str().unwrap();
    let o = wfe(&["backtest", "--data", asd, "--policy", "hpa"], dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown policy `hpa`"));
    std::fs::write(
        dir.path().join("job.toml"),
        "[[sources]]\npath = \"x\"\n[backtest]\nbaseline_instance = \"z9.huge\"\n",
    )
    .unwrap();
    let o = wfe(
        &["backtest", "--data", asd, "--config", "job.toml"],
        dir.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("baseline_instance") && err.contains("z9.huge"),
        "{err}"
    );
    let o = wfe(&["backtest", "--data", "/nonexistent"], dir.path());
    assert!(!o.status.success());
}

#[test]
fn the_sweep_prices_every_policy_along_its_frontier_and_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("asd-1");
    std::fs::create_dir(&data).unwrap();
    let file = "omi-1.csv.gz";
    std::os::unix::fs::symlink(shared_data().join("asd").join(file), data.join(file)).unwrap();
    let r = json_of(
        &[
            "backtest",
            "--data",
            "asd-1",
            "--sweep",
            "--json",
            "--picture",
            "f.svg",
        ],
        dir.path(),
    );
    assert_eq!(r["reference"]["setting"], "target_utilisation=0.7", "{r}");
    let policies = r["policies"].as_object().unwrap();
    let names: Vec<&str> = policies.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "autopilot",
            "oracle",
            "predictive",
            "reactive",
            "static",
            "vpa",
            "wfe",
            "wfe-cost",
            "wfe-tuned"
        ]
    );
    let points = |p: &str| -> Vec<(String, f64, f64)> {
        policies[p]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let (c, u) = (
                    x["cost"].as_f64().unwrap(),
                    x["underprovisioned_minutes"].as_f64().unwrap(),
                );
                assert!(
                    c.is_finite() && c > 0.0 && u.is_finite() && u >= 0.0,
                    "{p}: {x}"
                );
                (x["setting"].as_str().unwrap().to_string(), c, u)
            })
            .collect()
    };
    let sizes = [
        ("wfe", 7 * 6),
        // Each price at each floor, with and without the month's hold; the job's price at
        // each floor with three margins over the held peak.
        ("wfe-cost", 6 * 6 * 2 + 6 * 3),
        // The learner over prices, and over prices and floors, from each floor.
        ("wfe-tuned", 6 * 2),
        ("reactive", 6),
        ("static", 7),
        ("vpa", 15),
        ("predictive", 4),
        ("autopilot", 5),
        ("oracle", 1),
    ];
    for (p, n) in sizes {
        let pts = points(p);
        assert_eq!(pts.len(), n, "{p}");
        let frontier = policies[p]["frontier"].as_array().unwrap();
        assert!(!frontier.is_empty(), "{p}");
        for s in frontier {
            assert!(pts.iter().any(|x| x.0 == s.as_str().unwrap()), "{p}: {s}");
        }
    }
    // The knobs act: a lower target utilisation and a larger static fleet cost more.
    let cost = |p: &str, setting: &str| {
        points(p)
            .into_iter()
            .find(|x| x.0 == setting)
            .unwrap_or_else(|| panic!("{p} {setting}"))
            .1
    };
    assert!(cost("reactive", "target_utilisation=0.5") > cost("reactive", "target_utilisation=1"));
    assert!(cost("static", "static_peak_share=1") > cost("static", "static_peak_share=0.4"));
    // wfe's risk level reaches its decisions (its reactive floor may keep the minutes short
    // level while the mix changes).
    let wfe_costs: Vec<f64> = points("wfe").iter().map(|x| x.1).collect();
    assert!(
        wfe_costs.iter().any(|c| (c - wfe_costs[0]).abs() > 1e-6),
        "{wfe_costs:?}"
    );
    // The price of a shortfall reaches the decisions (a cheap one can cost more: a smaller
    // fleet draws on-demand bursts from the reactive floor, as a high risk level does).
    let cheap = cost("wfe-cost", "shortfall_price=0.01 floor=0.8/0.7");
    let dear = cost("wfe-cost", "shortfall_price=30 floor=0.8/0.7");
    assert!(
        (dear - cheap).abs() > 1e-6,
        "the same cost at 30 and 0.01 USD per unit-minute: {dear}"
    );
    // The hold reaches the decisions: holding a month's peak keeps more capacity somewhere.
    let held = (points("wfe-cost").into_iter())
        .filter_map(|(s, c, _)| Some((s.strip_suffix(" hold=720h")?.to_string(), c)))
        .filter(|(s, c)| *c > cost("wfe-cost", s) + 1e-6)
        .count();
    assert!(held > 0, "no point costs more with hold_h = 720");
    // And the margin over the held peak reaches them (three times the peak, bought with the
    // forecast's mix, may cost less than the floor's on-demand peak at 40 % utilisation).
    let margin = (points("wfe-cost").into_iter())
        .filter_map(|(s, c, _)| Some((s.strip_suffix(" x3")?.to_string(), c)))
        .filter(|(s, c)| (*c - cost("wfe-cost", s)).abs() > 1e-6)
        .count();
    assert!(margin > 0, "hold_margin = 3 costs the same at every floor");
    // Which baseline points no wfe point dominates, named (an empty list: all are).
    let undominated = r["undominated"].as_array().unwrap();
    assert!(
        undominated.iter().all(|u| u.as_str().is_some_and(|u| {
            let policy = u.split(' ').next().unwrap();
            !policy.starts_with("wfe") && policy != "oracle" && !points(policy).is_empty()
        })),
        "{r}"
    );
    let over_floors = points("wfe-tuned")
        .into_iter()
        .filter(|x| x.0.starts_with("tuned over floors floor="))
        .count();
    assert_eq!(over_floors, 6);
    assert_eq!(r["tuned"].as_array().map(|t| t.len()), Some(12), "{r}");
    // Reactive priced at its own point: at most its own cost (a cheaper setting may be as short).
    let at = |p: &str| policies[p]["cost_at_reactive_underprovisioning"].as_f64();
    assert!(at("reactive").is_some_and(|x| x <= 1.0 + 1e-9), "{r}");
    assert!(at("oracle").is_some_and(|x| x < 1.0), "{r}");
    let svg = std::fs::read_to_string(dir.path().join("f.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 9,
        "{svg}"
    );
    assert_eq!(r["picture"], "f.svg");
    // --sweep runs every policy: naming some is a usage error.
    let o = wfe(
        &["backtest", "--data", "asd-1", "--sweep", "--policy", "wfe"],
        dir.path(),
    );
    assert!(!o.status.success());
}
