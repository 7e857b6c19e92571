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
//! The cheapest mix whose risk stays within `max_risk` and whose cost within
//! `budget_per_hour` is chosen; otherwise the least risky within the budget, and the reason
//! says so. Scale-in waits for `cooldown_s` after the last change and for demand to sit
//! `scale_in_margin` below the smaller fleet (hysteresis), so forecasts that wobble do not
//! churn instances. Every row carries the options considered (JSON) and a sentence saying
//! why.

pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{
    bools, i64s, list_row_f32, list_row_f64, list_row_str, strings, timestamp_column, timestamps,
};
use wfe_contract::{Collector, Context, Error, Event, ResourceMap, Result, Stage, Topic};
use wfe_ec2::{Cloud, Ec2, Ec2Settings};

pub use plan::{Need, Priced, Rules, choose};
pub use wfe_ec2::{Catalog, Instance};

/// Settings of the tier-select stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierSelectConfig {
    /// Catalog file (TOML); default: the shipped snapshot (`pipeline/ec2/catalog/aws-us-east-1.toml`).
    #[serde(default)]
    pub catalog: Option<std::path::PathBuf>,
    /// Forecast quantile level the capacity must cover.
    #[serde(default = "d_q")]
    pub sla_quantile: f64,
    /// Highest acceptable risk of not having enough capacity.
    #[serde(default = "d_risk")]
    pub max_risk: f64,
    /// Fewest instances a workload keeps.
    #[serde(default = "d_min")]
    pub min_instances: i64,
    /// Seconds after a change before the count may go down.
    #[serde(default = "d_cooldown")]
    pub cooldown_s: i64,
    /// Largest share of a workload's instances bought as spot (the rest on demand).
    #[serde(default = "d_spot_share")]
    pub max_spot_share: f64,
    /// Most a workload may cost per hour (USD); none: no budget.
    #[serde(default)]
    pub budget_per_hour: Option<f64>,
    /// Scale-in only when the demand at the SLA quantile is this share below what the
    /// smaller fleet gives (hysteresis).
    #[serde(default = "d_margin")]
    pub scale_in_margin: f64,
    /// Stay on the current instance type unless another is cheaper by more than this share
    /// (a change of type replaces every instance).
    #[serde(default = "d_switch")]
    pub switch_margin: f64,
    /// Reactive floor: when the demand observed in `metrics.norm` (through `[[resources]]`)
    /// passes this share of the capacity decided, scale up at once, on demand, without
    /// waiting for the next forecast; and no forecast takes the fleet below what the demand
    /// observed needs at `burst_target`. 0 (the stage's default) turns it off.
    #[serde(default = "d_burst")]
    pub burst_utilisation: f64,
    /// Utilisation a burst scales up to.
    #[serde(default = "d_burst_target")]
    pub burst_target: f64,
    /// Private capacity (on premises) that workloads use before public cloud: only the
    /// demand above it is provisioned from the catalog (hybrid burst). The first entry whose
    /// prefix matches a workload applies; each such workload has that much of its own.
    #[serde(default)]
    pub private: Vec<PrivateCapacity>,
    /// USD per GB of traffic to and from public instances when a workload bursts out of
    /// private capacity (its network demand x the public share of its capacity).
    #[serde(default)]
    pub transfer_cost_per_gb: f64,
    /// Refresh the catalog's spot prices from EC2 (DescribeSpotPriceHistory); none: the
    /// catalog's prices, and every decision says they are the snapshot's.
    #[serde(default)]
    pub spot_prices: Option<SpotPriceSource>,
    /// Cold start: also read `fingerprints`; a workload still `cold_start` there is sized
    /// from its nearest fingerprints' allocation (their typical peak, through
    /// `[[resources]]`): at once when it has no decision yet, and no forecast of it goes
    /// below that until the fingerprint stage knows it. Off in the stage's default (a
    /// service consumes one topic); the default job turns it on.
    #[serde(default)]
    pub cold_start: bool,
}

