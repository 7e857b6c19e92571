//! The space a row's vector and `profile` are in: the PCA basis or the learned embedding of
//! the workload's metric set, measured from the fleet's centre (what `wfe similar` and the
//! leave-one-out evaluation compare). Neighbours are searched elsewhere, by features
//! ([`crate::fleet`]), since every instance has a basis of its own.

use crate::config::Method;
use crate::reduce;
use crate::state::{State, Workload};

/// Where rows of one metric set are placed, measured from the fleet's centre: the PCA basis
/// of `stats-pca`, or the embedding of `lstm`.
pub(crate) enum Space<'a> {
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
    pub(crate) fn of(state: &'a State, sig: u64, method: Method) -> Option<Self> {
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

    /// The `model_version` of rows made in this space.
    pub(crate) fn label(&self, sig: u64) -> String {
        match self {
            Space::Pca { version, .. } => format!("{sig:016x}.{version}"),
            Space::Learned { version, .. } => format!("{sig:016x}.lstm{version}"),
        }
    }

    /// A workload's profile in this space. A PCA rotation is cached at each of its windows;
    /// one not updated since a refit is rotated here (refits are a handful in a fleet's life).
    pub(crate) fn place(&self, w: &Workload) -> Option<Vec<f64>> {
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
