//! Tuning from realised cost (`[stages.tier-select.tuning]`): per workload, an online learner
//! over the `expected-cost` objective's operating point.
//!
//! `shortfall_price` says what a unit-minute short costs, and the objective buys capacity
//! into the forecast's tail until the next instance costs more than the shortfall it saves.
//! That is right only where the forecast's tail is right: a workload whose forecasts are too
//! wide pays for capacity it never uses, one whose spikes the forecast misses falls short
//! more than priced. The learner corrects each workload's operating point from the cost that
//! was actually realised.
//!
//! - **Arms**: multipliers of `shortfall_price` the decision is made with (`arms`, by
//!   default 0.1 to 10). At every forecast issuance the stage chooses an option under every
//!   arm (with the same fleet in place and the same reactive floor): what that arm would have
//!   put in place. With `floors`, every multiplier is an arm at every reactive floor, and a
//!   workload's live floor is its arm's (`TierSelect::floor_of`).
//! - **Counterfactual scoring, full information**: every step of `metrics.norm` that follows
//!   scores every arm on the demand that actually came: its fleet's price for the step plus
//!   the job's own `shortfall_price` for each unit-minute of demand above its capacity. So
//!   every arm learns from every step, not only the one in force (no exploration is spent).
//! - **Exponential weights, discounted**: each arm's realised cost is summed with a
//!   half-life (`half_life_h` of event time: a workload's behaviour drifts), and its weight
//!   is `exp(-learning_rate x cost / mean cost)`. The decision takes the arm of largest
//!   weight once `warmup_h` hours were scored (before: the configured price, multiplier 1), and
//!   leaves the arm in force only for one whose cost is lower by [`SWITCH`] (a change of arm
//!   changes the fleet: churn).
//!
//! - **The reactive floor, per arm**: between issuances the live floor adds on-demand
//!   instances when a step's demand passes `burst_utilisation` of the capacity in place; each
//!   arm's fleet meets the same floor in its counterfactual ([`Burst`]: the step is scored
//!   short, the arm pays for the added instances from the next step on). Without it a small
//!   arm was charged every step of a burst that the floor catches after one, and the learner
//!   leaned to dear arms on spiky workloads.
//!
//! What the counterfactual leaves out: an arm's launch lead time and spot interruptions
//! (all arms alike). The pieces here are pure; the stage calls them
//! (`TierSelect::tuned_choice`, `TierSelect::score_arms`).

use serde::{Deserialize, Serialize};

use crate::config::TuningConfig;
use crate::reactive::floor_instances;

/// The arm in force is left only for one whose discounted cost is this share lower.
pub const SWITCH: f64 = 0.02;

/// Longest gap between two steps that is scored as one step (a gap in the data is not an
/// hour of every arm's cost).
const MAX_STEP_MS: i64 = 3_600_000;

/// What one arm put in place at the last issuance: capacity per resource map (its units;
/// `None`: the instance does not measure it) and USD per hour, raised by the floor's bursts
/// since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmPlan {
    pub capacity: Vec<Option<f64>>,
    pub cost_per_hour: f64,
    /// The reactive floor as it meets this arm's fleet (`None`: the job has no floor).
    pub burst: Option<Burst>,
}

/// The reactive floor over one arm's fleet: a step whose demand passes `utilisation` of a
/// resource's capacity adds on-demand instances of the arm's type (`per_instance` capacity
/// each, per resource map, at `price_per_hour`) until that demand is at `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    pub per_instance: Vec<Option<f64>>,
    pub price_per_hour: f64,
    pub utilisation: f64,
    pub target: f64,
}

impl ArmPlan {
    /// After a step of `demand`: the instances the floor adds to this fleet, if any (the
    /// resource furthest past its share decides how many, as in the stage's floor).
    fn burst(&mut self, demand: &[Option<f64>]) {
        let Some(b) = &self.burst else {
            return;
        };
        let add = (demand.iter().zip(&self.capacity).zip(&b.per_instance))
            .filter_map(|((d, c), per)| {
                let (d, c, per) = ((*d)?, (*c)?, (*per)?);
                (per > 0.0 && c > 0.0 && d > b.utilisation * c)
                    .then(|| floor_instances(d, c, per, b.target))
            })
            .fold(0.0, f64::max);
        if !(add >= 1.0 && add.is_finite()) {
            return;
        }
        for (c, per) in self.capacity.iter_mut().zip(&b.per_instance) {
            if let (Some(c), Some(per)) = (c.as_mut(), per) {
                *c += add * per;
            }
        }
        self.cost_per_hour += add * b.price_per_hour;
    }
}

