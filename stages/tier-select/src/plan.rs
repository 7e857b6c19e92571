//! Pricing a workload's forecast needs against the catalog, and choosing a mix.
//!
//! A forecast row gives a few quantiles of demand at one horizon. Read as a distribution
//! (linear between the quantiles, an exponential tail above the highest one, see
//! [`exceed`]), it says how likely demand is to pass a given capacity. An option is one
//! instance type, a count `n`, and how many of those are bought as spot (`spot`); its risk is
//! the chance of not having enough at some point of the horizon:
//!
//! `risk = sum over k of P(k of the spot instances are interrupted) * r(n - k)`, where `r(m)`
//! is the largest chance over the needs that demand passes `m` instances' capacity (x
//! performance), and each spot instance is interrupted within the horizon independently at
//! the catalog's rate per hour (a binomial count). So spot is cheap but adds risk, and the
//! share of spot in a mix is limited both by `max_spot_share` and by that risk: on-demand is
//! the fallback that carries the rest.
//!
//! Per instance type the least-cost mix within `max_risk` is kept (counts from what the SLA
//! quantile needs up to two more, since a larger fleet can carry more spot for less), and the
//! cheapest of those over all types wins; a budget per hour bounds the choice. This module has
//! no stage in it, so that `wfe backtest` prices with exactly the stage's rules.

use serde::{Deserialize, Serialize};

use crate::cost::{CostModel, Expected, InPlace};
use crate::{Catalog, Instance};

/// One resource at one horizon of a forecast issuance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Need {
    pub resource: String,
    pub unit: String,
    pub horizon_s: i64,
    /// Quantile levels, ascending, and the forecast values at them.
    pub levels: Vec<f64>,
    pub values: Vec<f64>,
}

impl Need {
    /// The value at `level` (the nearest level at or above it, else the highest).
    pub fn at(&self, level: f64) -> Option<(f64, f64)> {
        wfe_domain::stats::level_at(&self.levels, &self.values, level)
    }
}

/// Chance that demand passes `capacity`, from quantile levels and values (ascending).
///
/// Linear between the quantiles; from 0 at zero demand up to the lowest; above the highest,
/// an exponential tail whose density matches the last segment's slope (so a wide top interval
/// has a long tail). A degenerate (flat) top segment means nothing lies above it.
pub fn exceed(levels: &[f64], values: &[f64], capacity: f64) -> f64 {
    let n = levels.len().min(values.len());
    if n == 0 {
        return 1.0;
    }
    let (l, v) = (&levels[..n], &values[..n]);
    if capacity < v[0] {
        let f = if v[0] > 0.0 {
            l[0] * (capacity / v[0]).max(0.0)
        } else {
            0.0
        };
        return 1.0 - f;
    }
    for i in 1..n {
        if capacity < v[i] {
            let w = (capacity - v[i - 1]) / (v[i] - v[i - 1]);
            return 1.0 - (l[i - 1] + w * (l[i] - l[i - 1]));
        }
    }
    let top = 1.0 - l[n - 1];
    if n < 2 || v[n - 1] <= v[n - 2] {
        return if capacity > v[n - 1] { 0.0 } else { top };
    }
    let slope = (l[n - 1] - l[n - 2]) / (v[n - 1] - v[n - 2]);
    let rate = slope / top.max(1e-12);
    top * (-(capacity - v[n - 1]) * rate).exp()
}

/// One option priced: a count of one instance type, some of it spot.
#[derive(Debug, Clone, Serialize)]
pub struct Priced {
    pub instance_type: String,
    /// The tier of the on-demand part (`on-demand` or `high-performance`).
    pub tier: String,
    pub count: i64,
    pub spot_count: i64,
    pub cost_per_hour: f64,
    pub risk: f64,
    pub feasible: bool,
    #[serde(skip)]
    pub driver: Driver,
    /// Why spot stops where it does (or why none), for the explanation.
    #[serde(skip)]
    pub spot_limit: &'static str,
    /// Under the `expected-cost` objective: the expected cost over the horizon and its parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

impl Priced {
    /// The tier named in a decision: `spot` when all of it is spot, else the on-demand tier.
    pub fn decision_tier(&self) -> &str {
        if self.spot_count == self.count && self.count > 0 {
            "spot"
        } else {
            &self.tier
        }
    }

