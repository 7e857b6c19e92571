//! # wfe-tier-select: `forecasts` in, `decisions` out
//!
//! For each forecast issuance of a workload (all its resources and horizons at one time),
//! the least-cost **mix** of the [`Catalog`] is chosen (see [`plan`] for the arithmetic):
//! - **count**: for each resource and horizon, the forecast at the SLA quantile divided by
//!   what one instance gives (capacity x performance), rounded up; the largest is the
//!   decision's driver (counts up to two above it are priced too);
//! - **spot share**: some of the count may be spot (cheaper, interruptible); how much is
//!   limited by `max_spot_share` and by the risk it adds, on-demand carrying the rest;
//! - **risk**: the chance the capacity is not enough, read from the forecast's quantiles as a
//!   distribution, plus the chance a spot instance is interrupted within the horizon;
//! - **cost**: spot count x spot price + on-demand count x on-demand price, per hour.
//!
//! Under the `risk` objective the cheapest mix whose risk stays within `max_risk` and whose
//! cost within `budget_per_hour` is chosen; otherwise the least risky within the budget, and
//! the reason says so. Under `expected-cost` ([`expected`]) the mix of least expected cost
//! over the forecast distribution wins: instances, `shortfall_price` per unit-minute short
//! (with the launch lead time served by the fleet in place) and `churn_cost` per instance
//! launched or ended. Scale-in waits for `cooldown_s` after the last change and for demand
//! to sit `scale_in_margin` below the smaller fleet (hysteresis), so forecasts that wobble do
//! not churn instances. Every row carries the options considered (JSON) and a sentence
//! saying why.

mod borrow;
mod cold;
mod config;
mod cost;
pub mod expected;
mod hold;
pub mod plan;
mod prices;
mod private;
mod reactive;
mod rows;
pub mod tuner;
mod tuning;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{i64s, list_row_f64, strings, timestamps};
use wfe_contract::state::{Split, StageState};
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};
use wfe_domain::ResourceMap;
use wfe_ec2::{Cloud, Connect, Ec2, Ec2Settings};

use cold::ColdStart;
pub use config::{Objective, PrivateCapacity, SpotPriceSource, TierSelectConfig, TuningConfig};
pub use cost::{CostModel, Expected, InPlace};
pub use plan::{Need, Priced, Rules, choose};
use prices::Prices;
use rows::Rows;
pub use rows::{burst_id, cold_start_id, decision_id};
pub use wfe_ec2::{Catalog, Instance};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Current {
    tier: String,
    instance_type: String,
    count: i64,
    #[serde(default)]
    spot_count: i64,
    changed_at: i64,
    /// The newest issuance decided on: a forecast delivered again (an at-least-once replay
    /// after a crash) is skipped, so it cannot move the cooldown or decide twice.
    #[serde(default)]
    decided: Option<i64>,
    /// The newest `metrics.norm` step observed (a step delivered again is skipped).
    #[serde(default)]
    observed: Option<i64>,
    /// The last issuance's needs, to price a burst's risk with. Kept in entries of their own
    /// (`needs/<workload>`, see the stage's snapshot hooks): a field here would make the
    /// states written before unreadable.
    #[serde(skip)]
    needs: Vec<Need>,
    /// The demand last observed, per resource map (reactive floor), in the maps' units.
    #[serde(default)]
    last_seen: Vec<Option<f64>>,
    /// While the workload is cold: the sizing borrowed from its neighbours.
    #[serde(default)]
    cold: Option<ColdStart>,
    /// The newest fingerprint window seen (a row delivered again is skipped).
    #[serde(default)]
    fingerprinted: Option<i64>,
}

/// Where a decision comes from: its id and whether it moves the replay guard of forecasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Forecast,
    ColdStart,
}

/// The tier-select stage.
pub struct TierSelect {
    cfg: TierSelectConfig,
    catalog: Catalog,
    current: HashMap<String, Current>,
    prices: Prices,
    /// From metrics to resources, for the reactive floor (none: forecasts only).
    resources: Vec<ResourceMap>,
    /// Per workload, the learner of `[tuning]` (see [`tuner`]).
    tuners: HashMap<String, tuner::Learner>,
    /// Per workload and resource map, the highest demand of the last `hold_h` hours (with
    /// `hold_h` above 0 and the reactive floor on).
    holds: HashMap<String, Vec<hold::PeakHold>>,
}

