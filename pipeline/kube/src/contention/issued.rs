//! `forecasts` rows read as demands: what the contention backtest (`wfe contention`) and the
//! running contention stage both plan from, read one way.

use arrow_array::{ArrayRef, RecordBatch};
use wfe_contract::columns::{i64s, list_row_f64, strings, timestamps};
use wfe_contract::{Error, Result};

use super::hostsum::Demand;

/// One forecast row read as a demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    pub at: i64,
    pub workload: String,
    pub horizon_s: i64,
    pub demand: Demand,
}

/// The rows of a `forecasts` batch for `resource`, each read as a demand, in the batch's
/// order; a row whose quantiles do not read as one (see [`Demand::from_quantiles`]) is left
/// out.
pub fn issued(batch: &RecordBatch, resource: &str) -> Result<Vec<Issued>> {
    let (at, workload, res) = (
        timestamps(batch, "issued_at")?,
        strings(batch, "workload")?,
        strings(batch, "resource")?,
    );
    let horizon = i64s(batch, "horizon_s")?;
    let (levels, values) = (
        column(batch, "quantile_levels")?,
        column(batch, "quantile_values")?,
    );
    let mut out = Vec::new();
    for i in 0..batch.num_rows() {
        if res.value(i) != resource {
            continue;
        }
        let lv = list_row_f64(levels.as_ref(), i)?;
        let vs = list_row_f64(values.as_ref(), i)?;
        if let Some(demand) = Demand::from_quantiles(&lv, &vs) {
            out.push(Issued {
                at: at.value(i),
                workload: workload.value(i).to_string(),
                horizon_s: horizon.value(i),
                demand,
            });
        }
    }
    Ok(out)
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| Error::bad_input(name.to_string(), "no such column in forecasts"))
}
