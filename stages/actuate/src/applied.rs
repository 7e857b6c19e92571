//! The ids of decisions (and notices) already acted on, remembered per workload for a window
//! of event time.
//!
//! A replayed decision must never act twice, so its id is remembered; but a set of every id
//! ever seen grows for as long as the actuator runs. Ids are kept per workload with their
//! event time and forgotten once they fall `window_ms` behind that workload's newest one.
//! A decision that old is *stale*: it is dropped without acting ([`Applied::is_stale`]), so a
//! forgotten id can never come back as a second action, and acting on week-old capacity
//! plans is wrong anyway. The window is per workload because workloads are not aligned in
//! event time: one workload's decisions can trail another's by weeks in a replay (normalise
//! holds a workload's history until its scaler is learned).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wfe_contract::Result;
use wfe_contract::state::Split;

/// Inserts into one workload between two sweeps of its expired ids.
const SWEEP_EVERY: usize = 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    workloads: HashMap<String, Remembered>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Remembered {
    ids: HashMap<String, i64>,
    newest: i64,
    /// Inserts since the last sweep: bookkeeping, not part of what is remembered.
    since_sweep: usize,
}

/// Two records are equal when they remember the same ids (a sweep's timing aside).
impl PartialEq for Applied {
    fn eq(&self, other: &Self) -> bool {
        self.workloads.len() == other.workloads.len()
            && self.workloads.iter().all(|(w, r)| {
                other
                    .workloads
                    .get(w)
                    .is_some_and(|o| o.ids == r.ids && o.newest == r.newest)
            })
    }
}

impl Applied {
    /// Adds one entry per workload to a split state (map `map`).
    pub fn put_into(&self, split: &mut Split, stage: &str, map: &str) -> Result<()> {
        split.put_unordered(
            stage,
            map,
            self.workloads.iter().map(|(w, r)| (w.as_str(), r)),
        )
    }

    /// What [`Applied::put_into`] added.
    pub fn from_split(split: &Split, stage: &str, map: &str) -> Result<Self> {
        Ok(Self {
            workloads: split.items(stage, map)?.into_iter().collect(),
        })
    }

    pub fn contains(&self, workload: &str, id: &str) -> bool {
        self.workloads
            .get(workload)
            .is_some_and(|r| r.ids.contains_key(id))
    }

    /// Whether an id of `workload` at event time `time_ms` is too old to act on: behind the
    /// workload's window.
    pub fn is_stale(&self, workload: &str, time_ms: i64, window_ms: i64) -> bool {
        self.workloads
            .get(workload)
            .is_some_and(|r| time_ms < r.newest.saturating_sub(window_ms))
    }

    /// Remembers `id` of `workload` (acted on at event time `time_ms`), forgetting what fell
    /// behind its window.
    pub fn insert(&mut self, workload: &str, id: String, time_ms: i64, window_ms: i64) {
        let r = match self.workloads.get_mut(workload) {
            Some(r) => r,
            None => self
                .workloads
                .entry(workload.to_string())
                .or_insert_with(|| Remembered {
                    newest: time_ms,
                    ..Default::default()
                }),
        };
        r.ids.insert(id, time_ms);
        r.newest = r.newest.max(time_ms);
        r.since_sweep += 1;
        if r.since_sweep >= SWEEP_EVERY {
            r.since_sweep = 0;
            let oldest = r.newest.saturating_sub(window_ms);
            r.ids.retain(|_, t| *t >= oldest);
        }
    }

    /// Ids remembered (for the bound's test).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.workloads.values().map(|r| r.ids.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const WEEK: i64 = 7 * 24 * 60 * MIN;

    #[test]
    fn a_month_of_decisions_keeps_about_a_week_of_ids() {
        let mut a = Applied::default();
        for i in 0..(30 * 24 * 60) {
            a.insert("w", format!("d{i}"), i * MIN, WEEK);
        }
        let week = (WEEK / MIN) as usize;
        assert!(a.len() <= week + 1 + SWEEP_EVERY, "{} ids", a.len());
        assert!(a.len() > week, "{} ids", a.len());
        // What is forgotten is stale: dropped unacted, never acted on twice.
        let last = 30 * 24 * 60 - 1;
        assert!(!a.contains("w", "d0"));
        assert!(a.is_stale("w", 0, WEEK));
        assert!(a.contains("w", &format!("d{last}")));
        assert!(!a.is_stale("w", (last - 60) * MIN, WEEK));
    }

    #[test]
    fn each_workload_has_its_own_window() {
        let mut a = Applied::default();
        a.insert("ahead", "x".into(), 40 * 24 * 60 * MIN, WEEK);
        // A workload weeks behind another in event time is not stale for it.
        assert!(!a.is_stale("behind", 0, WEEK));
        a.insert("behind", "y".into(), 0, WEEK);
        assert!(!a.is_stale("behind", 0, WEEK));
        assert!(a.contains("behind", "y") && !a.contains("ahead", "y"));
    }
}
