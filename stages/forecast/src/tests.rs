use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, StringArray};

use wfe_contract::VecCollector;
use wfe_contract::columns::{f64s, list_row_f64, strings, timestamps};
use wfe_contract::norm::NormBatch;
use wfe_normalise::testing::normalised;

use super::*;

fn cpu() -> Vec<ResourceMap> {
    vec![ResourceMap {
        name: "cpu".into(),
        metrics: vec!["m00".into()],
        unit: "vcpu".into(),
        capacity: 64.0,
        workload_prefix: None,
    }]
}

fn run(stage: &mut Forecast, batches: &[RecordBatch]) -> VecCollector {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("forecast");
    for b in batches {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    out
}

struct Row {
    target: i64,
    horizon: i64,
    values: Vec<f64>,
    model: String,
    score: Option<f64>,
    fallback: Option<String>,
}

fn rows(out: &VecCollector) -> Vec<Row> {
    let mut v = vec![];
    for b in out.of(Topic::Forecasts) {
        let target = timestamps(&b, "target_time").unwrap();
        let horizon = wfe_contract::columns::i64s(&b, "horizon_s").unwrap();
        let model = strings(&b, "model").unwrap();
        let score = f64s(&b, "validation_score").unwrap();
        let fb = strings(&b, "fallback_reason").unwrap();
        let qv = b.column_by_name("quantile_values").unwrap();
        for r in 0..b.num_rows() {
            use arrow_array::Array;
            v.push(Row {
                target: target.value(r),
                horizon: horizon.value(r),
                values: list_row_f64(qv.as_ref(), r).unwrap(),
                model: model.value(r).to_string(),
                score: score.is_valid(r).then(|| score.value(r)),
                fallback: fb.is_valid(r).then(|| fb.value(r).to_string()),
            });
        }
    }
    v
}

#[test]
fn hourly_quantile_forecasts_of_an_smd_machine_cover_their_actuals() {
    let norm = normalised("smd", &["machine-1-6"], usize::MAX);
    let out = run(
        &mut Forecast::new(ForecastConfig::default(), cpu()).unwrap(),
        &norm,
    );
    let rows = rows(&out);
    // Actual CPU (vCPU) by time.
    let mut actual = HashMap::new();
    for b in &norm {
        let nb = NormBatch::new(b).unwrap();
        for r in 0..b.num_rows() {
            if nb.metric.get(r) == Some("m00")
                && let Some(v) = nb.raw(r)
            {
                actual.insert(nb.time[r], v * 64.0);
            }
        }
    }
    let steps = actual.len();
    assert_eq!(rows.len(), 2 * (steps / 60), "one row per hour and horizon");
    assert!(
        rows[0].fallback.is_some(),
        "the first day has no season to look back on"
    );
    let (mut inside, mut total) = (0, 0);
    for r in &rows {
        assert!(
            r.values.windows(2).all(|w| w[0] <= w[1]) && r.values[0] >= 0.0,
            "{:?}",
            r.values
        );
        assert!(Model::parse(&r.model).is_some(), "{}", r.model);
        if r.horizon == 3600
            && r.fallback.is_none()
            && let Some(a) = actual.get(&r.target)
        {
            total += 1;
            inside += usize::from(r.values[0] <= *a && *a <= r.values[2]);
        }
    }
    assert!(
        rows.iter()
            .filter(|r| r.fallback.is_none())
            .all(|r| r.score.is_some_and(|s| s >= 0.0))
    );
    let mut by: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for r in &rows {
        if r.horizon == 3600
            && r.fallback.is_none()
            && let Some(a) = actual.get(&r.target)
        {
            let e = by.entry(r.model.clone()).or_default();
            e.0 += usize::from(r.values[0] <= *a && *a <= r.values[2]);
            e.1 += 1;
        }
    }
    eprintln!("coverage by model: {by:?}");
    let coverage = inside as f64 / total as f64;
    assert!(
        total > 500 && (0.6..=0.97).contains(&coverage),
        "80% interval covered {coverage:.3} of {total}"
    );
    // The choice moves between models, baselines among them.
    let chosen: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    assert!(
        chosen.len() >= 2
            && chosen
                .iter()
                .any(|m| Model::parse(m).is_some_and(|m| m.is_baseline())),
        "{chosen:?}"
    );
}

#[test]
fn short_history_falls_back_and_says_so() {
    let norm = normalised("asd", &["omi-4"], 1); // 1024 steps of 5 min: less than 4 days
    let cfg = ForecastConfig {
        season_s: 7 * 86_400,
        models: vec![Model::Persistence, Model::SeasonalNaive],
        ..Default::default()
    };
    let rows = rows(&run(&mut Forecast::new(cfg, cpu()).unwrap(), &norm));
    assert!(!rows.is_empty());
    assert!(rows.iter().all(
        |r| r.model == "persistence" && r.fallback.as_deref().unwrap_or("").contains("season")
    ));
}

#[test]
fn bad_settings_are_config_errors() {
    let bad = |c: ForecastConfig| Forecast::new(c, cpu()).err().unwrap().to_string();
    assert!(
        bad(ForecastConfig {
            quantiles: vec![0.9, 0.1],
            ..Default::default()
        })
        .contains("quantiles")
    );
    assert!(
        bad(ForecastConfig {
            horizons_s: vec![],
            ..Default::default()
        })
        .contains("horizons")
    );
    // A recommendation policy that cannot be applied, named; off, it is not read.
    let policy = wfe_domain::sizing::Policy {
        quantile: 1.5,
        ..Default::default()
    };
    let off = ForecastConfig {
        recommend: false,
        recommendation: policy,
        ..Default::default()
    };
    assert!(
        bad(ForecastConfig {
            recommend: true,
            ..off.clone()
        })
        .contains("stages.forecast.recommendation.quantile")
    );
    assert!(Forecast::new(off, cpu()).is_ok());
    assert!(Forecast::new(ForecastConfig::default(), vec![]).is_err());
    let mut r = cpu();
    r[0].capacity = f64::NAN;
    assert!(Forecast::new(ForecastConfig::default(), r).is_err());
}

#[test]
fn quantile_interpolates() {
    assert_eq!(quantile(&[0.0, 10.0], 0.5), 5.0);
    assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.0), 1.0);
    assert_eq!(quantile(&[], 0.5), 0.0);
    let mut v: Vec<f64> = (0..257).map(|i| ((i * 37) % 257) as f64 * 0.5).collect();
    let mut sorted = v.clone();
    sorted.sort_by(f64::total_cmp);
    let levels = [0.0, 0.1, 0.333, 0.5, 0.9, 0.95, 1.0];
    let want: Vec<f64> = levels.iter().map(|&q| quantile(&sorted, q)).collect();
    assert_eq!(quantiles_select(&mut v, &levels), want);
    assert_eq!(quantiles_select(&mut [], &[0.5]), vec![0.0]);
}

