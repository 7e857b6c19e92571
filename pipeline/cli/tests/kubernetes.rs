//! wfe for Kubernetes, over one embedded run of a real SMD machine:
//! - `wfe run --keda`: KEDA's external-scaler protocol, called by an independent client
//!   (Python `grpcio`, stubs generated from the same proto file) that checks every value
//!   against the run's Parquet outputs;
//! - `wfe recommend` and the `recommendations` topic: container sizes checked against the
//!   same outputs by Python, served the same by the API, and the patch `wfe recommend` prints
//!   applied by kubectl offline to `deploy/k8s/examples/checkout.yaml`;
//! - `wfe contention`: the three machines on two hosts too small for them, the contended
//!   minutes of the placement recomputed by Python from `metrics.norm`, every move within the
//!   bound; and the contention stage, given that placement in the run, put the same moves on
//!   the `migrations` topic as the pipeline ran.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::held::Held;
use common::{http, shared_data, wfe};
use serde_json::Value;

const MACHINE: &str = "machine-1-6";
/// The run's machines: MACHINE and two more, so that contention has neighbours to move.
const MACHINES: &str = r#""machine-1-6", "machine-2-1", "machine-3-3""#;
const CAPACITY: f64 = 64.0;
/// The placement `wfe contention --hosts 2 --fill 0.4` makes of MACHINES (balanced by mean
/// demand; each host 0.4 of the three machines' summed peaks over two, as it prints), given to
/// the run's contention stage.
const PLACEMENT: &str = r#"
[stages.contention]
hosts = [{ name = "host-1", capacity = 38.4 }, { name = "host-2", capacity = 38.4 }]
placement = { "machine-1-6" = "host-2", "machine-2-1" = "host-2", "machine-3-3" = "host-1" }
"#;
/// The job's sizing policy (`[stages.forecast.recommendation]`), other than the default, so
/// that the topic, the API and `wfe recommend --margin ... --max-horizon-s ...` can only agree
/// if each reads it: quantile, margin, longest horizon.
const POLICY: (f64, f64, i64) = (0.9, 0.3, 21_600);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start(dir: &Path) -> Held {
    std::fs::write(
        dir.join("job.toml"),
        format!(
            r#"
[[sources]]
path = "{}/smd"
only = [{MACHINES}]

[run]
progress = false

[[resources]]
name = "cpu"
metrics = ["m00"]
unit = "vcpu"
capacity = {CAPACITY:.1}

[outputs]
dir = "out"
parquet = ["metrics.norm", "forecasts", "recommendations", "migrations"]

[stages.forecast.recommendation]
quantile = {}
margin = {}
max_horizon_s = {}
{PLACEMENT}"#,
            shared_data().display(),
            POLICY.0,
            POLICY.1,
            POLICY.2
        ),
    )
    .unwrap();
    let args = ["run", "--config", "job.toml", "--http", "127.0.0.1:0"];
    Held::spawn(
        dir,
        &[&args[..], &["--keda", "127.0.0.1:0", "--hold"]].concat(),
        &[],
    )
}

