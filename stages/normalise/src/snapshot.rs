//! The stage's state, and its form in a service's changelog: one entry per workload (its
//! position kept, so a restored stage emits in the same order) and the interned metric and
//! label names the workloads share.

use serde::{Deserialize, Serialize};
use wfe_contract::Result;
use wfe_contract::norm::Slots;
use wfe_contract::state::Split;

use super::Workload;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) workloads: Vec<Workload>,
    /// Names interned across the stage's life, so output dictionaries are stable.
    pub(super) workload_names: Slots,
    pub(super) metric_names: Slots,
    pub(super) label_names: Slots,
    /// When to look for idle workloads (not in the snapshot, which keeps its format).
    #[serde(skip)]
    pub(super) sweep: wfe_contract::retire::Sweep,
}

impl State {
    pub(super) fn split(&self, stage: &str) -> Result<Split> {
        let mut split = Split::new();
        split.put_shared(stage, &(&self.metric_names, &self.label_names))?;
        let names = self.workload_names.names.iter().map(String::as_str);
        split.put_items(stage, "w", names.zip(&self.workloads))?;
        Ok(split)
    }

    pub(super) fn from_split(stage: &str, split: Split) -> Result<State> {
        let (metric_names, label_names) = split.shared(stage)?;
        let mut state = State {
            metric_names,
            label_names,
            ..State::default()
        };
        for (name, wk) in split.items(stage, "w")? {
            state.workload_names.slot(&name);
            state.workloads.push(wk);
        }
        Ok(state)
    }
}