    /// What options are compared by, per hour: the expected cost where the objective prices
    /// shortfall and churn, else the instances' price.
    pub fn score(&self) -> f64 {
        self.expected.map_or(self.cost_per_hour, |e| e.per_hour())
    }
}

/// The need that set an option's count.
#[derive(Debug, Clone, Default)]
pub struct Driver {
    pub resource: String,
    pub horizon_s: i64,
    pub level: f64,
    /// Demand at `level`, in the need's unit.
    pub value: f64,
    /// Capacity of one instance for it (capacity x performance).
    pub per_instance: f64,
}

/// The rules an option is chosen by.
#[derive(Debug, Clone)]
pub struct Rules {
    pub sla_quantile: f64,
    pub max_risk: f64,
    pub max_spot_share: f64,
    pub min_instances: i64,
    pub budget_per_hour: Option<f64>,
    /// `expected-cost` objective: what shortfall and churn cost (None: the `risk` objective).
    pub cost: Option<CostModel>,
    /// The fleet in place (for lead time and churn under `expected-cost`).
    pub now: InPlace,
}

/// Largest chance over the needs that demand passes `n` instances of `inst`.
fn shortfall(inst: &Instance, needs: &[Need], n: i64) -> f64 {
    needs
        .iter()
        .filter_map(|need| {
            let per = inst.capacity(&need.unit)? * inst.performance;
            Some(exceed(&need.levels, &need.values, n as f64 * per))
        })
        .fold(0.0, f64::max)
}

/// [`shortfall`] of one type and needs at each count, each computed once.
struct Shortfalls<'a> {
    inst: &'a Instance,
    needs: &'a [Need],
    /// By count (NaN: not computed yet), for counts below [`Shortfalls::REMEMBERED`].
    known: Vec<f64>,
}

impl<'a> Shortfalls<'a> {
    /// Counts remembered; a larger one is computed each time.
    const REMEMBERED: i64 = 4096;

    fn new(inst: &'a Instance, needs: &'a [Need]) -> Self {
        Self {
            inst,
            needs,
            known: Vec::new(),
        }
    }

    fn of(&mut self, n: i64) -> f64 {
        if !(0..Self::REMEMBERED).contains(&n) {
            return shortfall(self.inst, self.needs, n);
        }
        let i = n as usize;
        if self.known.len() <= i {
            self.known.resize(i + 1, f64::NAN);
        }
        if self.known[i].is_nan() {
            self.known[i] = shortfall(self.inst, self.needs, n);
        }
        self.known[i]
    }
}

impl Rules {
    /// The instances of `inst` that the SLA quantile needs, and the need that set it.
    pub(crate) fn base(&self, inst: &Instance, needs: &[Need]) -> (i64, Driver) {
        let mut count = self.min_instances.max(0);
        let mut driver = Driver::default();
        for need in needs {
            let (Some(cap), Some((level, value))) =
                (inst.capacity(&need.unit), need.at(self.sla_quantile))
            else {
                continue;
            };
            let per = cap * inst.performance;
            let c = (value / per).ceil() as i64;
            if c > count || driver.resource.is_empty() {
                driver = Driver {
                    resource: need.resource.clone(),
                    horizon_s: need.horizon_s,
                    level,
                    value,
                    per_instance: per,
                };
            }
            count = count.max(c);
        }
        (count, driver)
    }

    /// Risk of `n` instances of which `spot` are spot, over the longest horizon: each spot
    /// instance is interrupted within it with chance `q` (independently), and with `k` of
    /// them gone the shortfall is that of `n - k`.
    pub fn risk(&self, inst: &Instance, needs: &[Need], n: i64, spot: i64) -> f64 {
        self.risk_with(&mut Shortfalls::new(inst, needs), n, spot)
    }

