use std::sync::Arc;

use arrow_array::Float64Array;
use wfe_contract::columns::{DictStrings, dictionary, dictionary_opt, timestamp_column};

use super::*;

/// Chunks of `metrics.raw` rows grouped by series: every series' rows over all times, then
/// the next series (how many time-series database exports look).
struct BySeries {
    chunks: VecDeque<RecordBatch>,
}

impl BySeries {
    fn new(series: usize, times: i64, chunk_rows: usize) -> Self {
        let mut rows: Vec<(i64, String, f64)> = Vec::new();
        for s in 0..series {
            for t in 0..times {
                rows.push((t * 60_000, format!("m{s}"), (s * 1000) as f64 + t as f64));
            }
        }
        let names: Vec<String> = (0..series).map(|s| format!("m{s}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let chunks = rows
            .chunks(chunk_rows)
            .map(|c| {
                RecordBatch::try_new(
                    Topic::MetricsRaw.schema(),
                    vec![
                        timestamp_column(c.iter().map(|r| r.0).collect()),
                        dictionary(vec![0; c.len()], &["w"]).unwrap(),
                        dictionary(
                            c.iter()
                                .map(|r| names.iter().position(|n| *n == r.1).unwrap() as i32)
                                .collect(),
                            &refs,
                        )
                        .unwrap(),
                        Arc::new(Float64Array::from(
                            c.iter().map(|r| r.2).collect::<Vec<_>>(),
                        )),
                        dictionary_opt(vec![None; c.len()], &[]).unwrap(),
                    ],
                )
                .unwrap()
            })
            .collect();
        Self { chunks }
    }
}

impl ChunkReader for BySeries {
    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        Ok(self.chunks.pop_front().map(|batch| Chunk {
            first_ts: first_time(&batch),
            batch,
            rejected: vec![Rejection {
                kind: "bad_timestamp",
                location: "x".into(),
                message: "m".into(),
                count: 1,
            }],
        }))
    }
}

/// Every row served, as (time, metric, value), and the rejections carried.
fn serve(mut r: TimeOrdered) -> (Vec<(i64, String, f64)>, u64) {
    let mut rows = Vec::new();
    let mut rejected = 0;
    while let Some(c) = r.next_chunk().unwrap() {
        rejected += c.rejected.iter().map(|r| r.count).sum::<u64>();
        assert_eq!(c.first_ts, first_time(&c.batch));
        let m = DictStrings::new(&c.batch, "metric").unwrap();
        let v = c
            .batch
            .column(3)
            .as_primitive::<arrow_array::types::Float64Type>();
        for (i, t) in times(&c.batch).iter().enumerate() {
            rows.push((*t, m.get(i).unwrap().to_string(), v.value(i)));
        }
    }
    (rows, rejected)
}

fn check_time_ordered(rows: &[(i64, String, f64)], series: usize, times: i64) {
    assert_eq!(rows.len(), series * times as usize);
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "not in time order"
    );
    // Stable: within one time, the series keep their file order.
    for t in 0..times {
        let at: Vec<&str> = rows
            .iter()
            .filter(|r| r.0 == t * 60_000)
            .map(|r| r.1.as_str())
            .collect();
        let want: Vec<String> = (0..series).map(|s| format!("m{s}")).collect();
        assert_eq!(at, want, "time {t}");
    }
    // Each value is its own series' at its own time.
    for (t, m, v) in rows {
        let s: usize = m[1..].parse().unwrap();
        assert_eq!(*v, (s * 1000) as f64 + (*t / 60_000) as f64);
    }
}

#[test]
fn a_file_grouped_by_series_is_served_in_time_order_from_memory() {
    let src = BySeries::new(5, 300, 128);
    let chunks = src.chunks.len() as u64;
    let (rows, rejected) = serve(TimeOrdered::new(Box::new(src), "f".into(), 1 << 20));
    check_time_ordered(&rows, 5, 300);
    assert_eq!(rejected, chunks);
}

#[test]
fn a_file_larger_than_a_run_is_merged_from_spilled_runs() {
    // 7 series x 1000 times in runs of 900 rows: 8 spilled runs, merged.
    let src = BySeries::new(7, 1000, 100);
    let (rows, _) = serve(TimeOrdered::new(Box::new(src), "f".into(), 900));
    check_time_ordered(&rows, 7, 1000);
}

#[test]
fn an_empty_input_serves_nothing() {
    let src = BySeries::new(0, 0, 10);
    let (rows, rejected) = serve(TimeOrdered::new(Box::new(src), "f".into(), 10));
    assert!(rows.is_empty());
    assert_eq!(rejected, 0);
}
