//! The `profiles` rows this instance writes: one per workload whose profile a window of the
//! batch changed, as it enters the view (see [`crate::fleet`]), or an empty one when it retires.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use wfe_contract::columns::{list_f64, list_str, timestamp_column};
use wfe_contract::{Collector, Result, Topic};

use crate::Fingerprint;
use crate::fleet::Peer;
use crate::state::Workload;

impl Fingerprint {
    /// The batch of `seq` is done: the profiles its windows changed go out as `profiles`
    /// rows and enter the view (from the next seq on, see [`crate::fleet`]).
    pub(crate) fn publish(&mut self, out: &mut dyn Collector, seq: Option<i64>) -> Result<()> {
        let published = self.fleet.publish(seq);
        if let Some(rows) = self.profile_rows(&published)? {
            out.emit(Topic::Profiles, rows)?;
        }
        Ok(())
    }

    /// The `profiles` rows of published profiles, in name order.
    fn profile_rows(&self, published: &BTreeMap<String, Peer>) -> Result<Option<RecordBatch>> {
        if published.is_empty() {
            return Ok(None);
        }
        let (mut at, mut name, mut set, mut observed) = (vec![], vec![], vec![], vec![]);
        let (mut features, mut metrics, mut alloc, mut env) = (vec![], vec![], vec![], vec![]);
        for (n, p) in published {
            let wk = self
                .state
                .workloads
                .names
                .find(n)
                .map(|id| &self.state.workloads.items[id as usize]);
            at.push(p.at);
            name.push(n.clone());
            set.push(format!("{:016x}", p.signature));
            observed.push(p.observed_steps as i64);
            features.push(p.features.clone());
            metrics.push(wk.map(|w| w.slots.names.clone()));
            alloc.push(p.allocation.clone());
            env.push(wk.and_then(|w| w.environment.clone()));
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
}
