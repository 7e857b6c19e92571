//! The stage's snapshot: its workloads, and beside them each workload's score level and
//! alert budget ([`crate::level::Level`], [`crate::budget::Budget`]), written per workload (`level/<workload>` in a changelog, a
//! second member in the whole form) so that states written before the level existed still
//! restore; their levels then start afresh at the history's base of zero. A workload still
//! learning has its step under `step/<workload>` (a third member), which its fit places the
//! history in time with; a state written before it has none, and such a workload is fitted at
//! its next step.

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

/// The changelog maps the levels and the learning workloads' steps are written under.
const LEVEL: &str = "level";
const STEP: &str = "step";

/// The steps of the workloads still learning.
fn steps(workloads: &Keyed<Workload>) -> Vec<(&str, i64)> {
    workloads
        .iter()
        .filter(|(_, wk)| wk.model.is_none() && wk.step_ms > 0)
        .map(|(name, wk)| (name, wk.step_ms))
        .collect()
}

fn put_steps(workloads: &mut Keyed<Workload>, steps: Vec<(String, i64)>) {
    for (name, step_ms) in steps {
        if let Some(id) = workloads.names.find(&name) {
            workloads.items[id as usize].step_ms = step_ms;
        }
    }
}

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

/// The whole form: workloads, levels and learning steps.
pub(crate) fn encode(stage: &str, workloads: &Keyed<Workload>) -> Result<Option<Vec<u8>>> {
    let whole = (workloads, levels(workloads), steps(workloads));
    wfe_contract::state::encode(stage, &whole)
}

/// The whole form, or, written before the steps, the first two members; before the levels,
/// the workloads alone.
pub(crate) fn decode(stage: &str, bytes: &[u8]) -> Result<Keyed<Workload>> {
    use wfe_contract::state::decode;
    let (mut workloads, levels, steps) = if let Ok(whole) = decode(stage, bytes) {
        whole
    } else if let Ok((workloads, levels)) = decode(stage, bytes) {
        (workloads, levels, Vec::new())
    } else {
        (decode(stage, bytes)?, Vec::new(), Vec::new())
    };
    put_levels(&mut workloads, levels);
    put_steps(&mut workloads, steps);
    Ok(workloads)
}

/// The entries: one per workload under `w`, and its level under `level`.
pub(crate) fn split(stage: &str, workloads: &Keyed<Workload>) -> Result<Split> {
    let mut split = Split::new();
    split.put_items(stage, "w", workloads.iter())?;
    let levels = levels(workloads);
    split.put_items(stage, LEVEL, levels.iter().map(|(n, f)| (*n, f)))?;
    let steps = steps(workloads);
    split.put_items(stage, STEP, steps.iter().map(|(n, s)| (*n, s)))?;
    Ok(split)
}

/// The workloads and levels from their entries (a state without levels: fresh ones).
pub(crate) fn from_split(stage: &str, split: Split) -> Result<Keyed<Workload>> {
    let mut workloads = Keyed::from_items(split.items(stage, "w")?);
    put_levels(&mut workloads, split.items(stage, LEVEL)?);
    put_steps(&mut workloads, split.items(stage, STEP)?);
    Ok(workloads)
}
