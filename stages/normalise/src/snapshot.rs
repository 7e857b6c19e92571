//! The stage's state, and its form in a service's changelog: one entry per workload (its
//! position kept, so a restored stage emits in the same order), the history a learning
//! workload holds in runs of its own, and the interned metric and label names the workloads
//! share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wfe_contract::Result;
use wfe_contract::norm::Slots;
use wfe_contract::state::{Split, StageState};

use crate::held::DoneStep;
use crate::workload::Workload;

/// Steps per run of a learning workload's held history in the changelog. The history only
/// grows until the scaler is fitted (`learn_steps`: days of steps), so whole runs stay as they
/// are and a commit writes the run that grew, not the whole history again (a fleet of
/// workloads without a `split` label otherwise rewrote its growing history at every commit).
const HELD_RUN: usize = 64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) workloads: Vec<Workload>,
    /// Names interned across the stage's life, so output dictionaries are stable.
    pub(super) workload_names: Slots,
    pub(super) metric_names: Slots,
    pub(super) label_names: Slots,
    /// When to look for idle workloads (not in the snapshot, which keeps its format).
    #[serde(skip)]
    pub(super) sweep: wfe_domain::retire::Sweep,
}

impl StageState for State {
    fn split(&self, stage: &str) -> Result<Split> {
        let mut split = Split::new();
        split.put_shared(stage, &(&self.metric_names, &self.label_names))?;
        let names = self.workload_names.names.iter().map(String::as_str);
        let bare: Vec<Workload> = self.workloads.iter().map(Workload::without_held).collect();
        split.put_items(stage, "w", names.clone().zip(&bare))?;
        let runs: Vec<(String, Vec<DoneStep>)> = names
            .zip(&self.workloads)
            .flat_map(|(name, wk)| {
                (wk.held.runs(HELD_RUN).into_iter().enumerate())
                    .map(move |(i, run)| (format!("{name}:{i}"), run))
            })
            .collect();
        // Unordered: a workload's new run must not move every later workload's runs.
        split.put_unordered(stage, "held", runs.iter().map(|(k, run)| (k.as_str(), run)))?;
        Ok(split)
    }

    fn from_split(stage: &str, split: Split) -> Result<State> {
        let (metric_names, label_names) = split.shared(stage)?;
        let mut state = State {
            metric_names,
            label_names,
            ..State::default()
        };
        let mut runs = held_runs(stage, split.items(stage, "held")?)?;
        for (name, mut wk) in split.items::<Workload>(stage, "w")? {
            // A workload written whole (before held runs) keeps the history in its entry.
            if let Some(held) = runs.remove(&name) {
                wk.held = held.into_values().flatten().collect::<Vec<_>>().into();
            }
            state.workload_names.slot(&name);
            state.workloads.push(wk);
        }
        if let Some(name) = runs.keys().next() {
            return Err(wfe_contract::Error::state(
                stage,
                format!("held history of `{name}`, a workload the state does not have"),
            ));
        }
        Ok(state)
    }
}

impl Workload {
    /// The workload without its held history (which the changelog keeps in runs).
    fn without_held(&self) -> Workload {
        Workload {
            metrics: self.metrics.clone(),
            slot_of: self.slot_of.clone(),
            step_ms: self.step_ms,
            first_ts: self.first_ts.clone(),
            early: self.early.clone(),
            open: self.open.clone(),
            emitted_until: self.emitted_until,
            last: self.last.clone(),
            learning: self.learning,
            learned_steps: self.learned_steps,
            held: Default::default(),
            scalers: self.scalers.clone(),
            spare: Vec::new(),
        }
    }
}

/// Held runs by workload and run number, from entries named `<workload>:<run>`.
fn held_runs(
    stage: &str,
    items: Vec<(String, Vec<DoneStep>)>,
) -> Result<BTreeMap<String, BTreeMap<usize, Vec<DoneStep>>>> {
    let mut out: BTreeMap<String, BTreeMap<usize, Vec<DoneStep>>> = BTreeMap::new();
    for (key, run) in items {
        let parsed = key
            .rsplit_once(':')
            .and_then(|(name, i)| Some((name, i.parse().ok()?)));
        let Some((name, i)) = parsed else {
            return Err(wfe_contract::Error::state(
                stage,
                format!("held run `{key}` is not `<workload>:<run>`"),
            ));
        };
        out.entry(name.to_string()).or_default().insert(i, run);
    }
    Ok(out)
}