/// Capacity a workload has on premises.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrivateCapacity {
    /// Workloads whose id starts with this; default: every workload.
    #[serde(default)]
    pub workload_prefix: Option<String>,
    #[serde(default)]
    pub vcpu: f64,
    #[serde(default)]
    pub memory_gib: f64,
    #[serde(default)]
    pub network_gbps: f64,
}

impl PrivateCapacity {
    fn applies_to(&self, workload: &str) -> bool {
        self.workload_prefix
            .as_deref()
            .is_none_or(|p| workload.starts_with(p))
    }

    fn of(&self, unit: &str) -> f64 {
        match unit {
            "vcpu" => self.vcpu,
            "gib" => self.memory_gib,
            "gbps" => self.network_gbps,
            _ => 0.0,
        }
    }
}

/// Where spot prices come from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpotPriceSource {
    /// Region to ask; default: the catalog's.
    #[serde(default)]
    pub region: Option<String>,
    /// EC2 endpoint URL instead of AWS's (moto, private endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Wall seconds between refreshes.
    #[serde(default = "d_refresh")]
    pub refresh_s: u64,
}

fn d_switch() -> f64 {
    0.15
}
fn d_burst() -> f64 {
    // Off unless configured (the default job turns it on): with it, decisions depend on how
    // `metrics.norm` and `forecasts` interleave, which a replay does not fix.
    0.0
}
fn d_burst_target() -> f64 {
    0.7
}

fn d_refresh() -> u64 {
    3600
}

fn d_spot_share() -> f64 {
    0.8
}
fn d_margin() -> f64 {
    0.1
}

fn d_q() -> f64 {
    0.9
}
fn d_risk() -> f64 {
    0.15
}
fn d_min() -> i64 {
    1
}
fn d_cooldown() -> i64 {
    3 * 3600
}

impl Default for TierSelectConfig {
    fn default() -> Self {
        Self {
            catalog: None,
            sla_quantile: d_q(),
            max_risk: d_risk(),
            min_instances: d_min(),
            cooldown_s: d_cooldown(),
            max_spot_share: d_spot_share(),
            budget_per_hour: None,
            scale_in_margin: d_margin(),
            switch_margin: d_switch(),
            private: Vec::new(),
            transfer_cost_per_gb: 0.0,
            burst_utilisation: d_burst(),
            burst_target: d_burst_target(),
            spot_prices: None,
            cold_start: false,
        }
    }
}

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
    /// The last issuance's needs, to price a burst's risk with.
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

/// A new workload's sizing borrowed from its nearest fingerprints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ColdStart {
    /// Per resource map (in the maps' order): the neighbours' allocation in its unit.
    values: Vec<Option<f64>>,
    /// Neighbours and their similarity weights, nearest first (for the reasons).
    neighbours: Vec<(String, f32)>,
}

impl ColdStart {
    fn who(&self) -> String {
        self.neighbours
            .iter()
            .map(|(n, w)| format!("{n} ({w:.2})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
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
}

/// The spot prices' source and age.
struct Prices {
    cloud: Option<Box<dyn Cloud>>,
    refreshed: Option<Instant>,
    /// Where the prices in use come from, for the reasons.
    origin: String,
}

#[derive(Default)]
struct Rows {
    id: Vec<String>,
    at: Vec<i64>,
    workload: Vec<String>,
    tier: Vec<String>,
    instance: Vec<String>,
    count: Vec<i64>,
    spot: Vec<i64>,
    previous: Vec<i64>,
    cost: Vec<f64>,
    risk: Vec<f64>,
    d_res: Vec<String>,
    d_q: Vec<f64>,
    d_h: Vec<i64>,
    required: Vec<f64>,
    considered: Vec<String>,
    reason: Vec<String>,
}

/// Seconds since the epoch, UTC, as text (when prices were read).
fn wall_clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix {s}")
}

/// Deterministic id of a reactive-floor decision: the same observed step, the same id.
pub fn burst_id(workload: &str, at: i64) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("burst\u{1f}{workload}\u{1f}{at}").as_bytes())
    )
}

