//! The `decisions` rows a batch makes, and the stable ids they carry.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::timestamp_column;
use wfe_contract::{Result, Topic};

/// Deterministic id of a reactive-floor decision: the same observed step, the same id.
pub fn burst_id(workload: &str, at: i64) -> String {
    wfe_contract::id::stable_id(&["burst", workload, &at.to_string()])
}

/// Deterministic id of a cold-start decision: the same fingerprint row, the same id.
pub fn cold_start_id(workload: &str, at: i64) -> String {
    wfe_contract::id::stable_id(&["cold", workload, &at.to_string()])
}

/// Deterministic decision id: the same forecast yields the same id on every replay.
pub fn decision_id(workload: &str, at: i64) -> String {
    wfe_contract::id::stable_id(&["decision", workload, &at.to_string()])
}

#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) id: Vec<String>,
    pub(crate) at: Vec<i64>,
    pub(crate) workload: Vec<String>,
    pub(crate) tier: Vec<String>,
    pub(crate) instance: Vec<String>,
    pub(crate) count: Vec<i64>,
    pub(crate) spot: Vec<i64>,
    pub(crate) previous: Vec<i64>,
    pub(crate) cost: Vec<f64>,
    pub(crate) risk: Vec<f64>,
    pub(crate) d_res: Vec<String>,
    pub(crate) d_q: Vec<f64>,
    pub(crate) d_h: Vec<i64>,
    pub(crate) required: Vec<f64>,
    pub(crate) considered: Vec<String>,
    pub(crate) reason: Vec<String>,
}
impl Rows {
    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let rows = self;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(rows.id)),
            timestamp_column(rows.at),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.tier)),
            Arc::new(StringArray::from(rows.instance)),
            Arc::new(Int64Array::from(rows.count)),
            Arc::new(Int64Array::from(rows.previous)),
            Arc::new(Float64Array::from(rows.cost)),
            Arc::new(Float64Array::from(rows.risk)),
            Arc::new(StringArray::from(rows.d_res)),
            Arc::new(Float64Array::from(rows.d_q)),
            Arc::new(Int64Array::from(rows.d_h)),
            Arc::new(Float64Array::from(rows.required)),
            Arc::new(StringArray::from(rows.considered)),
            Arc::new(StringArray::from(rows.reason)),
            Arc::new(Int64Array::from(rows.spot)),
        ];
        Ok(RecordBatch::try_new(Topic::Decisions.schema(), columns)?)
    }
}
