//! The actuator's state, and its form in a service's changelog: per workload the ids acted on
//! (`applied/<workload>`) and the fleet in place (`fleet/<workload>`), and the interruption
//! bookkeeping the workloads share.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wfe_contract::Result;
use wfe_contract::state::{Split, StageState};

use crate::applied::Applied;
use crate::fleet::Fleet;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    /// Ids of decisions and notices acted on, for `remember_s` of event time.
    pub(crate) applied: Applied,
    pub(crate) fleets: HashMap<String, Fleet>,
    /// Instances replaced after a notice (id -> workload): EC2 reclaims them, describe
    /// does not count them while they still run.
    #[serde(default)]
    pub(crate) interrupted: HashMap<String, String>,
    /// Recent interruption warnings (instance type, event ms, instance), for scarcity.
    #[serde(default)]
    pub(crate) warnings: Vec<(String, i64, String)>,
}

impl StageState for State {
    fn split(&self, stage: &str) -> Result<Split> {
        let mut split = Split::new();
        split.put_shared(stage, &(&self.interrupted, &self.warnings))?;
        self.applied.put_into(&mut split, stage, "applied")?;
        let fleets = self.fleets.iter().map(|(w, f)| (w.as_str(), f));
        split.put_unordered(stage, "fleet", fleets)?;
        Ok(split)
    }

    fn from_split(stage: &str, split: Split) -> Result<State> {
        let (interrupted, warnings) = split.shared(stage)?;
        Ok(State {
            applied: Applied::from_split(&split, stage, "applied")?,
            fleets: split.items(stage, "fleet")?.into_iter().collect(),
            interrupted,
            warnings,
        })
    }
}
