use std::path::PathBuf;

use std::sync::Arc;

use arrow_array::Float64Array;
use wfe_contract::VecCollector;
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_contract::norm::NormBatch;
use wfe_contract::schemas::labels;
use wfe_contract::state::Split;

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
    // The changelog's form (entries per workload) restores the same state as the whole one.
    let mut second = Normalise::new(small_cfg()).unwrap();
    second
        .restore_split(first.snapshot_split().unwrap().unwrap())
        .unwrap();
    assert_eq!(second.snapshot().unwrap().unwrap(), snap);
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

/// A workload learning its scaler (no `split` label: `learn_steps` of history held) goes into
/// the changelog as a small entry and its held history in runs of 64 steps: one more step
/// rewrites the entry and the last run only, and the runs restore the same state. A workload
/// entry that holds its history itself (written before the runs) restores too.
#[test]
fn a_learning_workloads_history_is_written_in_runs_that_stay() {
    let cfg = NormaliseConfig {
        learn_steps: 1000,
        ..small_cfg()
    };
    let samples: Vec<(i64, &str, f64)> = (0..150).map(|i| (i * 10, "cpu", i as f64)).collect();
    let mut st = Normalise::new(cfg.clone()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("normalise"));
    let mut feed = |st: &mut Normalise, rows: &[(i64, &str, f64)]| {
        st.process_batch(Topic::MetricsRaw, raw("a", rows), &mut ctx, &mut out)
            .unwrap()
    };
    feed(&mut st, &samples[..140]);
    let before = st.snapshot_split().unwrap().unwrap();
    let runs: Vec<&String> = before
        .entries()
        .keys()
        .filter(|k| k.starts_with("held/"))
        .collect();
    assert_eq!(
        runs,
        ["held/a:0", "held/a:1", "held/a:2"],
        "{:?}",
        before.entries().keys()
    );
    let whole = st.snapshot().unwrap().unwrap();
    let mut back = Normalise::new(cfg.clone()).unwrap();
    back.restore_split(before.clone()).unwrap();
    assert_eq!(back.snapshot().unwrap().unwrap(), whole);

    feed(&mut st, &samples[140..141]);
    assert_eq!(out.rows(Topic::MetricsNorm), 0, "still learning");
    let after = st.snapshot_split().unwrap().unwrap();
    let changed: Vec<&String> = after
        .entries()
        .iter()
        .filter(|(k, v)| before.entries().get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(changed, ["held/a:2", "w/a"]);

    // The previous form: the whole workload in its entry, no runs.
    let mut old = Split::new();
    old.put_shared(
        "normalise",
        &(&back.state.metric_names, &back.state.label_names),
    )
    .unwrap();
    old.put_items("normalise", "w", [("a", &back.state.workloads[0])])
        .unwrap();
    let mut from_old = Normalise::new(cfg).unwrap();
    from_old.restore_split(old).unwrap();
    assert_eq!(from_old.snapshot().unwrap().unwrap(), whole);
}

#[test]
fn first_samples_out_of_order_are_placed_in_time_order() {
    // T+60, T+120, T+180, then T: the step is inferred at the fourth timestamp, and the held
    // samples are placed in time order (this panicked on a negative index before).
    let t = 1_700_000_040; // a multiple of the 60 s step
    let mut st = Normalise::new(NormaliseConfig::default()).unwrap();
    let samples = vec![
        (t + 60, "cpu", 2.0),
        (t + 120, "cpu", 3.0),
        (t + 180, "cpu", 4.0),
        (t, "cpu", 1.0),
    ];
    let (out, ctx) = run(&mut st, vec![raw("a", &samples)]);
    let s = series(&out, "cpu");
    assert_eq!(
        s.iter()
            .map(|r| (r.0 - t, r.2.unwrap()))
            .collect::<Vec<_>>(),
        vec![(0, 1.0), (60, 2.0), (120, 3.0), (180, 4.0)]
    );
    assert_eq!(ctx.rejected_total(), 0);
}

#[test]
fn a_sample_beyond_the_lateness_bound_opens_no_steps() {
    let t = 1_700_000_040; // a multiple of the 60 s step
    let mut st = Normalise::new(NormaliseConfig::default()).unwrap();
    let mut samples: Vec<(i64, &str, f64)> = (0..10).map(|i| (t + 60 * i, "cpu", 1.0)).collect();
    // One step out of order within lateness_steps = 2 (placed), then three behind the newest
    // (late), then the epoch after valid rows: rejected at once, nothing opened back to it
    // (this allocated ~10^9 steps before).
    samples.push((t + 60 * 10, "cpu", 2.0));
    samples.push((t + 60 * 9, "mem", 5.0));
    samples.push((t + 60 * 7, "mem", 6.0));
    samples.push((0, "cpu", 7.0));
    samples.push((t + 60 * 11, "cpu", 3.0));
    let (out, ctx) = run(&mut st, vec![raw("a", &samples)]);
    assert_eq!(ctx.counters()["rejected.late"], 2);
    let cpu = series(&out, "cpu");
    assert_eq!(cpu.len(), 12, "steps t..t+660 and none before");
    assert_eq!(cpu[0].0, t);
    let mem = series(&out, "mem");
    let at_9: Vec<_> = mem.iter().filter(|r| r.0 == t + 540).collect();
    assert_eq!(at_9[0].2, Some(5.0));
    assert!(mem.iter().all(|r| r.0 != t + 420 || r.2.is_none()));
}

#[test]
fn absurd_times_and_values_are_rejected_before_any_arithmetic() {
    let t = 1_700_000_040; // a multiple of the 60 s step
    let mut st = Normalise::new(NormaliseConfig::default()).unwrap();
    let mut samples: Vec<(i64, &str, f64)> =
        (0..6).map(|i| (t + 60 * i, "cpu", i as f64)).collect();
    // Times as remote_write could send them (already in ms here, so the helper's *1000 must
    // not overflow: the extremes are put in by hand below).
    samples.push((t + 360, "cpu", 1e308));
    samples.push((t + 360, "mem", -1e200));
    samples.push((4_000_000_000_000, "cpu", 1.0)); // year ~128,700
    samples.push((t + 420, "cpu", 6.0));
    let mut batch = raw("a", &samples);
    let extremes = raw("a", &[(0, "cpu", 1.0), (0, "cpu", 1.0)]);
    let ts = timestamp_column(vec![i64::MIN, i64::MAX]);
    let extremes = RecordBatch::try_new(extremes.schema(), {
        let mut c = extremes.columns().to_vec();
        c[0] = ts;
        c
    })
    .unwrap();
    let mut st2 = Normalise::new(NormaliseConfig {
        earliest_s: 1_600_000_000,
        ..Default::default()
    })
    .unwrap();
    let (_, ctx2) = run(
        &mut st2,
        vec![extremes.clone(), raw("a", &[(5, "cpu", 1.0)])],
    );
    assert_eq!(ctx2.counters()["rejected.time"], 3, "{:?}", ctx2.counters());
    batch = arrow_select_concat(&[extremes, batch]);
    let (out, ctx) = run(&mut st, vec![batch]);
    let c = ctx.counters();
    assert_eq!(c["rejected.time"], 3, "{c:?}");
    assert_eq!(c["rejected.out_of_range"], 2, "{c:?}");
    let cpu = series(&out, "cpu");
    assert_eq!(cpu.len(), 8);
    // The scaler's range stayed finite: every emitted value is a number.
    assert!(cpu.iter().all(|r| r.4 || r.1.is_some_and(f64::is_finite)));
}

/// Two batches of one schema as one.
fn arrow_select_concat(batches: &[RecordBatch]) -> RecordBatch {
    let mut rows: Vec<(i64, String, String, f64)> = vec![];
    for b in batches {
        let ts = wfe_contract::columns::timestamps(b, "event_time").unwrap();
        let w = DictStrings::new(b, "workload").unwrap();
        let m = DictStrings::new(b, "metric").unwrap();
        let v = f64s(b, "value").unwrap();
        for r in 0..b.num_rows() {
            rows.push((
                ts.value(r),
                w.get(r).unwrap_or("").to_string(),
                m.get(r).unwrap_or("").to_string(),
                v.value(r),
            ));
        }
    }
    let metrics: Vec<&str> = {
        let mut m: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        m.sort();
        m.dedup();
        m
    };
    RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column(rows.iter().map(|r| r.0).collect()),
            dictionary(vec![0; rows.len()], &[rows[0].1.as_str()]).unwrap(),
            dictionary(
                rows.iter()
                    .map(|r| metrics.iter().position(|m| *m == r.2).unwrap() as i32)
                    .collect(),
                &metrics,
            )
            .unwrap(),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
            dictionary_opt(vec![None; rows.len()], &[]).unwrap(),
        ],
    )
    .unwrap()
}

