//! The one builder of `metrics.raw` batches: rows pushed with dictionary keys, strings
//! interned per batch (a batch's dictionaries hold only the workloads, metrics and label sets
//! it names). Ingest's file readers, agent and packet capture, Prometheus remote_write (in
//! `wfe-http`) and `wfe synth` all build their batches with it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Result;
use crate::columns::{dictionary, dictionary_opt, timestamp_column};
use crate::schemas::Topic;
use arrow_array::{ArrayRef, Float64Array, RecordBatch};

/// Interns strings to dictionary keys within one batch.
#[derive(Default)]
struct Interner {
    keys: HashMap<String, i32>,
    values: Vec<String>,
}

impl Interner {
    fn key(&mut self, s: &str) -> i32 {
        if let Some(k) = self.keys.get(s) {
            return *k;
        }
        let k = self.values.len() as i32;
        self.keys.insert(s.to_string(), k);
        self.values.push(s.to_string());
        k
    }

    fn refs(&self) -> Vec<&str> {
        self.values.iter().map(String::as_str).collect()
    }
}

/// Collects one batch of `metrics.raw` rows.
#[derive(Default)]
pub struct RawBuilder {
    ts: Vec<i64>,
    workload: Vec<i32>,
    metric: Vec<i32>,
    value: Vec<f64>,
    label: Vec<Option<i32>>,
    workloads: Interner,
    metrics: Interner,
    labels: Interner,
}

impl RawBuilder {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ts: Vec::with_capacity(n),
            workload: Vec::with_capacity(n),
            metric: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
            label: Vec::with_capacity(n),
            ..Default::default()
        }
    }

    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The key of a workload name in this batch.
    pub fn workload_key(&mut self, name: &str) -> i32 {
        self.workloads.key(name)
    }

    /// The key of a metric name in this batch.
    pub fn metric_key(&mut self, name: &str) -> i32 {
        self.metrics.key(name)
    }

    /// The key of a label set (its JSON text) in this batch.
    pub fn label_key(&mut self, set: &str) -> i32 {
        self.labels.key(set)
    }

    /// One row: time in milliseconds, keys from the `*_key` methods of this builder.
    pub fn push(&mut self, ts: i64, workload: i32, metric: i32, value: f64, label: Option<i32>) {
        self.ts.push(ts);
        self.workload.push(workload);
        self.metric.push(metric);
        self.value.push(value);
        self.label.push(label);
    }

    /// One value of a row whose time, workload and label come after its values
    /// ([`Self::end_row`]): a wide CSV row's metrics, without repeating the row's columns per
    /// value (the file readers' hot path).
    #[inline]
    pub fn push_value(&mut self, metric: i32, value: f64) {
        self.metric.push(metric);
        self.value.push(value);
    }

    /// Gives the values pushed since the last complete row their time, workload and label.
    #[inline]
    pub fn end_row(&mut self, ts: i64, workload: i32, label: Option<i32>) {
        let added = self.value.len() - self.ts.len();
        self.ts.extend(std::iter::repeat_n(ts, added));
        self.workload.extend(std::iter::repeat_n(workload, added));
        self.label.extend(std::iter::repeat_n(label, added));
    }

    /// The time of the first row, if any.
    pub fn first_time(&self) -> Option<i64> {
        self.ts.first().copied()
    }

    pub fn finish(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(self.ts),
            dictionary(self.workload, &self.workloads.refs())?,
            dictionary(self.metric, &self.metrics.refs())?,
            Arc::new(Float64Array::from(self.value)),
            dictionary_opt(self.label, &self.labels.refs())?,
        ];
        Ok(RecordBatch::try_new(Topic::MetricsRaw.schema(), columns)?)
    }
}
