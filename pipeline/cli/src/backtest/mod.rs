//! `wfe backtest`: what each provisioning policy would have cost over the test split of
//! labelled data, and how often it had too little.
//!
//! **Demand.** Each entity's metrics become resources through the job's `[[resources]]` (the
//! forecast stage's own mapping: the mean of the metrics' raw values x `capacity`), step by
//! step. Only resources the catalog measures (vcpu, gib, gbps) count.
//!
//! **Policies.** Each has its first fleet ready when the test split starts.
//! - `static`: the train split's peak, on demand, never changed;
//! - `reactive`: a Kubernetes HPA: every step, enough on-demand instances for the demand just
//!   observed at `target_utilisation` (no change within the 10 % tolerance), scale-down to the
//!   highest count recommended within the stabilisation window;
//! - `vpa`: a VPA-like recommender: every `vpa_every_s`, a quantile of the observed demand with
//!   weights halving every `vpa_half_life_s`, plus a margin, on demand;
//! - `wfe`: the stages themselves (normalise, forecast, tier-select with its reactive floor,
//!   with the job's settings and model folder) run over the entity's train and test splits;
//!   each decision's mix (type, spot and on-demand counts) is put in place when decided;
//! - `predictive`: EC2 Auto Scaling's predictive scaling with target tracking, a seasonal
//!   profile standing in for its model ([`predictive`]);
//! - `autopilot`: an Autopilot-style ensemble of moving-window recommenders, the one whose
//!   recent recommendations cost least followed ([`autopilot`]);
//! - `oracle`: perfect foresight, the lower bound: every step exactly the demand, on the
//!   cheapest option of the catalog, ready in time and never interrupted.
//!
//! **Simulation** ([`sim`]): a launch serves after `start_delay_s` and is billed from launch to
//! termination; spot instances are interrupted at their catalog rate (seeded), `notice_s`
//! after a notice on which an on-demand replacement is launched; the next change of the
//! policy's fleet puts its mix back. A step is under-provisioned when any resource's demand
//! passes the capacity in service; an hour (of the clock) is an SLA violation when more than
//! `sla_allowance` of it was under-provisioned.
//!
//! **Sweep** (`--sweep`, [`sweep`]): every policy at every setting of its own knob, its
//! frontier of cost against under-provisioned minutes ([`frontier`]), each priced at the
//! under-provisioning reactive reaches at the job's settings, and a picture ([`chart`]).

pub mod autopilot;
pub mod beside;
pub mod chart;
pub mod frontier;
pub mod policies;
pub mod predictive;
pub mod sim;
pub mod sweep;
mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_forecast::ResourceMap;
use wfe_tier_select::{Catalog, TierSelect};

use crate::config::JobConfig;
use crate::eval::data;
pub use table::render;

#[derive(clap::Args)]
pub struct BacktestArgs {
    /// Folder of labelled entities with train and test splits, e.g. ../shared/data/smd.
    #[arg(long)]
    pub data: PathBuf,
    /// Policies to run (repeat or comma-separate): wfe, reactive, static, vpa, predictive,
    /// autopilot, oracle.
    /// Default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Job config: resources, forecast and tier-select settings, `[backtest]`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Every policy at every setting of its own knob: the frontiers of cost against
    /// under-provisioning, and a picture of them.
    #[arg(long, conflicts_with = "policy")]
    pub sweep: bool,
    /// Where `--sweep` writes its picture (SVG); default: `<data folder>-frontier.svg` here.
    #[arg(long)]
    pub picture: Option<PathBuf>,
}

