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
    let mut out = Vec::new();
    for_each_resource_step(maps, batch, |workload, time, values| {
        out.push(ResourceStep {
            workload: workload.to_string(),
            time,
            values: values.to_vec(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// [`resource_steps`] without a step's copies: `f` sees each step's workload, time and
/// values (per map, as [`ResourceStep::values`]) in buffers kept for the whole batch. A
/// stage that reads every step of `metrics.norm` (tier selection's reactive floor) paid an
/// owned name and three vectors per step for what it reads once.
pub fn for_each_resource_step(
    maps: &[ResourceMap],
    batch: &RecordBatch,
    mut f: impl FnMut(&str, i64, &[Option<f64>]) -> Result<()>,
) -> Result<()> {
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
    let mut seen: Vec<Vec<f64>> = vec![Vec::new(); maps.len()];
    let mut values: Vec<Option<f64>> = Vec::with_capacity(maps.len());
    for step in nb.steps() {
        seen.iter_mut().for_each(Vec::clear);
        for r in step.rows.clone() {
            let Some(v) = nb.raw(r).filter(|v| v.is_finite()) else {
                continue;
            };
            let k = keys.keys()[r] as usize;
            for &m in feeds.get(k).map_or(&[][..], |f| f.as_slice()) {
                seen[m].push(v);
            }
        }
        values.clear();
        values.extend(
            maps.iter()
                .zip(&seen)
                .map(|(m, v)| m.demand(v).filter(|_| m.applies_to(step.workload))),
        );
        f(step.workload, step.time, &values)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array};
    use wfe_contract::Topic;
    use wfe_contract::columns::{dictionary, timestamp_column};

    use super::*;

    /// A `metrics.norm` batch of (workload, time s, metric, raw value) rows.
    fn norm(rows: &[(&'static str, i64, &'static str, f64)]) -> RecordBatch {
        let n = rows.len();
        let dict = |pick: fn(&(&'static str, i64, &'static str, f64)) -> &'static str| {
            let mut names: Vec<&str> = Vec::new();
            let keys = rows
                .iter()
                .map(|r| {
                    let name = pick(r);
                    let at = names.iter().position(|x| *x == name).unwrap_or_else(|| {
                        names.push(name);
                        names.len() - 1
                    });
                    at as i32
                })
                .collect();
            dictionary(keys, &names).unwrap()
        };
        let raw: Vec<f64> = rows.iter().map(|r| r.3).collect();
        RecordBatch::try_new(
            Topic::MetricsNorm.schema(),
            vec![
                timestamp_column(rows.iter().map(|r| r.1 * 1000).collect()),
                dict(|r| r.0),
                dict(|r| r.2),
                Arc::new(Float64Array::from(raw.clone())) as ArrayRef,
                Arc::new(Float64Array::from(raw)),
                Arc::new(Int64Array::from(vec![60_000; n])),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(BooleanArray::from(vec![false; n])),
                dictionary(vec![0; n], &[""]).unwrap(),
            ],
        )
        .unwrap()
    }

    fn map(name: &str, metrics: &[&str], capacity: f64, prefix: Option<&str>) -> ResourceMap {
        ResourceMap {
            name: name.into(),
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            unit: "u".into(),
            capacity,
            workload_prefix: prefix.map(str::to_string),
        }
    }

    /// Each step's resources are the mean of its own metrics' finite values x capacity: a
    /// step without a map's metric (or whose value is NaN) has none, whatever the step before
    /// it had in the buffers kept for the batch; a map that does not apply gives none.
    #[test]
    fn each_step_reads_its_own_values_through_the_kept_buffers() {
        let maps = [
            map("cpu", &["m00", "m01"], 4.0, None),
            map("mem", &["m02"], 16.0, Some("a")),
        ];
        let batch = norm(&[
            ("a", 0, "m00", 0.5),
            ("a", 0, "m01", 0.7),
            ("a", 0, "m02", 0.25),
            ("a", 60, "m00", 0.4),
            ("a", 60, "m01", f64::NAN),
            ("b", 0, "m02", 0.3),
            ("b", 0, "m09", 0.9),
        ]);
        let steps = resource_steps(&maps, &batch).unwrap();
        let seen: Vec<(&str, i64, Vec<Option<f64>>)> = steps
            .iter()
            .map(|s| (s.workload.as_str(), s.time, s.values.clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    "a",
                    0,
                    vec![Some((0.5 + 0.7) / 2.0 * 4.0), Some(0.25 * 16.0)]
                ),
                ("a", 60_000, vec![Some(0.4 * 4.0), None]),
                ("b", 0, vec![None, None]),
            ]
        );
        let mut walked = Vec::new();
        for_each_resource_step(&maps, &batch, |w, t, v| {
            walked.push(ResourceStep {
                workload: w.to_string(),
                time: t,
                values: v.to_vec(),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(walked, steps);
        // An error from the caller ends the walk and is returned.
        let mut calls = 0;
        let stopped = for_each_resource_step(&maps, &batch, |_, _, _| {
            calls += 1;
            Err(wfe_contract::Error::bad_input("test", "stop"))
        });
        assert!(stopped.is_err());
        assert_eq!(calls, 1);
    }
}
