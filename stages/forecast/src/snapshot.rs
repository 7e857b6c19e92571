//! The stage's state beside its workloads and spans, written per workload in entries of
//! their own so that states written before each existed still restore (postcard has no
//! optional fields): each series' ETS memos ([`crate::models::EtsMemo`]; `ets/<workload>` in
//! a changelog, a third member in the whole form; without them a series searches its trend
//! again at the next fit) and its baselines' paired errors ([`crate::paired`];
//! `pairs/<workload>`, a fourth member; without them the baselines are judged on every
//! step's errors until pairs build up again).

use wfe_contract::Result;
use wfe_contract::norm::Keyed;
use wfe_domain::spans::AnomalySpans;

use crate::config::ForecastConfig;
use crate::models::EtsMemo;
use crate::paired::Paired;
use crate::series::{Workload, fitted_models};

/// Per workload, per series: the memo of each fitted model.
pub(crate) type Memos = Vec<(String, Vec<Vec<EtsMemo>>)>;

/// The memos of the workloads that have any (a stage without ETS or MSTL writes none).
pub(crate) fn memos(workloads: &Keyed<Workload>) -> Memos {
    workloads
        .iter()
        .filter(|(_, wk)| has_memos(wk))
        .map(|(name, wk)| {
            let per_series = wk.series.iter().map(|s| s.memos.clone()).collect();
            (name.to_string(), per_series)
        })
        .collect()
}

/// Whether the workload has memos to write (one that differs from a fresh one).
pub(crate) fn has_memos(wk: &Workload) -> bool {
    (wk.series.iter().flat_map(|s| &s.memos)).any(|m| *m != EtsMemo::default())
}

/// Whether the workload holds paired errors to write.
pub(crate) fn has_pairs(wk: &Workload) -> bool {
    (wk.series.iter().flat_map(|s| &s.paired)).any(|p| !p.is_empty())
}

/// Gives each restored series its memos (none found: fresh ones, one per fitted model).
pub(crate) fn put_memos(workloads: &mut Keyed<Workload>, memos: Memos, cfg: &ForecastConfig) {
    let fitted = fitted_models(cfg).len();
    for (_, wk) in workloads.iter_mut() {
        for s in &mut wk.series {
            s.memos = vec![EtsMemo::default(); fitted];
        }
    }
    for (name, per_series) in memos {
        let Some(id) = workloads.names.find(&name) else {
            continue;
        };
        let wk = &mut workloads.items[id as usize];
        for (s, m) in wk.series.iter_mut().zip(per_series) {
            if m.len() == fitted {
                s.memos = m;
            }
        }
    }
}

/// Per workload, per series: the paired errors of each horizon.
pub(crate) type Pairs = Vec<(String, Vec<Vec<Paired>>)>;

/// The pairs to write of the workloads that hold any (a stage without fitted models writes
/// none): per workload its name, the workload, and the form written (itself whole, or its
/// rings' tails in a changelog, where a workload whose pairs are all in runs still needs the
/// entry that the runs are put back into).
pub(crate) fn pairs<'a>(
    workloads: impl IntoIterator<Item = (&'a str, &'a Workload, &'a Workload)>,
) -> Pairs {
    workloads
        .into_iter()
        .filter(|(_, wk, _)| has_pairs(wk))
        .map(|(name, _, written)| {
            let per_series = written.series.iter().map(|s| s.paired.clone()).collect();
            (name.to_string(), per_series)
        })
        .collect()
}

/// Gives each restored series its pairs (none found: none, made as they are filed).
pub(crate) fn put_pairs(workloads: &mut Keyed<Workload>, pairs: Pairs) {
    for (_, wk) in workloads.iter_mut() {
        wk.series.iter_mut().for_each(|s| s.paired.clear());
    }
    for (name, per_series) in pairs {
        let Some(id) = workloads.names.find(&name) else {
            continue;
        };
        let wk = &mut workloads.items[id as usize];
        for (s, p) in wk.series.iter_mut().zip(per_series) {
            s.paired = p;
        }
    }
}

/// The whole form: workloads, spans, memos and pairs; or, written before the pairs, the
/// first three; before the memos, the first two.
pub(crate) fn decode_whole(
    stage: &str,
    bytes: &[u8],
) -> Result<(Keyed<Workload>, AnomalySpans, Memos, Pairs)> {
    use wfe_contract::state::decode;
    if let Ok(whole) = decode(stage, bytes) {
        return Ok(whole);
    }
    if let Ok((workloads, spans, memos)) = decode(stage, bytes) {
        return Ok((workloads, spans, memos, Vec::new()));
    }
    let (workloads, spans) = decode(stage, bytes)?;
    Ok((workloads, spans, Vec::new(), Vec::new()))
}
