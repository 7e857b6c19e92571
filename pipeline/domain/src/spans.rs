//! Anomalous spans per workload, read from `anomalies` rows: what keeps anomalies out of the
//! data models learn from (the forecast stage's error history now, `wfe train` later).
//!
//! A segment arrives as several rows (`opened`, `updated`, `closed`), each with the span so
//! far: an open segment's end is its row's `event_time`. Spans are merged per workload, so a
//! segment's later rows extend its span instead of adding another.

use std::collections::HashMap;

use arrow_array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};

use wfe_contract::Result;
use wfe_contract::columns::{strings, timestamps};

/// Merged `[start, end]` spans (inclusive, ms) per workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AnomalySpans {
    by_workload: HashMap<String, Vec<(i64, i64)>>,
}

/// Whether `t` lies in one of `spans` (sorted and disjoint, as [`AnomalySpans::of`] gives).
pub fn covered(spans: &[(i64, i64)], t: i64) -> bool {
    let i = spans.partition_point(|&(_, e)| e < t);
    spans.get(i).is_some_and(|&(s, _)| s <= t)
}

impl AnomalySpans {
    /// Adds one span; returns the merged span that now covers it.
    pub fn add(&mut self, workload: &str, start: i64, end: i64) -> (i64, i64) {
        let (mut s, mut e) = (start.min(end), start.max(end));
        let spans = self.by_workload.entry(workload.to_string()).or_default();
        // Absorb every span that overlaps or touches [s, e]; the list stays sorted, disjoint.
        let first = spans.partition_point(|&(_, pe)| pe < s.saturating_sub(1));
        let mut last = first;
        while last < spans.len() && spans[last].0 <= e.saturating_add(1) {
            s = s.min(spans[last].0);
            e = e.max(spans[last].1);
            last += 1;
        }
        spans.splice(first..last, [(s, e)]);
        (s, e)
    }

    /// Reads the spans of an `anomalies` batch; returns `(workload, start, end)` of each row,
    /// as added. A row with a null `segment_end` (open segment) ends at its `event_time`.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<Vec<(String, i64, i64)>> {
        let workload = strings(batch, "workload")?;
        let start = timestamps(batch, "segment_start")?;
        let end = timestamps(batch, "segment_end")?;
        let at = timestamps(batch, "event_time")?;
        let mut added = Vec::with_capacity(batch.num_rows());
        for r in 0..batch.num_rows() {
            let e = if end.is_null(r) {
                at.value(r)
            } else {
                end.value(r)
            };
            let w = workload.value(r);
            self.add(w, start.value(r), e);
            added.push((w.to_string(), start.value(r), e));
        }
        Ok(added)
    }

    /// Every workload's spans (in no order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Vec<(i64, i64)>)> {
        self.by_workload.iter().map(|(w, s)| (w.as_str(), s))
    }

    /// Spans as [`AnomalySpans::iter`] gave them.
    pub fn from_items(items: impl IntoIterator<Item = (String, Vec<(i64, i64)>)>) -> Self {
        Self {
            by_workload: items.into_iter().collect(),
        }
    }

    /// Whether `t` lies in one of `workload`'s spans.
    pub fn covers(&self, workload: &str, t: i64) -> bool {
        self.by_workload
            .get(workload)
            .is_some_and(|spans| covered(spans, t))
    }

    /// Forgets spans that ended before `t` (they can no longer touch data still held).
    pub fn forget_before(&mut self, workload: &str, t: i64) {
        if let Some(spans) = self.by_workload.get_mut(workload) {
            spans.retain(|&(_, e)| e >= t);
        }
    }

    /// Drops every span of `workload` (retired: it is no longer forecast).
    pub fn forget(&mut self, workload: &str) {
        self.by_workload.remove(workload);
    }

    /// A workload's spans, sorted and disjoint.
    pub fn of(&self, workload: &str) -> &[(i64, i64)] {
        self.by_workload
            .get(workload)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_as_a_segment_grows_and_answer_coverage() {
        let mut s = AnomalySpans::default();
        // A segment opened at 100, updated to 160, closed at 200: one span.
        s.add("a", 100, 100);
        s.add("a", 100, 160);
        assert_eq!(s.add("a", 100, 200), (100, 200));
        s.add("a", 500, 600);
        s.add("b", 0, 10);
        assert_eq!(s.of("a"), &[(100, 200), (500, 600)]);
        assert!(s.covers("a", 100) && s.covers("a", 200) && s.covers("a", 550));
        assert!(!s.covers("a", 99) && !s.covers("a", 201) && !s.covers("a", 601));
        assert!(!s.covers("c", 100), "unknown workload: nothing covered");
        // A span bridging two merges them.
        assert_eq!(s.add("a", 150, 550), (100, 600));
        assert_eq!(s.of("a"), &[(100, 600)]);
        // Reversed bounds are put right.
        assert_eq!(s.add("b", 30, 20), (20, 30));
        s.forget_before("b", 15);
        assert_eq!(s.of("b"), &[(20, 30)]);
    }
}
