//! `forecasts` rows as they are made, column by column.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::{list_f64, timestamp_column};
use wfe_contract::{Result, Topic};

#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) issued: Vec<i64>,
    pub(crate) target: Vec<i64>,
    pub(crate) workload: Vec<String>,
    pub(crate) resource: Vec<String>,
    pub(crate) unit: Vec<String>,
    pub(crate) horizon: Vec<i64>,
    pub(crate) levels: Vec<Vec<f64>>,
    pub(crate) values: Vec<Vec<f64>>,
    pub(crate) model: Vec<&'static str>,
    pub(crate) version: Vec<String>,
    pub(crate) score: Vec<Option<f64>>,
    pub(crate) fallback: Vec<Option<String>>,
}

impl Rows {
    /// Appends another set of rows after these.
    pub(crate) fn append(&mut self, o: Rows) {
        self.issued.extend(o.issued);
        self.target.extend(o.target);
        self.workload.extend(o.workload);
        self.resource.extend(o.resource);
        self.unit.extend(o.unit);
        self.horizon.extend(o.horizon);
        self.levels.extend(o.levels);
        self.values.extend(o.values);
        self.model.extend(o.model);
        self.version.extend(o.version);
        self.score.extend(o.score);
        self.fallback.extend(o.fallback);
    }

    /// The `forecasts` batch of the rows.
    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let rows = self;
        let n = rows.issued.len();
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(rows.issued),
            timestamp_column(rows.target),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.resource)),
            Arc::new(StringArray::from(rows.unit)),
            Arc::new(Int64Array::from(rows.horizon)),
            list_f64(rows.levels),
            list_f64(rows.values),
            Arc::new(StringArray::from(rows.model)),
            Arc::new(StringArray::from(rows.version)),
            Arc::new(StringArray::from(vec!["mae"; n])),
            Arc::new(Float64Array::from(rows.score)),
            Arc::new(StringArray::from(rows.fallback)),
        ];
        Ok(RecordBatch::try_new(Topic::Forecasts.schema(), columns)?)
    }
}