impl TierSelect {
    /// The stage; with `spot_prices` set it connects to EC2 itself (standard credential chain).
    pub fn new(cfg: TierSelectConfig) -> Result<Self> {
        Self::connect_with(cfg, &mut |s| Ok(Box::new(Ec2::connect(s)?)))
    }

    /// The stage, its spot-price client (when `spot_prices` is set) from `connect`: a process
    /// running several stages hands out one client per region (`wfe_ec2::Clients`).
    pub fn connect_with(cfg: TierSelectConfig, connect: Connect<'_>) -> Result<Self> {
        cfg.validate()?;
        let catalog = match &cfg.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::shipped()?,
        };
        let cloud: Option<Box<dyn Cloud>> = match &cfg.spot_prices {
            Some(src) => Some(connect(&Ec2Settings {
                region: src.region.clone().unwrap_or_else(|| catalog.region.clone()),
                endpoint: src.endpoint.clone(),
                max_attempts: 3,
                max_calls_per_s: 1.0,
            })?),
            None => None,
        };
        Ok(Self::build(cfg, catalog, cloud))
    }

    /// The stage with a given EC2 client for spot prices (e.g. one with fixed credentials).
    pub fn with_cloud(cfg: TierSelectConfig, cloud: Box<dyn Cloud>) -> Result<Self> {
        let mut st = Self::new(TierSelectConfig {
            spot_prices: None,
            ..cfg.clone()
        })?;
        st.cfg = cfg;
        st.prices.cloud = Some(cloud);
        Ok(st)
    }

    fn build(cfg: TierSelectConfig, catalog: Catalog, cloud: Option<Box<dyn Cloud>>) -> Self {
        Self {
            prices: Prices::new(&catalog, cloud),
            cfg,
            catalog,
            current: HashMap::new(),
            resources: Vec::new(),
            tuners: HashMap::new(),
            holds: HashMap::new(),
        }
    }

    /// The mapping from metrics to resources: with it (and `burst_utilisation` above 0) the
    /// stage also reads `metrics.norm` and scales up at once when observed demand outruns
    /// what was decided.
    pub fn with_resources(mut self, resources: Vec<ResourceMap>) -> Self {
        self.resources = resources;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The rules options are chosen by (no fleet in place).
    pub fn rules(&self) -> Rules {
        let cost = (self.cfg.objective == Objective::ExpectedCost).then_some(CostModel {
            shortfall_price: self.cfg.shortfall_price,
            churn_cost: self.cfg.churn_cost,
            lead_s: self.cfg.lead_s,
        });
        Rules {
            sla_quantile: self.cfg.sla_quantile,
            max_risk: self.cfg.max_risk,
            max_spot_share: self.cfg.max_spot_share,
            min_instances: self.cfg.min_instances,
            budget_per_hour: self.cfg.budget_per_hour,
            cost,
            now: InPlace::default(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        workload: &str,
        at: i64,
        needs: &[Need],
        origin: Origin,
        note: Option<String>,
        rows: &mut Rows,
        ctx: &mut Context,
    ) -> Result<()> {
        // Hybrid burst: private capacity first, the catalog for what is above it.
        let private = self
            .cfg
            .private
            .iter()
            .find(|p| p.applies_to(workload))
            .cloned();
        // The held peak's headroom (`hold_margin`) is a least demand the objective buys.
        let held = self.held_needs(workload, needs);
        if held.is_some() {
            ctx.count("decisions.hold_margin", 1);
        }
        let forecast = held.as_deref().unwrap_or(needs);
        let public_needs: Vec<Need> = match &private {
            Some(p) => forecast
                .iter()
                .map(|n| Need {
                    values: n
                        .values
                        .iter()
                        .map(|v| (v - p.of(&n.unit)).max(0.0))
                        .collect(),
                    ..n.clone()
                })
                .collect(),
            None => forecast.to_vec(),
        };
        let prev = self.current.get(workload).cloned().unwrap_or_default();
        let mut rules = self.rules();
        rules.now = InPlace {
            instance_type: prev.instance_type.clone(),
            count: prev.count,
            spot_count: prev.spot_count,
        };
        if private.is_some() {
            // Private capacity may carry it all: no public instance is then needed.
            rules.min_instances = 0;
        }
        let (choice, tuned) = self
            .tuned_choice(workload, at, &rules, &public_needs, &prev, ctx)
            .ok_or_else(|| Error::config("catalog", "no instance type measures the needs"))?;
        let plan::Choice {
            chosen: best,
            considered,
            mut reason,
        } = choice;
        if let Some(t) = tuned {
            reason = format!("{t}; {reason}");
        }
        if held.is_some() {
            reason = format!(
                "{reason}; needs no lower than {} x the highest demand of the last {} h (hold_margin)",
                self.cfg.hold_margin, self.cfg.hold_h
            );
        }
        let all_needs = needs;
        let needs = &public_needs[..];
        let mut best = best;
        if !prev.instance_type.is_empty() && prev.instance_type != best.instance_type {
            let stay = considered.iter().find(|o| {
                o.instance_type == prev.instance_type
                    && o.feasible == best.feasible
                    && o.score() <= best.score() * (1.0 + self.cfg.switch_margin)
            });
            if let Some(stay) = stay {
                reason = format!(
                    "{} kept: {} would save less than switch_margin {:.0} % ({:.3}/h against {:.3}/h); {}",
                    prev.instance_type,
                    best.instance_type,
                    self.cfg.switch_margin * 100.0,
                    best.score(),
                    stay.score(),
                    plan::describe(stay)
                );
                best = stay.clone();
            }
        }
        let mut chosen = best.clone();
        // A forecast never takes the fleet below what the demand observed now needs (the
        // reactive floor would scale it straight back up): the difference is on demand.
        let target = self.floor_of(workload)[1];
        if let Some(reactive::FloorCount {
            count: floor,
            what,
            held,
        }) = self.floor_count(&prev, workload, &best, target)
            && floor > chosen.count
        {
            // Decisions the floor's memory raised (`hold_h`): what the hold costs, on /metrics.
            ctx.count("decisions.held", u64::from(held));
            let inst = self.catalog.get(&chosen.instance_type);
            if let Some(inst) = inst {
                chosen.cost_per_hour += (floor - chosen.count) as f64 * inst.on_demand_price;
                chosen.risk = self.rules().risk(inst, needs, floor, chosen.spot_count);
            }
            reason = format!(
                "{reason}; raised from {} to {floor} by the reactive floor (observed {what} at burst_target {:.0} %)",
                chosen.count,
                target * 100.0
            );
            chosen.count = floor;
        }
        let same_kind = prev.instance_type == best.instance_type;
        if same_kind
            && best.count < prev.count
            && let Some(why) = self.hold_scale_in(&prev, &best, at)
        {
            // Keep the fleet, priced at the new mix's share of spot where it fits.
            chosen.count = prev.count;
            chosen.spot_count = prev.spot_count.min(prev.count);
            let inst = self.catalog.get(&best.instance_type);
            if let Some(inst) = inst {
                let spot = inst.spot_price.unwrap_or(inst.on_demand_price);
                chosen.cost_per_hour = chosen.spot_count as f64 * spot
                    + (chosen.count - chosen.spot_count) as f64 * inst.on_demand_price;
                chosen.risk = self
                    .rules()
                    .risk(inst, needs, chosen.count, chosen.spot_count);
            }
            reason = format!("scale-in from {} to {} held: {why}", prev.count, best.count);
        }
        if let Some(p) = &private {
            let (cost, why) = self.burst_transfer(p, all_needs, &chosen);
            chosen.cost_per_hour += cost;
            reason = format!("{why}; {reason}");
        }
        let changed =
            !same_kind || chosen.count != prev.count || chosen.spot_count != prev.spot_count;
        let cur = self.current.entry(workload.to_string()).or_default();
        if changed {
            cur.tier = chosen.decision_tier().to_string();
            cur.instance_type = chosen.instance_type.clone();
            cur.count = chosen.count;
            cur.spot_count = chosen.spot_count;
            cur.changed_at = at;
            ctx.count("decisions.changes", 1);
        }
        if origin == Origin::Forecast {
            cur.decided = Some(at);
        }
        cur.needs = needs.to_vec();
        let prev_count = if same_kind { prev.count } else { 0 };
        rows.id.push(match origin {
            Origin::Forecast => decision_id(workload, at),
            Origin::ColdStart => cold_start_id(workload, at),
        });
        rows.at.push(at);
        rows.workload.push(workload.to_string());
        rows.tier.push(chosen.decision_tier().to_string());
        rows.instance.push(chosen.instance_type.clone());
        rows.count.push(chosen.count);
        rows.spot.push(chosen.spot_count);
        rows.previous.push(prev_count);
        rows.cost.push(chosen.cost_per_hour);
        rows.risk.push(chosen.risk);
        rows.d_res.push(chosen.driver.resource.clone());
        rows.d_q.push(chosen.driver.level);
        rows.d_h.push(chosen.driver.horizon_s);
        rows.required.push(chosen.driver.value);
        rows.considered
            .push(serde_json::to_string(&considered).unwrap_or_default());
        let note = note.map(|n| format!("{n}; ")).unwrap_or_default();
        rows.reason
            .push(format!("{note}{reason} ({})", self.prices.origin));
        Ok(())
    }

    /// Why a scale-in from `prev` to `best` waits, if it does: the cooldown since the last
    /// change, or demand not yet `scale_in_margin` below what the smaller fleet gives.
    fn hold_scale_in(&self, prev: &Current, best: &Priced, at: i64) -> Option<String> {
        if at - prev.changed_at < self.cfg.cooldown_s * 1000 {
            return Some(format!(
                "last change {} s ago, cooldown {} s",
                (at - prev.changed_at) / 1000,
                self.cfg.cooldown_s
            ));
        }
        let d = &best.driver;
        let smaller = (prev.count - 1) as f64 * d.per_instance;
        if d.value > smaller * (1.0 - self.cfg.scale_in_margin) {
            return Some(format!(
                "{:.2} needed is within scale_in_margin {:.2} of the {:.2} that {} instances give",
                d.value,
                self.cfg.scale_in_margin,
                smaller,
                prev.count - 1
            ));
        }
        None
    }
}

impl Stage for TierSelect {
    fn name(&self) -> &'static str {
        "tier-select"
    }

    fn inputs(&self) -> Vec<Topic> {
        let mut t = vec![Topic::Forecasts];
        if self.reactive() || self.tuned() {
            t.push(Topic::MetricsNorm);
        }
        if self.borrows() {
            t.push(Topic::Fingerprints);
        }
        t
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Decisions]
    }

    fn process_batch(
        &mut self,
        topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        self.prices
            .refresh(self.cfg.spot_prices.as_ref(), &mut self.catalog, ctx);
        if topic == Topic::MetricsNorm || topic == Topic::Fingerprints {
            let mut rows = Rows::default();
            if topic == Topic::MetricsNorm && self.tuned() {
                self.score_arms(&batch)?;
            }
            if topic == Topic::MetricsNorm && self.reactive() {
                self.observe(&batch, &mut rows, ctx)?;
            }
            if topic == Topic::Fingerprints && self.borrows() {
                self.borrow(&batch, &mut rows, ctx)?;
            }
            if !rows.id.is_empty() {
                out.emit(Topic::Decisions, rows.finish()?)?;
            }
            return Ok(());
        }
        let issued = timestamps(&batch, "issued_at")?;
        let workload = strings(&batch, "workload")?;
        let resource = strings(&batch, "resource")?;
        let unit = strings(&batch, "unit")?;
        let horizon = i64s(&batch, "horizon_s")?;
        let levels = batch.column_by_name("quantile_levels").map(Arc::clone);
        let values = batch.column_by_name("quantile_values").map(Arc::clone);
        let (Some(levels), Some(values)) = (levels, values) else {
            return Err(Error::bad_input("forecasts", "quantile columns missing"));
        };
        // Group rows by issuance, keeping first-seen order (the forecast stage emits an
        // issuance's rows together).
        let mut groups: Vec<((String, i64), Vec<Need>)> = Vec::new();
        // Where each issuance's group is: a batch holds the issuances of a whole fleet.
        let mut group_of: HashMap<(String, i64), usize> = HashMap::new();
        for r in 0..batch.num_rows() {
            let key = (workload.value(r).to_string(), issued.value(r));
            let lv = list_row_f64(levels.as_ref(), r)?;
            let vv = list_row_f64(values.as_ref(), r)?;
            let usable = !lv.is_empty()
                && lv.len() == vv.len()
                && vv.iter().all(|v| v.is_finite() && *v >= 0.0)
                && lv.iter().all(|l| l.is_finite() && (0.0..=1.0).contains(l))
                && lv.windows(2).all(|w| w[0] < w[1]);
            let need = if usable {
                // Quantiles that cross (p90 below p50) are put in order, as the levels are.
                let mut vv = vv;
                vv.sort_by(f64::total_cmp);
                Some(Need {
                    resource: resource.value(r).to_string(),
                    unit: unit.value(r).to_string(),
                    horizon_s: horizon.value(r),
                    levels: lv,
                    values: vv,
                })
            } else {
                let loc = format!("{} at {}", key.0, key.1);
                ctx.reject(
                    "bad_forecast",
                    &loc,
                    "forecast is NaN, negative or has no quantiles: not used",
                );
                None
            };
            let pos = *group_of.entry(key).or_insert_with_key(|key| {
                groups.push((key.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[pos].1.extend(need);
        }
        let mut rows = Rows::default();
        for ((w, at), needs) in groups {
            if self
                .current
                .get(&w)
                .and_then(|c| c.decided)
                .is_some_and(|d| at <= d)
            {
                ctx.event(Event::Dropped {
                    kind: "replayed_forecast",
                    count: 1,
                });
                continue;
            }
            if needs.is_empty() {
                ctx.count("skipped.no_usable_forecast", 1);
                continue;
            }
            if needs.iter().all(|n| {
                self.catalog
                    .instance
                    .iter()
                    .all(|i| i.capacity(&n.unit).is_none())
            }) {
                let loc = format!("{w} at {at}");
                ctx.reject(
                    "unknown_unit",
                    &loc,
                    "no forecast unit is one the catalog measures (vcpu, gib, gbps)",
                );
                continue;
            }
            let mut needs = needs;
            let note = self.raise_cold(&w, &mut needs);
            self.decide(&w, at, &needs, Origin::Forecast, note, &mut rows, ctx)?;
        }
        if !rows.id.is_empty() {
            out.emit(Topic::Decisions, rows.finish()?)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &self.current)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.current = wfe_contract::state::decode(self.name(), state)?;
        Ok(())
    }

    /// Each workload's decision in force under `w/`, and the needs of its last issuance under
    /// `needs/` (a burst after a restart prices its risk with them, as it would have without),
    /// and with `[tuning]` its learner under `tuning.v2/`.
    fn snapshot_split(&self) -> Result<Option<Split>> {
        let mut split = StageState::split(&self.current, self.name())?;
        let needs = (self.current.iter())
            .filter(|(_, c)| !c.needs.is_empty())
            .map(|(w, c)| (w.as_str(), &c.needs));
        split.put_unordered(self.name(), NEEDS, needs)?;
        split.put_unordered(
            self.name(),
            TUNING,
            self.tuners.iter().map(|(w, l)| (w.as_str(), l)),
        )?;
        split.put_unordered(
            self.name(),
            HOLDS,
            self.holds.iter().map(|(w, h)| (w.as_str(), h)),
        )?;
        Ok(Some(split))
    }

    fn restore_split(&mut self, state: Split) -> Result<()> {
        let stage = self.name();
        let needs: Vec<(String, Vec<Need>)> = state.items(stage, NEEDS)?;
        self.tuners = state.items(stage, TUNING)?.into_iter().collect();
        // (A state written with `hold_h` restored without it: nothing reads the holds, and
        // they are not written again.)
        self.holds = match self.cfg.hold_h {
            0 => HashMap::new(),
            _ => state.items(stage, HOLDS)?.into_iter().collect(),
        };
        self.current = StageState::from_split(stage, state)?;
        for (w, n) in needs {
            let cur = self.current.get_mut(&w).ok_or_else(|| {
                Error::state(
                    stage,
                    format!("needs of `{w}`, whose decision is not in the state"),
                )
            })?;
            cur.needs = n;
        }
        Ok(())
    }
}

/// The state entries holding each workload's last needs.
const NEEDS: &str = "needs";
/// The state entries holding each workload's peak hold (`hold_h`).
const HOLDS: &str = "hold";
/// The state entries holding each workload's learner (`[tuning]`). The first version's
/// (`tuning`, arms without the floor's bursts) are not read: those workloads warm up again,
/// and the next snapshot removes them.
const TUNING: &str = "tuning.v2";

#[cfg(test)]
mod tests;
