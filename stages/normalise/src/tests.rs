use std::path::PathBuf;

use wfe_contract::VecCollector;
use wfe_contract::norm::NormBatch;

use super::*;

/// A metrics.raw batch from (seconds, metric, value) samples of workload `w`.
fn raw(w: &str, samples: &[(i64, &str, f64)]) -> RecordBatch {
    let mut names: Vec<&str> = vec![];
    let keys: Vec<i32> = samples
        .iter()
        .map(|(_, m, _)| match names.iter().position(|n| n == m) {
            Some(i) => i as i32,
            None => {
                names.push(m);
                names.len() as i32 - 1
            }
        })
        .collect();
    RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column(samples.iter().map(|s| s.0 * 1000).collect()),
            dictionary(vec![0; samples.len()], &[w]).unwrap(),
            dictionary(keys, &names).unwrap(),
            Arc::new(Float64Array::from(
                samples.iter().map(|s| s.2).collect::<Vec<_>>(),
            )),
            dictionary_opt(vec![None; samples.len()], &[]).unwrap(),
        ],
    )
    .unwrap()
}

/// (time s, value, raw, filled, missing) of one metric across all output.
/// (time s, scaled, raw, filled, missing).
type Row = (i64, Option<f64>, Option<f64>, bool, bool);

fn series(out: &VecCollector, metric: &str) -> Vec<Row> {
    let mut rows = vec![];
    for b in out.of(Topic::MetricsNorm) {
        let nb = NormBatch::new(&b).unwrap();
        for r in 0..b.num_rows() {
            if nb.metric.get(r) == Some(metric) {
                rows.push((
                    nb.time[r] / 1000,
                    nb.value(r),
                    nb.raw(r),
                    nb.filled.value(r),
                    nb.missing.value(r),
                ));
            }
        }
    }
    rows
}

