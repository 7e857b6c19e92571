//! The stage's snapshot: its workloads, and beside them each workload's score level and
//! alert budget ([`crate::level::Level`], [`crate::budget::Budget`]), written per workload (`level/<workload>` in a changelog, a
//! second member in the whole form) so that states written before the level existed still
//! restore; their levels then start afresh at the history's base of zero.

use wfe_contract::Result;
use wfe_contract::norm::Keyed;
use wfe_contract::state::Split;

use crate::Workload;
use crate::budget::Budget;
use crate::level::Level;

/// What a workload's threshold has learned from its scores since it was fitted (written from
/// references: a commit copies nothing).
type Follow = (Level, Budget);
type FollowRef<'a> = (&'a Level, &'a Budget);

/// The changelog map the levels are written under.
const LEVEL: &str = "level";

/// The levels and budgets of the workloads that are scored.
fn levels(workloads: &Keyed<Workload>) -> Vec<(&str, FollowRef<'_>)> {
    workloads
        .iter()
        .filter(|(_, wk)| wk.model.is_some())
        .map(|(name, wk)| (name, (&wk.level, &wk.budget)))
        .collect()
}

/// Gives each restored workload its level and budget (none found: fresh ones).
fn put_levels(workloads: &mut Keyed<Workload>, levels: Vec<(String, Follow)>) {
    for (name, (level, budget)) in levels {
        if let Some(id) = workloads.names.find(&name) {
            let wk = &mut workloads.items[id as usize];
            (wk.level, wk.budget) = (level, budget);
        }
    }
}

/// The whole form: workloads and levels.
pub(crate) fn encode(stage: &str, workloads: &Keyed<Workload>) -> Result<Option<Vec<u8>>> {
    wfe_contract::state::encode(stage, &(workloads, levels(workloads)))
}

/// The whole form, or, written before the levels, the workloads alone.
pub(crate) fn decode(stage: &str, bytes: &[u8]) -> Result<Keyed<Workload>> {
    let (mut workloads, levels) = match wfe_contract::state::decode(stage, bytes) {
        Ok(whole) => whole,
        Err(_) => (wfe_contract::state::decode(stage, bytes)?, Vec::new()),
    };
    put_levels(&mut workloads, levels);
    Ok(workloads)
}

/// The entries: one per workload under `w`, and its level under `level`.
pub(crate) fn split(stage: &str, workloads: &Keyed<Workload>) -> Result<Split> {
    let mut split = Split::new();
    split.put_items(stage, "w", workloads.iter())?;
    let levels = levels(workloads);
    split.put_items(stage, LEVEL, levels.iter().map(|(n, f)| (*n, f)))?;
    Ok(split)
}

/// The workloads and levels from their entries (a state without levels: fresh ones).
pub(crate) fn from_split(stage: &str, split: Split) -> Result<Keyed<Workload>> {
    let mut workloads = Keyed::from_items(split.items(stage, "w")?);
    put_levels(&mut workloads, split.items(stage, LEVEL)?);
    Ok(workloads)
}
