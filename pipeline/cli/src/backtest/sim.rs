//! The fleet simulation: launches and their start delay, billing from launch to
//! termination, seeded spot interruptions, and the figures.

use std::collections::BTreeMap;

use wfe_contract::Result;
use wfe_domain::stats::SplitMix;
use wfe_tier_select::Catalog;

use super::policies::{Plan, count_for};
use super::{BacktestConfig, Demand, Figures};

/// One instance: its type (catalog index), market, and life.
#[derive(Debug, Clone)]
struct Inst {
    ty: usize,
    spot: bool,
    launched: i64,
    ready: i64,
    /// When it stops serving and billing (terminated, or interrupted); `None` while it runs.
    end: Option<i64>,
}

/// The seed of an entity's interruptions: the configured seed and the entity's name.
fn seed(cfg: &BacktestConfig, entity: &str) -> u64 {
    entity
        .bytes()
        .fold(cfg.seed ^ 0xCBF2_9CE4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
        })
}

fn price(catalog: &Catalog, i: &Inst) -> f64 {
    let inst = &catalog.instance[i.ty];
    if i.spot {
        inst.spot_price.unwrap_or(inst.on_demand_price)
    } else {
        inst.on_demand_price
    }
}

/// Running sums of the figures over the steps.
struct Tally {
    under_ms: i64,
    /// Per clock hour: (under-provisioned ms, simulated ms).
    hours: BTreeMap<i64, (i64, i64)>,
    provisioned: Vec<f64>,
    used: Vec<f64>,
}

impl Tally {
    fn new(resources: usize) -> Self {
        Self {
            under_ms: 0,
            hours: BTreeMap::new(),
            provisioned: vec![0.0; resources],
            used: vec![0.0; resources],
        }
    }

    fn step(&mut self, t: i64, step_ms: i64, demand: &[f64], capacity: &[f64]) {
        let short = demand.iter().zip(capacity).any(|(d, c)| *d > c + 1e-9);
        let hour = self.hours.entry(t.div_euclid(3_600_000)).or_default();
        hour.1 += step_ms;
        if short {
            self.under_ms += step_ms;
            hour.0 += step_ms;
        }
        for (r, (d, c)) in demand.iter().zip(capacity).enumerate() {
            self.provisioned[r] += c;
            self.used[r] += d.min(*c);
        }
    }

    fn figures(&self, cost: f64, changes: u64, allowance: f64) -> Figures {
        let slack: Vec<f64> = self
            .provisioned
            .iter()
            .zip(&self.used)
            .map(|(p, u)| if *p > 0.0 { 1.0 - u / p } else { 0.0 })
            .collect();
        Figures {
            cost,
            slack: slack.iter().sum::<f64>() / slack.len().max(1) as f64,
            underprovisioned_minutes: self.under_ms as f64 / 60_000.0,
            sla_violations: self
                .hours
                .values()
                .filter(|(u, total)| *u as f64 > allowance * *total as f64)
                .count() as u64,
            changes,
        }
    }
}

/// Capacity in service at `t` per resource of `d`.
fn capacity(catalog: &Catalog, d: &Demand, fleet: &[Inst], t: i64) -> Vec<f64> {
    d.resources
        .iter()
        .map(|(_, unit)| {
            fleet
                .iter()
                .filter(|i| i.ready <= t && i.end.is_none_or(|e| e > t))
                .filter_map(|i| {
                    let inst = &catalog.instance[i.ty];
                    Some(inst.capacity(unit)? * inst.performance)
                })
                .sum()
        })
        .collect()
}

