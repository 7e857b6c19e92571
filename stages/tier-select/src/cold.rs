//! Cold start: a new workload sized from its nearest fingerprints (their allocation, read off
//! `fingerprints`) until its own forecasts stand on enough history.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{bools, list_row_f32, list_row_f64, list_row_str, strings, timestamps};
use wfe_contract::{Context, Event, Result};
use wfe_domain::ResourceMap;

use crate::rows::Rows;
use crate::{Need, Origin, TierSelect};

/// A new workload's sizing borrowed from its nearest fingerprints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct ColdStart {
    /// Per resource map (in the maps' order): the neighbours' allocation in its unit.
    values: Vec<Option<f64>>,
    /// Neighbours and their similarity weights, nearest first (for the reasons).
    neighbours: Vec<(String, f32)>,
}

impl ColdStart {
    pub(crate) fn who(&self) -> String {
        self.neighbours
            .iter()
            .map(|(n, w)| format!("{n} ({w:.2})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
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
            let needs = self.cold_needs(&borrowed);
            let note = format!(
                "cold start: no forecast of {w} yet; sized from its nearest fingerprints {}: their typical peak {}",
                borrowed.who(),
                self.sizing(&borrowed)
            );
            ctx.count("decisions.cold_start", 1);
            self.decide(w, at, &needs, Origin::ColdStart, Some(note), rows, ctx)?;
        }
        Ok(())
    }

    /// The borrowed sizing as needs: one level (the SLA quantile) per resource, over an hour.
    fn cold_needs(&self, c: &ColdStart) -> Vec<Need> {
        self.resources
            .iter()
            .zip(&c.values)
            .filter_map(|(m, v)| {
                Some(Need {
                    resource: m.name.clone(),
                    unit: m.unit.clone(),
                    horizon_s: 3600,
                    levels: vec![self.cfg.sla_quantile],
                    values: vec![(*v)?],
                })
            })
            .collect()
    }

    /// `cpu 12.30 vcpu, memory 40.00 gib`.
    fn sizing(&self, c: &ColdStart) -> String {
        self.resources
            .iter()
            .zip(&c.values)
            .filter_map(|(m, v)| Some(format!("{} {:.2} {}", m.name, (*v)?, m.unit)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// While a workload is cold, its forecast needs are raised to the borrowed sizing (a new
    /// workload's first forecasts stand on an hour of history); the note says which.
    pub(crate) fn raise_cold(&self, workload: &str, needs: &mut [Need]) -> Option<String> {
        let c = self.current.get(workload)?.cold.as_ref()?;
        let mut raised = Vec::new();
        for n in needs.iter_mut() {
            let v = self
                .resources
                .iter()
                .zip(&c.values)
                .find(|(m, _)| m.name == n.resource && m.unit == n.unit)
                .and_then(|(_, v)| *v);
            let Some(v) = v else { continue };
            if n.values.iter().any(|x| *x < v) {
                n.values.iter_mut().for_each(|x| *x = x.max(v));
                raised.push(format!(
                    "{} to {v:.2} {} at {} s",
                    n.resource, n.unit, n.horizon_s
                ));
            }
        }
        (!raised.is_empty()).then(|| {
            format!(
                "cold start: forecast raised to the allocation of its nearest fingerprints {} ({})",
                c.who(),
                raised.join(", ")
            )
        })
    }
}

/// Per resource map: the mean of its metrics' allocations x its capacity (as
/// [`wfe_domain::resources::resource_steps`] reads a step), where the map applies to the
/// workload and the allocation has finite, non-negative values for its metrics.
pub(crate) fn cold_values(
    maps: &[ResourceMap],
    workload: &str,
    metrics: &[String],
    alloc: &[f64],
) -> Vec<Option<f64>> {
    maps.iter()
        .map(|m| {
            if !m.applies_to(workload) {
                return None;
            }
            let got: Vec<f64> = metrics
                .iter()
                .zip(alloc)
                .filter(|(n, v)| m.metrics.contains(n) && v.is_finite() && **v >= 0.0)
                .map(|(_, v)| *v)
                .collect();
            m.demand(&got)
        })
        .collect()
}
