use std::sync::Arc;

use arrow_array::{Float64Array, RecordBatch};
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_contract::norm::NormBatch;
use wfe_contract::{Context, Stage, Topic, VecCollector};

use crate::testing::{T0, churn_raw, live_clock};
use crate::{Normalise, NormaliseConfig};

const MINUTE: i64 = 60_000;

/// Every output row as (workload, metric, time, scaled bits, raw bits, filled, missing),
/// sorted: what was emitted, whatever the order.
type Row = (String, String, i64, Option<u64>, Option<u64>, bool, bool);

fn rows(out: &VecCollector) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in out.of(Topic::MetricsNorm) {
        let nb = NormBatch::new(&b).unwrap();
        for r in 0..b.num_rows() {
            rows.push((
                nb.workload.get(r).unwrap().to_string(),
                nb.metric.get(r).unwrap().to_string(),
                nb.time[r],
                nb.value(r).map(f64::to_bits),
                nb.raw(r).map(f64::to_bits),
                nb.filled.value(r),
                nb.missing.value(r),
            ));
        }
    }
    rows.sort();
    rows
}

/// Runs the week through a stage; its output, counters and the state's size before the
/// final flush.
fn run(retire_after_s: u64) -> (Vec<Row>, Context, Normalise, usize) {
    let mut st = Normalise::new(NormaliseConfig {
        learn_steps: 30,
        retire_after_s,
        ..Default::default()
    })
    .unwrap();
    st.state.sweep.clock = wfe_domain::retire::test_clock::now;
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("normalise"));
    for b in churn_raw(7) {
        live_clock(&b);
        st.process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)
            .unwrap();
    }
    let size = st.snapshot().unwrap().unwrap().len();
    let live = Normalise::new(st.cfg.clone()).unwrap();
    let mut kept = live;
    kept.restore(&st.snapshot().unwrap().unwrap()).unwrap();
    st.flush(&mut ctx, &mut out).unwrap();
    (rows(&out), ctx, kept, size)
}

#[test]
fn a_week_of_pod_churn_keeps_a_days_workloads_and_emits_every_row_as_without() {
    let (all, _, never, never_size) = run(0);
    let (retired, ctx, kept, size) = run(86_400);
    // 1,008 pods came and went; every one of their rows is emitted either way.
    assert_eq!(never.state.workloads.len(), 1008);
    let generated: usize = churn_raw(7).iter().map(|b| b.num_rows()).sum();
    assert_eq!(all.len(), generated);
    assert_eq!(retired, all);
    // Retired: the workloads of the last day (and an eighth, the sweep's interval), their
    // names, and metric and label names compacted to about as many.
    let live = kept.state.workloads.len();
    assert!(
        (144..=6 + 144 * 9 / 8 + 1).contains(&live),
        "{live} live workloads"
    );
    assert_eq!(kept.state.workload_names.len(), live);
    assert!(
        kept.state.metric_names.len() <= 2 * live + 1,
        "{}",
        kept.state.metric_names.len()
    );
    assert!(
        kept.state.label_names.len() <= 2 * live,
        "{}",
        kept.state.label_names.len()
    );
    assert_eq!(ctx.counters()["workload.retired"] as usize, 1008 - live);
    eprintln!(
        "state after a week of churn: {size} bytes retiring after a day, {never_size} never \
         ({live} live workloads of 1,008)"
    );
    assert!(size * 4 < never_size, "{size} vs {never_size}");
}

#[test]
fn a_restored_stage_after_compaction_goes_on_with_the_right_names() {
    // Through the compaction, then restored, then a sample of a live workload and of a new
    // one: each row carries its own workload's names, nothing mixed up by renumbering.
    let (_, _, mut st, _) = run(86_400);
    let last = st.state.workload_names.names.last().unwrap().clone();
    let w: usize = last.trim_start_matches("pod-").parse().unwrap();
    let minute = (w * 10 + 59) as i64; // its last minute
    let batch = RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column(vec![T0 + minute * MINUTE; 2]),
            dictionary(vec![0, 1], &[&last, "pod-new"]).unwrap(),
            dictionary(vec![0, 1], &[&format!("own-{w:05}"), "own-new"]).unwrap(),
            Arc::new(Float64Array::from(vec![1.0, 2.0])),
            dictionary_opt(vec![None, None], &[]).unwrap(),
        ],
    )
    .unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("normalise"));
    st.process_batch(Topic::MetricsRaw, batch, &mut ctx, &mut out)
        .unwrap();
    st.flush(&mut ctx, &mut out).unwrap();
    let got = rows(&out);
    let own = format!("own-{w:05}");
    assert!(
        got.iter()
            .any(|r| r.0 == last && r.1 == own && r.2 == T0 + minute * MINUTE)
    );
    for r in &got {
        match r.0.as_str() {
            "pod-new" => assert_eq!(r.1, "own-new", "{r:?}"),
            w if w == last => assert!(r.1 == own || r.1 == "cpu", "{r:?}"),
            _ => {}
        }
    }
    assert!(got.iter().any(|r| r.0 == "pod-new"));
}

#[test]
fn the_snapshot_format_is_the_one_before_retirement() {
    // Stage services restore what earlier versions wrote: retirement keeps its bookkeeping
    // out of the snapshot, so a small state encodes to the same bytes as before it existed
    // (pinned from the version before; a change here needs a migration, not a new pin).
    let mut st = Normalise::new(NormaliseConfig::default()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("normalise"));
    let batch = RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column(vec![
                T0,
                T0 + MINUTE,
                T0 + 2 * MINUTE,
                T0 + 3 * MINUTE,
                T0 + 4 * MINUTE,
            ]),
            dictionary(vec![0; 5], &["w"]).unwrap(),
            dictionary(vec![0; 5], &["cpu"]).unwrap(),
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
            dictionary_opt(vec![None; 5], &[]).unwrap(),
        ],
    )
    .unwrap();
    st.process_batch(Topic::MetricsRaw, batch, &mut ctx, &mut out)
        .unwrap();
    let bytes = st.snapshot().unwrap().unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, PINNED, "the normalise snapshot format changed");
}

/// The snapshot above as written by the version before retirement (7951267).
const PINNED: &str = concat!(
    "0101000001000001c0a90704c0e7a8fef9628091b0fef962c0bab7fef96280e4befef9620003c0ba",
    "b7fef9620001000000000000084001c0bab7fef96280e4befef962000100000000000010400180e4",
    "befef962c08dc6fef9620001000000000000144001c08dc6fef962018091b0fef962010100000000",
    "0000004000010202c0e7a8fef9620001000000000000f03f00008091b0fef9620001000000000000",
    "0040000000010177000103637075000000",
);