#[test]
fn steps_delivered_again_after_a_crash_are_skipped_not_counted_twice() {
    let batches = normalised("smd", &["machine-1-6"], 40);
    let (first, second) = batches.split_at(batches.len() / 2);
    let mut once = Forecast::new(ForecastConfig::default(), cpu()).unwrap();
    let expected = run(&mut once, &batches).rows(Topic::Forecasts);
    assert!(expected > 0);

    // At-least-once: the second half arrives after the last third of the first half again.
    let mut stage = Forecast::new(ForecastConfig::default(), cpu()).unwrap();
    let mut out = VecCollector::new();
    let mut ctx = Context::new("forecast");
    let again = &first[first.len() * 2 / 3..];
    for b in first.iter().chain(again).chain(second) {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    assert_eq!(out.rows(Topic::Forecasts), expected);
    let replayed: usize = again
        .iter()
        .map(|b| NormBatch::new(b).unwrap().steps().count())
        .sum();
    assert_eq!(ctx.counters()["dropped.replayed_step"], replayed as u64);
}

/// An `anomalies` batch of one closed segment `[start, end]` of `workload`.
fn anomaly(workload: &str, start: i64, end: i64) -> RecordBatch {
    use wfe_contract::columns::{list_f64, list_str, timestamp_column};
    let cols: Vec<ArrayRef> = vec![
        timestamp_column(vec![end]),
        Arc::new(StringArray::from(vec![workload])),
        Arc::new(StringArray::from(vec!["seg-1"])),
        Arc::new(StringArray::from(vec!["closed"])),
        timestamp_column(vec![start]),
        timestamp_column(vec![end]),
        Arc::new(Float64Array::from(vec![9.0])),
        Arc::new(Float64Array::from(vec![1.0])),
        Arc::new(StringArray::from(vec!["pca+range"])),
        list_str([Some(vec!["m00".to_string()])]),
        list_f64([vec![1.0]]),
    ];
    RecordBatch::try_new(Topic::Anomalies.schema(), cols).unwrap()
}

/// Forecast rows as comparable tuples, issued at or after `from`.
fn issued_after(out: &VecCollector, from: i64) -> Vec<(i64, i64, String, Vec<u64>)> {
    let mut v = vec![];
    for b in out.of(Topic::Forecasts) {
        let issued = timestamps(&b, "issued_at").unwrap();
        let horizon = wfe_contract::columns::i64s(&b, "horizon_s").unwrap();
        let model = strings(&b, "model").unwrap();
        let qv = b.column_by_name("quantile_values").unwrap();
        for r in 0..b.num_rows() {
            if issued.value(r) >= from {
                let q = list_row_f64(qv.as_ref(), r).unwrap();
                v.push((
                    issued.value(r),
                    horizon.value(r),
                    model.value(r).to_string(),
                    q.iter().map(|x| x.to_bits()).collect(),
                ));
            }
        }
    }
    v
}

#[test]
fn flagged_spans_are_masked_out_of_the_errors_whenever_they_arrive() {
    let norm = normalised("smd", &["machine-1-6"], 2000);
    let first = |b: &RecordBatch| NormBatch::new(b).unwrap().time[0];
    // A six-hour span inside the fifth batch; its mask arrives late, with the sixth (while the
    // errors it touches are still held).
    let (start, end) = (first(&norm[4]) + 3_600_000, first(&norm[4]) + 7 * 3_600_000);
    let late_at = 5;
    let span = anomaly("machine-1-6", start, end);
    let feed = |cfg: ForecastConfig, span_at: Option<usize>| {
        let mut stage = Forecast::new(cfg, cpu()).unwrap();
        let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
        for (i, b) in norm.iter().enumerate() {
            if span_at == Some(i) {
                stage
                    .process_batch(Topic::Anomalies, span.clone(), &mut ctx, &mut out)
                    .unwrap();
            }
            stage
                .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
                .unwrap();
        }
        let masked = ctx.counters().get("errors.masked").copied().unwrap_or(0);
        (out, masked)
    };
    // Quantiles recomputed at every forecast: a late mask forces a recomputation, which would
    // otherwise shift the refresh schedule and make the two runs differ for that reason alone.
    // The baselines only: a fitted model runs when chosen (or as a challenger), so masking
    // that changes a choice changes which errors exist, besides masking them.
    let on = ForecastConfig {
        quantile_refresh: 1,
        models: vec![Model::Persistence, Model::SeasonalNaive],
        ..Default::default()
    };
    let (early, masked_early) = feed(on.clone(), Some(0));
    let (late, masked_late) = feed(on.clone(), Some(late_at));
    let off = ForecastConfig {
        mask_anomalies: false,
        ..on
    };
    let (plain, masked_off) = feed(off.clone(), Some(0));
    // Errors from actuals in the span and from forecasts made in it: per horizon (15 min,
    // 1 h) and model, at least the span's 360 steps each.
    assert!(masked_early >= 4 * 360, "{masked_early}");
    assert_eq!(masked_late, masked_early, "late spans mask what was held");
    assert_eq!(masked_off, 0);
    // Once the late span is in, forecasts are as if it had been known all along, and they
    // differ from forecasts that learn from the anomalous span.
    let from = first(&norm[late_at]);
    let (e, l, p) = (
        issued_after(&early, from),
        issued_after(&late, from),
        issued_after(&plain, from),
    );
    assert!(!e.is_empty());
    assert!(e == l, "late masking differs from early masking");
    assert!(e != p, "masking changed nothing");
    // Without masking the stage does not read anomalies at all.
    assert_eq!(
        Forecast::new(off, cpu()).unwrap().inputs(),
        vec![Topic::MetricsNorm]
    );
}

/// The quantile levels of the stage's test LSTMs.
#[cfg(feature = "torch")]
const LEVELS: [f64; 5] = [0.025, 0.1, 0.5, 0.9, 0.975];

/// A one-epoch LSTM on the CPU (32 windows a series, 48 steps in, 15 and 60 ahead) trained on
/// `n` sines of `len` steps and `period`: a model to save, load and retrain in the stage's
/// tests, and its settings.
#[cfg(feature = "torch")]
fn one_epoch_lstm(n: usize, len: usize, period: f64) -> (lstm::LstmModel, LstmConfig) {
    let series: Vec<Vec<f64>> = (0..n)
        .map(|s| {
            (0..len)
                .map(|i| 0.3 + 0.1 * ((i + s * 100) as f64 / period).sin())
                .collect()
        })
        .collect();
    let cfg = LstmConfig {
        windows_per_series: 32,
        model: wfe_neural::ForecasterConfig {
            epochs: 1,
            device: wfe_neural::DeviceChoice::Cpu,
            ..Default::default()
        },
        ..Default::default()
    };
    let cut = lstm::Cut::new(48, 1440, vec![15, 60]);
    let (model, _) = lstm::LstmModel::train(&series, cut, &LEVELS, &cfg).unwrap();
    (model, cfg)
}

/// Metadata of a model for the default settings on SMD's 60 s step.
#[cfg(feature = "torch")]
fn smd_meta(model: &lstm::LstmModel, levels: &[f64]) -> store::ModelMeta {
    store::ModelMeta {
        format: store::FORMAT,
        version: 0,
        trained: store::Trained {
            code_version: "test".into(),
            created_unix: 0,
            source: "synthetic".into(),
            series: 4,
            from_ms: 0,
            to_ms: 0,
            step_s: 60,
            horizons_s: vec![900, 3600],
            season_s: 86_400,
        },
        cut: model.cut.clone(),
        levels: levels.to_vec(),
        validation_mae: vec![0.05, 0.05],
        persistence_mae: vec![0.05, 0.05],
        train: wfe_neural::TrainReport {
            windows: 0,
            epochs: 1,
            first_loss: 0.0,
            last_loss: 0.0,
            device: "cpu".into(),
            seconds: 0.0,
        },
        classes: model.classes.clone(),
    }
}

#[cfg(feature = "torch")]
#[test]
fn the_stage_loads_the_newest_lstm_swaps_to_new_versions_and_refuses_bad_files() {
    use store::ModelRepo;
    let dir = tempfile::tempdir().unwrap();
    let levels = LEVELS;
    let (m1, _) = one_epoch_lstm(4, 4000, 200.0);
    let repo = store::LocalDir::new(dir.path());
    assert_eq!(store::save(&repo, &m1, smd_meta(&m1, &levels)).unwrap(), 1);

    let cfg = ForecastConfig {
        models: vec![Model::Persistence, Model::Lstm],
        model_dir: Some(dir.path().to_path_buf()),
        reload_s: 0,
        retrain_every_s: 0,
        drift_ratio: 1e9, // this test is about loading: no retraining
        ..Default::default()
    };
    let norm = normalised("smd", &["machine-1-6"], 60);
    let mut stage = Forecast::new(cfg, cpu()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
    let half = norm.len() / 2;
    for b in &norm[..half] {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    assert_eq!(ctx.counters()["model.loaded"], 1);
    // A new version, a version of another format, and one without its network.
    let (m2, _) = one_epoch_lstm(4, 4000, 200.0);
    assert_eq!(store::save(&repo, &m2, smd_meta(&m2, &levels)).unwrap(), 2);
    let mut meta3 = serde_json::to_value(smd_meta(&m2, &levels)).unwrap();
    meta3["format"] = 99.into();
    repo.write(60, 3, "model.bin", b"x").unwrap();
    repo.write(60, 3, "meta.json", meta3.to_string().as_bytes())
        .unwrap();
    for b in &norm[half..] {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    // v3 is newest: refused (format 99); v2 was never newest while v3 existed, so the stage
    // kept v1. Remove v3 and v2 is taken.
    assert_eq!(ctx.counters()["model.load_failed"], 1);
    let err = store::meta(&repo, 60, 3).unwrap_err().to_string();
    assert!(
        err.contains("format 99") && err.contains("wfe train"),
        "{err}"
    );
    std::fs::remove_dir_all(dir.path().join("forecast-lstm/60s/v3")).unwrap();
    stage
        .process_batch(
            Topic::MetricsNorm,
            norm[norm.len() - 1].clone(),
            &mut ctx,
            &mut out,
        )
        .unwrap();
    assert_eq!(ctx.counters()["model.loaded"], 2);
    // Rows name the LSTM's version whenever it was chosen, and its running error is exported.
    let mut versions = std::collections::BTreeSet::new();
    for b in out.of(Topic::Forecasts) {
        let model = strings(&b, "model").unwrap();
        let version = strings(&b, "model_version").unwrap();
        for r in 0..b.num_rows() {
            if model.value(r) == "lstm" {
                versions.insert(version.value(r).to_string());
            }
        }
    }
    assert!(
        versions.iter().all(|v| v.starts_with("lstm v")),
        "{versions:?}"
    );
    assert!(
        ctx.gauges().keys().any(|k| k.starts_with("lstm.60s.mae.")),
        "{:?}",
        ctx.gauges()
    );
    // A missing model file is an error naming it.
    std::fs::remove_file(dir.path().join("forecast-lstm/60s/v2/model.bin")).unwrap();
    let err = store::load(&repo, 60, 2, None).unwrap_err().to_string();
    assert!(err.contains("model.bin"), "{err}");
}

#[test]
fn forecasts_do_not_depend_on_how_the_input_is_batched() {
    // Fitted models' forecasts are computed after the batch's steps (the LSTM in one call for
    // the fleet): their errors and the choices they drive must come out the same whatever
    // the batch boundaries, as the Kafka services cut batches differently from `wfe run`.
    let norm = normalised("asd", &["omi-1", "omi-2"], 40);
    let cfg = ForecastConfig {
        cv_origins: 12,
        ..Default::default()
    };
    let single = issued_after(
        &run(&mut Forecast::new(cfg.clone(), cpu()).unwrap(), &norm),
        0,
    );
    assert!(
        single.iter().any(|r| r.2 == "ets" || r.2 == "mstl"),
        "a fitted model is chosen"
    );
    for group in [2, 7] {
        let merged: Vec<RecordBatch> = norm
            .chunks(group)
            .map(|c| arrow_select::concat::concat_batches(&c[0].schema(), c).unwrap())
            .collect();
        let out = issued_after(
            &run(&mut Forecast::new(cfg.clone(), cpu()).unwrap(), &merged),
            0,
        );
        if let Some(i) = (0..single.len().min(out.len())).find(|&i| single[i] != out[i]) {
            panic!(
                "batches of {group} differ at row {i}: {:?} vs {:?}",
                single[i], out[i]
            );
        }
        assert_eq!(out.len(), single.len());
    }
}

#[test]
fn a_week_of_pod_churn_keeps_about_a_days_workloads() {
    let norm = wfe_normalise::testing::churn_norm(7);
    wfe_normalise::testing::assert_keeps_about_a_days_pods(|retire_after_s| {
        let mut st = Forecast::new(
            ForecastConfig {
                retire_after_s,
                ..Default::default()
            },
            cpu(),
        )
        .unwrap();
        st.sweep.clock = wfe_domain::retire::test_clock::now;
        let retired = wfe_normalise::testing::run_as_live(&mut st, &norm);
        (st.workloads.items.len(), st.workloads.names.len(), retired)
    });
}

/// Forecast rows as comparable strings (workload, target, horizon, model, quantiles), sorted.
fn row_keys(out: &VecCollector) -> Vec<String> {
    let mut keys = Vec::new();
    for b in out.of(Topic::Forecasts) {
        let w = strings(&b, "workload").unwrap();
        for (r, row) in rows(&VecCollector {
            batches: vec![(Topic::Forecasts, b.clone())],
        })
        .into_iter()
        .enumerate()
        {
            let q: Vec<u64> = row.values.iter().map(|v| v.to_bits()).collect();
            keys.push(format!(
                "{} {} {} {} {q:?}",
                w.value(r),
                row.target,
                row.horizon,
                row.model
            ));
        }
    }
    keys.sort();
    keys
}

/// The changelog's form of the state (an entry per workload, per workload's spans, per
/// workload's ETS memos and paired errors) restores a stage that goes on as if it had never stopped.
#[test]
fn a_stage_restored_from_its_entries_forecasts_as_if_it_never_stopped() {
    let batches = normalised("smd", &["machine-1-6", "machine-1-7"], 60);
    let (first, second) = batches.split_at(batches.len() / 2);
    let t0 = NormBatch::new(&batches[2]).unwrap().time[0];
    let span = anomaly("machine-1-7", t0, t0 + 3 * 3_600_000);
    // ETS every time, its trend searched every third fit: a restore that lost the memo would
    // search at another fit and forecast otherwise.
    let mut cfg = ForecastConfig {
        models: vec![Model::Persistence, Model::SeasonalNaive, Model::Ets],
        challenge_every: 1,
        ..Default::default()
    };
    cfg.stats.ets_search_every = 3;
    let feed = |stage: &mut Forecast, part: &[RecordBatch], out: &mut VecCollector| {
        let mut ctx = Context::new("forecast");
        stage
            .process_batch(Topic::Anomalies, span.clone(), &mut ctx, out)
            .unwrap();
        for b in part {
            stage
                .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, out)
                .unwrap();
        }
    };
    let mut whole = Forecast::new(cfg.clone(), cpu()).unwrap();
    let mut expected = VecCollector::new();
    feed(&mut whole, &batches, &mut expected);
    whole
        .flush(&mut Context::new("forecast"), &mut expected)
        .unwrap();

    let mut before = Forecast::new(cfg.clone(), cpu()).unwrap();
    let mut got = VecCollector::new();
    feed(&mut before, first, &mut got);
    let split = before.snapshot_split().unwrap().unwrap();
    let all: Vec<&str> = split.entries().keys().map(String::as_str).collect();
    // Each ring's values before its tail are in runs, and the rings' positions beside them.
    for w in ["machine-1-6", "machine-1-7"] {
        assert!(all.contains(&format!("pos/{w}").as_str()), "{all:?}");
        assert!(all.iter().any(|k| k.starts_with(&format!("runs/{w}:"))));
    }
    let keys: Vec<&str> = (all.iter().copied())
        .filter(|k| !k.starts_with("runs/") && !k.starts_with("pos/"))
        .collect();
    assert_eq!(
        keys,
        [
            "ets/machine-1-6",
            "ets/machine-1-7",
            "pairs/machine-1-6",
            "pairs/machine-1-7",
            "spans/machine-1-7",
            "w/machine-1-6",
            "w/machine-1-7"
        ]
    );
    let memos = crate::snapshot::memos(&before.workloads);
    assert!(!memos.is_empty());
    // The whole form restores them too; a whole state written before the memos existed
    // (workloads and spans only) still restores, its series with fresh memos.
    let mut whole_form = Forecast::new(cfg.clone(), cpu()).unwrap();
    whole_form
        .restore(&before.snapshot().unwrap().unwrap())
        .unwrap();
    assert_eq!(crate::snapshot::memos(&whole_form.workloads), memos);
    assert!(
        !crate::snapshot::pairs(whole_form.workloads.iter().map(|(n, w)| (n, w, w))).is_empty()
    );
    // Written before the pairs (three members), then before the memos (two).
    let (w, sp) = (&before.workloads, &before.spans);
    let older = wfe_contract::state::encode("forecast", &(w, sp, &memos));
    whole_form.restore(&older.unwrap().unwrap()).unwrap();
    assert_eq!(crate::snapshot::memos(&whole_form.workloads), memos);
    assert!(crate::snapshot::pairs(whole_form.workloads.iter().map(|(n, w)| (n, w, w))).is_empty());
    let older = wfe_contract::state::encode("forecast", &(w, sp));
    whole_form.restore(&older.unwrap().unwrap()).unwrap();
    assert!(crate::snapshot::memos(&whole_form.workloads).is_empty());
    drop(before);
    let mut after = Forecast::new(cfg, cpu()).unwrap();
    after.restore_split(split).unwrap();
    assert_eq!(crate::snapshot::memos(&after.workloads), memos);
    feed(&mut after, second, &mut got);
    after
        .flush(&mut Context::new("forecast"), &mut got)
        .unwrap();
    let (want, have) = (row_keys(&expected), row_keys(&got));
    assert!(!want.is_empty());
    assert_eq!(have, want);
}

mod changes;
mod gbm;
mod resources;
mod restore;
#[cfg(feature = "torch")]
mod retrain;