/// Settings of `wfe backtest` (`[backtest]` in the job config).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BacktestConfig {
    /// Seconds from a launch until an instance serves.
    #[serde(default = "d_start")]
    pub start_delay_s: i64,
    /// Seconds between a spot interruption notice and the instance's end (EC2: 120).
    #[serde(default = "d_notice")]
    pub notice_s: i64,
    /// Seed of the spot interruptions.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Instance type the baselines run on, on demand.
    #[serde(default = "d_instance")]
    pub baseline_instance: String,
    /// Fewest instances a baseline keeps.
    #[serde(default = "d_min")]
    pub min_instances: i64,
    /// Static: share of the train split's peak demand the fleet is sized for.
    #[serde(default = "d_share")]
    pub static_peak_share: f64,
    /// Reactive: utilisation the HPA aims at.
    #[serde(default = "d_target")]
    pub target_utilisation: f64,
    /// Reactive: scale-down stabilisation window (HPA's default: 300 s).
    #[serde(default = "d_stab")]
    pub stabilisation_s: i64,
    /// VPA: quantile of the weighted demand history.
    #[serde(default = "d_vq")]
    pub vpa_quantile: f64,
    /// VPA: age at which a sample's weight halves.
    #[serde(default = "d_half")]
    pub vpa_half_life_s: i64,
    /// VPA: safety margin added to the quantile.
    #[serde(default = "d_margin")]
    pub vpa_margin: f64,
    /// VPA: how often the recommendation is applied.
    #[serde(default = "d_every")]
    pub vpa_every_s: i64,
    /// Predictive: seconds before each hour its forecast capacity is launched
    /// (`SchedulingBufferTime`; under an hour).
    #[serde(default = "d_buffer")]
    pub predictive_buffer_s: i64,
    /// Predictive: how often the 48-hour forecast is made again.
    #[serde(default = "d_refresh")]
    pub predictive_refresh_s: i64,
    /// Predictive: days of history the forecast reads (at most).
    #[serde(default = "d_days")]
    pub predictive_history_days: i64,
    /// Predictive: margin over the forecast load (0: the service's own behaviour).
    #[serde(default)]
    pub predictive_margin: f64,
    /// Autopilot: what a unit of demand short costs against a unit idle.
    #[serde(default = "d_overrun")]
    pub autopilot_overrun_weight: f64,
    /// Autopilot: age at which a past step's cost weighs half in the choice of recommender.
    #[serde(default = "d_memory")]
    pub autopilot_memory_s: i64,
    /// Share of an hour that may be under-provisioned before the hour violates the SLA.
    #[serde(default = "d_allow")]
    pub sla_allowance: f64,
}

fn d_start() -> i64 {
    180
}
fn d_notice() -> i64 {
    120
}
fn d_seed() -> u64 {
    7
}
fn d_instance() -> String {
    "m7i.xlarge".into()
}
fn d_min() -> i64 {
    1
}
fn d_share() -> f64 {
    1.0
}
fn d_target() -> f64 {
    0.7
}
fn d_stab() -> i64 {
    300
}
fn d_vq() -> f64 {
    0.9
}
fn d_half() -> i64 {
    86_400
}
fn d_margin() -> f64 {
    0.15
}
fn d_every() -> i64 {
    3600
}
fn d_buffer() -> i64 {
    300
}
fn d_refresh() -> i64 {
    21_600
}
fn d_days() -> i64 {
    14
}
fn d_overrun() -> f64 {
    10.0
}
fn d_memory() -> i64 {
    86_400
}
fn d_allow() -> f64 {
    0.01
}

