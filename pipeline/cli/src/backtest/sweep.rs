//! `wfe backtest --sweep`: every policy's frontier of cost against under-provisioning. One
//! operating point per policy cannot tell "cheaper" from "riskier"; a frontier can: each policy
//! runs at every setting of its own knob, and is priced at the under-provisioning reactive
//! reaches at the job's own settings (interpolated along its frontier, [`frontier`]).
//!
//! The knobs and their grids are fixed here, before any result, and each grid also holds the
//! job's own setting:
//! - wfe: the risk level `r`: `sla_quantile = 1 - r`, `max_risk = r` plus the job's own
//!   allowance over its SLA level (0.15 - 0.1 by default). The forecast stage runs once per
//!   entity, emitting the level `1 - r` of every `r` beside its own levels, and tier-select
//!   runs once per `r` over the same forecasts;
//! - wfe-cost: the `expected-cost` objective at each `shortfall_price` (USD per unit-minute
//!   short), over the same forecasts (whose levels, the risks' beside the job's own, give the
//!   distribution its shape up to p99);
//! - wfe-tuned: the `expected-cost` objective at the job's own price with each workload's
//!   learner over multipliers of it (`[stages.tier-select.tuning]`, its defaults where the
//!   job has none): one point a floor, priced against wfe-cost's fixed-price frontier at the
//!   same under-provisioning ([`SweepReport::tuned`]); and, where the job's tuning has no
//!   `floors`, "tuned over floors": the learner choosing each workload's floor among the
//!   sweep's too, one point for each floor it starts at;
//! - all three at each reactive floor (`burst_utilisation` / `burst_target`): the floor answers
//!   the jumps within an hour that no forecast quantile sees, so it moves wfe along its
//!   frontier as much as the risk or the price does; and wfe-cost at each floor again with
//!   the floor holding the highest demand of the last [`HOLD_H`] hours (`hold_h`), for the
//!   jumps a workload made before, and at the job's own price with headroom over that peak
//!   ([`HOLD_MARGINS`], `hold_margin`), for jumps past any it made;
//! - reactive: `target_utilisation`; static: `static_peak_share` of the train split's peak;
//! - vpa: `vpa_quantile` x `vpa_margin`; predictive: `predictive_margin`; autopilot:
//!   `autopilot_overrun_weight`; oracle: its one point.

use std::collections::BTreeMap;

use serde::Serialize;
use wfe_contract::{RecordBatch, Result};
use wfe_tier_select::{Catalog, Objective};

use super::frontier::{self, Point};
use super::{BacktestConfig, Demand, Figures, policies, sim};
use crate::config::JobConfig;

/// wfe's risk levels: the chance it accepts that capacity falls short.
pub const WFE_RISKS: [f64; 7] = [0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01];
/// wfe's prices of a unit-minute short under the `expected-cost` objective (USD).
pub const SHORTFALL_PRICES: [f64; 6] = [0.01, 0.1, 1.0, 3.0, 10.0, 30.0];
/// wfe's reactive floors: (`burst_utilisation`, `burst_target`).
pub const FLOORS: [(f64, f64); 6] = [
    (0.5, 0.4),
    (0.6, 0.5),
    (0.7, 0.6),
    (0.8, 0.7),
    (0.9, 0.8),
    (0.95, 0.9),
];
/// The floor's memory for wfe-cost's second row of points: a month (`hold_h`).
pub const HOLD_H: u32 = 720;
/// Headroom over that month's peak (`hold_margin`) for wfe-cost's third row of points, at the
/// job's own price (the margin, not the price, sets the capacity there): for jumps past any
/// the month saw.
pub const HOLD_MARGINS: [f64; 3] = [1.5, 2.0, 3.0];
pub const TARGETS: [f64; 6] = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
pub const PEAK_SHARES: [f64; 7] = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
pub const VPA_QUANTILES: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 0.99];
pub const VPA_MARGINS: [f64; 3] = [0.0, 0.15, 0.3];
pub const PREDICTIVE_MARGINS: [f64; 4] = [0.0, 0.1, 0.2, 0.4];
pub const OVERRUN_WEIGHTS: [f64; 5] = [1.0, 3.0, 10.0, 30.0, 100.0];

