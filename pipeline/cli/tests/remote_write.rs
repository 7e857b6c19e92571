//! `wfe receive` with a real Prometheus (Debian's `prometheus`, started here on loopback):
//! Prometheus scrapes itself every second and remote-writes into wfe, and the samples come out
//! of `metrics.norm` under the workload its `instance` label names. It also scrapes wfe's own
//! `/metrics` (`--http`), so wfe's counters come back through remote_write as a workload too.

use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;
use common::{free_port, jsonl};

fn prometheus() -> PathBuf {
    std::env::var_os("WFE_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

#[test]
fn a_real_prometheus_remote_writes_into_metrics_norm() {
    let dir = tempfile::tempdir().unwrap();
    let (wport, pport, hport) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            r#"
[remote_write]
listen = "127.0.0.1:{wport}"
workload_labels = ["instance"]
workload_prefix = "prom:"

[stages]
enabled = ["normalise"]

[stages.normalise]
step_s = 1
learn_steps = 3

[outputs]
dir = "out"
jsonl = ["metrics.raw", "metrics.norm"]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ["127.0.0.1:{pport}"]
  - job_name: wfe
    static_configs:
      - targets: ["127.0.0.1:{hport}"]
remote_write:
  - url: http://127.0.0.1:{wport}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"#
        ),
    )
    .unwrap();
    let wfe = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["receive", "--config", "job.toml", "--seconds", "25"])
        .args(["--http", &format!("127.0.0.1:{hport}")])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wfe");
    let mut prom = Command::new(prometheus())
        .args([
            "--config.file=prometheus.yml",
            "--storage.tsdb.path=tsdb",
            &format!("--web.listen-address=127.0.0.1:{pport}"),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): `make test` installs Debian's prometheus, or set WFE_PROMETHEUS",
                prometheus().display()
            )
        });
    let out = wfe.wait_with_output().unwrap();
    let _ = prom.kill();
    let _ = prom.wait();
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "wfe receive: {}\nprometheus: {log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workload = format!("prom:127.0.0.1:{pport}");
    let raw = jsonl(dir.path().join("out/metrics.raw.jsonl"));
    let up: Vec<_> = raw
        .iter()
        .filter(|r| r["workload"] == workload.as_str() && r["metric"] == "up")
        .collect();
    assert!(
        up.len() >= 5,
        "{} `up` samples received\nprometheus: {log}",
        up.len()
    );
    assert!(up.iter().all(|r| r["value"] == 1.0));
    assert!(up.iter().all(|r| r["labels"] == "job=self"), "{:?}", up[0]);
    let norm = jsonl(dir.path().join("out/metrics.norm.jsonl"));
    let steps: Vec<_> = norm
        .iter()
        .filter(|r| r["workload"] == workload.as_str() && r["metric"] == "up")
        .collect();
    assert!(
        steps.len() >= 5,
        "{} steps of `up` in metrics.norm",
        steps.len()
    );
    assert!(
        steps.iter().any(|r| r["raw_value"] == 1.0),
        "{:?}",
        steps[0]
    );
    // Many series: Prometheus' own metrics, one workload.
    let metrics: std::collections::BTreeSet<_> = norm
        .iter()
        .filter(|r| r["workload"] == workload.as_str())
        .filter_map(|r| r["metric"].as_str())
        .collect();
    assert!(metrics.len() > 50, "{} metrics", metrics.len());
    // wfe's own /metrics, scraped by Prometheus and written back: the receiver's and
    // normalise's counters, under wfe's address.
    let me = format!("prom:127.0.0.1:{hport}");
    let own: Vec<_> = raw
        .iter()
        .filter(|r| r["workload"] == me.as_str())
        .collect();
    for name in [
        "wfe_rows_out_total",
        "wfe_rows_in_total",
        "wfe_batch_seconds_count",
    ] {
        let rows: Vec<_> = own.iter().filter(|r| r["metric"] == name).collect();
        assert!(!rows.is_empty(), "no {name} scraped from wfe");
        assert!(
            rows.iter().any(|r| r["labels"]
                .as_str()
                .is_some_and(|l| l.contains("stage=normalise"))),
            "{name}: {:?}",
            rows[0]
        );
    }
    let up = own
        .iter()
        .filter(|r| r["metric"] == "up")
        .map(|r| r["value"].as_f64().unwrap());
    assert!(
        up.clone().count() >= 5 && up.into_iter().all(|v| v == 1.0),
        "wfe's /metrics was not up"
    );
}
