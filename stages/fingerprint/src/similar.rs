//! Similarity queries over stored fingerprints (the `fingerprints` topic as Parquet files or
//! a recording): the workloads nearest to one, and which known environment suits it best.
//!
//! A workload's stored **profile** is the `profile` of its latest row: what the stage searched
//! its neighbours by (the mean of all its windows in the row's model version, measured from
//! the fleet's centre). Rows written before the column existed (schema version 2) give the
//! mean of the workload's vectors under its latest version instead, measured from the mean of
//! that version's profiles.
//!
//! **Environment matching**: rows carry the workload's `environment` (its `env.*` labels: host
//! metadata such as instance type, CPU model, kernel, software versions). For a workload, the
//! `k` nearest workloads that have an environment vote for theirs with their similarity
//! weights; the environment with the largest share is where the workloads that behave most
//! like it run, so the one that suits it best. Each environment comes with its voters and their
//! similarity-weighted allocation, so a person sees why and what the workload would need there.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use serde::Serialize;
use wfe_contract::{Error, Result};

use crate::knn::{self, Distance};

/// One workload as the store holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub workload: String,
    pub version: String,
    /// Mean of its vectors under `version`, measured from that version's centre.
    pub profile: Vec<f64>,
    pub environment: Option<String>,
    /// Its latest own allocation (metrics, raw values); None while it was cold.
    pub allocation: Option<(Vec<String>, Vec<f64>)>,
}

/// A neighbour in an answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Neighbour {
    pub workload: String,
    pub distance: f64,
    /// Similarity weight among the answer's neighbours (they sum to 1).
    pub weight: f64,
    pub environment: Option<String>,
}

/// A known environment's fit for a workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnvironmentFit {
    pub environment: String,
    /// Share of the similarity weight of the nearest workloads with an environment that run
    /// here (the fits of one answer sum to 1).
    pub score: f64,
    /// Those workloads, nearest first.
    pub workloads: Vec<String>,
    /// Their similarity-weighted allocation, per metric (raw units).
    pub allocation_metrics: Vec<String>,
    pub allocation: Vec<f64>,
}

/// What `wfe similar` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Similar {
    pub workload: String,
    pub model_version: String,
    /// The workload's own environment, if its rows carried one.
    pub environment: Option<String>,
    /// Nearest workloads of the same model version, nearest first.
    pub neighbours: Vec<Neighbour>,
    /// Known environments, best first (empty when no neighbour has one).
    pub environments: Vec<EnvironmentFit>,
}

/// Per workload while reading: vector sums per version, and the latest row's facts.
#[derive(Default)]
struct Acc {
    latest: i64,
    version: String,
    sums: BTreeMap<String, (Vec<f64>, u64)>,
    environment: Option<(i64, String)>,
    allocation: Option<(i64, Vec<String>, Vec<f64>)>,
    /// The latest row's stored profile.
    profile: Option<Vec<f64>>,
}

/// Stored fingerprints, one profile per workload.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub items: Vec<Stored>,
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::bad_input("fingerprints", format!("no column `{name}`")))
}

fn finite(a: &[f64]) -> bool {
    a.iter().all(|v| v.is_finite())
}

