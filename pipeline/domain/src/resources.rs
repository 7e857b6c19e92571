//! From metrics to resources: the mapping the forecast stage forecasts and tier selection
//! provisions by, shared so that both read a workload's demand the same way.

use arrow_array::Array;
use serde::{Deserialize, Serialize};

use wfe_contract::norm::NormBatch;
use wfe_contract::{RecordBatch, Result};

/// How one resource is computed from metrics.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceMap {
    /// Resource name: `cpu`, `memory`, `network`, `disk` or any other.
    pub name: String,
    /// Metrics whose mean is the resource's utilisation (a fraction of capacity at 1.0).
    pub metrics: Vec<String>,
    /// Capacity unit, e.g. `vcpu`, `gib`, `gbps`.
    pub unit: String,
    /// Units of capacity that a value of 1.0 stands for.
    pub capacity: f64,
    /// Only workloads whose id starts with this; default: every workload.
    #[serde(default)]
    pub workload_prefix: Option<String>,
}

impl ResourceMap {
    pub fn applies_to(&self, workload: &str) -> bool {
        self.workload_prefix
            .as_deref()
            .is_none_or(|p| workload.starts_with(p))
    }

    /// The resource in its unit from its metrics' values (raw, 1.0 = full capacity): their
    /// mean x capacity; None without a value. Every reader of demand (the stages, the
    /// backtest, cold start) goes through this.
    pub fn demand(&self, values: &[f64]) -> Option<f64> {
        (!values.is_empty())
            .then(|| values.iter().sum::<f64>() / values.len() as f64 * self.capacity)
    }
}

/// One workload's step of `metrics.norm` as resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceStep {
    pub workload: String,
    pub time: i64,
    /// Per map (in the maps' order): the mean raw value of its observed metrics x capacity;
    /// `None` where the map does not apply or none of its metrics was observed.
    pub values: Vec<Option<f64>>,
}

/// The resources of every workload step of a `metrics.norm` batch.
pub fn resource_steps(maps: &[ResourceMap], batch: &RecordBatch) -> Result<Vec<ResourceStep>> {
    let nb = NormBatch::new(batch)?;
    let dict = nb.metric_dict();
    // Per metric key of this batch: the maps it feeds.
    let feeds: Vec<Vec<usize>> = (0..dict.len())
        .map(|k| {
            maps.iter()
                .enumerate()
                .filter(|(_, m)| m.metrics.iter().any(|x| x == dict.value(k)))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let keys = wfe_contract::columns::DictStrings::new(batch, "metric")?;
    let mut out = Vec::new();
    for step in nb.steps() {
        let mut seen: Vec<Vec<f64>> = vec![Vec::new(); maps.len()];
        for r in step.rows.clone() {
            let Some(v) = nb.raw(r).filter(|v| v.is_finite()) else {
                continue;
            };
            let k = keys.keys()[r] as usize;
            for &m in feeds.get(k).map_or(&[][..], |f| f.as_slice()) {
                seen[m].push(v);
            }
        }
        let values = maps
            .iter()
            .zip(&seen)
            .map(|(m, v)| m.demand(v).filter(|_| m.applies_to(step.workload)))
            .collect();
        out.push(ResourceStep {
            workload: step.workload.to_string(),
            time: step.time,
            values,
        });
    }
    Ok(out)
}
