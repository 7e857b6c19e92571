//! `wfe train` and `wfe eval forecast` end to end on one SMD machine: versioned model files,
//! and the evaluation's figures for every model and the selected one.

use std::path::Path;

mod common;
use common::{shared_data, wfe};

/// A job config with fewer origins and a quick LSTM, so the suite stays fast.
const CONFIG: &str = r#"
[[sources]]
path = "data"

[stages.forecast]
every_s = 14400
# The default job's levels: the model trained on them reaches p99, as the backtest's sweep
# reads (its risks' levels lie between them).
quantiles = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99]
cv_origins = 12
models = ["persistence", "seasonal-naive", "ets", "mstl", "lstm", "gbm"]

[stages.forecast.gbm]
budgets = [0.5]
max_rows = 2000

[stages.forecast.lstm]
windows_per_series = 64

[stages.forecast.lstm.model]
epochs = 3
device = "cpu"
"#;

fn run_ok(args: &[&str], dir: &Path) -> String {
    let o = wfe(args, dir);
    assert!(
        o.status.success(),
        "wfe {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn train_writes_versions_and_eval_scores_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let file = "machine-1-6.csv.gz";
    std::os::unix::fs::symlink(shared_data().join("smd").join(file), data.join(file)).unwrap();
    std::fs::write(dir.path().join("job.toml"), CONFIG).unwrap();

    let args = [
        "train",
        "--data",
        "data",
        "--model-dir",
        "models",
        "--config",
        "job.toml",
    ];
    let out = run_ok(&args, dir.path());
    assert!(out.contains("| 60 s | v1 | 38 |"), "{out}");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("models/forecast-lstm/60s/v1/meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["format"], 1);
    assert_eq!(meta["series"], 38);
    assert_eq!(meta["horizons_s"], serde_json::json!([900, 3600]));
    let valid = meta["validation_mae"].as_array().unwrap();
    assert_eq!(valid.len(), 2);
    assert!(
        valid
            .iter()
            .all(|v| v.as_f64().is_some_and(|v| v > 0.0 && v < 0.2)),
        "{meta}"
    );
    // The series' fingerprint is in the context, standardised by the training set's spread.
    let fp = &meta["cut"]["fingerprint"];
    assert_eq!(fp["context"], true, "{meta}");
    assert_eq!(fp["window"], 60);
    assert_eq!(fp["windows"], 24, "a day of 60-step windows");
    assert_eq!(fp["centre"].as_array().unwrap().len(), 8);
    // Classes: every kept variant has its network beside model.bin, and only those; the
    // table printed names each class.
    let v1 = dir.path().join("models/forecast-lstm/60s/v1");
    for c in meta["classes"]["classes"].as_array().unwrap() {
        let id = c["id"].as_u64().unwrap();
        let kept = c["kept"].as_bool().unwrap();
        assert_eq!(v1.join(format!("class-{id}.bin")).is_file(), kept, "{c}");
        assert!(c["radius"].as_f64().unwrap() >= meta["classes"]["epsilon"].as_f64().unwrap());
        assert!(out.contains(&format!("| 60 s | {id} |")), "{out}");
    }
    // Trained on the train split only: its data ends where the test split begins.
    assert!(meta["to_ms"].as_i64().unwrap() > meta["from_ms"].as_i64().unwrap());
    // The gradient-boosted model beside it: its version, metadata and held-out scores.
    assert!(out.contains("| step | gbm version |"), "{out}");
    let gbm: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("models/forecast-gbm/60s/v1/meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(gbm["format"], 1);
    assert_eq!(gbm["horizons_s"], serde_json::json!([900, 3600]));
    let held = gbm["report"]["holdout_mae"].as_array().unwrap();
    assert_eq!(held.len(), 2, "{gbm}");
    assert!(
        held.iter()
            .all(|v| v.as_f64().is_some_and(|v| v > 0.0 && v < 0.2)),
        "{gbm}"
    );
    assert!(
        dir.path()
            .join("models/forecast-gbm/60s/v1/model.json")
            .is_file()
    );

    let out = run_ok(
        &[
            "eval", "forecast", "--data", "data", "--config", "job.toml", "--json",
        ],
        dir.path(),
    );
    let r: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    let models = r["models"].as_object().unwrap();
    for m in [
        "persistence",
        "seasonal-naive",
        "ets",
        "mstl",
        "lstm",
        "gbm",
        "selected",
    ] {
        for h in ["15m", "1h"] {
            for who in ["machine-1-6", "mean"] {
                let f = &models[m][h][who];
                for k in ["mae", "mase", "pinball", "coverage_80", "coverage_95"] {
                    let v = f[k]
                        .as_f64()
                        .unwrap_or_else(|| panic!("{m}.{h}.{who}.{k} in {out}"));
                    assert!(v.is_finite() && v >= 0.0, "{m}.{h}.{who}.{k} = {v}");
                }
            }
        }
    }
    let mae = |m: &str| models[m]["1h"]["mean"]["mae"].as_f64().unwrap();
    let best_baseline = mae("persistence").min(mae("seasonal-naive"));
    assert!(
        mae("selected") < best_baseline,
        "selected {} vs best baseline {best_baseline}",
        mae("selected")
    );
    let cov = models["selected"]["1h"]["mean"]["coverage_80"]
        .as_f64()
        .unwrap();
    assert!((0.6..=0.95).contains(&cov), "80% interval coverage {cov}");
    // The stage's choice is made at every test origin of each of the 38 series.
    let chosen = r["chosen"]["1h"].as_object().unwrap();
    let choices: u64 = chosen.values().map(|n| n.as_u64().unwrap()).sum();
    assert!(
        choices >= 38 && choices.is_multiple_of(38),
        "{choices} choices: {chosen:?}"
    );

    // History stored by a run, read back through DataFusion, trains the next version (v2).
    let run = "[[sources]]\npath = \"data\"\n[run]\nprogress = false\n[stages]\n\
               enabled = [\"normalise\"]\n[outputs]\ndir = \"store\"\nparquet = [\"metrics.norm\"]\n";
    std::fs::write(dir.path().join("run.toml"), run).unwrap();
    run_ok(&["run", "--config", "run.toml"], dir.path());
    let args = [
        "train",
        "--data",
        "store/metrics.norm.parquet",
        "--model-dir",
        "models",
        "--config",
        "job.toml",
    ];
    let out = run_ok(&args, dir.path());
    assert!(out.contains("| 60 s | v2 | 38 |"), "{out}");

    // The backtest's sweep forecasts with that LSTM (the default job's `models`): from its
    // private copy of the folder (class variants and all), at the risks' SLA levels beside
    // the job's own, which the model was not trained on and reads between its own.
    let o = wfe(
        &["backtest", "--data", "data", "--sweep", "--json"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("load_failed"), "{err}");
    assert!(
        err.contains("forecast-lstm 60s v2") && err.contains("kind=\"loaded\""),
        "{err}"
    );
}

#[test]
fn train_and_eval_refuse_bad_input_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = wfe(
        &["train", "--data", "nowhere", "--model-dir", "m"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nowhere"), "{err}");
    std::fs::write(dir.path().join("bad.parquet"), b"not parquet").unwrap();
    let o = wfe(&["train", "--data", "bad.parquet"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.parquet"));
    let o = wfe(&["train", "--data", "x", "--device", "tpu"], dir.path());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tpu"));
}
