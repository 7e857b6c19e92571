//! The fleet's published profiles: what neighbours are searched among, the same in every
//! instance and in the embedded run.
//!
//! A workload's profile is **published** at the end of the batch whose window changed it:
//! out as one `profiles` row (keyed by the workload: its feature-space profile, metric set,
//! observed steps, allocation), and into this instance's own view; other instances' arrive
//! from the compacted `profiles` topic, which every instance reads whole (a GlobalKTable). A
//! window searches the view as it stood before its batch, so a workload is never sized from
//! what another one showed later in the same batch.
//!
//! **By seq, not by batch.** Other instances' rows made at seq `s` reach a service from seq
//! `s + 1` on (the tables' contract), while one seq can come as several batches (normalise
//! releases a fitted workload's history in chunks; a service's messages are cut by size,
//! per partition). So where the runner gives the seq ([`Context::seq`]), own profiles
//! published at seq `s` are **staged** and enter the view when a batch of a later seq
//! begins: every instance, and the embedded run, then searches the profiles of seqs before
//! the window's, whichever instance owns whom and however the seq was cut. Without a seq
//! (live over Kafka) they enter at once.
//!
//! Profiles are compared in the **feature space**, measured from the mean of the metric set's
//! known profiles in the view: every instance fits its own PCA basis (or embedding), but the
//! window features and the view are the same everywhere, so the distances are too. Exact
//! search below `index_above` known workloads of a metric set; above, an HNSW index over the
//! view proposes candidates that the exact distance ranks.
//!
//! The view is not in the stage's snapshot: its own part is rebuilt from the restored
//! workloads (their profiles change only at windows), the rest is read again from the topic
//! when an instance starts, like a GlobalKTable.

use std::collections::{BTreeMap, BTreeSet};

use wfe_contract::columns::{i64s, list_row_f64, strings, timestamps};

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};
use wfe_contract::norm::Slots;
use wfe_contract::{Context, Result};

use crate::knn::{self, Distance};

/// When and how a metric set's profiles are indexed (`index_above`; `index_ef`, 0: the
/// index's own choice by its size).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Index {
    pub above: usize,
    pub ef: usize,
}

/// A published profile.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub signature: u64,
    /// Event time of the window that made it (an older row of the same workload is ignored).
    pub at: i64,
    pub observed_steps: usize,
    /// Past its learning period when published: a neighbour others may borrow from.
    pub known: bool,
    /// Mean of its window features.
    pub features: Vec<f64>,
    pub allocation: Vec<f64>,
}

/// Published profiles by metric set and name, and what searching them needs.
#[derive(Default)]
pub(crate) struct Fleet {
    pub sets: BTreeMap<u64, BTreeMap<String, Peer>>,
    /// Own profiles changed by the batch under way: published at its end.
    pub pending: BTreeMap<String, Peer>,
    /// Own profiles published at seq `staged_seq`, out of the view until a later seq begins.
    pub staged: BTreeMap<String, Peer>,
    pub staged_seq: Option<i64>,
    /// Per metric set, the mean of its known profiles: dropped when the set changes, made
    /// again before its next search ([`Fleet::prepare`]).
    centres: BTreeMap<u64, Vec<f64>>,
    /// Per metric set above `index_above` known profiles, an HNSW index over them.
    indexes: BTreeMap<u64, Indexed>,
}

/// An HNSW index over the `known` profiles (centred) of a metric set, names in index order
/// (sorted), and the names put into the set since it was built (searched exactly beside it).
struct Indexed {
    known: usize,
    names: Vec<String>,
    graph: knn::Approximate,
    added: BTreeSet<String>,
}

impl Fleet {
    /// A profile enters the view (replacing the workload's older one, in any metric set).
    pub fn put(&mut self, name: &str, peer: Peer) {
        self.remove(name);
        self.centres.remove(&peer.signature);
        if let Some(ix) = self.indexes.get_mut(&peer.signature)
            && ix.names.binary_search_by(|n| n.as_str().cmp(name)).is_err()
        {
            ix.added.insert(name.to_string());
        }
        self.sets
            .entry(peer.signature)
            .or_default()
            .insert(name.to_string(), peer);
    }

