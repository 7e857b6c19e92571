use std::collections::HashMap;

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
        assert!(r.model == "persistence" || r.model == "seasonal-naive");
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
    let coverage = inside as f64 / total as f64;
    assert!(
        total > 500 && (0.6..=0.97).contains(&coverage),
        "80% interval covered {coverage:.3} of {total}"
    );
    assert!(
        rows.iter().any(|r| r.model == "seasonal-naive")
            || rows.iter().all(|r| r.model == "persistence")
    );
}

#[test]
fn short_history_falls_back_and_says_so() {
    let norm = normalised("asd", &["omi-4"], 1); // 1024 steps of 5 min: less than 4 days
    let cfg = ForecastConfig {
        season_s: 7 * 86_400,
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
    let on = ForecastConfig {
        quantile_refresh: 1,
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
