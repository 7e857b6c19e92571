//! `recommendations` rows of an issuance: per workload and resource, the container sizes its
//! forecasts ask for ([`wfe_domain::sizing`], the rule `wfe recommend` and the API apply to a
//! run's newest forecasts). Every horizon of a workload's resource is issued at once, so an
//! issuance's rows hold all that a recommendation reads and the stage keeps nothing for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::timestamp_column;
use wfe_contract::{Result, Topic};
use wfe_domain::sizing::{AtHorizon, Policy, size};

use crate::rows::Rows;

/// The `recommendations` batch of `rows` (a batch's issued forecasts), one row per issuance,
/// workload and resource with a finite forecast within the policy's horizons; None when
/// there is none.
pub(crate) fn recommendations(rows: &Rows, p: &Policy) -> Result<Option<RecordBatch>> {
    // Rows by (issuance, workload, resource), in that order (deterministic whatever order
    // the issuing threads put them in).
    let mut groups: BTreeMap<(i64, &str, &str), Vec<usize>> = BTreeMap::new();
    for i in 0..rows.issued.len() {
        let key = (rows.issued[i], &*rows.workload[i], &*rows.resource[i]);
        groups.entry(key).or_default().push(i);
    }
    let mut out = Columns::default();
    for ((issued, workload, resource), idx) in groups {
        let at = idx.iter().map(|&i| AtHorizon {
            horizon_s: rows.horizon[i],
            levels: &rows.levels[i],
            values: &rows.values[i],
        });
        let Some(s) = size(p, at) else {
            continue;
        };
        out.issued.push(issued);
        out.workload.push(workload);
        out.resource.push(resource);
        out.unit.push(&rows.unit[idx[0]]);
        out.lower.push(s.lower_bound);
        out.target.push(s.target);
        out.upper.push(s.upper_bound);
        out.horizon.push(s.horizon_s);
    }
    if out.issued.is_empty() {
        return Ok(None);
    }
    out.finish(p).map(Some)
}

#[derive(Default)]
struct Columns<'a> {
    issued: Vec<i64>,
    workload: Vec<&'a str>,
    resource: Vec<&'a str>,
    unit: Vec<&'a str>,
    lower: Vec<f64>,
    target: Vec<f64>,
    upper: Vec<f64>,
    horizon: Vec<i64>,
}

impl Columns<'_> {
    fn finish(self, p: &Policy) -> Result<RecordBatch> {
        let n = self.issued.len();
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(self.issued),
            Arc::new(StringArray::from(self.workload)),
            Arc::new(StringArray::from(self.resource)),
            Arc::new(StringArray::from(self.unit)),
            Arc::new(Float64Array::from(self.lower)),
            Arc::new(Float64Array::from(self.target)),
            Arc::new(Float64Array::from(self.upper)),
            Arc::new(Int64Array::from(self.horizon)),
            Arc::new(Float64Array::from(vec![p.quantile; n])),
            Arc::new(Float64Array::from(vec![p.margin; n])),
        ];
        Ok(RecordBatch::try_new(
            Topic::Recommendations.schema(),
            columns,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;

    use super::*;

    fn push(rows: &mut Rows, issued: i64, w: &str, horizon: i64, values: [f64; 3]) {
        rows.issued.push(issued);
        rows.target.push(issued + horizon * 1000);
        rows.workload.push(w.into());
        rows.resource.push("cpu".into());
        rows.unit.push("vcpu".into());
        rows.horizon.push(horizon);
        rows.levels.push(vec![0.1, 0.5, 0.9]);
        rows.values.push(values.to_vec());
        rows.model.push("ets");
        rows.version.push("1".into());
        rows.score.push(None);
        rows.fallback.push(None);
    }

    /// Two workloads' issuances, their horizons interleaved: one row each, sized from its own
    /// horizons only; a workload whose forecast is not a number gets none.
    #[test]
    fn an_issuance_is_sized_from_its_own_horizons() {
        let mut rows = Rows::default();
        push(&mut rows, 60_000, "b", 900, [1.0, 2.0, 3.0]);
        push(&mut rows, 60_000, "a", 900, [1.0, 2.0, 4.0]);
        push(&mut rows, 60_000, "b", 3600, [1.0, 2.5, 6.0]);
        push(&mut rows, 60_000, "a", 3600, [1.0, 3.0, 2.0]);
        push(&mut rows, 60_000, "c", 900, [1.0, f64::NAN, 2.0]);
        let p = Policy {
            margin: 0.5,
            ..Default::default()
        };
        let b = recommendations(&rows, &p).unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        let col = |name| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
        };
        let names = b.column_by_name("workload").unwrap().as_string::<i32>();
        assert_eq!((names.value(0), names.value(1)), ("a", "b"));
        // a: p90 4 at 900 s and 2 at 3600 s: target 6 (900 s); median up to 3.
        // b: p90 6 at 3600 s: target 9, lower 2.5.
        assert_eq!(col("target").values(), &[6.0, 9.0]);
        assert_eq!(col("lower_bound").values(), &[3.0, 2.5]);
        assert_eq!(col("upper_bound").values(), &[6.0, 9.0]);
        assert_eq!(col("margin").values(), &[0.5, 0.5]);
        let h = b.column_by_name("horizon_s").unwrap();
        assert_eq!(
            h.as_primitive::<arrow_array::types::Int64Type>().values(),
            &[900, 3600]
        );
        assert!(recommendations(&Rows::default(), &p).unwrap().is_none());
    }
}
