//! Which hosts are contended, and the moves that relieve them.
//!
//! A host is contended when the chance that its workloads' total passes its capacity is
//! above `bound` at some horizon (the largest chance over the horizons is its risk). For
//! each contended host, worst first, moves are chosen one at a time:
//! - a move goes to a host of the workload's environment (either unset matches) whose risk
//!   with the workload added stays within the bound;
//! - if one move can bring the host within the bound, the smallest workload that can (the
//!   least to migrate), to the destination left with the lowest risk;
//! - else the move that lowers the host's risk most, and the next round goes on from there;
//! - when no move is possible the host stays contended and says so.
//!
//! Greedy, not an optimum over all sets of moves: a fleet's hosts and workloads make that
//! search combinatorial, and the rule above takes the fewest moves on the cases that matter
//! (one workload too many) while never making a destination contended.

use std::collections::BTreeMap;

use serde::Serialize;

use super::hostsum::{Demand, exceed, total};

/// A host: what it can serve (in the resource's unit) and its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub capacity: f64,
    pub environment: Option<String>,
}

/// A workload: its environment and its demand per horizon (seconds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    pub environment: Option<String>,
    pub demand: BTreeMap<i64, Demand>,
}

/// What the planner reads.
pub struct Fleet<'a> {
    pub hosts: &'a [Host],
    pub workloads: &'a BTreeMap<String, Workload>,
    /// The correlation of two workloads' demand.
    pub rho: &'a dyn Fn(&str, &str) -> f64,
}

/// A host over the bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contention {
    pub host: String,
    /// The largest chance over the horizons that its workloads pass its capacity, and where.
    pub risk: f64,
    pub horizon_s: i64,
    /// Its risk after the moves planned.
    pub risk_after: f64,
    /// No move could bring it within the bound.
    pub unresolved: bool,
}

/// One migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub workload: String,
    pub from: String,
    pub to: String,
    /// The source's risk before and after, the destination's after.
    pub from_risk: f64,
    pub from_risk_after: f64,
    pub to_risk_after: f64,
    pub reason: String,
}

impl Fleet<'_> {
    /// The risk of `host` holding `members`, and the horizon where it is largest.
    pub fn risk(&self, host: &Host, members: &[&str]) -> (f64, i64) {
        let horizons: std::collections::BTreeSet<i64> = members
            .iter()
            .filter_map(|w| self.workloads.get(*w))
            .flat_map(|w| w.demand.keys().copied())
            .collect();
        let mut worst = (0.0, horizons.first().copied().unwrap_or(0));
        for h in horizons {
            let (names, demands): (Vec<&str>, Vec<Demand>) = members
                .iter()
                .filter_map(|w| Some((*w, *self.workloads.get(*w)?.demand.get(&h)?)))
                .unzip();
            let sum = total(&demands, |i, j| (self.rho)(names[i], names[j]));
            let r = exceed(sum, host.capacity);
            if r > worst.0 {
                worst = (r, h);
            }
        }
        worst
    }

    fn fits(&self, w: &str, host: &Host) -> bool {
        let env = self.workloads.get(w).and_then(|w| w.environment.as_ref());
        match (env, &host.environment) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// The contended hosts of `placement` (workload -> host) and the moves that relieve them.
pub fn plan(
    fleet: &Fleet,
    placement: &BTreeMap<String, String>,
    bound: f64,
) -> (Vec<Contention>, Vec<Move>) {
    let mut on: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (w, h) in placement {
        on.entry(h.as_str()).or_default().push(w.as_str());
    }
    let mut contended: Vec<(f64, i64, &Host)> = fleet
        .hosts
        .iter()
        .map(|h| {
            let (r, at) = fleet.risk(h, &members(&on, &h.name));
            (r, at, h)
        })
        .filter(|(r, _, _)| *r > bound)
        .collect();
    contended.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.name.cmp(&b.2.name)));
    let (mut found, mut moves) = (Vec::new(), Vec::new());
    for (risk, horizon_s, host) in contended {
        let mut now = fleet.risk(host, &members(&on, &host.name)).0;
        let rounds = members(&on, &host.name).len();
        for _ in 0..rounds {
            if now <= bound {
                break;
            }
            let Some(m) = best_move(fleet, &on, host, now, bound) else {
                break;
            };
            if let Some(v) = on.get_mut(host.name.as_str()) {
                v.retain(|w| *w != m.workload);
            }
            let w = placement
                .get_key_value(&m.workload)
                .map(|(k, _)| k.as_str());
            let to = fleet
                .hosts
                .iter()
                .find(|h| h.name == m.to)
                .map(|h| h.name.as_str());
            if let (Some(w), Some(to)) = (w, to) {
                on.entry(to).or_default().push(w);
            }
            now = m.from_risk_after;
            moves.push(m);
        }
        found.push(Contention {
            host: host.name.clone(),
            risk,
            horizon_s,
            risk_after: now,
            unresolved: now > bound,
        });
    }
    (found, moves)
}

/// The workloads on `host` now.
fn members<'a>(on: &BTreeMap<&'a str, Vec<&'a str>>, host: &str) -> Vec<&'a str> {
    on.get(host).cloned().unwrap_or_default()
}

/// The next move off `host` (whose risk is `now`), by the rules in the module's doc.
fn best_move(
    fleet: &Fleet,
    on: &BTreeMap<&str, Vec<&str>>,
    host: &Host,
    now: f64,
    bound: f64,
) -> Option<Move> {
    let here = members(on, &host.name);
    let size = |w: &str| -> f64 {
        fleet.workloads.get(w).map_or(0.0, |w| {
            w.demand.values().map(|d| d.mean).fold(0.0, f64::max)
        })
    };
    // (fixes the host, size, the host's risk after, the destination's risk after, w, dest)
    let mut options = Vec::new();
    for &w in &here {
        let rest: Vec<&str> = here.iter().copied().filter(|x| *x != w).collect();
        let after = fleet.risk(host, &rest).0;
        for d in fleet
            .hosts
            .iter()
            .filter(|d| d.name != host.name && fleet.fits(w, d))
        {
            let mut there = members(on, &d.name);
            there.push(w);
            let d_after = fleet.risk(d, &there).0;
            if d_after <= bound {
                options.push((after <= bound, size(w), after, d_after, w, d));
            }
        }
    }
    let fixes = options.iter().any(|o| o.0);
    let best = options
        .into_iter()
        .filter(|o| o.0 == fixes)
        .min_by(|a, b| {
            if fixes {
                a.1.total_cmp(&b.1).then(a.3.total_cmp(&b.3))
            } else {
                a.2.total_cmp(&b.2).then(a.1.total_cmp(&b.1))
            }
        })?;
    let (_, _, after, d_after, w, d) = best;
    Some(Move {
        workload: w.to_string(),
        from: host.name.clone(),
        to: d.name.clone(),
        from_risk: now,
        from_risk_after: after,
        to_risk_after: d_after,
        reason: format!(
            "{}: a {:.3} chance of passing its capacity {:.2} (bound {bound}); with {w} on {} \
             instead: {:.3} on {}, {:.3} on {}",
            host.name, now, host.capacity, d.name, after, host.name, d_after, d.name
        ),
    })
}

#[cfg(test)]
mod tests;
