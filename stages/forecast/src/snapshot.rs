//! The stage's state beside its workloads and spans: each series' ETS memos
//! ([`crate::models::EtsMemo`]), written per workload (`ets/<workload>` in a changelog, a third
//! member in the whole form) so that states written before the memos existed still restore;
//! their series then search their trend at the next fit.

use wfe_contract::Result;
use wfe_contract::norm::Keyed;
use wfe_domain::spans::AnomalySpans;

use crate::config::ForecastConfig;
use crate::models::EtsMemo;
use crate::series::{Workload, fitted_models};

/// Per workload, per series: the memo of each fitted model.
pub(crate) type Memos = Vec<(String, Vec<Vec<EtsMemo>>)>;

/// The memos of the workloads that have any (a stage without ETS or MSTL writes none).
pub(crate) fn memos(workloads: &Keyed<Workload>) -> Memos {
    workloads
        .iter()
        .filter(|(_, wk)| {
            (wk.series.iter().flat_map(|s| &s.memos)).any(|m| *m != EtsMemo::default())
        })
        .map(|(name, wk)| {
            let per_series = wk.series.iter().map(|s| s.memos.clone()).collect();
            (name.to_string(), per_series)
        })
        .collect()
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

/// The whole form: workloads, spans and memos; or, written before the memos, the first two.
pub(crate) fn decode_whole(
    stage: &str,
    bytes: &[u8],
) -> Result<(Keyed<Workload>, AnomalySpans, Memos)> {
    match wfe_contract::state::decode(stage, bytes) {
        Ok(whole) => Ok(whole),
        Err(_) => {
            let (workloads, spans) = wfe_contract::state::decode(stage, bytes)?;
            Ok((workloads, spans, Vec::new()))
        }
    }
}