    /// A workload leaves the view; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let staged = self.staged.remove(name).is_some();
        let found = self
            .sets
            .iter_mut()
            .find_map(|(sig, set)| set.remove(name).map(|_| *sig));
        if let Some(sig) = found {
            self.centres.remove(&sig);
        }
        found.is_some() || staged
    }

    pub fn get(&self, name: &str) -> Option<&Peer> {
        self.sets.values().find_map(|s| s.get(name))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sets.values().map(BTreeMap::len).sum()
    }

    /// The batch of `seq` is done: its own profiles are published, staged until a later seq
    /// (entering the view at once without a seq).
    pub fn publish(&mut self, seq: Option<i64>) -> BTreeMap<String, Peer> {
        let pending = std::mem::take(&mut self.pending);
        for (name, peer) in &pending {
            self.stage(name, peer.clone(), seq);
        }
        pending
    }

    /// An own profile published at `seq`: staged, or (no seq) into the view.
    pub fn stage(&mut self, name: &str, peer: Peer, seq: Option<i64>) {
        let Some(s) = seq else {
            return self.put(name, peer);
        };
        // Published at an earlier seq and not yet in: in now (the seq moved on).
        self.advance(Some(s));
        self.staged.insert(name.to_string(), peer);
        self.staged_seq = Some(s);
    }

    /// A batch of `seq` begins (`None`: the end, or no seq): the profiles staged at an
    /// earlier seq enter the view.
    pub fn advance(&mut self, seq: Option<i64>) {
        let Some(at) = self.staged_seq else {
            return;
        };
        if seq.is_some_and(|now| now <= at) {
            return;
        }
        for (name, peer) in std::mem::take(&mut self.staged) {
            self.put(&name, peer);
        }
        self.staged_seq = None;
    }

    /// Takes in a `profiles` batch: rows newer than what is known replace it; rows of
    /// workloads this instance owns (`local`) and malformed rows are skipped (counted).
    pub fn upsert(
        &mut self,
        batch: &RecordBatch,
        local: &Slots,
        learning_steps: usize,
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
            if self.get(name).is_some_and(|p| p.at > at_r) {
                continue;
            }
            let feats = list_row_f64(features.as_ref(), r)?;
            if feats.is_empty() {
                // Retired by its owner: gone from the fleet.
                if self.remove(name) {
                    ctx.count("profiles.peers_retired", 1);
                }
                continue;
            }
            let observed_steps = observed.value(r).max(0) as usize;
            let peer = Peer {
                signature,
                at: at_r,
                observed_steps,
                known: observed_steps > learning_steps,
                features: feats,
                allocation: list_row_f64(allocation.as_ref(), r)?,
            };
            if !peer.features.iter().all(|v| v.is_finite()) {
                ctx.count("profiles.malformed", 1);
                continue;
            }
            self.put(name, peer);
            taken += 1;
        }
        Ok(taken)
    }

    /// Makes metric set `sig`'s centre for the searches to come if the set changed since,
    /// and its index once it has `index_above` known profiles (again each time it has grown
    /// by a quarter: candidates are ranked by the current profiles anyway). Returns whether
    /// an index was built.
    pub fn prepare(&mut self, sig: u64, index: Index, distance: Distance) -> bool {
        if self.centres.contains_key(&sig) {
            return false;
        }
        let Some(set) = self.sets.get(&sig) else {
            return false;
        };
        let known: Vec<(&String, &Peer)> = set.iter().filter(|(_, p)| p.known).collect();
        let Some(dim) = known.first().map(|(_, p)| p.features.len()) else {
            return false;
        };
        // In name order, so every instance adds the same numbers in the same order.
        let mut centre = vec![0.0; dim];
        for (_, p) in &known {
            for (c, f) in centre.iter_mut().zip(&p.features) {
                *c += f;
            }
        }
        centre.iter_mut().for_each(|c| *c /= known.len() as f64);
        let stale = self
            .indexes
            .get(&sig)
            .is_none_or(|ix| known.len() >= ix.known + ix.known / 4);
        let build = index.above > 0 && known.len() >= index.above && stale;
        if build {
            let placed: Vec<(usize, Vec<f64>)> = known
                .iter()
                .enumerate()
                .filter(|(_, (_, p))| p.features.len() == dim)
                .map(|(i, (_, p))| (i, centred(&p.features, &centre)))
                .collect();
            let mut graph = knn::Approximate::build(placed, distance);
            if index.ef > 0 {
                graph.ef = index.ef;
            }
            let ix = Indexed {
                known: known.len(),
                names: known.iter().map(|(n, _)| n.to_string()).collect(),
                graph,
                added: BTreeSet::new(),
            };
            self.indexes.insert(sig, ix);
        }
        self.centres.insert(sig, centre);
        build
    }

    /// The `k` nearest known profiles of metric set `sig` to `profile` (feature space), but
    /// `me`'s own: (name, allocation, distance), nearest first, ties by name. Empty until
    /// [`Fleet::prepare`] has run for the set since it last changed.
    pub fn nearest<'a>(
        &'a self,
        sig: u64,
        me: &str,
        profile: &[f64],
        k: usize,
        distance: Distance,
    ) -> Vec<(&'a str, &'a Peer, f64)> {
        let (Some(set), Some(centre)) = (self.sets.get(&sig), self.centres.get(&sig)) else {
            return Vec::new();
        };
        if profile.len() != centre.len() {
            return Vec::new();
        }
        let query = centred(profile, centre);
        let measured = |(n, p): (&'a String, &'a Peer)| {
            if !p.known || n.as_str() == me || p.features.len() != query.len() {
                return None;
            }
            let d = distance.between_centred(&query, &p.features, centre);
            d.is_finite().then_some((n.as_str(), p, d))
        };
        let mut found: Vec<(&str, &Peer, f64)> = match self.indexes.get(&sig) {
            Some(ix) => {
                let mut names: BTreeSet<&String> = ix
                    .graph
                    .candidates(&query, knn::RERANK * k, None)
                    .into_iter()
                    .map(|i| &ix.names[i])
                    .collect();
                names.extend(&ix.added);
                names
                    .into_iter()
                    .filter_map(|n| set.get_key_value(n))
                    .filter_map(measured)
                    .collect()
            }
            None => set.iter().filter_map(measured).collect(),
        };
        // Names are unique in a set: the order is strict, as a full sort's would be.
        knn::keep_nearest(&mut found, k, |a, b| a.2.total_cmp(&b.2).then(a.0.cmp(b.0)));
        found
    }
}

fn centred(v: &[f64], centre: &[f64]) -> Vec<f64> {
    v.iter().zip(centre).map(|(x, c)| x - c).collect()
}

/// A neighbour found: its name, allocation (raw units, per metric) and distance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Near {
    pub name: String,
    pub allocation: Vec<f64>,
    pub distance: f64,
}
