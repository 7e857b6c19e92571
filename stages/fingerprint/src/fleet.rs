//! The fleet's table of profiles (`profiles`): what lets an instance that owns a few
//! partitions search neighbours across the whole fleet.
//!
//! Each instance writes, for every workload whose profile a window changed, one row keyed by
//! the workload (its feature-space profile, metric set, observed steps, allocation,
//! environment) to the compacted `profiles` topic; every instance reads all of it (a
//! GlobalKTable) and keeps the newest row per workload it does not own. Profiles travel
//! before any basis (each instance fits its own), so a peer is placed in the reader's basis
//! like a local workload; only `stats-pca` can place them (a learned embedding has no
//! feature-space inverse), so `lstm` instances search their own partitions.
//!
//! The table is not in the stage's snapshot: like a GlobalKTable it is read again from the
//! topic when an instance starts, and embedded the stage owns every workload anyway.

use std::collections::BTreeMap;

use wfe_contract::columns::{i64s, list_f64, list_row_f64, list_str, strings, timestamps};

use super::*;

/// A workload another instance owns, as its newest `profiles` row says.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub signature: u64,
    /// Event time of the row (an older row of the same workload is ignored).
    pub at: i64,
    pub observed_steps: usize,
    pub features: Vec<f64>,
    pub allocation: Vec<f64>,
}

/// Workloads of other instances, by name.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    pub peers: BTreeMap<String, Peer>,
}

impl Fleet {
    /// Takes in a `profiles` batch: rows newer than what is known replace it; rows of
    /// workloads this instance owns (`local`) and malformed rows are skipped (counted).
    pub fn upsert(
        &mut self,
        batch: &RecordBatch,
        local: &Slots,
        ctx: &mut Context,
    ) -> Result<usize> {
        let at = timestamps(batch, "event_time")?;
        let workload = strings(batch, "workload")?;
        let set = strings(batch, "metric_set")?;
        let observed = i64s(batch, "observed_steps")?;
        let (Some(features), Some(allocation)) = (
            batch.column_by_name("features"),
            batch.column_by_name("allocation"),
        ) else {
            return Err(wfe_contract::Error::bad_input(
                "profiles",
                "features or allocation column missing",
            ));
        };
        let mut taken = 0;
        for r in 0..batch.num_rows() {
            let name = workload.value(r);
            if local.find(name).is_some() {
                continue;
            }
            let Ok(signature) = u64::from_str_radix(set.value(r), 16) else {
                ctx.count("profiles.malformed", 1);
                continue;
            };
            let at_r = at.value(r);
            if self.peers.get(name).is_some_and(|p| p.at > at_r) {
                continue;
            }
            let feats = list_row_f64(features.as_ref(), r)?;
            if feats.is_empty() {
                // Retired by its owner: gone from the fleet.
                if self.peers.remove(name).is_some() {
                    ctx.count("profiles.peers_retired", 1);
                }
                continue;
            }
            let peer = Peer {
                signature,
                at: at_r,
                observed_steps: observed.value(r).max(0) as usize,
                features: feats,
                allocation: list_row_f64(allocation.as_ref(), r)?,
            };
            if !peer.features.iter().all(|v| v.is_finite()) {
                ctx.count("profiles.malformed", 1);
                continue;
            }
            self.peers.insert(name.to_string(), peer);
            taken += 1;
        }
        Ok(taken)
    }
}

impl Fingerprint {
    /// The `profiles` rows of workloads `ids` (each once, in the order given).
    pub(super) fn profile_rows(&self, ids: &[usize]) -> Result<Option<RecordBatch>> {
        let mut seen = std::collections::BTreeSet::new();
        let (mut at, mut name, mut set, mut observed) = (vec![], vec![], vec![], vec![]);
        let (mut features, mut metrics, mut alloc, mut env) = (vec![], vec![], vec![], vec![]);
        for &id in ids {
            let wk = &self.state.workloads.items[id];
            let (Some(profile), Some(last)) = (wk.profile(), wk.window.back()) else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            at.push(last.0);
            name.push(self.state.workloads.names.names[id].clone());
            set.push(format!("{:016x}", wk.signature));
            observed.push(wk.observed_steps as i64);
            features.push(profile);
            metrics.push(Some(wk.slots.names.clone()));
            alloc.push(wk.allocation());
            env.push(wk.environment.clone());
        }
        if at.is_empty() {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(at),
            Arc::new(StringArray::from(name)),
            Arc::new(StringArray::from(set)),
            Arc::new(Int64Array::from(observed)),
            list_f64(features),
            list_str(metrics),
            list_f64(alloc),
            Arc::new(StringArray::from(env)),
        ];
        Ok(Some(RecordBatch::try_new(
            Topic::Profiles.schema(),
            columns,
        )?))
    }

    /// The `profiles` rows that say `gone` retired: no features, nothing known.
    pub(super) fn retired_rows(gone: &[(String, Workload)]) -> Result<Option<RecordBatch>> {
        if gone.is_empty() {
            return Ok(None);
        }
        let n = gone.len();
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(
                gone.iter()
                    .map(|(_, w)| w.window.back().map_or(0, |s| s.0))
                    .collect(),
            ),
            Arc::new(StringArray::from_iter_values(gone.iter().map(|(n, _)| n))),
            Arc::new(StringArray::from_iter_values(
                gone.iter().map(|(_, w)| format!("{:016x}", w.signature)),
            )),
            Arc::new(Int64Array::from(vec![0; n])),
            list_f64(vec![Vec::new(); n]),
            list_str(vec![Some(Vec::new()); n]),
            list_f64(vec![Vec::new(); n]),
            Arc::new(StringArray::from(vec![None::<String>; n])),
        ];
        Ok(Some(RecordBatch::try_new(
            Topic::Profiles.schema(),
            columns,
        )?))
    }

    /// Peers of metric set `sig` past their learning period, placed in `space`, numbered
    /// from `first` (after the local workloads).
    pub(super) fn placed_peers(
        &self,
        sig: u64,
        space: &Space,
        first: usize,
    ) -> Vec<(usize, &str, &Peer, Vec<f64>)> {
        let Space::Pca { model, centre, .. } = space else {
            return Vec::new();
        };
        self.fleet
            .peers
            .iter()
            .filter(|(_, p)| p.signature == sig && p.observed_steps > self.cfg.learning_steps)
            .enumerate()
            .filter_map(|(j, (name, p))| {
                if p.features.len() != model.mean.len() {
                    return None;
                }
                let mut v = model.rotate(&p.features);
                v.iter_mut().zip(centre).for_each(|(x, c)| *x -= c);
                Some((first + j, name.as_str(), p, v))
            })
            .collect()
    }
}