/// One policy's sweep over a data set.
#[derive(Debug, Serialize)]
pub struct PolicySweep {
    /// Every setting's totals over the entities.
    pub points: Vec<Point>,
    /// The settings on the frontier, by under-provisioning ascending.
    pub frontier: Vec<String>,
    /// The policy's cost at the under-provisioned minutes of the reference (reactive at the
    /// job's settings), over the reference's cost; None where every setting is short longer.
    pub cost_at_reactive_underprovisioning: Option<f64>,
    /// Its cheapest setting without an SLA-violating hour, over the reference's cost.
    pub cost_at_zero_violations: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SweepReport {
    pub data: String,
    /// Test-split hours simulated, over every entity.
    pub hours: f64,
    /// Reactive at the job's own settings: where every policy is priced.
    pub reference: Point,
    pub policies: BTreeMap<String, PolicySweep>,
    /// Each wfe-tuned point beside wfe-cost's frontier at its under-provisioning.
    pub tuned: Vec<Tuned>,
    /// The baselines' points (`policy setting`) that no wfe point (any of its objectives)
    /// dominates: none where wfe's frontier dominates every baseline's.
    pub undominated: Vec<String>,
    /// Where the picture was written.
    pub picture: Option<String>,
}

/// A tuned point against the fixed prices: its cost over the cost of wfe-cost's frontier
/// (every fixed price at every floor) at the same under-provisioned minutes.
#[derive(Debug, Serialize)]
pub struct Tuned {
    pub setting: String,
    pub cost: f64,
    pub underprovisioned_minutes: f64,
    /// wfe-cost's frontier there; None where every fixed setting is short longer.
    pub fixed_cost: Option<f64>,
    pub ratio: Option<f64>,
}

/// A setting's value as written in its label (at most 4 decimals).
fn label(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The grid with `own` added (where it is not already there), ascending.
fn with_own(grid: &[f64], own: f64) -> Vec<f64> {
    let mut v = grid.to_vec();
    if !v.iter().any(|x| (x - own).abs() < 1e-9) {
        v.push(own);
    }
    v.sort_by(f64::total_cmp);
    v
}

/// The settings of the four simulated baselines: (policy, label, backtest settings).
fn baseline_settings(cfg: &BacktestConfig) -> Vec<(&'static str, String, BacktestConfig)> {
    let mut out = Vec::new();
    for u in with_own(&TARGETS, cfg.target_utilisation) {
        let c = BacktestConfig {
            target_utilisation: u,
            ..cfg.clone()
        };
        out.push(("reactive", format!("target_utilisation={}", label(u)), c));
    }
    for s in with_own(&PEAK_SHARES, cfg.static_peak_share) {
        let c = BacktestConfig {
            static_peak_share: s,
            ..cfg.clone()
        };
        out.push(("static", format!("static_peak_share={}", label(s)), c));
    }
    for q in with_own(&VPA_QUANTILES, cfg.vpa_quantile) {
        for m in with_own(&VPA_MARGINS, cfg.vpa_margin) {
            let c = BacktestConfig {
                vpa_quantile: q,
                vpa_margin: m,
                ..cfg.clone()
            };
            out.push((
                "vpa",
                format!("vpa_quantile={} vpa_margin={}", label(q), label(m)),
                c,
            ));
        }
    }
    for m in with_own(&PREDICTIVE_MARGINS, cfg.predictive_margin) {
        let c = BacktestConfig {
            predictive_margin: m,
            ..cfg.clone()
        };
        out.push(("predictive", format!("predictive_margin={}", label(m)), c));
    }
    for w in with_own(&OVERRUN_WEIGHTS, cfg.autopilot_overrun_weight) {
        let c = BacktestConfig {
            autopilot_overrun_weight: w,
            ..cfg.clone()
        };
        out.push((
            "autopilot",
            format!("autopilot_overrun_weight={}", label(w)),
            c,
        ));
    }
    out
}

/// The floors with the job's own added (where it is not already there).
fn floors(own: &wfe_tier_select::TierSelectConfig) -> Vec<(f64, f64)> {
    let mut v = FLOORS.to_vec();
    let mine = (own.burst_utilisation, own.burst_target);
    if !v
        .iter()
        .any(|f| (f.0 - mine.0).abs() < 1e-9 && (f.1 - mine.1).abs() < 1e-9)
    {
        v.push(mine);
    }
    v
}

/// wfe's settings at every floor: (label, tier-select settings) for each of `points`.
fn at_floors(
    job: &JobConfig,
    points: Vec<(String, wfe_tier_select::TierSelectConfig)>,
) -> Vec<(String, wfe_tier_select::TierSelectConfig)> {
    let mut out = Vec::new();
    for (u, t) in floors(&job.stages.tier_select) {
        for (setting, cfg) in &points {
            let mut cfg = cfg.clone();
            cfg.burst_utilisation = u;
            cfg.burst_target = t;
            out.push((format!("{setting} floor={}/{}", label(u), label(t)), cfg));
        }
    }
    out
}

/// `points` and, where the floor is on and the job's own memory is not already [`HOLD_H`],
/// each again with the floor holding the highest demand of [`HOLD_H`] hours; those at the
/// job's own shortfall price (`own_price`) and with no margin of the job's own also at each
/// of [`HOLD_MARGINS`].
fn with_holds(
    points: Vec<(String, wfe_tier_select::TierSelectConfig)>,
    own_price: f64,
) -> Vec<(String, wfe_tier_select::TierSelectConfig)> {
    let mut held = Vec::new();
    for (setting, c) in
        (points.iter()).filter(|(_, c)| c.burst_utilisation > 0.0 && c.hold_h != HOLD_H)
    {
        let mut c = c.clone();
        c.hold_h = HOLD_H;
        let setting = format!("{setting} hold={HOLD_H}h");
        held.push((setting.clone(), c.clone()));
        if c.shortfall_price == own_price && c.hold_margin == 0.0 {
            held.extend(HOLD_MARGINS.iter().map(|&m| {
                let mut c = c.clone();
                c.hold_margin = m;
                (format!("{setting} x{}", label(m)), c)
            }));
        }
    }
    points.into_iter().chain(held).collect()
}

/// wfe's risk levels, each with its tier-select settings (the `risk` objective).
fn wfe_settings(job: &JobConfig) -> Vec<(f64, wfe_tier_select::TierSelectConfig)> {
    let own = &job.stages.tier_select;
    let allowance = (own.max_risk - (1.0 - own.sla_quantile)).max(0.0);
    with_own(&WFE_RISKS, 1.0 - own.sla_quantile)
        .into_iter()
        .rev()
        .map(|r| {
            let mut t = own.clone();
            t.objective = Objective::Risk;
            t.sla_quantile = 1.0 - r;
            t.max_risk = (r + allowance).min(1.0);
            (r, t)
        })
        .collect()
}

/// wfe's prices of a unit-minute short, each with its tier-select settings (the
/// `expected-cost` objective).
fn wfe_cost_settings(job: &JobConfig) -> Vec<(f64, wfe_tier_select::TierSelectConfig)> {
    let own = &job.stages.tier_select;
    with_own(&SHORTFALL_PRICES, own.shortfall_price)
        .into_iter()
        .map(|p| {
            let mut t = own.clone();
            t.objective = Objective::ExpectedCost;
            t.shortfall_price = p;
            (p, t)
        })
        .collect()
}

/// The learner's settings: the job's own price and tuning (its defaults where it has none).
pub fn wfe_tuned_settings(job: &JobConfig) -> wfe_tier_select::TierSelectConfig {
    let mut t = job.stages.tier_select.clone();
    t.objective = Objective::ExpectedCost;
    t.tuning.get_or_insert_with(Default::default);
    t
}

/// The learner choosing each workload's floor too, among the sweep's floors (`None` where
/// the job's own tuning already has floors: its `tuned` point learns them).
fn floor_tuned_settings(job: &JobConfig) -> Option<wfe_tier_select::TierSelectConfig> {
    let mut t = wfe_tuned_settings(job);
    let tuning = t.tuning.as_mut()?;
    if !tuning.floors.is_empty() || t.burst_utilisation <= 0.0 {
        return None;
    }
    tuning.floors = floors(&job.stages.tier_select)
        .into_iter()
        .map(|(u, t)| [u, t])
        .collect();
    Some(t)
}

/// Every policy at every setting on one entity: (policy, setting, figures).
pub fn entity(
    d: &Demand,
    norm: Vec<RecordBatch>,
    job: &JobConfig,
    catalog: &Catalog,
) -> Result<Vec<(String, String, Figures)>> {
    let mut out = Vec::new();
    let risks = wfe_settings(job);
    // One forecast run for every level: the stage's own, and each risk's SLA level.
    let mut fjob = job.clone();
    let levels = &mut fjob.stages.forecast.quantiles;
    for (_, t) in &risks {
        *levels = with_own(levels, t.sla_quantile);
    }
    let replay = policies::wfe_forecasts(&fjob, norm)?;
    let risk = risks
        .into_iter()
        .map(|(r, t)| (format!("risk={}", label(r)), t));
    let cost = wfe_cost_settings(job)
        .into_iter()
        .map(|(p, t)| (format!("shortfall_price={}", label(p)), t));
    let mut tuned = vec![("tuned".to_string(), wfe_tuned_settings(job))];
    tuned.extend(floor_tuned_settings(job).map(|t| ("tuned over floors".to_string(), t)));
    for (policy, points) in [
        ("wfe", risk.collect()),
        ("wfe-cost", cost.collect()),
        ("wfe-tuned", tuned),
    ] {
        let mut settings = at_floors(job, points);
        if policy == "wfe-cost" {
            settings = with_holds(settings, job.stages.tier_select.shortfall_price);
        }
        for (setting, tier) in settings {
            let plan = policies::wfe_decide(d, tier, &job.resources, &replay)?;
            let f = sim::simulate(d, catalog, &job.backtest, &plan)?;
            out.push((policy.to_string(), setting, f));
        }
    }
    for (policy, label, cfg) in baseline_settings(&job.backtest) {
        let plan = match policy {
            "reactive" => policies::reactive(d, catalog, &cfg)?,
            "static" => policies::fixed(d, catalog, &cfg)?,
            "predictive" => super::predictive::predictive(d, catalog, &cfg)?,
            "autopilot" => super::autopilot::autopilot(d, catalog, &cfg)?,
            _ => policies::vpa(d, catalog, &cfg)?,
        };
        out.push((
            policy.into(),
            label,
            sim::simulate(d, catalog, &cfg, &plan)?,
        ));
    }
    let min = job.stages.tier_select.min_instances;
    out.push(("oracle".into(), "-".into(), sim::oracle(d, catalog, min)));
    Ok(out)
}

/// The data set's sweep from every entity's points (summed per policy and setting).
pub fn report(
    data: String,
    hours: f64,
    per_entity: Vec<Vec<(String, String, Figures)>>,
    job: &JobConfig,
) -> SweepReport {
    let mut totals: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for (policy, setting, f) in per_entity.into_iter().flatten() {
        let points = totals.entry(policy).or_default();
        match points.iter_mut().find(|p| p.setting == setting) {
            Some(p) => {
                p.cost += f.cost;
                p.underprovisioned_minutes += f.underprovisioned_minutes;
                p.sla_violations += f.sla_violations;
            }
            None => points.push(Point {
                setting,
                cost: f.cost,
                underprovisioned_minutes: f.underprovisioned_minutes,
                sla_violations: f.sla_violations,
            }),
        }
    }
    let own = format!(
        "target_utilisation={}",
        label(job.backtest.target_utilisation)
    );
    let reference = totals
        .get("reactive")
        .and_then(|p| p.iter().find(|p| p.setting == own))
        .cloned()
        .unwrap_or(Point {
            setting: own,
            cost: f64::NAN,
            underprovisioned_minutes: f64::NAN,
            sla_violations: 0,
        });
    let ratio = |c: Option<f64>| c.map(|c| c / reference.cost).filter(|r| r.is_finite());
    let policies = totals
        .into_iter()
        .map(|(name, points)| {
            let sweep = PolicySweep {
                frontier: frontier::frontier(&points)
                    .into_iter()
                    .map(|i| points[i].setting.clone())
                    .collect(),
                cost_at_reactive_underprovisioning: ratio(frontier::cost_at(
                    &points,
                    reference.underprovisioned_minutes,
                )),
                cost_at_zero_violations: ratio(frontier::cost_without_violations(&points)),
                points,
            };
            (name, sweep)
        })
        .collect();
    let tuned = tuned_against_fixed(&policies);
    let undominated = undominated(&policies);
    SweepReport {
        data,
        hours,
        reference,
        policies,
        tuned,
        undominated,
        picture: None,
    }
}

/// The baselines' points no wfe point dominates (the oracle is a bound, not a baseline).
fn undominated(policies: &BTreeMap<String, PolicySweep>) -> Vec<String> {
    let is_wfe = |name: &str| name == "wfe" || name.starts_with("wfe-");
    let wfe: Vec<Point> = (policies.iter())
        .filter(|(name, _)| is_wfe(name))
        .flat_map(|(_, p)| p.points.iter().cloned())
        .collect();
    (policies.iter())
        .filter(|(name, _)| !is_wfe(name) && name.as_str() != "oracle")
        .flat_map(|(name, p)| p.points.iter().map(move |pt| (name, pt)))
        .filter(|(_, pt)| !frontier::dominated(pt, &wfe))
        .map(|(name, pt)| format!("{name} {}", pt.setting))
        .collect()
}

/// Each wfe-tuned point against wfe-cost's frontier at its under-provisioning.
fn tuned_against_fixed(policies: &BTreeMap<String, PolicySweep>) -> Vec<Tuned> {
    let (Some(tuned), Some(fixed)) = (policies.get("wfe-tuned"), policies.get("wfe-cost")) else {
        return Vec::new();
    };
    (tuned.points.iter())
        .map(|p| {
            let fixed_cost = frontier::cost_at(&fixed.points, p.underprovisioned_minutes);
            Tuned {
                setting: p.setting.clone(),
                cost: p.cost,
                underprovisioned_minutes: p.underprovisioned_minutes,
                fixed_cost,
                ratio: fixed_cost.map(|f| p.cost / f).filter(|r| r.is_finite()),
            }
        })
        .collect()
}

/// The Markdown tables: every point, then one line per policy.
pub fn render(r: &SweepReport) -> String {
    let mut s = format!(
        "# wfe backtest --sweep: {} ({:.0} test hours)\n\nreference: reactive at {} ({:.2} USD, {:.0} under-provisioned min)\n\n",
        r.data,
        r.hours,
        r.reference.setting,
        r.reference.cost,
        r.reference.underprovisioned_minutes
    );
    s.push_str("| policy | setting | cost (USD) | x reactive | under-provisioned min | SLA violations (h) | frontier |\n|---|---|---:|---:|---:|---:|---|\n");
    for (name, p) in &r.policies {
        for pt in &p.points {
            s.push_str(&format!(
                "| {name} | {} | {:.2} | {:.3} | {:.0} | {} | {} |\n",
                pt.setting,
                pt.cost,
                pt.cost / r.reference.cost,
                pt.underprovisioned_minutes,
                pt.sla_violations,
                if p.frontier.contains(&pt.setting) {
                    "yes"
                } else {
                    ""
                }
            ));
        }
    }
    let x = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    s.push_str("\n| policy | cost at reactive's under-provisioning (x reactive) | cheapest without SLA violations (x reactive) |\n|---|---:|---:|\n");
    for (name, p) in &r.policies {
        s.push_str(&format!(
            "| {name} | {} | {} |\n",
            x(p.cost_at_reactive_underprovisioning),
            x(p.cost_at_zero_violations)
        ));
    }
    if !r.tuned.is_empty() {
        s.push_str("\n| wfe-tuned | cost (USD) | under-provisioned min | wfe-cost's frontier there (USD) | x fixed |\n|---|---:|---:|---:|---:|\n");
        for t in &r.tuned {
            s.push_str(&format!(
                "| {} | {:.2} | {:.0} | {} | {} |\n",
                t.setting,
                t.cost,
                t.underprovisioned_minutes,
                t.fixed_cost.map_or("-".to_string(), |c| format!("{c:.2}")),
                x(t.ratio)
            ));
        }
    }
    s.push_str(&format!(
        "\nbaseline points no wfe point dominates (none no dearer and no shorter): {}\n",
        match r.undominated.is_empty() {
            true => "none".to_string(),
            false => r.undominated.join(", "),
        }
    ));
    if let Some(path) = &r.picture {
        s.push_str(&format!("\npicture: {path}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_hold_the_jobs_own_settings_and_wfe_keeps_its_risk_allowance() {
        assert_eq!(with_own(&[0.5, 0.9], 0.7), [0.5, 0.7, 0.9]);
        assert_eq!(with_own(&[0.5, 0.9], 0.9), [0.5, 0.9]);
        let mut job: JobConfig = toml::from_str("").unwrap();
        job.stages.tier_select.sla_quantile = 0.75;
        job.stages.tier_select.max_risk = 0.35;
        let w = wfe_settings(&job);
        assert_eq!(
            w.len(),
            WFE_RISKS.len() + 1,
            "0.25 is not in the grid: added"
        );
        let own = w.iter().find(|(r, _)| (*r - 0.25).abs() < 1e-9).unwrap();
        assert!((own.1.sla_quantile - 0.75).abs() < 1e-9);
        assert!((own.1.max_risk - 0.35).abs() < 1e-9);
        assert_eq!(label(1.0 - 0.9), "0.1");
        assert_eq!(label(1.0), "1");
        let strict = w.last().unwrap();
        assert!((strict.1.sla_quantile - 0.99).abs() < 1e-9);
        assert!((strict.1.max_risk - 0.11).abs() < 1e-9);
        assert!(w.iter().all(|(_, t)| t.objective == Objective::Risk));
        job.stages.tier_select.shortfall_price = 0.02;
        let c = wfe_cost_settings(&job);
        assert_eq!(
            c.len(),
            SHORTFALL_PRICES.len() + 1,
            "0.02 is not in the grid"
        );
        assert!(
            c.iter()
                .all(|(p, t)| t.objective == Objective::ExpectedCost && t.shortfall_price == *p)
        );
        // Every point at each floor, the job's own floor added (0.8 / 0.7 is in the grid).
        job.stages.tier_select.burst_utilisation = 0.8;
        job.stages.tier_select.burst_target = 0.7;
        let points = vec![("risk=0.1".to_string(), job.stages.tier_select.clone())];
        assert_eq!(at_floors(&job, points.clone()).len(), FLOORS.len());
        job.stages.tier_select.burst_target = 0.75;
        let all = at_floors(&job, points);
        assert_eq!(all.len(), FLOORS.len() + 1);
        assert_eq!(all.last().unwrap().0, "risk=0.1 floor=0.8/0.75");
        assert!((all[4].1.burst_utilisation - 0.9).abs() < 1e-12);
        // Each point again with the month's hold, unless the job holds that already; at the
        // job's own price also with each margin over the held peak.
        let price = job.stages.tier_select.shortfall_price;
        let held = with_holds(all.clone(), price + 1.0);
        assert_eq!(held.len(), 2 * all.len());
        assert_eq!(held[all.len()].0, "risk=0.1 floor=0.5/0.4 hold=720h");
        assert!(held[..all.len()].iter().all(|(_, c)| c.hold_h == 0));
        assert!(held[all.len()..].iter().all(|(_, c)| c.hold_h == HOLD_H));
        assert!(held.iter().all(|(_, c)| c.hold_margin == 0.0));
        let margins = with_holds(all.clone(), price);
        assert_eq!(margins.len(), (2 + HOLD_MARGINS.len()) * all.len());
        assert_eq!(
            margins[all.len() + 2].0,
            "risk=0.1 floor=0.5/0.4 hold=720h x2"
        );
        assert_eq!(margins[all.len() + 2].1.hold_margin, 2.0);
        for (_, c) in &margins {
            c.validate().unwrap();
        }
        let mine: Vec<_> = (all.iter().cloned())
            .map(|(s, mut c)| {
                c.hold_h = HOLD_H;
                (s, c)
            })
            .collect();
        assert_eq!(with_holds(mine, price).len(), all.len());
        let b = baseline_settings(&BacktestConfig::default());
        let count = |p: &str| b.iter().filter(|x| x.0 == p).count();
        assert_eq!(count("reactive"), TARGETS.len());
        assert_eq!(count("static"), PEAK_SHARES.len());
        assert_eq!(count("vpa"), VPA_QUANTILES.len() * VPA_MARGINS.len());
        assert_eq!(count("predictive"), PREDICTIVE_MARGINS.len());
        assert_eq!(count("autopilot"), OVERRUN_WEIGHTS.len());
    }
}