impl Default for BacktestConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl BacktestConfig {
    fn validate(&self, catalog: &Catalog) -> Result<()> {
        let bad = |k: &str, m: &str| Err(Error::config(format!("backtest.{k}"), m.to_string()));
        if self.start_delay_s < 0 || self.notice_s < 0 {
            return bad("start_delay_s", "delays must not be negative");
        }
        if !(self.target_utilisation > 0.0 && self.target_utilisation <= 1.0) {
            return bad("target_utilisation", "must be in (0, 1]");
        }
        if !(self.static_peak_share > 0.0 && self.static_peak_share <= 10.0) {
            return bad("static_peak_share", "must be in (0, 10]");
        }
        if !(0.0 < self.vpa_quantile && self.vpa_quantile < 1.0) {
            return bad("vpa_quantile", "must be in (0, 1)");
        }
        if self.vpa_half_life_s <= 0 || self.vpa_every_s <= 0 || self.vpa_margin < 0.0 {
            return bad(
                "vpa_every_s",
                "half-life and period must be positive, margin not negative",
            );
        }
        if !(0..3600).contains(&self.predictive_buffer_s) {
            return bad("predictive_buffer_s", "must be in [0, 3600)");
        }
        if self.predictive_refresh_s <= 0 || self.predictive_history_days < 1 {
            return bad(
                "predictive_refresh_s",
                "the refresh must be positive and the history at least a day",
            );
        }
        if !(self.predictive_margin >= 0.0 && self.predictive_margin.is_finite()) {
            return bad("predictive_margin", "must be finite and not negative");
        }
        if !(self.autopilot_overrun_weight > 0.0 && self.autopilot_overrun_weight.is_finite())
            || self.autopilot_memory_s <= 0
        {
            return bad(
                "autopilot_overrun_weight",
                "the weight and the memory must be positive",
            );
        }
        if !(0.0..1.0).contains(&self.sla_allowance) {
            return bad("sla_allowance", "must be in [0, 1)");
        }
        if !catalog
            .instance
            .iter()
            .any(|i| i.r#type == self.baseline_instance)
        {
            return bad(
                "baseline_instance",
                &format!(
                    "`{}` is not in the catalog ({})",
                    self.baseline_instance, catalog.region
                ),
            );
        }
        Ok(())
    }
}

pub const POLICIES: [&str; 8] = [
    "wfe",
    "wfe-tuned",
    "reactive",
    "static",
    "vpa",
    "predictive",
    "autopilot",
    "oracle",
];

/// The figures of one policy on one entity (or summed: `total`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figures {
    /// USD over the test split.
    pub cost: f64,
    /// Provisioned minus used over provisioned, mean over the resources.
    pub slack: f64,
    pub underprovisioned_minutes: f64,
    pub sla_violations: u64,
    pub changes: u64,
}

/// policy -> entity (and `total`) -> figures.
#[derive(Debug, Serialize)]
pub struct BacktestReport {
    pub data: String,
    pub policies: BTreeMap<String, BTreeMap<String, Figures>>,
    /// Test-split hours simulated, per entity.
    pub hours: BTreeMap<String, f64>,
}

/// One entity's demand over its test split.
pub struct Demand {
    pub entity: String,
    /// Resource names and units, in the order of `values`' columns.
    pub resources: Vec<(String, String)>,
    /// Test-split step times (ms) and step length.
    pub times: Vec<i64>,
    pub step_ms: i64,
    /// Per test step, per resource: demand in the resource's unit.
    pub values: Vec<Vec<f64>>,
    /// The same over the train split (history a baseline may know).
    pub train: Vec<Vec<f64>>,
    pub train_times: Vec<i64>,
}

/// One resource's demand (vCPU), a step a minute, `f(minute)`: `train_days`, then
/// `test_days` (for the policies' tests).
#[cfg(test)]
pub(crate) fn minute_demand(train_days: i64, test_days: i64, f: impl Fn(i64) -> f64) -> Demand {
    let minutes = |from: i64, to: i64| (from..to).map(|m| m * 60_000).collect::<Vec<_>>();
    let train_times = minutes(0, train_days * 1440);
    let times = minutes(train_days * 1440, (train_days + test_days) * 1440);
    let rows = |ts: &[i64]| ts.iter().map(|t| vec![f(t / 60_000)]).collect();
    Demand {
        entity: "w".into(),
        resources: vec![("cpu".into(), "vcpu".into())],
        train: rows(&train_times),
        values: rows(&times),
        train_times,
        times,
        step_ms: 60_000,
    }
}

impl Demand {
    /// Test-split hours.
    pub fn hours(&self) -> f64 {
        self.times.len() as f64 * self.step_ms as f64 / 3.6e6
    }
}

