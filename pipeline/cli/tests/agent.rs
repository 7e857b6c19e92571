//! `wfe agent` on this machine: its own /proc (and cgroup v2 where mounted) sampled every
//! second feeds an embedded run whose stages produce fingerprints and forecasts of the host.

mod common;
use common::wfe;

const JOB: &str = r#"
[agent]
interval_s = 1.0
samples = 24
cgroup_depth = 1

[[resources]]
name = "cpu"
metrics = ["cpu_cores"]
unit = "vcpu"
capacity = 1.0
workload_prefix = "host:"

[[resources]]
name = "memory"
metrics = ["memory_used_bytes"]
unit = "gib"
capacity = 9.313225746154785e-10
workload_prefix = "host:"

[stages]
enabled = ["normalise", "fingerprint", "forecast", "tier-select", "actuate"]

[stages.normalise]
step_s = 1
learn_steps = 4

[stages.fingerprint]
window = 5
hop = 5
learning_steps = 5

[stages.forecast]
horizons_s = [2, 5]
every_s = 4
season_s = 10
models = ["persistence", "seasonal-naive"]
mask_anomalies = false

[outputs]
dir = "out"
jsonl = ["metrics.raw", "fingerprints", "forecasts", "decisions"]
"#;

fn lines(dir: &std::path::Path, topic: &str) -> Vec<serde_json::Value> {
    common::output_text(&dir.join(format!("out/{topic}.jsonl")))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

#[test]
fn the_agent_feeds_an_embedded_run_that_fingerprints_and_forecasts_this_host() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.toml"), JOB).unwrap();
    let o = wfe(&["agent", "--config", "agent.toml"], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = lines(dir.path(), "metrics.raw");
    let host = raw
        .iter()
        .find_map(|r| r["workload"].as_str().filter(|w| w.starts_with("host:")))
        .expect("host rows")
        .to_string();
    let metric = |m: &str| {
        raw.iter()
            .filter(|r| r["workload"] == host.as_str() && r["metric"] == m)
            .count()
    };
    // Gauges from the first sample on, rates from the second.
    for m in ["cpu_count", "memory_used_bytes", "memory_used_fraction"] {
        assert_eq!(metric(m), 24, "{m}");
    }
    for m in ["cpu_utilisation", "cpu_cores", "net_rx_bytes_per_s"] {
        assert_eq!(metric(m), 23, "{m}");
    }
    let fps: Vec<_> = lines(dir.path(), "fingerprints")
        .into_iter()
        .filter(|r| r["workload"] == host.as_str())
        .collect();
    assert!(fps.len() >= 3, "{} fingerprints of {host}", fps.len());
    assert!(
        fps.iter()
            .all(|r| r["vector"].as_array().is_some_and(|v| !v.is_empty()))
    );
    let env = fps.last().unwrap()["environment"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(env.contains("kernel="), "the host's environment: {env}");
    let fcs: Vec<_> = lines(dir.path(), "forecasts")
        .into_iter()
        .filter(|r| r["workload"] == host.as_str())
        .collect();
    for res in ["cpu", "memory"] {
        let of: Vec<_> = fcs.iter().filter(|r| r["resource"] == res).collect();
        assert!(!of.is_empty(), "{res} forecasts of {host}");
        for r in of {
            let q: Vec<f64> = r["quantile_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(q.iter().all(|v| v.is_finite() && *v >= 0.0), "{r}");
        }
    }
    // ...and tier selection sizes the host from them.
    assert!(
        lines(dir.path(), "decisions")
            .iter()
            .any(|r| r["workload"] == host.as_str())
    );
}

#[test]
fn the_built_in_agent_job_runs_and_bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // One sample through the built-in job (pipeline/cli/agent.toml): it parses and runs.
    let o = wfe(&["agent", "--samples", "1", "--out", "o"], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A live source's outputs roll (every 600 s by default): the run's end closed part 0.
    assert!(
        dir.path()
            .join("o/metrics.raw.parquet/part-00000000.parquet")
            .is_file()
    );
    let o = wfe(&["agent", "--interval", "0", "--samples", "1"], dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("agent.interval_s"));
    let o = wfe(&["agent", "--help"], dir.path());
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--kafka"));
}

#[test]
fn a_killed_agent_leaves_its_closed_parts_readable_and_a_restart_adds_to_them() {
    let dir = tempfile::tempdir().unwrap();
    // Runs until killed; parts close every 1.5 s (checked at each batch and each second).
    let job = JOB.replace("samples = 24\n", "") + "parquet = [\"metrics.raw\"]\nroll_s = 1.5\n";
    std::fs::write(dir.path().join("agent.toml"), job).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["agent", "--config", "agent.toml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rolled = dir.path().join("out/metrics.raw.parquet");
    let parts = || -> Vec<std::path::PathBuf> {
        let mut p: Vec<_> = std::fs::read_dir(&rolled)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        p.retain(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        });
        p.sort();
        p
    };
    let start = std::time::Instant::now();
    while parts().len() < 2 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap(); // SIGKILL: no flush, no close
    child.wait().unwrap();
    let before = parts();
    assert!(before.len() >= 2, "{before:?}");
    let first = std::fs::read(&before[0]).unwrap();
    // What it closed is one readable table, named like the single file would be.
    let count = || -> u64 {
        let o = wfe(
            &[
                "sql",
                "--store",
                "out",
                "--format",
                "csv",
                "SELECT count(*) AS n FROM metrics_raw",
            ],
            dir.path(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let rows = count();
    assert!(rows > 0);
    // A restart keeps those parts and numbers on after them.
    let o = wfe(
        &["agent", "--config", "agent.toml", "--samples", "2"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = parts();
    assert!(after.len() > before.len(), "{before:?} -> {after:?}");
    assert_eq!(std::fs::read(&before[0]).unwrap(), first);
    assert!(count() > rows);
}
