//! `metrics.norm` rows as they are made: column vectors, sealed in chunks of
//! [`MAX_BATCH_ROWS`], turned into batches with the names interned so far.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow_buffer::NullBuffer;
use wfe_contract::columns::{shared_dictionary, shared_dictionary_opt, timestamp_column};
use wfe_contract::{Collector, Result, Topic};

use crate::snapshot::State;

/// Output rows of one call, built column by column.
#[derive(Default)]
pub(crate) struct Out {
    pub(crate) time: Vec<i64>,
    pub(crate) workload: Vec<i32>,
    pub(crate) metric: Vec<i32>,
    pub(crate) value: Vec<f64>,
    pub(crate) raw: Vec<f64>,
    pub(crate) step_ms: Vec<i64>,
    pub(crate) filled: Vec<bool>,
    pub(crate) missing: Vec<bool>,
    pub(crate) label: Vec<Option<i32>>,
    pub(crate) any_missing: bool,
    /// Full chunks, emitted as batches of their own (see [`MAX_BATCH_ROWS`]).
    pub(crate) sealed: Vec<Out>,
}

/// Most rows per emitted batch. The history released when the scaler is fitted can be a
/// whole training split; in one batch it would stay in memory until every consumer finished
/// all of it.
pub const MAX_BATCH_ROWS: usize = 64 * 1024;

impl Out {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            time: Vec::with_capacity(n),
            workload: Vec::with_capacity(n),
            metric: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
            raw: Vec::with_capacity(n),
            step_ms: Vec::with_capacity(n),
            filled: Vec::with_capacity(n),
            missing: Vec::with_capacity(n),
            label: Vec::with_capacity(n),
            any_missing: false,
            sealed: Vec::new(),
        }
    }
}

impl Out {
    /// Emits the sealed chunks and the rest, in order, with the names `st` interned.
    pub(crate) fn emit(mut self, st: &mut State, out: &mut dyn Collector) -> Result<()> {
        self.emit_sealed(st, out)?;
        if !self.time.is_empty() {
            out.emit(Topic::MetricsNorm, self.finish(st)?)?;
        }
        Ok(())
    }

    /// Emits the chunks sealed so far (rows older than those still being built), so that a
    /// long release (a fitted scaler's history, the end of the input) streams out in chunks.
    pub(crate) fn emit_sealed(&mut self, st: &mut State, out: &mut dyn Collector) -> Result<()> {
        for chunk in std::mem::take(&mut self.sealed) {
            out.emit(Topic::MetricsNorm, chunk.finish(st)?)?;
        }
        Ok(())
    }

    fn finish(self, st: &mut State) -> Result<RecordBatch> {
        let out = self;
        // Missing values are nulls (their slots hold NaN underneath).
        let nulls = out
            .any_missing
            .then(|| NullBuffer::from_iter(out.missing.iter().map(|m| !m)));
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(out.time),
            shared_dictionary(out.workload, st.workload_names.array())?,
            shared_dictionary(out.metric, st.metric_names.array())?,
            Arc::new(Float64Array::new(out.value.into(), nulls.clone())),
            Arc::new(Float64Array::new(out.raw.into(), nulls)),
            Arc::new(Int64Array::from(out.step_ms)),
            flags(out.filled),
            flags(out.missing),
            shared_dictionary_opt(out.label, st.label_names.array())?,
        ];
        Ok(RecordBatch::try_new(Topic::MetricsNorm.schema(), columns)?)
    }
}

/// A boolean column; all-false (the usual case) without packing each value.
fn flags(v: Vec<bool>) -> ArrayRef {
    if v.iter().any(|b| *b) {
        Arc::new(BooleanArray::from(v))
    } else {
        Arc::new(BooleanArray::new(
            arrow_buffer::BooleanBuffer::new_unset(v.len()),
            None,
        ))
    }
}