#[test]
fn one_run_serves_keda_sizes_containers_and_replays_contention() {
    let Some(py) = std::env::var_os("WFE_PYTHON") else {
        panic!("set WFE_PYTHON to a Python with pyarrow, grpcio and grpcio-tools (make test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path());
    let api = run.address_after("http: serving on http://", Duration::from_secs(60));
    let addr = run.address_after("keda: serving on ", Duration::from_secs(60));
    run.wait_for(
        "serving its state until interrupted",
        Duration::from_secs(900),
    );
    let out = Command::new(&py)
        .arg(root().join("pipeline/cli/tests/py/keda_client.py"))
        .arg(&addr)
        .arg(root().join("pipeline/kube/proto/externalscaler.proto"))
        .arg(dir.path().join("out"))
        .args([MACHINE, &CAPACITY.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "python keda client failed:\n{}",
        run.log()
    );
    assert!(text.contains("all checks passed"));
    check_recommendation(dir.path(), &py, &api);
    check_contention(dir.path(), &py);
}

/// `wfe contention --json` on two hosts at 0.4 of the machines' summed peaks: Python
/// recomputes the capacity and the contended minutes of the placement from `metrics.norm`.
fn check_contention(dir: &Path, py: &std::ffi::OsStr) {
    let args = [
        "contention",
        "--config",
        "job.toml",
        "--store",
        "out",
        "--hosts",
        "2",
    ];
    let out = wfe(&[&args[..], &["--fill", "0.4", "--json"]].concat(), dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("contention.json"), &out.stdout).unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let capacity = answer["capacity"].as_f64().unwrap();
    assert!(
        (capacity - 38.4).abs() < 1e-9,
        "the placement given to the run is not this one: {answer}"
    );
    assert_eq!(
        answer["placement"]["machine-1-6"], "host-2",
        "the placement given to the run is not this one: {answer}"
    );
    check_migrations(dir, py);
    let minutes = answer["outcome"]["contended_minutes_static"]
        .as_f64()
        .unwrap();
    assert!(minutes > 0.0, "no contention to plan against: {answer}");
    let checked = Command::new(py)
        .arg(root().join("pipeline/cli/tests/py/check_contention.py"))
        .arg(dir.join("contention.json"))
        .arg(dir.join("out/metrics.norm.parquet"))
        .args(["0.4", &CAPACITY.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&checked.stdout);
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| !l.contains("ok move"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        checked.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // Settings out of their bounds are errors naming them, not a run.
    for (args, named) in [
        (
            &["contention", "--store", "out", "--hosts", "0"][..],
            "--hosts",
        ),
        (
            &["contention", "--store", "out", "--bound", "1"][..],
            "--bound",
        ),
        (
            &["contention", "--store", "out", "--configured"][..],
            "--configured",
        ),
        (
            &["recommend", "--store", "out", "--quantile", "1.5"][..],
            "--quantile",
        ),
        (
            &["recommend", "--store", "out", "--workload", "nobody"][..],
            "nobody",
        ),
    ] {
        let out = wfe(args, dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

/// The contention stage ran in the pipeline with the placement `wfe contention` made: its
/// `migrations` are the moves the backtest replays for that placement over the run's outputs.
fn check_migrations(dir: &Path, py: &std::ffi::OsStr) {
    let args = ["contention", "--config", "job.toml", "--store", "out"];
    let out = wfe(&[&args[..], &["--configured", "--json"]].concat(), dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("configured.json"), &out.stdout).unwrap();
    let checked = Command::new(py)
        .arg(root().join("pipeline/cli/tests/py/check_migrations.py"))
        .arg(dir.join("configured.json"))
        .arg(dir.join("out/migrations.parquet"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&checked.stdout);
    eprintln!("{text}");
    assert!(
        checked.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// `wfe recommend --json` and every row of the `recommendations` topic agree with the
/// forecasts under the job's policy (checked in Python from the Parquet outputs), the topic's
/// newest row and the API with `wfe recommend`, and kubectl applies its patch to the example
/// Deployment offline.
fn check_recommendation(dir: &Path, py: &std::ffi::OsStr, api: &str) {
    let (quantile, margin, horizon) = (
        POLICY.0.to_string(),
        POLICY.1.to_string(),
        POLICY.2.to_string(),
    );
    let out = wfe(
        &[
            "recommend",
            "--store",
            "out",
            "--workload",
            MACHINE,
            "--container",
            "app",
            "--quantile",
            &quantile,
            "--margin",
            &margin,
            "--max-horizon-s",
            &horizon,
            "--json",
        ],
        dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("recommend.json"), &stdout).unwrap();
    let checked = Command::new(py)
        .arg(root().join("pipeline/cli/tests/py/check_recommend.py"))
        .arg(dir.join("recommend.json"))
        .arg(dir.join("out/forecasts.parquet"))
        .args([&quantile, &margin, &horizon])
        .arg(dir.join("out/recommendations.parquet"))
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&checked.stdout));
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let answer: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    // The API serves the same recommendation while the run holds its state.
    let path = format!("/api/v1/workloads/{MACHINE}/recommendation");
    let (status, body) = http("GET", api, &path, &[], "");
    assert_eq!(status, 200, "{body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        served["recommendations"], answer["recommendations"],
        "{body}"
    );
    assert_eq!(
        served["vpa"]["containerRecommendations"][0]["target"],
        answer["vpa"]["containerRecommendations"][0]["target"]
    );
    let (status, body) = http(
        "GET",
        api,
        "/api/v1/workloads/nobody/recommendation",
        &[],
        "",
    );
    assert_eq!(status, 404, "{body}");
    let patch = answer["patch"].to_string();
    let manifest = root().join("deploy/k8s/examples/checkout.yaml");
    let kubectl = Command::new("kubectl")
        .args([
            "patch",
            "--local",
            "--type",
            "strategic",
            "-o",
            "json",
            "-f",
        ])
        .arg(&manifest)
        .args(["-p", &patch])
        .output();
    let kubectl = match kubectl {
        Ok(o) => o,
        Err(e) => panic!("kubectl: {e} (make test installs it)"),
    };
    assert!(
        kubectl.status.success(),
        "kubectl patch --local: {}",
        String::from_utf8_lossy(&kubectl.stderr)
    );
    let patched: Value = serde_json::from_slice(&kubectl.stdout).unwrap();
    let container = &patched["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "app");
    let want = &answer["patch"]["spec"]["template"]["spec"]["containers"][0]["resources"];
    let target = answer["recommendations"][0]["target"].as_f64().unwrap();
    assert_eq!(
        want["requests"]["cpu"],
        format!("{}m", (target * 1000.0).ceil() as i64),
        "{answer}"
    );
    assert_eq!(
        container["resources"]["requests"]["cpu"],
        want["requests"]["cpu"]
    );
    assert_eq!(
        container["resources"]["limits"]["cpu"],
        want["limits"]["cpu"]
    );
    // The job maps no memory: the manifest's own memory request stays.
    assert_eq!(container["resources"]["requests"]["memory"], "512Mi");
    // The VPA object names the container and bounds the target.
    let rec = &answer["vpa"]["containerRecommendations"][0];
    assert_eq!(rec["containerName"], "app");
    assert_eq!(rec["target"]["cpu"], want["requests"]["cpu"]);
}