/// A collector that refuses every batch: where a stage emits, the stage stops there.
struct Refuse;

impl Collector for Refuse {
    fn emit(&mut self, _: Topic, _: RecordBatch) -> Result<()> {
        Err(Error::config("test", "refused"))
    }
}

/// A fleet that finishes learning within one input batch releases every workload's learning
/// steps: full chunks go out while the batch is read, so the stage never holds the whole
/// fleet's history (at 10,000 workloads that was 780 MB). Seen through a collector that
/// refuses: the stage stops at its first emit, before the batch's last workloads were read.
#[test]
fn a_fleet_finishing_learning_in_one_batch_streams_its_history_out_while_reading() {
    let (workloads, steps, learn) = (300usize, 253i64, 250usize);
    let names: Vec<String> = (0..workloads).map(|w| format!("w{w}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = workloads * steps as usize;
    let batch = RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column((0..n).map(|i| (i / workloads) as i64 * 10_000).collect()),
            dictionary((0..n).map(|i| (i % workloads) as i32).collect(), &refs).unwrap(),
            dictionary(vec![0; n], &["cpu"]).unwrap(),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| (i % 7) as f64),
            )),
            dictionary_opt(vec![None; n], &[]).unwrap(),
        ],
    )
    .unwrap();
    let cfg = NormaliseConfig {
        learn_steps: learn,
        ..small_cfg()
    };
    let mut st = Normalise::new(cfg.clone()).unwrap();
    let mut ctx = Context::new("normalise");
    assert!(
        st.process_batch(Topic::MetricsRaw, batch.clone(), &mut ctx, &mut Refuse)
            .is_err()
    );
    let done = st.state.workloads.iter().filter(|w| !w.learning).count();
    assert!(
        done > 0 && done < workloads,
        "{done} of {workloads} had finished learning"
    );
    // Through a collector that keeps them: every released row, in chunks of at most
    // MAX_BATCH_ROWS.
    let mut st = Normalise::new(cfg).unwrap();
    let mut out = VecCollector::new();
    st.process_batch(Topic::MetricsRaw, batch, &mut ctx, &mut out)
        .unwrap();
    st.flush(&mut ctx, &mut out).unwrap();
    let chunks: Vec<usize> = (out.of(Topic::MetricsNorm).iter())
        .map(|b| b.num_rows())
        .collect();
    assert!(
        chunks.iter().all(|&r| r <= out::MAX_BATCH_ROWS),
        "{chunks:?}"
    );
    assert_eq!(chunks.iter().sum::<usize>(), n);
}