/// One workload's learner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learner {
    /// Each arm's discounted realised cost (USD).
    cost: Vec<f64>,
    /// Hours of steps scored.
    hours: f64,
    /// The newest step scored (ms), for the step's length and replays.
    scored_to: Option<i64>,
    /// Each arm's fleet from the issuance at `since` (ms) on.
    plans: Vec<ArmPlan>,
    since: i64,
    /// The arm in force.
    chosen: usize,
}

impl Learner {
    /// A learner over `cfg`'s arms for a job whose own floor is `own`, starting at the
    /// configured price and that floor.
    pub fn new(cfg: &TuningConfig, own: [f64; 2]) -> Self {
        Self {
            cost: vec![0.0; cfg.arm_count()],
            hours: 0.0,
            scored_to: None,
            plans: Vec::new(),
            since: i64::MAX,
            chosen: cfg.neutral_arm(own),
        }
    }

    /// Whether the learner was made for `cfg`'s arms (a restored one of other settings is
    /// started again).
    pub fn fits(&self, cfg: &TuningConfig) -> bool {
        let n = cfg.arm_count();
        self.cost.len() == n && self.chosen < n
    }

    pub fn chosen(&self) -> usize {
        self.chosen
    }

    pub fn hours(&self) -> f64 {
        self.hours
    }

    /// Each arm's discounted realised cost.
    pub fn costs(&self) -> &[f64] {
        &self.cost
    }

