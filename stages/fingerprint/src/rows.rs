//! `fingerprints` rows as they are made, column by column.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::{list_f32, list_f32_opt, list_f64_opt, list_str, timestamp_column};
use wfe_contract::{Result, Topic};

#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) start: Vec<i64>,
    pub(crate) end: Vec<i64>,
    pub(crate) workload: Vec<String>,
    pub(crate) version: Vec<String>,
    pub(crate) method: Vec<&'static str>,
    pub(crate) vector: Vec<Vec<f32>>,
    pub(crate) n: Vec<i64>,
    pub(crate) cold: Vec<bool>,
    pub(crate) neighbours: Vec<Option<Vec<String>>>,
    pub(crate) weights: Vec<Option<Vec<f32>>>,
    pub(crate) alloc_metrics: Vec<Option<Vec<String>>>,
    pub(crate) alloc: Vec<Option<Vec<f64>>>,
    pub(crate) environment: Vec<Option<String>>,
    pub(crate) profile: Vec<Option<Vec<f32>>>,
}

impl Rows {
    /// The `fingerprints` batch of the rows.
    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let rows = self;
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(rows.start),
            timestamp_column(rows.end),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.method)),
            Arc::new(StringArray::from(rows.version)),
            list_f32(rows.vector),
            Arc::new(Int64Array::from(rows.n)),
            Arc::new(BooleanArray::from(rows.cold)),
            list_str(rows.neighbours.into_iter()),
            list_f32_opt(rows.weights),
            list_str(rows.alloc_metrics.into_iter()),
            list_f64_opt(rows.alloc),
            Arc::new(StringArray::from(rows.environment)),
            list_f32_opt(rows.profile),
        ];
        Ok(RecordBatch::try_new(Topic::Fingerprints.schema(), columns)?)
    }
}