/// Per resource (its name and unit) and then per step, a workload's demand.
type Columns = (Vec<(String, String)>, Vec<Vec<f64>>);

/// Per step, the resources of `maps` that apply to `entity`, from raw metric values.
fn demand_of(
    maps: &[ResourceMap],
    catalog: &Catalog,
    entity: &str,
    metrics: &[String],
    rows: &[Vec<f64>],
) -> Result<Columns> {
    let measured = |unit: &str| catalog.instance.iter().any(|i| i.capacity(unit).is_some());
    let mut cols = Vec::new();
    let mut names = Vec::new();
    for m in maps
        .iter()
        .filter(|m| m.applies_to(entity) && measured(&m.unit))
    {
        let idx: Vec<usize> = m
            .metrics
            .iter()
            .filter_map(|name| metrics.iter().position(|x| x == name))
            .collect();
        if idx.len() != m.metrics.len() {
            return Err(Error::config(
                format!("resources.{}", m.name),
                format!("{entity} lacks one of the metrics {:?}", m.metrics),
            ));
        }
        names.push((m.name.clone(), m.unit.clone()));
        cols.push((idx, m));
    }
    if cols.is_empty() {
        return Err(Error::config(
            "resources",
            format!("no resource the catalog measures (vcpu, gib, gbps) applies to {entity}"),
        ));
    }
    // Missing steps carry the last known demand (the stage's forecasts do the same).
    let mut last = vec![0.0; cols.len()];
    let values = rows
        .iter()
        .map(|row| {
            cols.iter()
                .zip(&mut last)
                .map(|((idx, map), last)| {
                    let known: Vec<f64> = idx
                        .iter()
                        .map(|&i| row[i])
                        .filter(|v| v.is_finite())
                        .collect();
                    if known.len() == idx.len()
                        && let Some(d) = map.demand(&known)
                    {
                        *last = d.max(0.0);
                    }
                    *last
                })
                .collect()
        })
        .collect();
    Ok((names, values))
}

/// Runs the chosen policies over every entity of `dir`.
pub fn backtest(dir: &Path, job: &JobConfig, policies: &[String]) -> Result<BacktestReport> {
    let cfg = &job.backtest;
    let tier = TierSelect::new(job.stages.tier_select.clone())?;
    let catalog = tier.catalog().clone();
    cfg.validate(&catalog)?;
    for p in policies {
        if !POLICIES.contains(&p.as_str()) {
            return Err(Error::config(
                "--policy",
                format!("unknown policy `{p}`; policies: {POLICIES:?}"),
            ));
        }
    }
    let entities = data::entities(dir)?;
    let results = crate::parallel::map(&entities, |entity| {
        run_entity(dir, entity, job, &catalog, policies)
    });
    let mut report = BacktestReport {
        data: dir.display().to_string(),
        policies: BTreeMap::new(),
        hours: BTreeMap::new(),
    };
    for (entity, result) in entities.iter().zip(results) {
        let (hours, figures) = result?;
        report.hours.insert(entity.clone(), hours);
        for (policy, f) in figures {
            let table = report.policies.entry(policy).or_default();
            let total = table.entry("total".into()).or_default();
            total.cost += f.cost;
            total.underprovisioned_minutes += f.underprovisioned_minutes;
            total.sla_violations += f.sla_violations;
            total.changes += f.changes;
            // Mean over entities (each weighted alike).
            total.slack += f.slack / entities.len() as f64;
            table.insert(entity.clone(), f);
        }
    }
    Ok(report)
}

