use wfe_contract::VecCollector;
use wfe_contract::columns::strings;
use wfe_contract::norm::{KeyCache, NormBatch, Slots};
use wfe_normalise::testing::normalised;

use std::collections::HashMap;

use super::*;

fn run(stage: &mut Anomaly, batches: &[RecordBatch]) -> (VecCollector, Context) {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("anomaly");
    for b in batches {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    (out, ctx)
}

/// (scaled values, split, label) per step of one workload.
fn steps(batches: &[RecordBatch]) -> Vec<(Vec<f64>, String, u8)> {
    let mut slots = Slots::default();
    let mut rows = vec![];
    for b in batches {
        let nb = NormBatch::new(b).unwrap();
        let mut cache = KeyCache::default();
        for step in nb.steps() {
            let map = cache.get(&nb, &step, 0, &mut slots).clone();
            let (mut v, mut r) = (vec![], vec![]);
            nb.dense(&step, &map, slots.len(), &mut v, &mut r);
            let l = step.label.unwrap_or("");
            let split = labels::get(l, "split").unwrap_or("").to_string();
            rows.push((v, split, (labels::get(l, "label") == Some("1")) as u8));
        }
    }
    rows
}

/// The scaled values of the `train` steps.
fn train_rows(all: &[(Vec<f64>, String, u8)]) -> Vec<Vec<f64>> {
    all.iter()
        .filter(|s| s.1 == "train")
        .map(|s| s.0.clone())
        .collect()
}

#[test]
fn pca_scores_labelled_anomalies_higher_than_normal_steps() {
    let norm = normalised("smd", &["machine-1-6"], usize::MAX);
    let all = steps(&norm);
    let train = train_rows(&all);
    let model = PcaModel::fit(&train, 0.95).unwrap();
    assert!(!model.components.is_empty() && model.components.len() < 38);
    let (mut a, mut na, mut n, mut nn) = (0.0, 0, 0.0, 0);
    for (v, split, label) in all.iter().filter(|s| s.1 == "test") {
        let _ = split;
        let s = model.score(v).0;
        if *label == 1 {
            a += s;
            na += 1;
        } else {
            n += s;
            nn += 1;
        }
    }
    assert!(na > 0 && nn > 0);
    assert!(
        a / na as f64 > 3.0 * (n / nn as f64).max(1.0),
        "anomalous {} vs normal {}",
        a / na as f64,
        n / nn as f64
    );
}

#[test]
fn segments_open_update_and_close_with_stable_ids_and_contributors() {
    let norm = normalised("smd", &["machine-1-6"], usize::MAX);
    let (out, _) = run(&mut Anomaly::new(AnomalyConfig::default()).unwrap(), &norm);
    let batches = out.of(Topic::Anomalies);
    assert!(!batches.is_empty());
    let mut open: HashMap<String, bool> = HashMap::new();
    let mut closed = 0;
    for b in &batches {
        let ev = strings(b, "event").unwrap();
        let id = strings(b, "segment_id").unwrap();
        let top = b.column_by_name("top_metrics").unwrap();
        for r in 0..b.num_rows() {
            let list = arrow_array::cast::AsArray::as_list::<i32>(top.as_ref()).value(r);
            assert!(!list.is_empty(), "an event names its metrics");
            match ev.value(r) {
                "opened" => assert!(open.insert(id.value(r).to_string(), true).is_none()),
                "updated" => assert!(open.contains_key(id.value(r))),
                "closed" => {
                    assert!(open.remove(id.value(r)).is_some());
                    closed += 1;
                }
                other => panic!("unknown event {other}"),
            }
        }
    }
    assert!(closed > 0);
    // A replay gives the same rows.
    let (again, _) = run(&mut Anomaly::new(AnomalyConfig::default()).unwrap(), &norm);
    assert_eq!(again.of(Topic::Anomalies), batches);
}

#[test]
fn constant_nan_and_short_inputs_give_defined_results() {
    // Constant metrics: zero variance, no components, finite scores.
    let constant = vec![vec![0.5, 0.5, 0.5]; 100];
    let m = PcaModel::fit(&constant, 0.95).unwrap();
    assert!(m.components.is_empty());
    assert!(m.score(&[0.5, 0.5, 0.5]).0.is_finite());
    assert!(
        m.score(&[f64::NAN, 0.9, 0.5]).0.is_finite(),
        "NaN is imputed, not propagated"
    );
    assert!(m.score(&[0.5]).0.is_finite(), "a shorter row is padded");
    // One step, or none: a clear error rather than a panic.
    assert!(PcaModel::fit(&[vec![1.0, 2.0]], 0.95).is_err());
    assert!(PcaModel::fit(&[], 0.95).is_err());
    // A workload with too little history is counted as unscored.
    let norm = normalised("asd", &["omi-2"], 1);
    let mut cfg = AnomalyConfig {
        min_learn_steps: 100_000,
        ..Default::default()
    };
    cfg.learn_steps = 10;
    let (out, ctx) = run(&mut Anomaly::new(cfg).unwrap(), &norm);
    assert_eq!(out.rows(Topic::Anomalies), 0);
    assert_eq!(ctx.counters()["unscored.too_little_history"], 1);
    assert!(
        Anomaly::new(AnomalyConfig {
            variance: 0.0,
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn block_scoring_equals_step_scoring() {
    let norm = normalised("asd", &["omi-6"], usize::MAX);
    let all = steps(&norm);
    let train = train_rows(&all);
    let model = PcaModel::fit(&train, 0.95).unwrap();
    let test: Vec<&Vec<f64>> = all
        .iter()
        .filter(|s| s.1 == "test")
        .map(|s| &s.0)
        .take(500)
        .collect();
    let width = model.mean.len();
    let mut flat: Vec<f64> = test.iter().flat_map(|r| r.iter().copied()).collect();
    flat[3] = f64::NAN; // a missing value is imputed the same way in both
    let (mut scores, mut z) = (vec![], vec![]);
    model.score_block(&flat, width, &mut scores, &mut z);
    for (i, s) in scores.iter().enumerate() {
        let one = model.score(&flat[i * width..(i + 1) * width]).0;
        assert!(
            (s - one).abs() <= 1e-6 * one.abs().max(1.0),
            "row {i}: {s} vs {one}"
        );
    }
}

fn with(detectors: &[DetectorKind]) -> AnomalyConfig {
    AnomalyConfig {
        detectors: detectors.to_vec(),
        ..Default::default()
    }
}

#[test]
fn every_detector_gives_defined_results_on_bad_input() {
    use DetectorKind::*;
    for kinds in [&[Pca][..], &[Range], &[Iforest], &[Pca, Range, Iforest]] {
        let cfg = with(kinds);
        // Constant metrics: fitted, finite scores, no contributions to a step that is equal.
        let constant = vec![vec![0.5, 0.5, 0.5]; 100];
        let mut m = Ensemble::fit(&constant, None, &cfg).unwrap();
        let (mut s, mut c) = (vec![], vec![]);
        m.score_block(&[0.5, 0.5, 0.5, 0.9, f64::NAN, 0.5], 3, &[], &mut s, &mut c);
        assert!(s.iter().all(|v| v.is_finite()), "{kinds:?}: {s:?}");
        assert!(
            c.iter().all(|v| v.is_finite() && *v >= 0.0),
            "{kinds:?}: {c:?}"
        );
        assert!(m.threshold.is_finite() || m.threshold == f64::INFINITY);
        // NaN in the history is missing, not poison.
        let mut holes = constant.clone();
        for (i, r) in holes.iter_mut().enumerate() {
            r[i % 3] = f64::NAN;
            r[1] += (i % 7) as f64 * 0.01;
        }
        let mut m = Ensemble::fit(&holes, None, &cfg).unwrap();
        assert!(m.threshold.is_finite(), "{kinds:?}");
        // A row narrower than the model is padded; a wider one is cut.
        m.score_block(&[0.5, 0.6], 2, &[], &mut s, &mut c);
        assert_eq!((s.len(), c.len()), (1, 3));
        m.score_block(&[0.5, 0.6, 0.5, 9.0], 4, &[], &mut s, &mut c);
        assert_eq!((s.len(), c.len()), (1, 3));
        assert!(s[0].is_finite());
        // One sample, or none, or no metrics: a clear error.
        for bad in [&[vec![1.0, 2.0]][..], &[], &[vec![], vec![]]] {
            let e = Ensemble::fit(bad, None, &cfg).unwrap_err();
            assert!(e.contains("need at least 2 steps"), "{kinds:?}: {e}");
        }
    }
}

#[test]
fn the_combined_detector_finds_more_than_pca_and_names_the_metrics_that_moved() {
    // machine-2-7: short segments whose metrics left their usual band.
    let norm = normalised("smd", &["machine-2-7"], usize::MAX);
    let all = steps(&norm);
    let train = train_rows(&all);
    let test: Vec<&(Vec<f64>, String, u8)> = all.iter().filter(|s| s.1 == "test").collect();
    // Recall at a 1 % false-alarm rate: the share of anomalous steps scored above the 99th
    // percentile of normal steps.
    let recall_at_1pct = |cfg: &AnomalyConfig| {
        let mut m = Ensemble::fit(&train, None, cfg).unwrap();
        let flat: Vec<f64> = test
            .iter()
            .flat_map(|s| (0..m.width).map(|j| s.0.get(j).copied().unwrap_or(f64::NAN)))
            .collect();
        let (mut raw, mut c) = (vec![], vec![]);
        m.score_block(&flat, m.width, &[], &mut raw, &mut c);
        let mut prev = None;
        let (mut pos, mut neg) = (vec![], vec![]);
        for (s, t) in raw.iter().zip(&test) {
            let v = m.smooth(prev, *s);
            prev = Some(v);
            if t.2 == 1 { pos.push(v) } else { neg.push(v) }
        }
        neg.sort_by(f64::total_cmp);
        let cut = quantile(&neg, 0.99);
        pos.iter().filter(|v| **v > cut).count() as f64 / pos.len() as f64
    };
    let combined = recall_at_1pct(&AnomalyConfig::default());
    let pca = recall_at_1pct(&with(&[DetectorKind::Pca]));
    assert!(combined > 0.7, "combined {combined}");
    assert!(
        combined > pca + 0.02,
        "combined {combined} vs PCA alone {pca}"
    );
    // The stage's events name metrics whose shares add up to at most 1.
    let (out, _) = run(&mut Anomaly::new(AnomalyConfig::default()).unwrap(), &norm);
    let batches = out.of(Topic::Anomalies);
    assert_eq!(
        strings(&batches[0], "detector").unwrap().value(0),
        "pca+range"
    );
    for b in &batches {
        let shares = b.column_by_name("top_contributions").unwrap();
        let shares = arrow_array::cast::AsArray::as_list::<i32>(shares.as_ref());
        for r in 0..b.num_rows() {
            let v = shares.value(r);
            let v = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Float64Type>(
                v.as_ref(),
            );
            let total: f64 = v.values().iter().sum();
            assert!(
                !v.is_empty() && total <= 1.0 + 1e-9,
                "shares {:?}",
                v.values()
            );
        }
    }
}

#[test]
fn settings_are_checked_with_the_key_named() {
    let bad = [
        (r#"detectors = []"#, "detectors"),
        (r#"pot_risk = 0.5"#, "pot_risk"),
        (r#"smoothing = 0"#, "smoothing"),
        (r#"weights = { pca = -1 }"#, "weights.pca"),
        (r#"holdout = 0.95"#, "holdout"),
    ];
    for (toml_text, key) in bad {
        let cfg: AnomalyConfig = serde_json::from_value(toml_like(toml_text)).unwrap();
        let e = Anomaly::new(cfg).err().unwrap().to_string();
        assert!(e.contains(key), "{toml_text}: {e}");
    }
    assert!(serde_json::from_str::<AnomalyConfig>(r#"{"detectors": ["lstm-ae"]}"#).is_err());
    // The lstm detector needs libtorch: without it the stage says so when it is built.
    let lstm: AnomalyConfig = serde_json::from_str(r#"{"detectors": ["lstm"]}"#).unwrap();
    match Anomaly::new(lstm) {
        Ok(_) => assert!(wfe_neural::available()),
        Err(e) => assert!(
            !wfe_neural::available() && e.to_string().contains("torch"),
            "{e}"
        ),
    }
    assert!(serde_json::from_str::<AnomalyConfig>(r#"{"detector": ["pca"]}"#).is_err());
}

/// A one-line `key = value` setting as JSON (the stage's tests have no TOML parser).
fn toml_like(line: &str) -> serde_json::Value {
    let (k, v) = line.split_once(" = ").unwrap();
    let v = v.replace("{ pca = -1 }", r#"{"pca": -1}"#);
    serde_json::from_str(&format!(r#"{{"{k}": {v}}}"#)).unwrap()
}

#[test]
fn a_week_of_pod_churn_keeps_about_a_days_workloads() {
    let norm = wfe_normalise::testing::churn_norm(7);
    wfe_normalise::testing::assert_keeps_about_a_days_pods(|retire_after_s| {
        let mut st = Anomaly::new(AnomalyConfig {
            retire_after_s,
            ..Default::default()
        })
        .unwrap();
        st.sweep.clock = wfe_domain::retire::test_clock::now;
        let retired = wfe_normalise::testing::run_as_live(&mut st, &norm);
        (st.workloads.items.len(), st.workloads.names.len(), retired)
    });
}

#[cfg(feature = "torch")]
mod lstm_detector {
    use super::*;

    fn lstm_only() -> AnomalyConfig {
        let mut cfg = with(&[DetectorKind::Lstm]);
        cfg.lstm.max_windows = 1024;
        cfg.lstm.model.epochs = 5;
        cfg.lstm.model.device = wfe_neural::DeviceChoice::Cpu;
        cfg
    }

    #[test]
    fn the_lstm_detector_finds_smd_anomalies_and_scores_the_same_in_any_block_size() {
        let norm = normalised("smd", &["machine-2-7"], usize::MAX);
        let all = steps(&norm);
        let train = train_rows(&all);
        let test: Vec<&(Vec<f64>, String, u8)> = all.iter().filter(|s| s.1 == "test").collect();
        let cfg = lstm_only();
        let fitted = Ensemble::fit(&train, None, &cfg).unwrap();
        assert_eq!(fitted.name(), "lstm");
        assert!(fitted.threshold.is_finite());
        let d = fitted.width;
        let flat: Vec<f64> = test
            .iter()
            .flat_map(|s| (0..d).map(|j| s.0.get(j).copied().unwrap_or(f64::NAN)))
            .collect();
        let (mut whole, mut c) = (vec![], vec![]);
        fitted
            .clone()
            .score_block(&flat, d, &[], &mut whole, &mut c);
        // Contributions: shares of each step's error, weighted.
        assert!(c.iter().all(|v| v.is_finite() && *v >= 0.0));
        // Scored in blocks of 97 steps the scores match: the window context carries over.
        let mut m = fitted.clone();
        let mut pieces = Vec::new();
        for chunk in flat.chunks(97 * d) {
            let (mut s, mut c) = (vec![], vec![]);
            m.score_block(chunk, d, &[], &mut s, &mut c);
            pieces.extend(s);
        }
        assert_eq!(pieces.len(), whole.len());
        for (i, (a, b)) in whole.iter().zip(&pieces).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                "step {i}: {a} vs {b}"
            );
        }
        // Anomalous steps score above normal ones: recall at a 1 % false-alarm rate.
        let (mut pos, mut neg) = (vec![], vec![]);
        for (s, t) in whole.iter().zip(&test) {
            if t.2 == 1 { pos.push(*s) } else { neg.push(*s) }
        }
        neg.sort_by(f64::total_cmp);
        let cut = quantile(&neg, 0.99);
        let recall = pos.iter().filter(|v| **v > cut).count() as f64 / pos.len() as f64;
        assert!(recall > 0.3, "lstm recall at 1 % false alarms: {recall}");
    }

    #[test]
    fn a_stage_with_the_lstm_detector_survives_a_snapshot() {
        let norm = normalised("smd", &["machine-1-6"], usize::MAX);
        let mut cfg = lstm_only();
        cfg.detectors = vec![DetectorKind::Pca, DetectorKind::Range, DetectorKind::Lstm];
        cfg.lstm.model.epochs = 2;
        let half = norm.len() / 2;
        let mut first = Anomaly::new(cfg.clone()).unwrap();
        let (a, _) = run(&mut first, &norm[..half]);
        // Restored from the changelog's form (an entry per workload); the whole form is
        // the normalise tests' business.
        let mut second = Anomaly::new(cfg.clone()).unwrap();
        second
            .restore_split(first.snapshot_split().unwrap().unwrap())
            .unwrap();
        let (b, _) = run(&mut second, &norm[half..]);
        let mut whole = Anomaly::new(cfg).unwrap();
        let (all, _) = run(&mut whole, &norm);
        let rows = |c: &VecCollector| {
            c.of(Topic::Anomalies)
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        };
        assert!(rows(&all) > 0);
        assert_eq!(rows(&a) + rows(&b), rows(&all));
        let det = strings(&all.of(Topic::Anomalies)[0], "detector")
            .unwrap()
            .value(0)
            .to_string();
        assert_eq!(det, "pca+range+lstm");
    }
}

/// The events of a run: (event, segment start, segment end) per row.
fn events(out: &VecCollector) -> Vec<(String, i64, Option<i64>)> {
    let mut rows = Vec::new();
    for b in out.of(Topic::Anomalies) {
        let ev = strings(&b, "event").unwrap();
        let start = wfe_contract::columns::timestamps(&b, "segment_start").unwrap();
        let end = wfe_contract::columns::timestamps(&b, "segment_end").unwrap();
        for r in 0..b.num_rows() {
            let e = (!arrow_array::Array::is_null(end, r)).then(|| end.value(r));
            rows.push((ev.value(r).to_string(), start.value(r), e));
        }
    }
    rows
}

/// machine-1-6's normal behaviour moves two days into its test split and stays moved: with a
/// fixed threshold one segment opens there and never closes (the UI shaded everything after
/// it); following the level, the threshold rises and that segment closes.
#[test]
fn a_lasting_move_of_normal_behaviour_closes_its_segment_instead_of_holding_it_open() {
    let norm = normalised("smd", &["machine-1-6"], usize::MAX);
    let last = |cfg: AnomalyConfig| {
        let (out, _) = run(&mut Anomaly::new(cfg).unwrap(), &norm);
        let ev = events(&out);
        let opened = ev.iter().filter(|e| e.0 == "opened").count();
        let closed = ev.iter().filter(|e| e.0 == "closed").count();
        (opened, closed, ev.last().cloned().unwrap())
    };
    let fixed = AnomalyConfig {
        level_window_h: 0,
        ..AnomalyConfig::default()
    };
    let (opened, closed, last_row) = last(fixed);
    assert_eq!(opened, closed + 1, "fixed: one segment left open");
    let (_, start, _) = last_row;
    // 2023-12-08, nine days before the data ends: the segment opened at the move.
    let days_before_the_end = 1_702_000_000_000i64;
    assert!(start < days_before_the_end, "fixed: open since {start}");
    let (opened, closed, _) = last(AnomalyConfig::default());
    assert_eq!(opened, closed, "following the level, every segment closes");
    assert!(
        closed > 8,
        "{closed} segments: the anomalies after the move still open some"
    );
}

/// A stage with default settings restored from `from`'s state in `form`: the changelog's
/// (`split`, an entry per workload) or the whole one.
fn restored(from: &Anomaly, form: &str) -> Anomaly {
    let mut stage = Anomaly::new(AnomalyConfig::default()).unwrap();
    match form {
        "split" => stage
            .restore_split(from.snapshot_split().unwrap().unwrap())
            .unwrap(),
        _ => stage.restore(&from.snapshot().unwrap().unwrap()).unwrap(),
    }
    stage
}

/// The level travels with the state in both forms, and a state written before the level
/// existed (workloads alone) still restores.
#[test]
fn the_level_survives_a_snapshot_and_old_states_restore() {
    let norm = normalised("smd", &["machine-1-6"], usize::MAX);
    let half = norm.len() * 2 / 3;
    let (all, _) = run(&mut Anomaly::new(AnomalyConfig::default()).unwrap(), &norm);
    let mut first = Anomaly::new(AnomalyConfig::default()).unwrap();
    let (a, _) = run(&mut first, &norm[..half]);
    assert!(
        first.workloads.iter().any(|(_, w)| w.level.raise() > 0.0),
        "the move has raised the threshold by then"
    );
    for form in ["split", "whole"] {
        let mut second = restored(&first, form);
        let (b, _) = run(&mut second, &norm[half..]);
        let mut both = events(&a);
        both.extend(events(&b));
        assert_eq!(both, events(&all), "{form}: the same events as one run");
    }
    // Written before the level: the workloads alone, whole and split.
    let old = wfe_contract::state::encode("anomaly", &first.workloads)
        .unwrap()
        .unwrap();
    let mut restored = Anomaly::new(AnomalyConfig::default()).unwrap();
    restored.restore(&old).unwrap();
    assert_eq!(
        restored.workloads.iter().count(),
        first.workloads.iter().count()
    );
    assert!(
        restored
            .workloads
            .iter()
            .all(|(_, w)| w.level == Level::default())
    );
    let mut split = wfe_contract::state::Split::new();
    split
        .put_items("anomaly", "w", first.workloads.iter())
        .unwrap();
    let mut restored = Anomaly::new(AnomalyConfig::default()).unwrap();
    restored.restore_split(split).unwrap();
    assert!(restored.workloads.iter().all(|(_, w)| w.model.is_some()));
}

/// One metric of `batches` alone: a workload with a single series.
fn only_metric(batches: &[RecordBatch], metric: &str) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|b| {
            let m = wfe_contract::columns::DictStrings::new(b, "metric").unwrap();
            let keep: arrow_array::BooleanArray = (0..b.num_rows())
                .map(|r| Some(m.get(r) == Some(metric)))
                .collect();
            arrow_select::filter::filter_record_batch(b, &keep).unwrap()
        })
        .filter(|b| b.num_rows() > 0)
        .collect()
}

/// A workload with one metric gets the single-metric detectors (its usual value at this time
/// of day, and its band), is scored, and comes back from a restore in the middle of its
/// learning with the step its fit places the history in time with.
#[test]
fn a_single_metric_workload_gets_its_own_detectors_and_keeps_its_step_across_a_restore() {
    let norm = only_metric(&normalised("asd", &["omi-1"], usize::MAX), "m00");
    let (all, _) = run(&mut Anomaly::new(AnomalyConfig::default()).unwrap(), &norm);
    let rows = all.of(Topic::Anomalies);
    assert!(!rows.is_empty(), "the series is scored and opens segments");
    let det = strings(&rows[0], "detector").unwrap().value(0).to_string();
    assert_eq!(det, "seasonal+range");
    let top = events(&all);
    assert!(top.iter().any(|e| e.0 == "closed"));
    // Cut while learning (the first batches are train steps), restored in both forms.
    let cut = 2;
    let mut first = Anomaly::new(AnomalyConfig::default()).unwrap();
    let mut out = VecCollector::new();
    let mut ctx = Context::new("anomaly");
    for b in &norm[..cut] {
        first
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    assert!(first.workloads.iter().all(|(_, w)| w.model.is_none()));
    for form in ["split", "whole"] {
        let mut second = restored(&first, form);
        assert!(second.workloads.iter().all(|(_, w)| w.step_ms == 300_000));
        // Ended right after the restore: fitted at the flush as one run would be.
        let mut ended = restored(&first, form);
        ended.flush(&mut ctx, &mut out).unwrap();
        assert!(ended.workloads.iter().all(|(_, w)| w.model.is_some()));
        let (b, _) = run(&mut second, &norm[cut..]);
        assert_eq!(
            events(&b),
            events(&all),
            "{form}: the same events as one run"
        );
    }
}

/// A single metric's time of day: on omi-1's metrics taken alone, against the server's labels,
/// the seasonal detector with the band puts more labelled steps above the 99th percentile of
/// the others than the band alone.
#[test]
fn the_seasonal_detector_sees_what_the_band_misses_on_single_metrics() {
    let norm = normalised("asd", &["omi-1"], usize::MAX);
    let all = steps(&norm);
    let train: Vec<Vec<f64>> = train_rows(&all);
    let test: Vec<&(Vec<f64>, String, u8)> = all.iter().filter(|s| s.1 == "test").collect();
    let n = train.len();
    let step = 300_000;
    let clock = Clock {
        end_ms: (n as i64 - 1) * step,
        step_ms: step,
    };
    let test_times: Vec<i64> = (0..test.len()).map(|i| (n + i) as i64 * step).collect();
    // Separation of a metric's labelled test steps from its others: the mean smoothed score
    // of the labelled ones over the 99th percentile of the others, per metric labelled.
    let separation = |kinds: &[DetectorKind], j: usize| {
        let cfg = AnomalyConfig {
            single_metric_detectors: kinds.to_vec(),
            ..AnomalyConfig::default()
        };
        let at = |r: &Vec<f64>| r.get(j).copied().unwrap_or(f64::NAN);
        let history: Vec<Vec<f64>> = train.iter().map(|r| vec![at(r)]).collect();
        let mut m = Ensemble::fit(&history, Some(clock), &cfg).unwrap();
        let flat: Vec<f64> = test.iter().map(|s| at(&s.0)).collect();
        let (mut raw, mut c) = (vec![], vec![]);
        m.score_block(&flat, 1, &test_times, &mut raw, &mut c);
        let mut prev = None;
        let (mut pos, mut neg) = (vec![], vec![]);
        for (s, t) in raw.iter().zip(&test) {
            let v = m.smooth(prev, *s);
            prev = Some(v);
            if t.2 == 1 { pos.push(v) } else { neg.push(v) }
        }
        let q99 = wfe_domain::stats::quantiles_select(&mut neg, &[0.99])[0];
        pos.iter().filter(|&&v| v > q99).count() as f64 / pos.len().max(1) as f64
    };
    use DetectorKind::{Range, Seasonal};
    let (mut band, mut both) = (0.0, 0.0);
    for j in 0..train[0].len() {
        band += separation(&[Range], j);
        both += separation(&[Seasonal, Range], j);
    }
    eprintln!("recall at 1 %, summed over the metrics: seasonal+range {both:.2}, range {band:.2}");
    assert!(
        both > band,
        "recall at 1 %: seasonal+range {both} vs range {band}"
    );
}
