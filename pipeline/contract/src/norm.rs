//! Reading `metrics.norm` step by step.
//!
//! Normalise emits one row per (workload, step, metric), time-major: all metrics of a
//! workload's step are adjacent. Fingerprint, anomaly and forecast all want the step as a
//! vector, so this walks a batch in runs of equal (workload, event_time) without copying.

use std::ops::Range;

use arrow_array::{Array, BooleanArray, Float64Array, RecordBatch, StringArray};

use crate::Result;
use crate::columns::{DictStrings, bools, f64s, timestamps};

/// A `metrics.norm` batch, ready to be walked by step.
pub struct NormBatch<'a> {
    pub workload: DictStrings<'a>,
    pub metric: DictStrings<'a>,
    pub labels: DictStrings<'a>,
    pub time: &'a [i64],
    pub value: &'a Float64Array,
    pub raw_value: &'a Float64Array,
    pub filled: &'a BooleanArray,
    pub missing: &'a BooleanArray,
    pub step_ms: &'a [i64],
}

/// One workload's step: rows `rows` of the batch.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    pub workload_key: i32,
    pub workload: &'a str,
    pub time: i64,
    pub step_ms: i64,
    pub label: Option<&'a str>,
    pub rows: Range<usize>,
}

impl<'a> NormBatch<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            workload: DictStrings::new(batch, "workload")?,
            metric: DictStrings::new(batch, "metric")?,
            labels: DictStrings::new(batch, "labels")?,
            time: timestamps(batch, "event_time")?.values(),
            value: f64s(batch, "value")?,
            raw_value: f64s(batch, "raw_value")?,
            filled: bools(batch, "filled")?,
            missing: bools(batch, "missing")?,
            step_ms: crate::columns::i64s(batch, "step_ms")?.values(),
        })
    }

    /// The metric names of this batch, indexed by dictionary key.
    pub fn metric_dict(&self) -> &'a StringArray {
        self.metric.dictionary()
    }

    /// Scaled value of a row; `None` when missing.
    pub fn value(&self, row: usize) -> Option<f64> {
        self.value.is_valid(row).then(|| self.value.value(row))
    }

    /// Unscaled value of a row; `None` when missing.
    pub fn raw(&self, row: usize) -> Option<f64> {
        self.raw_value.is_valid(row).then(|| self.raw_value.value(row))
    }

    /// The steps of the batch, in order.
    pub fn steps(&self) -> impl Iterator<Item = Step<'a>> + '_ {
        let keys = self.workload.keys();
        let n = self.time.len();
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= n {
                return None;
            }
            let (w, t) = (keys[start], self.time[start]);
            let mut end = start + 1;
            while end < n && keys[end] == w && self.time[end] == t {
                end += 1;
            }
            let step = Step {
                workload_key: w,
                workload: self.workload.get(start).unwrap_or(""),
                time: t,
                step_ms: self.step_ms[start],
                label: self.labels.get(start),
                rows: start..end,
            };
            start = end;
            Some(step)
        })
    }
}
