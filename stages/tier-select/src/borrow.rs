//! Cold start in the stage: `fingerprints` rows turn a new workload's state cold (sized from
//! its neighbours, see [`crate::cold`]) or end it, and a workload with no decision yet gets one.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use wfe_contract::columns::{bools, list_row_f32, list_row_f64, list_row_str, strings, timestamps};
use wfe_contract::{Context, Event, Result};

use crate::cold::{ColdStart, cold_values};
use crate::plan::Need;
use crate::rows::Rows;
use crate::{Origin, TierSelect};

impl TierSelect {
    pub(crate) fn borrows(&self) -> bool {
        self.cfg.cold_start && !self.resources.is_empty()
    }

    /// Cold start over one `fingerprints` batch: a cold row's allocation (per metric, raw
    /// units, borrowed from its neighbours) becomes per resource map what the workload is
    /// sized by while cold; a workload with no decision yet gets one from it now; a row that
    /// is no longer cold ends it.
    pub(crate) fn borrow(
        &mut self,
        batch: &RecordBatch,
        rows: &mut Rows,
        ctx: &mut Context,
    ) -> Result<()> {
        let end = timestamps(batch, "window_end")?;
        let workload = strings(batch, "workload")?;
        let cold = bools(batch, "cold_start")?;
        let col = |n: &str| batch.column_by_name(n).map(Arc::clone);
        let (names, weights, metrics, alloc) = (
            col("neighbours"),
            col("neighbour_weights"),
            col("allocation_metrics"),
            col("allocation"),
        );
        for r in 0..batch.num_rows() {
            let (w, at) = (workload.value(r), end.value(r));
            let cur = self.current.entry(w.to_string()).or_default();
            if cur.fingerprinted.is_some_and(|t| at <= t) {
                ctx.event(Event::Dropped {
                    kind: "replayed_fingerprint",
                    count: 1,
                });
                continue;
            }
            cur.fingerprinted = Some(at);
            if !cold.value(r) {
                if cur.cold.take().is_some() {
                    ctx.count("cold_start.ended", 1);
                }
                continue;
            }
            let present = |c: &Option<ArrayRef>| c.as_ref().filter(|a| a.is_valid(r)).cloned();
            let (Some(m), Some(a)) = (present(&metrics), present(&alloc)) else {
                // No known neighbour yet: forecasts alone size it.
                ctx.count("cold_start.no_neighbours", 1);
                continue;
            };
            let metric_names = list_row_str(m.as_ref(), r)?;
            let values = list_row_f64(a.as_ref(), r)?;
            let sized = cold_values(&self.resources, w, &metric_names, &values);
            if sized.iter().all(Option::is_none) {
                ctx.count("cold_start.no_resources", 1);
                continue;
            }
            let n = present(&names)
                .map(|c| list_row_str(c.as_ref(), r))
                .transpose()?
                .unwrap_or_default();
            let wt = present(&weights)
                .map(|c| list_row_f32(c.as_ref(), r))
                .transpose()?
                .unwrap_or_default();
            let borrowed = ColdStart {
                values: sized,
                neighbours: n.into_iter().zip(wt).collect(),
            };
            cur.cold = Some(borrowed.clone());
            ctx.count("cold_start.borrowed", 1);
            if cur.decided.is_some() || !cur.instance_type.is_empty() {
                continue; // its forecasts are raised to the borrowed sizing from now on
            }
            let needs = borrowed.needs(&self.resources, self.cfg.sla_quantile);
            let note = format!(
                "cold start: no forecast of {w} yet; sized from its nearest fingerprints {}: their typical peak {}",
                borrowed.who(),
                borrowed.sizing(&self.resources)
            );
            ctx.count("decisions.cold_start", 1);
            self.decide(w, at, &needs, Origin::ColdStart, Some(note), rows, ctx)?;
        }
        Ok(())
    }

    /// While a workload is cold, its forecast needs are raised to the borrowed sizing (a new
    /// workload's first forecasts stand on an hour of history); the note says which.
    pub(crate) fn raise_cold(&self, workload: &str, needs: &mut [Need]) -> Option<String> {
        let c = self.current.get(workload)?.cold.as_ref()?;
        c.raise(&self.resources, needs)
    }
}
