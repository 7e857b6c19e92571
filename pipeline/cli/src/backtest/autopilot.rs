//! `autopilot`: a recommender in the style of Google's Autopilot (EuroSys 2020): several
//! moving-window recommenders, each a decaying peak of the demand (`p = max(x, p x 2^(-dt /
//! half-life))`) plus a margin, all run side by side; every `vpa_every_s` the fleet follows the
//! one whose recommendations cost least on the recent past, where a unit short counts
//! `autopilot_overrun_weight` times a unit idle, both in instances of the baseline type (so
//! resources compare) and with the past halving every `autopilot_memory_s`. Every recommender
//! is scored on the demand that came, whether it was followed or not.

use wfe_contract::Result;
use wfe_tier_select::Catalog;

use super::policies::{Plan, ask, baseline, count_for};
use super::{BacktestConfig, Demand};

/// The recommenders' half-lives (s) and margins: 12 of them, from a jumpy one-hour memory to a
/// three-day one.
const HALF_LIVES_S: [f64; 4] = [3_600.0, 21_600.0, 86_400.0, 259_200.0];
const MARGINS: [f64; 3] = [0.0, 0.1, 0.25];

/// One recommender: its decaying peak per resource, its recommendation in force, its cost.
#[derive(Clone)]
struct Recommender {
    half_life_ms: f64,
    margin: f64,
    peak: Vec<f64>,
    rec: Vec<f64>,
    cost: f64,
}

/// The plan of the recommender ensemble (see the module's comment).
pub fn autopilot(d: &Demand, catalog: &Catalog, cfg: &BacktestConfig) -> Result<Plan> {
    let ty = baseline(catalog, cfg)?;
    let inst = &catalog.instance[ty];
    // Capacity of one instance per resource: shortfall and idle counted in instances.
    let per: Vec<f64> = d
        .resources
        .iter()
        .map(|(_, unit)| inst.capacity(unit).map_or(1.0, |c| c * inst.performance))
        .collect();
    let nr = d.resources.len();
    let mut models: Vec<Recommender> = HALF_LIVES_S
        .iter()
        .flat_map(|&h| {
            MARGINS.iter().map(move |&m| Recommender {
                half_life_ms: h * 1000.0,
                margin: m,
                peak: vec![0.0; nr],
                rec: Vec::new(),
                cost: 0.0,
            })
        })
        .collect();
    let memory_ms = cfg.autopilot_memory_s as f64 * 1000.0;
    let every = cfg.vpa_every_s * 1000;
    let mut plan = Plan::new();
    let mut next = i64::MIN;
    let mut last_t: Option<i64> = None;
    let mut fleet = cfg.min_instances;
    let history = d
        .train_times
        .iter()
        .zip(&d.train)
        .map(|(t, r)| (*t, r, None));
    let test = d
        .times
        .iter()
        .zip(&d.values)
        .enumerate()
        .map(|(k, (t, r))| (*t, r, Some(k)));
    for (t, row, step) in history.chain(test) {
        let dt = last_t.map_or(0.0, |l| (t - l).max(0) as f64);
        last_t = Some(t);
        for m in &mut models {
            // The recommendation in force meets this step's demand, then the peak takes it in.
            if !m.rec.is_empty() {
                let (mut short, mut idle) = (0.0, 0.0);
                for ((x, r), p) in row.iter().zip(&m.rec).zip(&per) {
                    short += (x - r).max(0.0) / p;
                    idle += (r - x).max(0.0) / p;
                }
                let decay = 0.5f64.powf(dt / memory_ms);
                m.cost = m.cost * decay + cfg.autopilot_overrun_weight * short + idle;
            }
            let decay = 0.5f64.powf(dt / m.half_life_ms);
            for (p, x) in m.peak.iter_mut().zip(row) {
                *p = x.max(*p * decay);
            }
        }
        if t >= next {
            next = t + every;
            for m in &mut models {
                m.rec = m.peak.iter().map(|p| p * (1.0 + m.margin)).collect();
            }
            if let Some(best) = models.iter().min_by(|a, b| a.cost.total_cmp(&b.cost)) {
                fleet = count_for(catalog, ty, d, &best.rec, 1.0).max(cfg.min_instances);
            }
        }
        // The fleet in force from the first test step on (`ask` keeps changes only).
        if let Some(k) = step {
            ask(&mut plan, k, vec![(ty, false, fleet)]);
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::minute_demand;

    fn demand(f: impl Fn(i64) -> f64) -> Demand {
        minute_demand(2, 1, f)
    }

    fn counts(plan: &Plan) -> Vec<i64> {
        plan.iter()
            .map(|(_, f)| f.iter().map(|x| x.2).sum())
            .collect()
    }

    #[test]
    fn the_weight_of_a_shortfall_decides_how_much_headroom_is_kept() {
        let catalog = Catalog::shipped().unwrap();
        // A steady 10 vCPU with a 60 vCPU spike for five minutes every six hours.
        let spiky = demand(|m| {
            if (30..35).contains(&(m % 360)) {
                60.0
            } else {
                10.0
            }
        });
        let careful = BacktestConfig {
            autopilot_overrun_weight: 1000.0,
            ..BacktestConfig::default()
        };
        let thrifty = BacktestConfig {
            autopilot_overrun_weight: 0.01,
            ..BacktestConfig::default()
        };
        let high = counts(&autopilot(&spiky, &catalog, &careful).unwrap());
        let low = counts(&autopilot(&spiky, &catalog, &thrifty).unwrap());
        let ty = baseline(&catalog, &careful).unwrap();
        let spike = count_for(&catalog, ty, &spiky, &[60.0], 1.0);
        let base = count_for(&catalog, ty, &spiky, &[10.0], 1.0);
        // Short costs a lot: a long memory keeps the spike's capacity all day.
        assert!(high.iter().all(|&n| n >= spike), "{high:?}");
        // Idle costs more: it lets the spike's capacity go and comes down to the base load.
        assert!(
            low.contains(&base) && low.iter().any(|&n| n < spike),
            "{low:?}"
        );
        // A flat demand: every recommender agrees, one fleet all along.
        let flat = counts(&autopilot(&demand(|_| 10.0), &catalog, &careful).unwrap());
        assert_eq!(flat, [base]);
    }
}