    /// [`Rules::risk`] with the shortfalls of one type and needs remembered between calls
    /// (pricing a type tries several counts and spot shares over the same ones).
    fn risk_with(&self, sf: &mut Shortfalls<'_>, n: i64, spot: i64) -> f64 {
        let (inst, needs) = (sf.inst, sf.needs);
        let hours = needs
            .iter()
            .map(|n| n.horizon_s)
            .max()
            .map_or(1.0 / 60.0, |h| (h as f64 / 3600.0).max(1.0 / 60.0));
        let q = 1.0 - (1.0 - inst.interruption_rate).powf(hours);
        if spot == 0 || q <= 0.0 {
            return sf.of(n);
        }
        // Binomial(spot, q) weights, term by term; the mass past the terms summed (a
        // negligible tail, or past 10,000 losses) counts at the last shortfall reached.
        let mut risk = 0.0;
        let mut mass = 0.0;
        let mut pk = (1.0 - q).powf(spot as f64);
        let mut k = 0;
        let mut last = sf.of(n);
        loop {
            last = if k == 0 { last } else { sf.of(n - k) };
            risk += pk * last;
            mass += pk;
            if k == spot || mass > 1.0 - 1e-12 || k >= 10_000 {
                break;
            }
            pk *= (spot - k) as f64 / (k + 1) as f64 * q / (1.0 - q);
            k += 1;
        }
        (risk + (1.0 - mass).max(0.0) * last).min(1.0)
    }

    fn priced(&self, sf: &mut Shortfalls<'_>, n: i64, spot: i64, d: &Driver) -> Priced {
        let inst = sf.inst;
        let spot_price = inst.spot_price.unwrap_or(inst.on_demand_price);
        let risk = self.risk_with(sf, n, spot);
        Priced {
            instance_type: inst.r#type.clone(),
            tier: inst.family_tier.clone(),
            count: n,
            spot_count: spot,
            cost_per_hour: spot as f64 * spot_price + (n - spot) as f64 * inst.on_demand_price,
            risk,
            feasible: risk <= self.max_risk + 1e-12,
            driver: d.clone(),
            spot_limit: "",
            expected: None,
        }
    }

    /// Most spot instances of `n` that `max_spot_share` allows.
    fn spot_cap(&self, inst: &Instance, n: i64) -> i64 {
        if inst.spot_price.is_some() {
            (self.max_spot_share * n as f64).floor() as i64
        } else {
            0
        }
    }

    /// The most spot of `n` instances that keeps the risk within `max_risk` (risk grows with
    /// every spot instance, so a binary search); `None` when even all on demand is too risky.
    fn most_spot(&self, sf: &mut Shortfalls<'_>, n: i64) -> Option<i64> {
        let inst = sf.inst;
        let mut ok = |s: i64| self.risk_with(sf, n, s) <= self.max_risk + 1e-12;
        if !ok(0) {
            return None;
        }
        let (mut lo, mut hi) = (0, self.spot_cap(inst, n));
        while lo < hi {
            let mid = (lo + hi + 1) / 2;
            if ok(mid) { lo = mid } else { hi = mid - 1 }
        }
        Some(lo)
    }

    /// The least-cost mix of one instance type: feasible if any count from the base up to
    /// two more is (with as much spot as the risk allows); else all on demand at the least
    /// risk. `None` for a type that measures none of the needs.
    pub fn best_of(&self, inst: &Instance, needs: &[Need]) -> Option<Priced> {
        if needs.iter().all(|n| inst.capacity(&n.unit).is_none()) {
            return None;
        }
        let (base, driver) = self.base(inst, needs);
        let mut best: Option<Priced> = None;
        let mut sf = Shortfalls::new(inst, needs);
        for n in base..=base.saturating_add(2) {
            let (spot, limit) = match self.most_spot(&mut sf, n) {
                Some(s) if inst.spot_price.is_none() => (s, "not offered as spot"),
                Some(s) if s == self.spot_cap(inst, n) => (s, "max_spot_share"),
                Some(s) => (s, "interruption risk"),
                None => (0, "risk"),
            };
            let mut o = self.priced(&mut sf, n, spot, &driver);
            o.spot_limit = limit;
            let better = match &best {
                None => true,
                Some(b) => match (o.feasible, b.feasible) {
                    (true, false) => true,
                    (false, true) => false,
                    (true, true) => o.cost_per_hour < b.cost_per_hour - 1e-12,
                    (false, false) => o.risk < b.risk - 1e-12,
                },
            };
            if better {
                best = Some(o);
            }
        }
        best
    }

