//! The `profiles` rows this instance writes (one per workload whose profile a window
//! changed, or an empty one when it retires), and the fleet's peers placed in a basis for
//! neighbour search (see [`crate::fleet`]).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::{list_f64, list_str, timestamp_column};
use wfe_contract::{Result, Topic};

use crate::Fingerprint;
use crate::fleet::Peer;
use crate::space::Space;
use crate::state::Workload;

impl Fingerprint {
    /// The `profiles` rows of workloads `ids` (each once, in the order given).
    pub(crate) fn profile_rows(&self, ids: &[usize]) -> Result<Option<RecordBatch>> {
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
    pub(crate) fn retired_rows(gone: &[(String, Workload)]) -> Result<Option<RecordBatch>> {
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
    pub(crate) fn placed_peers(
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