fn run(stage: &mut Normalise, batches: Vec<RecordBatch>) -> (VecCollector, Context) {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("normalise");
    for b in batches {
        stage
            .process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    (out, ctx)
}

fn small_cfg() -> NormaliseConfig {
    NormaliseConfig {
        learn_steps: 3,
        fill_steps: 2,
        lateness_steps: 1,
        ..Default::default()
    }
}

#[test]
fn aligns_fills_short_gaps_and_flags_long_ones() {
    let mut st = Normalise::new(small_cfg()).unwrap();
    // Step 10 s; value at 0..40, then nothing until 100 (gap of 5 steps, fill 2 then missing).
    let samples: Vec<(i64, &str, f64)> = vec![
        (0, "cpu", 1.0),
        (10, "cpu", 2.0),
        (21, "cpu", 3.0),
        (30, "cpu", 5.0),
        (40, "cpu", 4.0),
        (100, "cpu", 1.0),
    ];
    let (out, ctx) = run(&mut st, vec![raw("a", &samples)]);
    let s = series(&out, "cpu");
    let times: Vec<i64> = s.iter().map(|r| r.0).collect();
    assert_eq!(times, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    // Scaler learned from the first 3 steps: min 1, max 3.
    assert_eq!(s[0].1, Some(0.0));
    assert_eq!(s[2].1, Some(1.0));
    assert_eq!(s[3].1, Some(2.0)); // (5-1)/2, beyond the history range but within the clip
    assert_eq!((s[5].3, s[6].3), (true, true)); // 50, 60 filled with the last value
    assert_eq!(s[5].2, Some(4.0));
    assert!(s[7..10].iter().all(|r| r.4 && r.1.is_none())); // 70..90 missing
    assert_eq!(s[10].2, Some(1.0));
    assert_eq!(ctx.counters().get("filled.gap"), None); // fills are flags, not events
}

#[test]
fn rejects_nan_drops_duplicates_and_counts_late_samples() {
    let mut st = Normalise::new(small_cfg()).unwrap();
    let samples = vec![
        (0, "cpu", 1.0),
        (10, "cpu", f64::NAN),
        (10, "cpu", 2.0),
        (10, "cpu", 2.0), // exact duplicate
        (30, "cpu", 3.0),
        (20, "cpu", 2.5), // late but within one step of lateness
        (40, "cpu", 3.0),
        (50, "cpu", 3.0),
        (60, "cpu", f64::INFINITY),
        (60, "cpu", 4.0),
        (10, "cpu", 9.0), // far too late
    ];
    let (out, ctx) = run(&mut st, vec![raw("a", &samples)]);
    let c = ctx.counters();
    assert_eq!(c["rejected.nan"], 2);
    assert_eq!(c["dropped.duplicate"], 1);
    assert_eq!(c["rejected.late"], 1);
    let s = series(&out, "cpu");
    assert_eq!(
        s.iter().map(|r| r.2.unwrap()).collect::<Vec<_>>(),
        vec![1.0, 2.0, 2.5, 3.0, 3.0, 3.0, 4.0]
    );
    assert!(s.iter().all(|r| !r.3 && !r.4));
}

#[test]
fn learns_the_scaler_from_the_train_split_of_an_smd_machine() {
    let data = std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let mut cfg = wfe_ingest::SourceConfig::new(data.join("asd"));
    cfg.only = vec!["omi-1".into()];
    let mut src = wfe_ingest::FileSource::open(&[cfg], true).unwrap();
    let mut batches = vec![];
    let mut ictx = Context::new("ingest");
    while let Some(b) = wfe_contract::Source::next_batch(&mut src, &mut ictx).unwrap() {
        batches.push(b);
    }
    let raw_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut st = Normalise::new(NormaliseConfig::default()).unwrap();
    let (out, ctx) = run(&mut st, batches);
    // ASD: 300 s step, no gaps: every raw value comes out once.
    assert_eq!(out.rows(Topic::MetricsNorm), raw_rows);
    assert_eq!(ctx.rejected_total(), 0);
    let mut train_in_range = true;
    let mut test_outside = 0;
    for b in out.of(Topic::MetricsNorm) {
        let nb = NormBatch::new(&b).unwrap();
        assert!(nb.step_ms.iter().all(|&s| s == 300_000));
        for step in nb.steps() {
            let train = step.label.and_then(|l| labels::get(l, "split")) == Some("train");
            for r in step.rows {
                let v = nb.value(r).unwrap();
                if train {
                    train_in_range &= (0.0..=1.0).contains(&v);
                } else if !(0.0..=1.0).contains(&v) {
                    test_outside += 1;
                }
            }
        }
    }
    assert!(train_in_range, "history must scale into [0, 1]");
    assert!(
        test_outside > 0,
        "test values beyond the history range keep their excess"
    );
}

#[test]
fn a_restored_stage_continues_where_it_stopped() {
    let samples: Vec<(i64, &str, f64)> = (0..40).map(|i| (i * 10, "cpu", (i % 7) as f64)).collect();
    let (a, b) = samples.split_at(17);
    let mut whole = Normalise::new(small_cfg()).unwrap();
    let (expected, _) = run(&mut whole, vec![raw("a", &samples)]);

    let mut first = Normalise::new(small_cfg()).unwrap();
    let mut out = VecCollector::new();
    let mut ctx = Context::new("normalise");
    first
        .process_batch(Topic::MetricsRaw, raw("a", a), &mut ctx, &mut out)
        .unwrap();
    let snap = first.snapshot().unwrap().unwrap();
    drop(first);
    let mut second = Normalise::new(small_cfg()).unwrap();
    second.restore(&snap).unwrap();
    let (rest, _) = run(&mut second, vec![raw("a", b)]);
    let mut got = series(&out, "cpu");
    got.extend(series(&rest, "cpu"));
    assert_eq!(got, series(&expected, "cpu"));
    assert!(
        Normalise::new(small_cfg())
            .unwrap()
            .restore(b"not json")
            .is_err()
    );
}