    /// The least risky mix of `inst` whose cost stays within `budget`, at most the base
    /// count: the largest affordable counts, each with the least spot that pays for it.
    fn within_budget(&self, inst: &Instance, needs: &[Need], budget: f64) -> Option<Priced> {
        let (base, driver) = self.base(inst, needs);
        let od = inst.on_demand_price;
        let sp = inst.spot_price.unwrap_or(od);
        let top = ((budget / sp.min(od)).floor() as i64).min(base);
        let mut sf = Shortfalls::new(inst, needs);
        (1..=top.max(0))
            .rev()
            .take(64)
            .filter_map(|n| {
                // Spot needed so that n instances cost no more than the budget.
                let s = if n as f64 * od <= budget || od <= sp {
                    0
                } else {
                    ((n as f64 * od - budget) / (od - sp)).ceil() as i64
                };
                (s <= self.spot_cap(inst, n)).then(|| self.priced(&mut sf, n, s, &driver))
            })
            .filter(|o| o.cost_per_hour <= budget + 1e-9)
            .take(3)
            .min_by(|a, b| a.risk.total_cmp(&b.risk))
            .map(|mut o| {
                o.spot_limit = "budget";
                o
            })
    }
}

/// What was chosen, from what, and why.
#[derive(Debug, Clone)]
pub struct Choice {
    pub chosen: Priced,
    /// The best option of each instance type.
    pub considered: Vec<Priced>,
    pub reason: String,
}

/// Chooses the cheapest feasible option within the budget over the catalog; `None` when no
/// instance type measures any of the needs.
pub fn choose(catalog: &Catalog, rules: &Rules, needs: &[Need]) -> Option<Choice> {
    if let Some(model) = rules.cost {
        return choose_expected(catalog, rules, needs, model);
    }
    let considered: Vec<Priced> = catalog
        .instance
        .iter()
        .filter_map(|i| rules.best_of(i, needs))
        .collect();
    let budget = rules.budget_per_hour.unwrap_or(f64::INFINITY);
    let cheapest = considered
        .iter()
        .filter(|o| o.feasible && o.cost_per_hour <= budget)
        .min_by(|a, b| {
            a.cost_per_hour
                .total_cmp(&b.cost_per_hour)
                .then(a.risk.total_cmp(&b.risk))
        });
    if let Some(best) = cheapest {
        let reason = format!(
            "cheapest mix within risk {:.2}: {}; driven by {} p{:.0} at {} s ({:.2} needed, {:.2} per instance)",
            rules.max_risk,
            describe(best),
            best.driver.resource,
            best.driver.level * 100.0,
            best.driver.horizon_s,
            best.driver.value,
            best.driver.per_instance,
        );
        return Some(Choice {
            chosen: best.clone(),
            considered,
            reason,
        });
    }
    let over_budget = considered
        .iter()
        .any(|o| o.feasible && o.cost_per_hour > budget);
    if over_budget {
        return capped(catalog, rules, needs, considered, budget);
    }
    let safest = considered
        .iter()
        .min_by(|a, b| {
            a.risk
                .total_cmp(&b.risk)
                .then(a.cost_per_hour.total_cmp(&b.cost_per_hour))
        })?
        .clone();
    let reason = format!(
        "no option keeps risk within {:.2}: least risky chosen: {}",
        rules.max_risk,
        describe(&safest)
    );
    Some(Choice {
        chosen: safest,
        considered,
        reason,
    })
}

