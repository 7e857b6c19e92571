//! A workload's nearest known profiles, searched in the fleet's published view
//! ([`crate::fleet`]): this instance's own and, over Kafka, every other instance's, as they
//! stood before the seq under way (before the batch where the runner gives no seq),
//! compared in the feature space.

use wfe_contract::Context;

use crate::Fingerprint;
use crate::fleet::{Near, Peer};

impl Fingerprint {
    /// The nearest known workloads of workload `id`'s metric set, by profile (its own
    /// excluded): the same answer whichever instance owns which workload.
    pub(crate) fn neighbours(&self, id: usize) -> Vec<Near> {
        if self.cfg.neighbours == 0 {
            return Vec::new();
        }
        let me = &self.state.workloads.items[id];
        let Some(profile) = me.profile() else {
            return Vec::new();
        };
        let name = &self.state.workloads.names.names[id];
        self.fleet
            .nearest(
                me.signature,
                name,
                &profile,
                self.cfg.neighbours,
                self.cfg.distance,
            )
            .into_iter()
            .map(|(name, peer, distance)| Near {
                name: name.to_string(),
                allocation: peer.allocation.clone(),
                distance,
            })
            .collect()
    }

    /// Before windows of metric set `sig` are answered: the set's centre (and, in a large
    /// fleet, its HNSW index) made from the view, once per change of the view.
    pub(crate) fn prepare_search(&mut self, sig: u64, ctx: &mut Context) {
        if self.cfg.neighbours == 0 {
            return;
        }
        if self.fleet.prepare(sig, self.cfg.index(), self.cfg.distance) {
            ctx.count("index.rebuilt", 1);
        }
    }

    /// A window changed workload `id`'s profile: it is published when the batch ends.
    pub(crate) fn stage_profile(&mut self, id: usize) {
        if let Some(peer) = self.published(id) {
            let name = self.state.workloads.names.names[id].clone();
            self.fleet.pending.insert(name, peer);
        }
    }

    /// Workload `id`'s profile as the view holds it (None before its first window). Known
    /// is what its last window counted (`counted_known`), so a restored stage republishes
    /// what it had published.
    fn published(&self, id: usize) -> Option<Peer> {
        let wk = &self.state.workloads.items[id];
        let (features, last) = (wk.profile()?, wk.window.back()?);
        Some(Peer {
            signature: wk.signature,
            at: last.0,
            observed_steps: wk.observed_steps,
            known: wk.counted_known,
            features,
            allocation: wk.allocation(),
        })
    }

    /// After a restore: the view's own part made again from the restored workloads (a
    /// snapshot is taken between batches, when every window's profile is published), those
    /// `staged` at a seq still under way staged again.
    pub(crate) fn republish_own(&mut self, staged: &[(String, i64)]) {
        self.fleet = Default::default();
        let staged: std::collections::HashMap<&str, i64> =
            staged.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        for id in 0..self.state.workloads.items.len() {
            if let Some(peer) = self.published(id) {
                let name = self.state.workloads.names.names[id].clone();
                match staged.get(name.as_str()) {
                    Some(seq) => self.fleet.stage(&name, peer, Some(*seq)),
                    None => self.fleet.put(&name, peer),
                }
            }
        }
    }
}