fn run_entity(
    dir: &Path,
    entity: &str,
    job: &JobConfig,
    catalog: &Catalog,
    policies: &[String],
) -> Result<(f64, Vec<(String, Figures)>)> {
    let (demand, batches) = entity_demand(dir, entity, job, catalog)?;
    let hours = demand.hours();
    let mut out = Vec::new();
    let mut replay = None;
    for p in policies {
        let figures = match p.as_str() {
            "oracle" => sim::oracle(&demand, catalog, job.stages.tier_select.min_instances),
            name => {
                let plan = match name {
                    "static" => policies::fixed(&demand, catalog, &job.backtest)?,
                    "reactive" => policies::reactive(&demand, catalog, &job.backtest)?,
                    "vpa" => policies::vpa(&demand, catalog, &job.backtest)?,
                    "predictive" => predictive::predictive(&demand, catalog, &job.backtest)?,
                    "autopilot" => autopilot::autopilot(&demand, catalog, &job.backtest)?,
                    // wfe and wfe-tuned decide over the same forecasts, made once.
                    tuned => {
                        if replay.is_none() {
                            replay = Some(policies::wfe_forecasts(job, batches.clone())?);
                        }
                        let tier = if tuned == "wfe-tuned" {
                            sweep::wfe_tuned_settings(job)
                        } else {
                            job.stages.tier_select.clone()
                        };
                        let replay = replay.as_ref().expect("made above");
                        policies::wfe_decide(&demand, tier, &job.resources, replay)?
                    }
                };
                sim::simulate(&demand, catalog, &job.backtest, &plan)?
            }
        };
        out.push((p.clone(), figures));
    }
    Ok((hours, out))
}

/// Every policy at every setting of its knob over every entity of `dir`; the picture is
/// written to `picture`.
pub fn sweep(dir: &Path, job: &JobConfig, picture: &Path) -> Result<sweep::SweepReport> {
    let tier = TierSelect::new(job.stages.tier_select.clone())?;
    let catalog = tier.catalog().clone();
    job.backtest.validate(&catalog)?;
    let entities = data::entities(dir)?;
    let results = crate::parallel::map(&entities, |entity| {
        let (demand, batches) = entity_demand(dir, entity, job, &catalog)?;
        let points = sweep::entity(&demand, batches, job, &catalog)?;
        Ok::<_, Error>((demand.hours(), points))
    });
    let (mut hours, mut points) = (0.0, Vec::new());
    for r in results {
        let (h, p) = r?;
        hours += h;
        points.push(p);
    }
    let mut report = sweep::report(dir.display().to_string(), hours, points, job);
    let curves: Vec<(String, Vec<frontier::Point>)> = report
        .policies
        .iter()
        .map(|(name, p)| (name.clone(), p.points.clone()))
        .collect();
    let title = format!("wfe backtest --sweep: {}", dir.display());
    std::fs::write(picture, chart::svg(&title, &curves))
        .map_err(|e| Error::io(picture.display().to_string(), e))?;
    report.picture = Some(picture.display().to_string());
    Ok(report)
}

/// The step of a series: the smallest gap between its times (one time: a minute).
pub(crate) fn step_of(times: &[i64]) -> i64 {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(60_000)
}

/// An entity's demand over its test split, and its normalised batches (what wfe replays).
fn entity_demand(
    dir: &Path,
    entity: &str,
    job: &JobConfig,
    catalog: &Catalog,
) -> Result<(Demand, Vec<wfe_contract::RecordBatch>)> {
    let batches = data::normalised(dir, entity)?;
    let series = data::load_batches(entity, batches.clone())?;
    if series.train.is_empty() || series.test.is_empty() {
        return Err(Error::config(
            "--data",
            format!("{entity}: the backtest needs a train and a test split"),
        ));
    }
    let (resources, values) = demand_of(
        &job.resources,
        catalog,
        entity,
        &series.metrics,
        &series.raw_test,
    )?;
    let (_, train) = demand_of(
        &job.resources,
        catalog,
        entity,
        &series.metrics,
        &series.raw_train,
    )?;
    let n_train = series.train.len();
    let times = series.times[n_train..].to_vec();
    let step_ms = step_of(&times);
    let demand = Demand {
        entity: entity.to_string(),
        resources,
        train_times: series.times[..n_train].to_vec(),
        times,
        step_ms,
        values,
        train,
    };
    Ok((demand, batches))
}
