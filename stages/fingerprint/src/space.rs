//! Where a workload's neighbours are searched: the space profiles of one metric set are
//! compared in (the PCA basis or the learned embedding, measured from the fleet's centre),
//! exact search or the HNSW index above `index_above` known workloads.

use super::*;

/// Where profiles of one metric set are compared, measured from the fleet's centre: the PCA
/// basis of `stats-pca`, or the embedding of `lstm`.
pub(super) enum Space<'a> {
    Pca {
        model: &'a reduce::Pca,
        version: u32,
        /// The centre, rotated into the basis.
        centre: Vec<f64>,
    },
    Learned {
        version: u32,
        centre: Vec<f64>,
    },
}

impl<'a> Space<'a> {
    pub(super) fn of(state: &'a State, sig: u64, method: Method) -> Option<Self> {
        match method {
            Method::StatsPca => {
                let r = state.reducers.get(&sig)?;
                let model = r.model.as_ref()?;
                Some(Space::Pca {
                    model,
                    version: r.version,
                    centre: model.rotate(&r.centre()),
                })
            }
            Method::Lstm => {
                let e = state.embedders.get(&sig)?;
                e.model.as_ref()?;
                Some(Space::Learned {
                    version: e.version,
                    centre: e.centre(),
                })
            }
        }
    }

    pub(super) fn version(&self) -> u32 {
        match self {
            Space::Pca { version, .. } | Space::Learned { version, .. } => *version,
        }
    }

    /// The `model_version` of rows made in this space.
    pub(super) fn label(&self, sig: u64) -> String {
        match self {
            Space::Pca { version, .. } => format!("{sig:016x}.{version}"),
            Space::Learned { version, .. } => format!("{sig:016x}.lstm{version}"),
        }
    }

    /// A workload's profile in this space. A PCA rotation is cached at each of its windows;
    /// one not updated since a refit is rotated here (refits are a handful in a fleet's life).
    pub(super) fn place(&self, w: &Workload) -> Option<Vec<f64>> {
        let (mut v, centre) = match self {
            Space::Pca {
                model,
                version,
                centre,
            } => {
                let v = match &w.projected {
                    Some((v, p)) if v == version => p.clone(),
                    _ => model.rotate(&w.profile()?),
                };
                (v, centre)
            }
            Space::Learned { centre, .. } => {
                if w.embeds == 0 {
                    return None;
                }
                let n = w.embeds as f64;
                (w.embed_sum.iter().map(|s| s / n).collect(), centre)
            }
        };
        for (x, c) in v.iter_mut().zip(centre) {
            *x -= c;
        }
        Some(v)
    }
}

/// A neighbour found: its name, allocation (raw units, per metric) and distance.
pub(super) struct Near {
    pub name: String,
    pub allocation: Vec<f64>,
    pub distance: f64,
}

impl Fingerprint {
    /// The nearest known (not cold) workloads of the same metric set, by profile: among this
    /// instance's own and, over Kafka, the fleet's (the `profiles` table).
    pub(super) fn neighbours(&self, id: usize, space: &Space) -> Vec<Near> {
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
    pub(super) fn refresh_index(&mut self, sig: u64, ctx: &mut Context) {
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
