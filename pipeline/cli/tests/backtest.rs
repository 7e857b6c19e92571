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
    for p in ["wfe", "reactive", "static", "vpa", "oracle"] {
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
