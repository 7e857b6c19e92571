//! A workload's nearest known profiles: among this instance's own (exact search, or the HNSW
//! index above `index_above` known workloads) and the fleet's peers, in one [`Space`].

use wfe_contract::Context;

use crate::Fingerprint;
use crate::knn;
use crate::space::{Near, Space};
use crate::state::{Index, Workload};

impl Fingerprint {
    /// The nearest known (not cold) workloads of the same metric set, by profile: among this
    /// instance's own and, over Kafka, the fleet's (the `profiles` table).
    pub(crate) fn neighbours(&self, id: usize, space: &Space) -> Vec<Near> {
        if self.cfg.neighbours == 0 {
            return Vec::new();
        }
        let items = &self.state.workloads.items;
        let me = &items[id];
        let Some(query) = space.place(me) else {
            return Vec::new();
        };
        let k = self.cfg.neighbours;
        let own = self.own_neighbours(id, &query, space);
        let peers = self.placed_peers(me.signature, space, items.len());
        let from_peers = knn::exact(
            &query,
            peers.iter().map(|(j, _, _, v)| (*j, v.as_slice())),
            k,
            self.cfg.distance,
        );
        let mut all: Vec<(usize, f64)> = own.into_iter().chain(from_peers).collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all.into_iter()
            .map(|(i, distance)| match i.checked_sub(items.len()) {
                None => Near {
                    name: self.state.workloads.names.names[i].clone(),
                    allocation: items[i].allocation(),
                    distance,
                },
                Some(j) => {
                    let (_, name, peer, _) = &peers[j];
                    Near {
                        name: name.to_string(),
                        allocation: peer.allocation.clone(),
                        distance,
                    }
                }
            })
            .collect()
    }

    /// The nearest known workloads this instance owns.
    fn own_neighbours(&self, id: usize, query: &[f64], space: &Space) -> Vec<(usize, f64)> {
        let items = &self.state.workloads.items;
        let me = &items[id];
        let is_known = |i: usize, w: &Workload| {
            i != id && w.signature == me.signature && w.observed_steps > self.cfg.learning_steps
        };
        // A large fleet: the index proposes candidates, current profiles rank them.
        if let Some(index) = self.indexes.get(&me.signature) {
            let ids = index
                .graph
                .candidates(query, knn::RERANK * self.cfg.neighbours, Some(id));
            let placed: Vec<(usize, Vec<f64>)> = ids
                .into_iter()
                .filter(|&i| is_known(i, &items[i]))
                .filter_map(|i| Some((i, space.place(&items[i])?)))
                .collect();
            return knn::exact(
                query,
                placed.iter().map(|(i, v)| (*i, v.as_slice())),
                self.cfg.neighbours,
                self.cfg.distance,
            );
        }
        let known: Vec<(usize, Vec<f64>)> = items
            .iter()
            .enumerate()
            .filter(|(i, w)| is_known(*i, w))
            .filter_map(|(i, w)| Some((i, space.place(w)?)))
            .collect();
        knn::exact(
            query,
            known.iter().map(|(i, v)| (*i, v.as_slice())),
            self.cfg.neighbours,
            self.cfg.distance,
        )
    }

    /// Builds or rebuilds metric set `sig`'s index when its known workloads are over
    /// `index_above` and have grown by a quarter since the last build, or the basis changed.
    pub(crate) fn refresh_index(&mut self, sig: u64, ctx: &mut Context) {
        if self.cfg.index_above == 0 || self.cfg.neighbours == 0 {
            return;
        }
        let count = self.state.known.get(&sig).copied().unwrap_or(0);
        if count < self.cfg.index_above {
            return;
        }
        let Some(space) = Space::of(&self.state, sig, self.cfg.method) else {
            return;
        };
        let stale = self
            .indexes
            .get(&sig)
            .is_none_or(|ix| ix.version != space.version() || count >= ix.known + ix.known / 4);
        if !stale {
            return;
        }
        // Only a rebuild scans the fleet: at most once per quarter of growth or new basis.
        let items = &self.state.workloads.items;
        let known: Vec<usize> = (0..items.len())
            .filter(|&i| {
                items[i].signature == sig && items[i].observed_steps > self.cfg.learning_steps
            })
            .collect();
        let placed: Vec<(usize, Vec<f64>)> = known
            .iter()
            .filter_map(|&i| Some((i, space.place(&items[i])?)))
            .collect();
        let graph = knn::Approximate::build(placed, self.cfg.distance);
        ctx.count("index.rebuilt", 1);
        let version = space.version();
        self.indexes.insert(
            sig,
            Index {
                version,
                known: count,
                graph,
            },
        );
    }
}
