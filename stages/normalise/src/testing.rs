//! Helpers for other stages' tests: real data through ingest and normalise.

use std::path::PathBuf;

use std::sync::Arc;

use arrow_array::Float64Array;
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_contract::{Context, RecordBatch, Source, Stage, Topic, VecCollector};

use crate::{Normalise, NormaliseConfig};

/// `../shared/data` beside the checkout, or `$WFE_DATA`.
pub fn shared_data() -> PathBuf {
    let data = std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    assert!(
        data.join("smd").is_dir(),
        "shared data not found at {} (set WFE_DATA)",
        data.display()
    );
    data
}

/// `metrics.norm` batches of the named entities of `set` (`smd` or `asd`), at most
/// `max_raw_batches` ingest chunks of them.
pub fn normalised(set: &str, entities: &[&str], max_raw_batches: usize) -> Vec<RecordBatch> {
    let mut cfg = wfe_ingest::SourceConfig::new(shared_data().join(set));
    cfg.only = entities.iter().map(|s| s.to_string()).collect();
    let mut src = wfe_ingest::FileSource::open(&[cfg], true).expect("open shared data");
    let mut stage = Normalise::new(NormaliseConfig::default()).expect("config");
    let mut ctx = Context::new("normalise");
    let mut out = VecCollector::new();
    let mut n = 0;
    while let Some(b) = src.next_batch(&mut ctx).expect("read") {
        stage
            .process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)
            .expect("normalise");
        n += 1;
        if n >= max_raw_batches {
            break;
        }
    }
    stage.flush(&mut ctx, &mut out).expect("flush");
    out.of(Topic::MetricsNorm)
}

/// Sets the thread's test clock ([`wfe_domain::retire::test_clock`]) to the newest event
/// time of `batch`: recorded time run through a stage as if it were live.
pub fn live_clock(batch: &RecordBatch) {
    let newest = wfe_contract::columns::timestamps(batch, "event_time")
        .ok()
        .and_then(|t| t.values().iter().max().copied())
        .unwrap_or(0);
    wfe_domain::retire::test_clock::set((newest / 1000).max(0) as u64);
}

/// A minute boundary (steps are aligned to multiples of the step): where [`churn_raw`] starts.
pub const T0: i64 = 1_699_999_980_000;

/// `days` of churn, an hour per batch: a workload starts every 10 minutes and samples for
/// an hour, each minute a shared `cpu` and a metric and a label of its own (a pod with a
/// fresh name and its own series, as a Kubernetes fleet looks).
pub fn churn_raw(days: usize) -> Vec<RecordBatch> {
    let (week, life, every) = (days * 24 * 60, 60, 10);
    let mut batches = Vec::new();
    for hour in 0..week / 60 {
        let (mut ts, mut wk, mut mk, mut lk, mut vals) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut wn, mut mn, mut ln) = (vec![], vec!["cpu".to_string()], vec![]);
        for minute in hour * 60..(hour + 1) * 60 {
            for w in (minute.max(life) - life) / every..=minute / every {
                if !(w * every..w * every + life).contains(&minute) {
                    continue;
                }
                let name = format!("pod-{w:05}");
                let key = match wn.iter().position(|n| *n == name) {
                    Some(k) => k,
                    None => {
                        wn.push(name);
                        mn.push(format!("own-{w:05}"));
                        ln.push(format!("owner=t{w}"));
                        wn.len() - 1
                    }
                };
                for (m, v) in [(0, (minute % 17) as f64), (key + 1, (w + minute) as f64)] {
                    ts.push(T0 + minute as i64 * 60_000);
                    wk.push(key as i32);
                    mk.push(m as i32);
                    lk.push(Some(key as i32));
                    vals.push(v);
                }
            }
        }

        let (wr, mr, lr) = (refs(&wn), refs(&mn), refs(&ln));
        batches.push(
            RecordBatch::try_new(
                Topic::MetricsRaw.schema(),
                vec![
                    timestamp_column(ts),
                    dictionary(wk, &wr).unwrap(),
                    dictionary(mk, &mr).unwrap(),
                    Arc::new(Float64Array::from(vals)),
                    dictionary_opt(lk, &lr).unwrap(),
                ],
            )
            .unwrap(),
        );
    }
    batches
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// [`churn_raw`] through normalise (scalers learned from each pod's first 10 steps; a pod's
/// last steps, held for late samples, released when it is retired an hour after it ends, the week run as if live):
/// `metrics.norm` of a churning fleet in time order, for the stages after it.
pub fn churn_norm(days: usize) -> Vec<RecordBatch> {
    let cfg = NormaliseConfig {
        learn_steps: 10,
        retire_after_s: 3600,
        ..Default::default()
    };
    let mut stage = Normalise::new(cfg).expect("config");
    stage.state.sweep.clock = wfe_domain::retire::test_clock::now;
    let (mut ctx, mut out) = (Context::new("normalise"), VecCollector::new());
    for b in churn_raw(days) {
        live_clock(&b);
        stage
            .process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)
            .expect("normalise");
    }
    stage.flush(&mut ctx, &mut out).expect("flush");
    out.of(Topic::MetricsNorm)
}

/// Runs `norm` through `stage` as a live stage would see it (the thread's test clock set from
/// each batch; the caller points the stage's sweep at `test_clock::now`); returns how many
/// workloads it retired.
pub fn run_as_live(stage: &mut dyn Stage, norm: &[RecordBatch]) -> u64 {
    let (mut ctx, mut out) = (Context::new(stage.name()), VecCollector::new());
    for b in norm {
        live_clock(b);
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .expect("process");
    }
    ctx.counters().get("workload.retired").copied().unwrap_or(0)
}

/// What a stage after normalise must show on [`churn_norm`]`(7)` (1,008 pods of an hour each
/// over a week, run as if live): `count(retire_after_s)` gives its workloads, names and
/// retirements. Never retiring keeps every pod; retiring those silent for a day keeps the last
/// day's (and some hours more: the sweep looks every eighth of a day), names alike.
pub fn assert_keeps_about_a_days_pods(count: impl Fn(u64) -> (usize, usize, u64)) {
    let (all, names, none) = count(0);
    assert_eq!((names, none), (all, 0));
    assert!(all >= 1008, "{all} workloads");
    let (live, names, retired) = count(86_400);
    assert!((144..=190).contains(&live), "{live} of {all} kept");
    assert_eq!((names, live + retired as usize), (live, all));
}