/// Deterministic id of a cold-start decision: the same fingerprint row, the same id.
pub fn cold_start_id(workload: &str, at: i64) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("cold\u{1f}{workload}\u{1f}{at}").as_bytes())
    )
}

/// Deterministic decision id: the same forecast yields the same id on every replay.
pub fn decision_id(workload: &str, at: i64) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("decision\u{1f}{workload}\u{1f}{at}").as_bytes())
    )
}

impl TierSelect {
    pub fn new(cfg: TierSelectConfig) -> Result<Self> {
        if !(0.0 < cfg.sla_quantile && cfg.sla_quantile < 1.0) {
            return Err(Error::config(
                "stages.tier-select.sla_quantile",
                "must be in (0, 1)",
            ));
        }
        if !(0.0..=1.0).contains(&cfg.max_risk) {
            return Err(Error::config(
                "stages.tier-select.max_risk",
                "must be in [0, 1]",
            ));
        }
        if !(0.0..=1.0).contains(&cfg.max_spot_share) {
            return Err(Error::config(
                "stages.tier-select.max_spot_share",
                "must be in [0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&cfg.scale_in_margin) {
            return Err(Error::config(
                "stages.tier-select.scale_in_margin",
                "must be in [0, 1)",
            ));
        }
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(cfg.transfer_cost_per_gb)
            || cfg
                .private
                .iter()
                .any(|p| !(ok(p.vcpu) && ok(p.memory_gib) && ok(p.network_gbps)))
        {
            return Err(Error::config(
                "stages.tier-select.private",
                "private capacities and transfer_cost_per_gb must be 0 or more",
            ));
        }
        if !(cfg.switch_margin.is_finite() && cfg.switch_margin >= 0.0) {
            return Err(Error::config(
                "stages.tier-select.switch_margin",
                "must be 0 or more",
            ));
        }
        if !(0.0..=1.0).contains(&cfg.burst_utilisation)
            || !(cfg.burst_target > 0.0 && cfg.burst_target <= 1.0)
        {
            return Err(Error::config(
                "stages.tier-select.burst_utilisation",
                "burst_utilisation must be in [0, 1] and burst_target in (0, 1]",
            ));
        }
        if cfg
            .budget_per_hour
            .is_some_and(|b| !(b.is_finite() && b > 0.0))
        {
            return Err(Error::config(
                "stages.tier-select.budget_per_hour",
                "must be a positive number of USD per hour",
            ));
        }
        let catalog = match &cfg.catalog {
            Some(path) => Catalog::load(path)?,
            None => Catalog::shipped()?,
        };
        let cloud: Option<Box<dyn Cloud>> = match &cfg.spot_prices {
            Some(src) => Some(Box::new(Ec2::connect(&Ec2Settings {
                region: src.region.clone().unwrap_or_else(|| catalog.region.clone()),
                endpoint: src.endpoint.clone(),
                max_attempts: 3,
                max_calls_per_s: 1.0,
            })?)),
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
        let origin = format!("spot prices: catalog snapshot {}", catalog.snapshot);
        Self {
            cfg,
            catalog,
            current: HashMap::new(),
            prices: Prices {
                cloud,
                refreshed: None,
                origin,
            },
            resources: Vec::new(),
        }
    }

    /// The mapping from metrics to resources: with it (and `burst_utilisation` above 0) the
    /// stage also reads `metrics.norm` and scales up at once when observed demand outruns
    /// what was decided.
    pub fn with_resources(mut self, resources: Vec<ResourceMap>) -> Self {
        self.resources = resources;
        self
    }

    fn reactive(&self) -> bool {
        self.cfg.burst_utilisation > 0.0 && !self.resources.is_empty()
    }

    fn borrows(&self) -> bool {
        self.cfg.cold_start && !self.resources.is_empty()
    }

    /// Cold start over one `fingerprints` batch: a cold row's allocation (per metric, raw
    /// units, borrowed from its neighbours) becomes per resource map what the workload is
    /// sized by while cold; a workload with no decision yet gets one from it now; a row that
    /// is no longer cold ends it.
    fn borrow(&mut self, batch: &RecordBatch, rows: &mut Rows, ctx: &mut Context) -> Result<()> {
        let end = timestamps(batch, "window_end")?;
        let workload = strings(batch, "workload")?;
        let cold = bools(batch, "cold_start")?;
        let col = |n: &str| batch.column_by_name(n).map(Arc::clone);
        let (names, weights, metrics, alloc) = (
            col("neighbours"),
            col("neighbour_weights"),
            col("allocation_metrics"),
            col("allocation"),
        );
        for r in 0..batch.num_rows() {
            let (w, at) = (workload.value(r), end.value(r));
            let cur = self.current.entry(w.to_string()).or_default();
            if cur.fingerprinted.is_some_and(|t| at <= t) {
                ctx.event(Event::Dropped {
                    kind: "replayed_fingerprint",
                    count: 1,
                });
                continue;
            }
            cur.fingerprinted = Some(at);
            if !cold.value(r) {
                if cur.cold.take().is_some() {
                    ctx.count("cold_start.ended", 1);
                }
                continue;
            }
            let present = |c: &Option<ArrayRef>| c.as_ref().filter(|a| a.is_valid(r)).cloned();
            let (Some(m), Some(a)) = (present(&metrics), present(&alloc)) else {
                // No known neighbour yet: forecasts alone size it.
                ctx.count("cold_start.no_neighbours", 1);
                continue;
            };
            let metric_names = list_row_str(m.as_ref(), r)?;
            let values = list_row_f64(a.as_ref(), r)?;
            let sized = cold_values(&self.resources, w, &metric_names, &values);
            if sized.iter().all(Option::is_none) {
                ctx.count("cold_start.no_resources", 1);
                continue;
            }
            let n = present(&names)
                .map(|c| list_row_str(c.as_ref(), r))
                .transpose()?
                .unwrap_or_default();
            let wt = present(&weights)
                .map(|c| list_row_f32(c.as_ref(), r))
                .transpose()?
                .unwrap_or_default();
            let borrowed = ColdStart {
                values: sized,
                neighbours: n.into_iter().zip(wt).collect(),
            };
            cur.cold = Some(borrowed.clone());
            ctx.count("cold_start.borrowed", 1);
            if cur.decided.is_some() || !cur.instance_type.is_empty() {
                continue; // its forecasts are raised to the borrowed sizing from now on
            }
            let needs = self.cold_needs(&borrowed);
            let note = format!(
                "cold start: no forecast of {w} yet; sized from its nearest fingerprints {}: their typical peak {}",
                borrowed.who(),
                self.sizing(&borrowed)
            );
            ctx.count("decisions.cold_start", 1);
            self.decide(w, at, &needs, Origin::ColdStart, Some(note), rows, ctx)?;
        }
        Ok(())
    }

    /// The borrowed sizing as needs: one level (the SLA quantile) per resource, over an hour.
    fn cold_needs(&self, c: &ColdStart) -> Vec<Need> {
        self.resources
            .iter()
            .zip(&c.values)
            .filter_map(|(m, v)| {
                Some(Need {
                    resource: m.name.clone(),
                    unit: m.unit.clone(),
                    horizon_s: 3600,
                    levels: vec![self.cfg.sla_quantile],
                    values: vec![(*v)?],
                })
            })
            .collect()
    }

    /// `cpu 12.30 vcpu, memory 40.00 gib`.
    fn sizing(&self, c: &ColdStart) -> String {
        self.resources
            .iter()
            .zip(&c.values)
            .filter_map(|(m, v)| Some(format!("{} {:.2} {}", m.name, (*v)?, m.unit)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// While a workload is cold, its forecast needs are raised to the borrowed sizing (a new
    /// workload's first forecasts stand on an hour of history); the note says which.
    fn raise_cold(&self, workload: &str, needs: &mut [Need]) -> Option<String> {
        let c = self.current.get(workload)?.cold.as_ref()?;
        let mut raised = Vec::new();
        for n in needs.iter_mut() {
            let v = self
                .resources
                .iter()
                .zip(&c.values)
                .find(|(m, _)| m.name == n.resource && m.unit == n.unit)
                .and_then(|(_, v)| *v);
            let Some(v) = v else { continue };
            if n.values.iter().any(|x| *x < v) {
                n.values.iter_mut().for_each(|x| *x = x.max(v));
                raised.push(format!(
                    "{} to {v:.2} {} at {} s",
                    n.resource, n.unit, n.horizon_s
                ));
            }
        }
        (!raised.is_empty()).then(|| {
            format!(
                "cold start: forecast raised to the allocation of its nearest fingerprints {} ({})",
                c.who(),
                raised.join(", ")
            )
        })
    }

    /// The reactive floor over one `metrics.norm` batch: a step whose demand passes
    /// `burst_utilisation` of the capacity decided for its workload becomes a decision that
    /// adds on-demand instances up to `burst_target` utilisation.
    fn observe(&mut self, batch: &RecordBatch, rows: &mut Rows, ctx: &mut Context) -> Result<()> {
        for step in wfe_contract::resources::resource_steps(&self.resources, batch)? {
            let Some(cur) = self.current.get(&step.workload) else {
                continue;
            };
            if cur.observed.is_some_and(|t| step.time <= t) || cur.count <= 0 {
                continue;
            }
            let Some(inst) = self
                .catalog
                .instance
                .iter()
                .find(|i| i.r#type == cur.instance_type)
                .cloned()
            else {
                continue;
            };
            // The resource furthest past its share of the capacity in place (private
            // capacity included).
            let private = self.private_of(&step.workload);
            let mut worst: Option<(usize, f64, f64)> = None;
            for (ri, v) in step.values.iter().enumerate() {
                let unit = &self.resources[ri].unit;
                let (Some(v), Some(cap)) = (v, inst.capacity(unit)) else {
                    continue;
                };
                let per = cap * inst.performance;
                let load = v / (cur.count as f64 * per + private(unit)).max(1e-12);
                if load > self.cfg.burst_utilisation && worst.is_none_or(|w| load > w.2) {
                    worst = Some((ri, *v, load));
                }
            }
            let cur = self
                .current
                .get_mut(&step.workload)
                .expect("looked up above");
            cur.observed = Some(step.time);
            cur.last_seen = step.values.clone();
            let Some((ri, value, load)) = worst else {
                continue;
            };
            let res = &self.resources[ri];
            let per = inst.capacity(&res.unit).unwrap_or(1.0) * inst.performance;
            let own = private(&res.unit);
            let count = (((value - own * self.cfg.burst_target) / (self.cfg.burst_target * per))
                - 1e-9)
                .ceil() as i64;
            if count <= cur.count {
                continue;
            }
            let prev = cur.count;
            cur.count = count;
            cur.changed_at = step.time;
            let spot = cur.spot_count.min(count);
            let tier = if spot == count {
                "spot".to_string()
            } else {
                inst.family_tier.clone()
            };
            cur.tier = tier.clone();
            let needs = cur.needs.clone();
            let spot_price = inst.spot_price.unwrap_or(inst.on_demand_price);
            let cost = spot as f64 * spot_price + (count - spot) as f64 * inst.on_demand_price;
            let risk = if needs.is_empty() {
                0.0
            } else {
                self.rules().risk(&inst, &needs, count, spot)
            };
            ctx.count("decisions.bursts", 1);
            ctx.count("decisions.changes", 1);
            rows.id.push(burst_id(&step.workload, step.time));
            rows.at.push(step.time);
            rows.workload.push(step.workload.clone());
            rows.tier.push(tier);
            rows.instance.push(inst.r#type.clone());
            rows.count.push(count);
            rows.spot.push(spot);
            rows.previous.push(prev);
            rows.cost.push(cost);
            rows.risk.push(risk);
            rows.d_res.push(res.name.clone());
            // Observed, not forecast: the driver is the actual value (level 1, horizon 0).
            rows.d_q.push(1.0);
            rows.d_h.push(0);
            rows.required.push(value);
            rows.considered.push("[]".into());
            rows.reason.push(format!(
                "reactive floor: observed {} {value:.2} {} is {:.0} % of the {:.2} that {prev} x {} give (burst_utilisation {:.0} %): scale up now to {count} ({} more on demand) for {:.0} % utilisation, before the next forecast ({})",
                res.name,
                res.unit,
                load * 100.0,
                prev as f64 * per,
                inst.r#type,
                self.cfg.burst_utilisation * 100.0,
                count - prev,
                self.cfg.burst_target * 100.0,
                self.prices.origin
            ));
        }
        Ok(())
    }

    /// Refreshes spot prices from EC2 when a source is configured and the last refresh is
    /// `refresh_s` old; a failure keeps the prices in use and is reported (and tried again a
    /// minute later, not at every batch).
    fn refresh_prices(&mut self, ctx: &mut Context) {
        let Some(src) = &self.cfg.spot_prices else {
            return;
        };
        let Some(cloud) = self.prices.cloud.as_mut() else {
            return;
        };
        if self
            .prices
            .refreshed
            .is_some_and(|t| t.elapsed() < Duration::from_secs(src.refresh_s))
        {
            return;
        }
        let types: Vec<String> = self
            .catalog
            .instance
            .iter()
            .map(|i| i.r#type.clone())
            .collect();
        match cloud.spot_prices(&types) {
            Ok(prices) => {
                let mut n = 0;
                for (t, p) in prices {
                    if let Some(i) = self.catalog.instance.iter_mut().find(|i| i.r#type == t) {
                        i.spot_price = Some(p);
                        n += 1;
                    }
                }
                ctx.count("spot_prices.refreshed", n);
                self.prices.origin = format!(
                    "spot prices: DescribeSpotPriceHistory ({n} of {} types) at {}",
                    types.len(),
                    wall_clock()
                );
                self.prices.refreshed = Some(Instant::now());
            }
            Err(e) => {
                let msg = format!("{e}; keeping the prices in use");
                ctx.event(Event::Rejected {
                    kind: "spot_price_refresh_failed",
                    location: "DescribeSpotPriceHistory",
                    message: &msg,
                    count: 1,
                });
                let retry = Duration::from_secs(src.refresh_s.saturating_sub(60));
                self.prices.refreshed = Instant::now().checked_sub(retry);
            }
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The rules options are chosen by.
    pub fn rules(&self) -> Rules {
        Rules {
            sla_quantile: self.cfg.sla_quantile,
            max_risk: self.cfg.max_risk,
            max_spot_share: self.cfg.max_spot_share,
            min_instances: self.cfg.min_instances,
            budget_per_hour: self.cfg.budget_per_hour,
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
        let private = self.cfg.private.iter().find(|p| p.applies_to(workload));
        let public_needs: Vec<Need> = match private {
            Some(p) => needs
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
            None => needs.to_vec(),
        };
        let mut rules = self.rules();
        if private.is_some() {
            // Private capacity may carry it all: no public instance is then needed.
            rules.min_instances = 0;
        }
        let plan::Choice {
            chosen: best,
            considered,
            mut reason,
        } = plan::choose(&self.catalog, &rules, &public_needs)
            .ok_or_else(|| Error::config("catalog", "no instance type measures the needs"))?;
        let all_needs = needs;
        let needs = &public_needs[..];
        let prev = self.current.get(workload).cloned().unwrap_or_default();
        let mut best = best;
        if !prev.instance_type.is_empty() && prev.instance_type != best.instance_type {
            let stay = considered.iter().find(|o| {
                o.instance_type == prev.instance_type
                    && o.feasible == best.feasible
                    && o.cost_per_hour <= best.cost_per_hour * (1.0 + self.cfg.switch_margin)
            });
            if let Some(stay) = stay {
                reason = format!(
                    "{} kept: {} would save less than switch_margin {:.0} % ({:.3}/h against {:.3}/h); {}",
                    prev.instance_type,
                    best.instance_type,
                    self.cfg.switch_margin * 100.0,
                    best.cost_per_hour,
                    stay.cost_per_hour,
                    plan::describe(stay)
                );
                best = stay.clone();
            }
        }
        let mut chosen = best.clone();
        // A forecast never takes the fleet below what the demand observed now needs (the
        // reactive floor would scale it straight back up): the difference is on demand.
        if let Some((floor, what)) = self.floor_count(&prev, workload, &best)
            && floor > chosen.count
        {
            let inst = self
                .catalog
                .instance
                .iter()
                .find(|i| i.r#type == chosen.instance_type);
            if let Some(inst) = inst {
                chosen.cost_per_hour += (floor - chosen.count) as f64 * inst.on_demand_price;
                chosen.risk = self.rules().risk(inst, needs, floor, chosen.spot_count);
            }
            reason = format!(
                "{reason}; raised from {} to {floor} by the reactive floor (observed {what} at burst_target {:.0} %)",
                chosen.count,
                self.cfg.burst_target * 100.0
            );
            chosen.count = floor;
        }
        let same_kind = prev.instance_type == best.instance_type;
        if same_kind && best.count < prev.count {
            if let Some(why) = self.hold_scale_in(&prev, &best, at) {
                // Keep the fleet, priced at the new mix's share of spot where it fits.
                chosen.count = prev.count;
                chosen.spot_count = prev.spot_count.min(prev.count);
                let inst = self
                    .catalog
                    .instance
                    .iter()
                    .find(|i| i.r#type == best.instance_type);
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
        }
        if let Some(p) = private {
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

    /// A workload's private capacity per unit (zero without any).
    fn private_of(&self, workload: &str) -> impl Fn(&str) -> f64 + use<> {
        let p = self
            .cfg
            .private
            .iter()
            .find(|p| p.applies_to(workload))
            .cloned();
        move |unit: &str| p.as_ref().map_or(0.0, |p| p.of(unit))
    }

    /// The transfer cost of bursting (per hour) and a sentence on the private share: traffic
    /// to and from public instances is the median network demand times the public share of
    /// the capacity of the resource that set the count.
    fn burst_transfer(
        &self,
        p: &PrivateCapacity,
        needs: &[Need],
        chosen: &Priced,
    ) -> (f64, String) {
        let d = &chosen.driver;
        let unit = needs
            .iter()
            .find(|n| n.resource == d.resource)
            .map_or("vcpu", |n| n.unit.as_str());
        let private = p.of(unit);
        let public = chosen.count as f64 * d.per_instance;
        if chosen.count == 0 {
            return (
                0.0,
                format!(
                    "private capacity carries the demand at the SLA quantile (private {private} {unit})"
                ),
            );
        }
        let share = public / (public + private).max(1e-12);
        // The network need's median stands for the traffic.
        let gbps = needs
            .iter()
            .filter(|n| n.unit == "gbps")
            .filter_map(|n| n.at(0.5).map(|(_, v)| v))
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
        match gbps {
            Some(g) => {
                let cost = g * share * 450.0 * self.cfg.transfer_cost_per_gb;
                (
                    cost,
                    format!(
                        "hybrid burst: {private} {unit} private, {public:.2} public ({:.0} % of capacity); transfer {g:.2} Gbit/s x {:.0} % x 450 GB/h x {}/GB = {cost:.3}/h",
                        share * 100.0,
                        share * 100.0,
                        self.cfg.transfer_cost_per_gb
                    ),
                )
            }
            None => (
                0.0,
                format!(
                    "hybrid burst: {private} {unit} private, {public:.2} public ({:.0} % of capacity); no network forecast, so no transfer cost counted",
                    share * 100.0
                ),
            ),
        }
    }

    /// The fewest instances of `best`'s type that hold the demand last observed at
    /// `burst_target` (the reactive floor's level), with the resource that sets it.
    fn floor_count(
        &self,
        prev: &Current,
        prev_workload: &str,
        best: &Priced,
    ) -> Option<(i64, String)> {
        if !self.reactive() {
            return None;
        }
        let inst = self
            .catalog
            .instance
            .iter()
            .find(|i| i.r#type == best.instance_type)?;
        prev.last_seen
            .iter()
            .zip(&self.resources)
            .filter_map(|(seen, res)| {
                let (v, cap) = ((*seen)?, inst.capacity(&res.unit)?);
                let v = v - self.private_of(&prev_workload)(&res.unit) * self.cfg.burst_target;
                let n = (v / (self.cfg.burst_target * cap * inst.performance) - 1e-9).ceil() as i64;
                Some((n, format!("{} {v:.2} {}", res.name, res.unit)))
            })
            .max_by_key(|(n, _)| *n)
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

    fn finish(rows: Rows) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(rows.id)),
            timestamp_column(rows.at),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.tier)),
            Arc::new(StringArray::from(rows.instance)),
            Arc::new(Int64Array::from(rows.count)),
            Arc::new(Int64Array::from(rows.previous)),
            Arc::new(Float64Array::from(rows.cost)),
            Arc::new(Float64Array::from(rows.risk)),
            Arc::new(StringArray::from(rows.d_res)),
            Arc::new(Float64Array::from(rows.d_q)),
            Arc::new(Int64Array::from(rows.d_h)),
            Arc::new(Float64Array::from(rows.required)),
            Arc::new(StringArray::from(rows.considered)),
            Arc::new(StringArray::from(rows.reason)),
            Arc::new(Int64Array::from(rows.spot)),
        ];
        Ok(RecordBatch::try_new(Topic::Decisions.schema(), columns)?)
    }
}

impl Stage for TierSelect {
    fn name(&self) -> &'static str {
        "tier-select"
    }

    fn inputs(&self) -> Vec<Topic> {
        let mut t = vec![Topic::Forecasts];
        if self.reactive() {
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
        self.refresh_prices(ctx);
        if topic == Topic::MetricsNorm || topic == Topic::Fingerprints {
            let mut rows = Rows::default();
            if topic == Topic::MetricsNorm && self.reactive() {
                self.observe(&batch, &mut rows, ctx)?;
            }
            if topic == Topic::Fingerprints && self.borrows() {
                self.borrow(&batch, &mut rows, ctx)?;
            }
            if !rows.id.is_empty() {
                out.emit(Topic::Decisions, Self::finish(rows)?)?;
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
                ctx.event(Event::Rejected {
                    kind: "bad_forecast",
                    location: &loc,
                    message: "forecast is NaN, negative or has no quantiles: not used",
                    count: 1,
                });
                None
            };
            let pos = match groups.iter().position(|(k, _)| *k == key) {
                Some(p) => p,
                None => {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                }
            };
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
                ctx.event(Event::Rejected {
                    kind: "unknown_unit",
                    location: &loc,
                    message: "no forecast unit is one the catalog measures (vcpu, gib, gbps)",
                    count: 1,
                });
                continue;
            }
            let mut needs = needs;
            let note = self.raise_cold(&w, &mut needs);
            self.decide(&w, at, &needs, Origin::Forecast, note, &mut rows, ctx)?;
        }
        if !rows.id.is_empty() {
            out.emit(Topic::Decisions, Self::finish(rows)?)?;
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
}

/// Per resource map: the mean of its metrics' allocations x its capacity (as
/// [`wfe_contract::resources::resource_steps`] reads a step), where the map applies to the
/// workload and the allocation has finite, non-negative values for its metrics.
fn cold_values(
    maps: &[ResourceMap],
    workload: &str,
    metrics: &[String],
    alloc: &[f64],
) -> Vec<Option<f64>> {
    maps.iter()
        .map(|m| {
            if !m.applies_to(workload) {
                return None;
            }
            let got: Vec<f64> = metrics
                .iter()
                .zip(alloc)
                .filter(|(n, v)| m.metrics.contains(n) && v.is_finite() && **v >= 0.0)
                .map(|(_, v)| *v)
                .collect();
            m.demand(&got)
        })
        .collect()
}

#[cfg(test)]
mod tests;
