//! The `migrations` batch of planned moves.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::timestamp_column;
use wfe_contract::{Result, Topic};
use wfe_kube::contention::plan::{Contention, Move};

/// One row per move, each planned at its issuance; None without moves.
pub fn migrations(
    planned: &[(i64, Vec<Contention>, Vec<Move>)],
    resource: &str,
    bound: f64,
) -> Result<Option<RecordBatch>> {
    let mut at = Vec::new();
    let mut horizon = Vec::new();
    let mut moves: Vec<&Move> = Vec::new();
    for (t, contended, ms) in planned {
        for m in ms {
            // The horizon where the source's risk was largest, as the planner found it.
            let h = contended.iter().find(|c| c.host == m.from);
            at.push(*t);
            horizon.push(h.map_or(0, |c| c.horizon_s));
            moves.push(m);
        }
    }
    if moves.is_empty() {
        return Ok(None);
    }
    let n = moves.len();
    let text = |f: fn(&Move) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(moves.iter().map(|m| f(m))))
    };
    let num = |f: fn(&Move) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(moves.iter().map(|m| f(m))))
    };
    let columns: Vec<ArrayRef> = vec![
        timestamp_column(at),
        text(|m| &m.workload),
        Arc::new(StringArray::from(vec![resource; n])),
        text(|m| &m.from),
        text(|m| &m.to),
        Arc::new(Int64Array::from(horizon)),
        num(|m| m.from_risk),
        num(|m| m.from_risk_after),
        num(|m| m.to_risk_after),
        Arc::new(Float64Array::from(vec![bound; n])),
        text(|m| &m.reason),
    ];
    Ok(Some(RecordBatch::try_new(
        Topic::Migrations.schema(),
        columns,
    )?))
}