    /// The arms' weights, `exp(-learning_rate x cost / mean cost)`, normalised to sum 1.
    pub fn weights(&self, cfg: &TuningConfig) -> Vec<f64> {
        let mean = self.cost.iter().sum::<f64>() / self.cost.len().max(1) as f64;
        if mean <= 0.0 || !mean.is_finite() {
            return vec![1.0 / self.cost.len().max(1) as f64; self.cost.len()];
        }
        let best = self.cost.iter().copied().fold(f64::INFINITY, f64::min);
        // Shifted by the best arm's cost: the same weights, without underflow.
        let w: Vec<f64> = (self.cost.iter())
            .map(|c| (-cfg.learning_rate * (c - best) / mean).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        w.into_iter().map(|x| x / sum).collect()
    }

    /// The arm to decide with now: the configured one during the warm-up, then the arm of
    /// largest weight, the one in force unless another's cost is [`SWITCH`] lower.
    pub fn choose(&mut self, cfg: &TuningConfig, own: [f64; 2]) -> usize {
        if self.hours < cfg.warmup_h {
            self.chosen = cfg.neutral_arm(own);
            return self.chosen;
        }
        let best = (0..self.cost.len())
            .min_by(|a, b| self.cost[*a].total_cmp(&self.cost[*b]))
            .unwrap_or(self.chosen);
        if self.cost[best] < self.cost[self.chosen] * (1.0 - SWITCH) {
            self.chosen = best;
        }
        self.chosen
    }

    /// The arms' fleets from the issuance at `at` (ms) on.
    pub fn plan(&mut self, at: i64, plans: Vec<ArmPlan>) {
        if plans.len() == self.cost.len() {
            self.plans = plans;
            self.since = at;
        }
    }

    /// Scores every arm on one observed step: `demand` per resource map (`None`: not
    /// observed) at `time` (ms), priced at `shortfall_price` per unit-minute short. A step
    /// at or before the newest scored one (a replay) is skipped, as is one before the
    /// first issuance; the first step after that only starts the clock.
    pub fn score(&mut self, cfg: &TuningConfig, time: i64, demand: &[Option<f64>], price: f64) {
        if self.scored_to.is_some_and(|t| time <= t) || time <= self.since {
            return;
        }
        let Some(prev) = self.scored_to.replace(time) else {
            return;
        };
        let step_ms = (time - prev).min(MAX_STEP_MS);
        let hours = step_ms as f64 / 3.6e6;
        let decay = 0.5f64.powf(hours / cfg.half_life_h);
        for (cost, plan) in self.cost.iter_mut().zip(&mut self.plans) {
            let short: f64 = (demand.iter().zip(&plan.capacity))
                .filter_map(|(d, c)| Some(((*d)? - (*c)?).max(0.0)))
                .sum();
            let step = plan.cost_per_hour * hours + price * short * hours * 60.0;
            *cost = *cost * decay + step;
            plan.burst(demand);
        }
        self.hours += hours;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    /// The job's own reactive floor.
    const OWN: [f64; 2] = [0.8, 0.7];

    fn cfg() -> TuningConfig {
        TuningConfig {
            arms: vec![0.1, 1.0, 10.0],
            ..TuningConfig::default()
        }
    }

    /// Arm k holds `caps[k]` units at `price[k]` USD/h.
    fn plans(caps: &[f64], prices: &[f64]) -> Vec<ArmPlan> {
        caps.iter()
            .zip(prices)
            .map(|(c, p)| ArmPlan {
                capacity: vec![Some(*c)],
                cost_per_hour: *p,
                burst: None,
            })
            .collect()
    }

    #[test]
    fn costs_are_price_plus_shortfall_by_hand() {
        let c = TuningConfig {
            half_life_h: f64::INFINITY,
            ..cfg()
        };
        let mut l = Learner::new(&c, OWN);
        l.plan(0, plans(&[2.0, 4.0, 8.0], &[1.0, 2.0, 4.0]));
        // The first step starts the clock; then 60 steps of a minute at demand 3.
        for k in 1..=61 {
            l.score(&c, k * MIN, &[Some(3.0)], 0.5);
        }
        assert!((l.hours() - 1.0).abs() < 1e-9);
        // Arm 0: 1 USD/h for an hour, and 1 unit short for 60 minutes at 0.5.
        let want = [1.0 + 0.5 * 60.0, 2.0, 4.0];
        for (got, want) in l.costs().iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{:?}", l.costs());
        }
        // A step delivered again, or one before the plan, scores nothing.
        let before = l.costs().to_vec();
        l.score(&c, 30 * MIN, &[Some(100.0)], 0.5);
        assert_eq!(l.costs(), &before[..]);
        // An unmeasured resource is never short.
        l.score(&c, 62 * MIN, &[None], 0.5);
        assert!((l.costs()[0] - (31.0 + 1.0 / 60.0)).abs() < 1e-9);
    }

    /// Two arms of 1-unit instances: 2 at 1 USD/h each, and 6. A burst to 5 units passes 0.8
    /// of the small arm's capacity: the floor adds ceil(5 / 0.5 - 2) = 8 instances at 2 USD/h
    /// from the next step on, so of a 10-minute burst the small arm is short one minute only.
    #[test]
    fn the_floor_catches_a_burst_for_every_arm_after_one_step() {
        let c = TuningConfig {
            arms: vec![1.0, 10.0],
            half_life_h: f64::INFINITY,
            ..TuningConfig::default()
        };
        let burst = Some(Burst {
            per_instance: vec![Some(1.0)],
            price_per_hour: 2.0,
            utilisation: 0.8,
            target: 0.5,
        });
        let mut p = plans(&[2.0, 6.0], &[2.0, 6.0]);
        p.iter_mut().for_each(|p| p.burst = burst.clone());
        let mut l = Learner::new(&c, OWN);
        l.plan(0, p);
        // The first step after the issuance starts the clock.
        l.score(&c, MIN, &[Some(1.0)], 1.0);
        for k in 2..=11 {
            l.score(&c, k * MIN, &[Some(5.0)], 1.0);
        }
        let h = 1.0 / 60.0;
        // Small: 2 USD/h for a minute with 3 units short, then 2 + 16 USD/h for nine.
        let small = 2.0 * h + 3.0 + 18.0 * 9.0 * h;
        // Large: 5 > 0.8 x 6 too: ceil(10 - 6) = 4 instances more from the second minute.
        let large = 6.0 * h + 14.0 * 9.0 * h;
        for (got, want) in l.costs().iter().zip([small, large]) {
            assert!(
                (got - want).abs() < 1e-9,
                "{:?} vs {small} / {large}",
                l.costs()
            );
        }
        // The floor's instances stay until the next issuance: no second burst at 5.
        assert_eq!(l.plans[0].capacity, vec![Some(10.0)]);
        assert_eq!(l.plans[1].capacity, vec![Some(10.0)]);
        // Without a floor, the small arm is short all ten minutes.
        let mut bare = Learner::new(&c, OWN);
        bare.plan(0, plans(&[2.0, 6.0], &[2.0, 6.0]));
        bare.score(&c, MIN, &[Some(1.0)], 1.0);
        for k in 2..=11 {
            bare.score(&c, k * MIN, &[Some(5.0)], 1.0);
        }
        assert!((bare.costs()[0] - (2.0 * 10.0 * h + 30.0)).abs() < 1e-9);
    }

    #[test]
    fn the_configured_price_holds_through_the_warm_up() {
        let c = TuningConfig {
            warmup_h: 2.0,
            ..cfg()
        };
        let mut l = Learner::new(&c, OWN);
        l.plan(0, plans(&[1.0, 4.0, 8.0], &[1.0, 2.0, 4.0]));
        for k in 1..=90 {
            l.score(&c, k * MIN, &[Some(0.5)], 1.0);
        }
        assert_eq!(l.choose(&c, OWN), 1, "{:?}", l.costs());
        for k in 91..=200 {
            l.score(&c, k * MIN, &[Some(0.5)], 1.0);
        }
        // Demand never passes the smallest fleet: the cheapest arm.
        assert_eq!(l.choose(&c, OWN), 0);
        let w = l.weights(&c);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(w[0] > w[1] && w[1] > w[2], "{w:?}");
    }

    /// A workload whose demand spikes above the smaller fleets every other minute: quiet,
    /// the cheapest arm wins; small spikes, the middle one; large ones, the largest; the
    /// learner finds each in turn and follows the workload back.
    #[test]
    fn it_converges_to_the_arm_of_least_realised_cost_and_follows_a_change() {
        let c = TuningConfig {
            warmup_h: 1.0,
            half_life_h: 6.0,
            ..cfg()
        };
        let mut l = Learner::new(&c, OWN);
        // Capacity 4 / 6 / 10 units at 1 / 1.5 / 2.5 USD an hour, 0.1 USD a unit-minute short.
        l.plan(0, plans(&[4.0, 6.0, 10.0], &[1.0, 1.5, 2.5]));
        let mut t = 0;
        // Per hour: quiet 1 / 1.5 / 2.5; spikes to 5: 4 / 1.5 / 2.5 (30 minutes 1 short at
        // arm 0); spikes to 20: 49 / 43.5 / 32.5.
        for (hours, spike, want) in [(12, 3.0, 0), (24, 5.0, 1), (24, 20.0, 2), (48, 3.0, 0)] {
            for k in 1..=(hours * 60) {
                t += MIN;
                let d = if k % 2 == 0 { spike } else { 3.0 };
                l.score(&c, t, &[Some(d)], 0.1);
                l.choose(&c, OWN);
            }
            assert_eq!(l.chosen(), want, "spikes to {spike}: {:?}", l.costs());
        }
    }

    #[test]
    fn a_learner_comes_back_from_its_bytes_and_checks_its_arms() {
        let c = cfg();
        let mut l = Learner::new(&c, OWN);
        l.plan(0, plans(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]));
        for k in 1..=10 {
            l.score(&c, k * MIN, &[Some(2.5)], 1.0);
        }
        // Through a changelog's entries, as the stage's snapshot writes it.
        let mut split = wfe_contract::state::Split::new();
        split.put_unordered("t", "tuning", [("w", &l)]).unwrap();
        let split = wfe_contract::state::Split::from_entries(split.into_entries());
        let back: Vec<(String, Learner)> = split.items("t", "tuning").unwrap();
        let back = back.into_iter().next().unwrap().1;
        assert_eq!(back, l);
        assert!(back.fits(&c));
        let other = TuningConfig {
            arms: vec![1.0, 2.0],
            ..c
        };
        assert!(!back.fits(&other));
        // Plans of another number of arms are not taken.
        let mut l2 = l.clone();
        l2.plan(99, plans(&[1.0], &[1.0]));
        assert_eq!(l2, l);
    }
}