/// The `expected-cost` objective: the option of least expected cost per hour whose price
/// stays within the budget (see [`crate::expected`]).
fn choose_expected(
    catalog: &Catalog,
    rules: &Rules,
    needs: &[Need],
    model: CostModel,
) -> Option<Choice> {
    let considered: Vec<Priced> = catalog
        .instance
        .iter()
        .filter_map(|i| {
            let (_, driver) = rules.base(i, needs);
            rules.cheapest_expected(i, needs, model, &rules.now, catalog, driver)
        })
        .collect();
    let budget = rules.budget_per_hour.unwrap_or(f64::INFINITY);
    let best = considered
        .iter()
        .filter(|o| o.cost_per_hour <= budget)
        .min_by(|a, b| a.score().total_cmp(&b.score()));
    let Some(best) = best else {
        return capped(catalog, rules, needs, considered, budget);
    };
    let e = best.expected.unwrap_or_default();
    let reason = format!(
        "least expected cost over {} s, {:.3}/h: {}; instances {:.3} + shortfall {:.3} ({:.2} unit-minutes at {}) + churn {:.3} USD",
        e.horizon_s,
        e.per_hour(),
        describe(best),
        e.instances,
        e.shortfall,
        e.short_unit_minutes,
        model.shortfall_price,
        e.churn,
    );
    Some(Choice {
        chosen: best.clone(),
        considered,
        reason,
    })
}

/// Over budget: the least risky mix within it, or else the cheapest option considered
/// (None when nothing was).
fn capped(
    catalog: &Catalog,
    rules: &Rules,
    needs: &[Need],
    considered: Vec<Priced>,
    budget: f64,
) -> Option<Choice> {
    let within = catalog
        .instance
        .iter()
        .filter(|i| needs.iter().any(|n| i.capacity(&n.unit).is_some()))
        .filter_map(|i| rules.within_budget(i, needs, budget))
        .min_by(|a, b| {
            a.risk
                .total_cmp(&b.risk)
                .then(a.cost_per_hour.total_cmp(&b.cost_per_hour))
        });
    let reason = match &within {
        Some(o) => format!(
            "budget {budget:.3}/h holds: the options the objective prefers cost more; least risky within budget: {}",
            describe(o)
        ),
        None => format!(
            "budget {budget:.3}/h is below the cheapest single instance: nothing fits, the fewest instances are kept"
        ),
    };
    let chosen = within.or_else(|| {
        considered
            .iter()
            .min_by(|a, b| a.cost_per_hour.total_cmp(&b.cost_per_hour))
            .cloned()
    })?;
    Some(Choice {
        chosen,
        considered,
        reason,
    })
}

/// "5 x m7i.xlarge (3 spot + 2 on-demand) at 0.563/h, risk 0.081; spot limited by ...".
pub fn describe(o: &Priced) -> String {
    let mix = match (o.spot_count, o.count - o.spot_count) {
        (0, _) => o.tier.clone(),
        (_, 0) => "all spot".to_string(),
        (s, d) => format!("{s} spot + {d} {}", o.tier),
    };
    let limit = if o.spot_count < o.count && !o.spot_limit.is_empty() {
        format!("; spot limited by {}", o.spot_limit)
    } else {
        String::new()
    };
    format!(
        "{} x {} ({mix}) at {:.3}/h, risk {:.3}{limit}",
        o.count, o.instance_type, o.cost_per_hour, o.risk
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceedance_follows_the_quantiles_and_has_a_tail() {
        let (l, v) = ([0.1, 0.5, 0.9], [2.0, 4.0, 6.0]);
        assert!((exceed(&l, &v, 4.0) - 0.5).abs() < 1e-12);
        assert!((exceed(&l, &v, 5.0) - 0.3).abs() < 1e-12);
        assert!((exceed(&l, &v, 6.0) - 0.1).abs() < 1e-12);
        assert!((exceed(&l, &v, 1.0) - 0.95).abs() < 1e-12);
        // Tail: density 0.2 per unit at 6, so 0.1 * exp(-2 * 1) one unit above.
        assert!((exceed(&l, &v, 7.0) - 0.1 * (-2.0f64).exp()).abs() < 1e-12);
        assert_eq!(exceed(&l, &[2.0, 4.0, 4.0], 4.5), 0.0);
        assert_eq!(exceed(&[], &[], 3.0), 1.0);
    }
}