impl Store {
    /// Reads `fingerprints` batches (any version from 2 on; `environment` from 3).
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self> {
        let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
        for (bi, b) in batches.iter().enumerate() {
            let wrong = |name: &str| {
                Error::bad_input(
                    format!("fingerprints batch {bi}"),
                    format!("column `{name}` has the wrong type"),
                )
            };
            let end = column(b, "window_end")?
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| wrong("window_end"))?;
            let workload = column(b, "workload")?
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong("workload"))?;
            let version = column(b, "model_version")?
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong("model_version"))?;
            let vector = column(b, "vector")?
                .as_list_opt::<i32>()
                .ok_or_else(|| wrong("vector"))?;
            let cold = column(b, "cold_start")?
                .as_boolean_opt()
                .ok_or_else(|| wrong("cold_start"))?;
            let alloc_metrics = column(b, "allocation_metrics")?
                .as_list_opt::<i32>()
                .ok_or_else(|| wrong("allocation_metrics"))?;
            let alloc = column(b, "allocation")?
                .as_list_opt::<i32>()
                .ok_or_else(|| wrong("allocation"))?;
            let environment = match b.column_by_name("environment") {
                Some(c) => Some(
                    c.as_string_opt::<i32>()
                        .ok_or_else(|| wrong("environment"))?,
                ),
                None => None,
            };
            let profile = match b.column_by_name("profile") {
                Some(c) => Some(c.as_list_opt::<i32>().ok_or_else(|| wrong("profile"))?),
                None => None,
            };
            for row in 0..b.num_rows() {
                if vector.is_null(row) || workload.is_null(row) || version.is_null(row) {
                    continue;
                }
                let v = vector.value(row);
                let v = v
                    .as_primitive_opt::<Float32Type>()
                    .ok_or_else(|| wrong("vector"))?;
                let v: Vec<f64> = v.values().iter().map(|x| *x as f64).collect();
                if v.is_empty() || !finite(&v) {
                    continue;
                }
                let t = end.value(row);
                let a = acc.entry(workload.value(row).to_string()).or_default();
                let ver = version.value(row);
                if a.version.is_empty() || t >= a.latest {
                    a.latest = t;
                    a.version = ver.to_string();
                    a.profile = match profile.filter(|p| !p.is_null(row)) {
                        Some(p) => {
                            let p = p.value(row);
                            let p = p
                                .as_primitive_opt::<Float32Type>()
                                .ok_or_else(|| wrong("profile"))?;
                            let p: Vec<f64> = p.values().iter().map(|x| *x as f64).collect();
                            (!p.is_empty() && finite(&p)).then_some(p)
                        }
                        None => None,
                    };
                }
                let (sum, n) = a
                    .sums
                    .entry(ver.to_string())
                    .or_insert_with(|| (vec![0.0; v.len()], 0));
                if sum.len() == v.len() {
                    sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
                    *n += 1;
                }
                if let Some(e) = environment.filter(|e| !e.is_null(row))
                    && a.environment.as_ref().is_none_or(|(at, _)| t >= *at)
                {
                    a.environment = Some((t, e.value(row).to_string()));
                }
                if !cold.value(row) && !alloc.is_null(row) && !alloc_metrics.is_null(row) {
                    let m = alloc_metrics.value(row);
                    let m = m
                        .as_string_opt::<i32>()
                        .ok_or_else(|| wrong("allocation_metrics"))?;
                    let x = alloc.value(row);
                    let x = x
                        .as_primitive_opt::<Float64Type>()
                        .ok_or_else(|| wrong("allocation"))?;
                    if a.allocation.as_ref().is_none_or(|(at, _, _)| t >= *at) {
                        a.allocation = Some((
                            t,
                            m.iter()
                                .map(|s| s.unwrap_or_default().to_string())
                                .collect(),
                            x.iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
                        ));
                    }
                }
            }
        }
        let mut stored = Vec::new();
        let mut derived = Vec::new();
        for (workload, a) in acc {
            let Some((sum, n)) = a.sums.get(&a.version) else {
                continue;
            };
            let item = Stored {
                profile: a
                    .profile
                    .clone()
                    .unwrap_or_else(|| sum.iter().map(|s| s / *n as f64).collect()),
                version: a.version,
                workload,
                environment: a.environment.map(|(_, e)| e),
                allocation: a.allocation.map(|(_, m, x)| (m, x)),
            };
            if a.profile.is_some() {
                stored.push(item);
            } else {
                derived.push(item);
            }
        }
        // Derived profiles are measured from their version's centre (the mean of that
        // version's derived profiles), as the stage measures from its fleet's.
        let mut centres: BTreeMap<String, (Vec<f64>, f64)> = BTreeMap::new();
        for s in &derived {
            let (c, n) = centres
                .entry(s.version.clone())
                .or_insert_with(|| (vec![0.0; s.profile.len()], 0.0));
            c.iter_mut().zip(&s.profile).for_each(|(c, x)| *c += x);
            *n += 1.0;
        }
        for s in &mut derived {
            let (c, n) = &centres[&s.version];
            s.profile.iter_mut().zip(c).for_each(|(x, c)| *x -= c / n);
        }
        let mut items = stored;
        items.extend(derived);
        items.sort_by(|a, b| a.workload.cmp(&b.workload));
        Ok(Self { items })
    }

    /// The `k` nearest workloads to `workload`, and the known environments ranked for it.
    pub fn similar(&self, workload: &str, k: usize, distance: Distance) -> Result<Similar> {
        let me = self
            .items
            .iter()
            .position(|s| s.workload == workload)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .items
                    .iter()
                    .take(5)
                    .map(|s| s.workload.as_str())
                    .collect();
                Error::bad_input(
                    "wfe similar",
                    format!(
                        "no fingerprints of `{workload}` in the store ({} workloads, e.g. {})",
                        self.items.len(),
                        known.join(", ")
                    ),
                )
            })?;
        let q = &self.items[me];
        let peers = |with_env: bool| {
            self.items
                .iter()
                .enumerate()
                .filter(move |(i, s)| {
                    *i != me && s.version == q.version && (!with_env || s.environment.is_some())
                })
                .map(|(i, s)| (i, s.profile.as_slice()))
        };
        let found = knn::exact(&q.profile, peers(false), k, distance);
        let weights = knn::weights(&found, distance);
        let neighbours = found
            .iter()
            .zip(&weights)
            .map(|((i, d), w)| Neighbour {
                workload: self.items[*i].workload.clone(),
                distance: *d,
                weight: *w,
                environment: self.items[*i].environment.clone(),
            })
            .collect();
        let voters = knn::exact(&q.profile, peers(true), k, distance);
        let environments = self.rank_environments(&voters, distance);
        Ok(Similar {
            workload: q.workload.clone(),
            model_version: q.version.clone(),
            environment: q.environment.clone(),
            neighbours,
            environments,
        })
    }

    /// Sums the voters' similarity weights per environment, best first (ties by name).
    fn rank_environments(
        &self,
        voters: &[(usize, f64)],
        distance: Distance,
    ) -> Vec<EnvironmentFit> {
        let weights = knn::weights(voters, distance);
        let mut by_env: BTreeMap<&str, Vec<(usize, f64)>> = BTreeMap::new();
        for ((i, _), w) in voters.iter().zip(&weights) {
            if let Some(e) = &self.items[*i].environment {
                by_env.entry(e).or_default().push((*i, *w));
            }
        }
        let mut fits: Vec<EnvironmentFit> = by_env
            .into_iter()
            .map(|(env, members)| {
                let score: f64 = members.iter().map(|(_, w)| w).sum();
                let (metrics, allocation) = self.weighted_allocation(&members);
                EnvironmentFit {
                    environment: env.to_string(),
                    score,
                    workloads: members
                        .iter()
                        .map(|(i, _)| self.items[*i].workload.clone())
                        .collect(),
                    allocation_metrics: metrics,
                    allocation,
                }
            })
            .collect();
        fits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.environment.cmp(&b.environment))
        });
        fits
    }

    /// The weighted mean of the members' allocations over the metrics the first one has.
    fn weighted_allocation(&self, members: &[(usize, f64)]) -> (Vec<String>, Vec<f64>) {
        let Some(metrics) = members
            .iter()
            .find_map(|(i, _)| self.items[*i].allocation.as_ref().map(|(m, _)| m.clone()))
        else {
            return (Vec::new(), Vec::new());
        };
        let mut sum = vec![0.0; metrics.len()];
        let mut total = 0.0;
        for (i, w) in members {
            if let Some((m, x)) = &self.items[*i].allocation
                && *m == metrics
            {
                sum.iter_mut().zip(x).for_each(|(s, x)| *s += w * x);
                total += w;
            }
        }
        (
            metrics,
            sum.iter()
                .map(|s| s / total.max(f64::MIN_POSITIVE))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, profile: [f64; 2], env: Option<&str>, cpu: f64) -> Stored {
        Stored {
            workload: name.into(),
            version: "v".into(),
            profile: profile.to_vec(),
            environment: env.map(String::from),
            allocation: Some((vec!["cpu".into()], vec![cpu])),
        }
    }

    #[test]
    fn the_environment_of_the_nearest_workloads_wins_with_their_allocation() {
        let store = Store {
            items: vec![
                item("new", [1.0, 0.1], None, 0.0),
                item("a1", [1.0, 0.0], Some("type=big"), 10.0),
                item("a2", [0.9, 0.2], Some("type=big"), 20.0),
                item("b1", [0.0, 1.0], Some("type=small"), 1.0),
                item("c1", [0.95, 0.05], None, 5.0),
            ],
        };
        let s = store.similar("new", 3, Distance::Euclidean).unwrap();
        let names: Vec<&str> = s.neighbours.iter().map(|n| n.workload.as_str()).collect();
        assert_eq!(names, ["c1", "a1", "a2"]);
        let w: f64 = s.neighbours.iter().map(|n| n.weight).sum();
        assert!((w - 1.0).abs() < 1e-9);
        // Voters are the 3 nearest with an environment: a1, a2 and (far) b1.
        assert_eq!(s.environments[0].environment, "type=big");
        assert_eq!(s.environments[0].workloads, ["a1", "a2"]);
        assert!(s.environments[0].score > 0.9, "{:?}", s.environments);
        let total: f64 = s.environments.iter().map(|e| e.score).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // a1 is nearer than a2, so its allocation weighs more: between 10 and 15.
        let cpu = s.environments[0].allocation[0];
        assert!(cpu > 10.0 && cpu < 15.0, "{cpu}");
        assert_eq!(s.environments[1].environment, "type=small");
        let err = store.similar("nope", 3, Distance::Cosine).unwrap_err();
        assert!(
            err.to_string().contains("no fingerprints of `nope`"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_is_the_env_labels_without_their_prefix() {
        assert_eq!(
            crate::environment_of("env.kernel=6.1,env.instance_type=m5.large,split=test")
                .as_deref(),
            Some("instance_type=m5.large,kernel=6.1")
        );
        assert_eq!(crate::environment_of("label=1,split=test"), None);
    }
}
