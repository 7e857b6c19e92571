//! Cold start: a new workload sized from its nearest fingerprints (their allocation, read off
//! `fingerprints`) until its own forecasts stand on enough history.

use serde::{Deserialize, Serialize};
use wfe_domain::ResourceMap;

use crate::plan::Need;

/// A new workload's sizing borrowed from its nearest fingerprints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct ColdStart {
    /// Per resource map (in the maps' order): the neighbours' allocation in its unit.
    pub(crate) values: Vec<Option<f64>>,
    /// Neighbours and their similarity weights, nearest first (for the reasons).
    pub(crate) neighbours: Vec<(String, f32)>,
}

impl ColdStart {
    pub(crate) fn who(&self) -> String {
        self.neighbours
            .iter()
            .map(|(n, w)| format!("{n} ({w:.2})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The borrowed sizing as needs: one level (the SLA quantile) per resource, over an hour.
    pub(crate) fn needs(&self, maps: &[ResourceMap], sla_quantile: f64) -> Vec<Need> {
        maps.iter()
            .zip(&self.values)
            .filter_map(|(m, v)| {
                Some(Need {
                    resource: m.name.clone(),
                    unit: m.unit.clone(),
                    horizon_s: 3600,
                    levels: vec![sla_quantile],
                    values: vec![(*v)?],
                })
            })
            .collect()
    }

    /// `cpu 12.30 vcpu, memory 40.00 gib`.
    pub(crate) fn sizing(&self, maps: &[ResourceMap]) -> String {
        maps.iter()
            .zip(&self.values)
            .filter_map(|(m, v)| Some(format!("{} {:.2} {}", m.name, (*v)?, m.unit)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// While a workload is cold, its forecast needs are raised to the borrowed sizing (a new
    /// workload's first forecasts stand on an hour of history); the note says which.
    pub(crate) fn raise(&self, maps: &[ResourceMap], needs: &mut [Need]) -> Option<String> {
        let mut raised = Vec::new();
        for n in needs.iter_mut() {
            let v = maps
                .iter()
                .zip(&self.values)
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
                self.who(),
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
