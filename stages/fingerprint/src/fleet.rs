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

use wfe_contract::columns::{i64s, list_row_f64, strings, timestamps};

use arrow_array::RecordBatch;
use wfe_contract::norm::Slots;
use wfe_contract::{Context, Result};

/// A workload another instance owns, as its newest `profiles` row says.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub signature: u64,
    /// Event time of the row (an older row of the same workload is ignored).
    pub at: i64,
    pub observed_steps: usize,
    pub features: Vec<f64>,
    pub allocation: Vec<f64>,
}

/// Workloads of other instances, by name.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
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