/// Runs `plan` over the test split.
pub fn simulate(
    d: &Demand,
    catalog: &Catalog,
    cfg: &BacktestConfig,
    plan: &Plan,
) -> Result<Figures> {
    let delay = cfg.start_delay_s * 1000;
    let notice = cfg.notice_s * 1000;
    let step_h = d.step_ms as f64 / 3.6e6;
    let end_of_test = d.times.last().map_or(0, |t| t + d.step_ms);
    let mut rng = SplitMix(seed(cfg, &d.entity));
    let mut fleet: Vec<Inst> = Vec::new();
    let mut cost = 0.0;
    let mut changes = 0u64;
    let mut tally = Tally::new(d.resources.len());
    let mut next = 0;
    for (k, (&t, demand)) in d.times.iter().zip(&d.values).enumerate() {
        while let Some((at, want)) = plan.get(next).filter(|(at, _)| *at <= k) {
            // The first fleet is in place when the test split starts.
            let warm = *at == 0 && next == 0;
            let ready = if warm { t } else { t + delay };
            apply(&mut fleet, want, t, ready);
            changes += u64::from(!warm);
            next += 1;
        }
        // Spot interruptions: a notice, the end `notice` later, and an on-demand replacement
        // launched at once (the next change of the plan puts the mix back).
        let mut replacements = Vec::new();
        for i in fleet.iter_mut().filter(|i| i.spot && i.end.is_none()) {
            let rate = catalog.instance[i.ty].interruption_rate;
            let p = 1.0 - (1.0 - rate).powf(step_h);
            if rng.unit() < p {
                i.end = Some(t + notice);
                replacements.push(Inst {
                    ty: i.ty,
                    spot: false,
                    launched: t,
                    ready: t + delay,
                    end: None,
                });
            }
        }
        fleet.extend(replacements);
        let cap = capacity(catalog, d, &fleet, t);
        tally.step(t, d.step_ms, demand, &cap);
        // Bill and drop the instances that have ended by now.
        fleet.retain(|i| match i.end {
            Some(e) if e <= t => {
                cost += price(catalog, i) * (e - i.launched).max(0) as f64 / 3.6e6;
                false
            }
            _ => true,
        });
    }
    for i in &fleet {
        let e = i.end.unwrap_or(end_of_test).min(end_of_test);
        cost += price(catalog, i) * (e - i.launched).max(0) as f64 / 3.6e6;
    }
    Ok(tally.figures(cost, changes, cfg.sla_allowance))
}

/// Puts `want` in place at `t`: launches what is missing of each group (serving from
/// `ready`), and ends what is too much, newest first, and every group `want` does not name.
/// Make before break: when the change launches anything, what it ends serves until the
/// launches do (as the actuator launches before it terminates).
fn apply(fleet: &mut Vec<Inst>, want: &[(usize, bool, i64)], t: i64, ready: i64) {
    let mut groups: Vec<(usize, bool, i64)> = want.to_vec();
    for i in fleet.iter().filter(|i| i.end.is_none()) {
        if !groups.iter().any(|g| g.0 == i.ty && g.1 == i.spot) {
            groups.push((i.ty, i.spot, 0));
        }
    }
    let live = |fleet: &Vec<Inst>, ty: usize, spot: bool| -> Vec<usize> {
        (0..fleet.len())
            .filter(|&j| fleet[j].ty == ty && fleet[j].spot == spot && fleet[j].end.is_none())
            .collect()
    };
    let launches = groups
        .iter()
        .any(|&(ty, spot, n)| (live(fleet, ty, spot).len() as i64) < n);
    let end = if launches { ready } else { t };
    for (ty, spot, n) in groups {
        let mut have = live(fleet, ty, spot);
        let count = have.len() as i64;
        if count < n {
            for _ in count..n {
                fleet.push(Inst {
                    ty,
                    spot,
                    launched: t,
                    ready,
                    end: None,
                });
            }
        } else if count > n {
            // Newest first: pending launches are the newest.
            have.sort_by_key(|&j| std::cmp::Reverse(fleet[j].launched));
            for &j in have.iter().take((count - n) as usize) {
                fleet[j].end = Some(end.max(t));
            }
        }
    }
}

/// Perfect foresight: each step exactly the instances its demand needs, of the option with
/// the least cost at that step (spot where offered), ready in time and never interrupted.
pub fn oracle(d: &Demand, catalog: &Catalog, min_instances: i64) -> Figures {
    let step_h = d.step_ms as f64 / 3.6e6;
    let mut tally = Tally::new(d.resources.len());
    let mut cost = 0.0;
    let mut changes = 0;
    let mut last: Option<(usize, i64)> = None;
    for (&t, demand) in d.times.iter().zip(&d.values) {
        let best = (0..catalog.instance.len())
            .filter(|&ty| {
                d.resources
                    .iter()
                    .all(|(_, u)| catalog.instance[ty].capacity(u).is_some())
            })
            .map(|ty| {
                let n = count_for(catalog, ty, d, demand, 1.0).max(min_instances);
                let inst = &catalog.instance[ty];
                let p = inst.spot_price.unwrap_or(inst.on_demand_price);
                (ty, n, n as f64 * p)
            })
            .min_by(|a, b| a.2.total_cmp(&b.2));
        let Some((ty, n, per_hour)) = best else {
            continue;
        };
        cost += per_hour * step_h;
        if last.is_some_and(|l| l != (ty, n)) {
            changes += 1;
        }
        last = Some((ty, n));
        let inst = &catalog.instance[ty];
        let cap: Vec<f64> = d
            .resources
            .iter()
            .map(|(_, u)| inst.capacity(u).unwrap_or(0.0) * inst.performance * n as f64)
            .collect();
        tally.step(t, d.step_ms, demand, &cap);
    }
    tally.figures(cost, changes, 0.0)
}
