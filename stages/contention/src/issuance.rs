//! Planning at one issuance: the hosts' risks from every placed workload's newest forecast
//! at or before it (none for one whose newest is older than `history_s`: it has gone),
//! the workloads' correlations from their observed demand before it, and the moves
//! [`wfe_kube::contention::plan`] chooses. A move is kept in the state: the workload counts
//! on its new host from then on (as `wfe contention`'s backtest replays it).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use wfe_kube::contention::hostsum::correlation;
use wfe_kube::contention::plan::{Contention, Fleet, Host, Move, Workload, plan};

use crate::config::ContentionConfig;
use crate::state::State;

/// What one issuance planned.
#[derive(Debug, Default)]
pub struct Planned {
    pub contended: Vec<Contention>,
    pub moves: Vec<Move>,
}

/// Plans at issuance `at`, and records the moves in `state`.
pub fn plan_at(state: &mut State, cfg: &ContentionConfig, hosts: &[Host], at: i64) -> Planned {
    let since = at.saturating_sub(cfg.history_s.saturating_mul(1000));
    let (mut workloads, mut placement) = (BTreeMap::new(), BTreeMap::new());
    // Each workload's history over the window, borrowed (no copy): a planning round reads
    // few of the pairs, each at most once.
    let mut windows: HashMap<&str, &[(i64, f64)]> = HashMap::new();
    for (name, e) in state.workloads.iter_mut() {
        if let Some(h) = e.host(name, cfg) {
            placement.insert(name.clone(), h.to_string());
        }
        // A workload not forecast within the history counts on no host: it has gone.
        let Some((_, demand)) = e.demand_at(at).filter(|(t, _)| *t >= since) else {
            continue;
        };
        let demand = demand
            .range(..=cfg.max_horizon_s)
            .map(|(h, d)| (*h, *d))
            .collect();
        workloads.insert(
            name.clone(),
            Workload {
                environment: e.environment.clone(),
                demand,
            },
        );
        windows.insert(name, e.window(since, at));
    }
    // Workloads of the configured placement not seen yet count on their host with nothing.
    for (w, h) in &cfg.placement {
        placement.entry(w.clone()).or_insert_with(|| h.clone());
    }
    // The planner asks for the same pairs many times, and for few of all the pairs: each is
    // read once, when first asked for.
    let memo: RefCell<HashMap<(String, String), f64>> = RefCell::default();
    let rho = |a: &str, b: &str| -> f64 {
        let key = if a < b { (a, b) } else { (b, a) };
        let k = (key.0.to_string(), key.1.to_string());
        if let Some(r) = memo.borrow().get(&k) {
            return *r;
        }
        let w = |n: &str| windows.get(n).copied().unwrap_or_default();
        let r = correlation(w(key.0), w(key.1), cfg.min_points).unwrap_or(1.0);
        memo.borrow_mut().insert(k, r);
        r
    };
    let fleet = Fleet {
        hosts,
        workloads: &workloads,
        rho: &rho,
    };
    let (contended, moves) = plan(&fleet, &placement, cfg.bound);
    for m in &moves {
        if let Some(e) = state.workloads.get_mut(&m.workload) {
            e.moved = Some((m.to.clone(), e.label_host.clone()));
        }
    }
    Planned { contended, moves }
}
