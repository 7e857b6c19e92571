//! The policies: each turns demand (and, for wfe, the stages' decisions) into the fleets it
//! asks for and when. None of them sees the simulation: what they know is what they would know
//! live (observed demand up to now, forecasts), never the demand to come.

use arrow_array::Array;
use wfe_contract::columns::{i64s, strings, timestamps};
use wfe_contract::{Context, Error, RecordBatch, Result, Stage, Topic, VecCollector};
use wfe_forecast::Forecast;
use wfe_tier_select::{Catalog, TierSelect, TierSelectConfig};

use super::{BacktestConfig, Demand};
use crate::config::JobConfig;

/// A fleet: (catalog index of the type, spot?, count) per group.
pub type Fleet = Vec<(usize, bool, i64)>;

/// When each fleet is asked for: test-step index and fleet, the first at step 0.
pub type Plan = Vec<(usize, Fleet)>;

pub(super) fn baseline(catalog: &Catalog, cfg: &BacktestConfig) -> Result<usize> {
    catalog
        .instance
        .iter()
        .position(|i| i.r#type == cfg.baseline_instance)
        .ok_or_else(|| Error::config("backtest.baseline_instance", "not in the catalog"))
}

/// Instances of catalog type `ty` that serve `demand` (per resource) at `utilisation`.
pub fn count_for(
    catalog: &Catalog,
    ty: usize,
    d: &Demand,
    demand: &[f64],
    utilisation: f64,
) -> i64 {
    let inst = &catalog.instance[ty];
    d.resources
        .iter()
        .zip(demand)
        .filter_map(|((_, unit), v)| {
            let per = inst.capacity(unit)? * inst.performance * utilisation;
            Some((v / per - 1e-9).ceil() as i64)
        })
        .max()
        .unwrap_or(0)
}

/// Pushes `fleet` at `step` when it differs from the last one asked for.
pub(super) fn ask(plan: &mut Plan, step: usize, fleet: Fleet) {
    if plan.last().is_none_or(|(_, f)| *f != fleet) {
        plan.push((step, fleet));
    }
}

/// Static: `static_peak_share` of the train split's highest demand, on demand, for the whole
/// test split.
pub fn fixed(d: &Demand, catalog: &Catalog, cfg: &BacktestConfig) -> Result<Plan> {
    let ty = baseline(catalog, cfg)?;
    let peak: Vec<f64> = (0..d.resources.len())
        .map(|r| d.train.iter().map(|row| row[r]).fold(0.0, f64::max) * cfg.static_peak_share)
        .collect();
    let n = count_for(catalog, ty, d, &peak, 1.0).max(cfg.min_instances);
    Ok(vec![(0, vec![(ty, false, n)])])
}

/// An HPA: desired = demand / (target utilisation x capacity), kept within a 10 % tolerance
/// of the current count, and the highest desired count over the stabilisation window.
pub fn reactive(d: &Demand, catalog: &Catalog, cfg: &BacktestConfig) -> Result<Plan> {
    let ty = baseline(catalog, cfg)?;
    let mut plan = Plan::new();
    let mut hpa = Hpa::default();
    for (k, (t, row)) in d.times.iter().zip(&d.values).enumerate() {
        let n = hpa.step(catalog, ty, d, cfg, (*t, row), cfg.min_instances);
        ask(&mut plan, k, vec![(ty, false, n)]);
    }
    Ok(plan)
}

/// Target tracking as an HPA does it, one step at a time.
#[derive(Default)]
pub(super) struct Hpa {
    /// Desired counts within the stabilisation window: (time, count).
    window: std::collections::VecDeque<(i64, i64)>,
    current: i64,
}

impl Hpa {
    /// The count after step `(t, row)` of demand, never below `floor` (the group's minimum).
    pub(super) fn step(
        &mut self,
        catalog: &Catalog,
        ty: usize,
        d: &Demand,
        cfg: &BacktestConfig,
        (t, row): (i64, &[f64]),
        floor: i64,
    ) -> i64 {
        let exact = count_for(catalog, ty, d, row, cfg.target_utilisation);
        // HPA's tolerance: no change while usage is within 10 % of the target.
        let ratio = if self.current > 0 {
            usage_ratio(catalog, ty, d, row, self.current, cfg.target_utilisation)
        } else {
            f64::INFINITY
        };
        let desired = if (ratio - 1.0).abs() <= 0.1 {
            self.current
        } else {
            exact
        }
        .max(floor);
        self.window.push_back((t, desired));
        while self
            .window
            .front()
            .is_some_and(|(w, _)| *w <= t - cfg.stabilisation_s * 1000)
        {
            self.window.pop_front();
        }
        self.current = self.window.iter().map(|(_, n)| *n).max().unwrap_or(desired);
        self.current
    }
}

/// The highest over the resources of usage / (target x capacity of `n` instances).
fn usage_ratio(catalog: &Catalog, ty: usize, d: &Demand, row: &[f64], n: i64, target: f64) -> f64 {
    let inst = &catalog.instance[ty];
    d.resources
        .iter()
        .zip(row)
        .filter_map(|((_, unit), v)| {
            let cap = inst.capacity(unit)? * inst.performance * n as f64 * target;
            Some(v / cap)
        })
        .fold(0.0, f64::max)
}

/// A VPA-like recommender: every `vpa_every_s`, per resource the `vpa_quantile` of all demand
/// observed so far (train split included) weighted by 2^(-age / half-life), plus the margin.
pub fn vpa(d: &Demand, catalog: &Catalog, cfg: &BacktestConfig) -> Result<Plan> {
    let ty = baseline(catalog, cfg)?;
    let history: Vec<(i64, &Vec<f64>)> = d
        .train_times
        .iter()
        .copied()
        .zip(&d.train)
        .chain(d.times.iter().copied().zip(&d.values))
        .collect();
    let n_train = d.train.len();
    let every = cfg.vpa_every_s * 1000;
    // Samples older than 10 half-lives weigh under 0.1 %: left out.
    let horizon = 10 * cfg.vpa_half_life_s * 1000;
    let mut plan = Plan::new();
    let mut next = d.times.first().copied().unwrap_or(0);
    let mut start = 0;
    for (k, &t) in d.times.iter().enumerate() {
        if t < next {
            continue;
        }
        next = t + every;
        let end = n_train + k; // observed: everything before this step
        while history[start].0 < t - horizon && start + 1 < end {
            start += 1;
        }
        let rec: Vec<f64> = (0..d.resources.len())
            .map(|r| {
                let mut w: Vec<(f64, f64)> = history[start..end.max(start + 1)]
                    .iter()
                    .map(|(ti, row)| {
                        let age = (t - ti) as f64 / (cfg.vpa_half_life_s * 1000) as f64;
                        (row[r], 0.5f64.powf(age))
                    })
                    .collect();
                weighted_quantile(&mut w, cfg.vpa_quantile) * (1.0 + cfg.vpa_margin)
            })
            .collect();
        let n = count_for(catalog, ty, d, &rec, 1.0).max(cfg.min_instances);
        ask(&mut plan, k, vec![(ty, false, n)]);
    }
    Ok(plan)
}

/// The smallest value whose cumulative weight reaches `q` of the total.
fn weighted_quantile(w: &mut [(f64, f64)], q: f64) -> f64 {
    w.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = w.iter().map(|x| x.1).sum();
    let mut acc = 0.0;
    for (v, weight) in w.iter() {
        acc += weight;
        if acc >= q * total {
            return *v;
        }
    }
    w.last().map_or(0.0, |x| x.0)
}

/// A `metrics.norm` batch cut into one batch per timestamp (its rows are grouped by step).
fn by_time(batch: &RecordBatch) -> Vec<RecordBatch> {
    let Ok(time) = timestamps(batch, "event_time") else {
        return vec![batch.clone()];
    };
    let t = time.values();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=t.len() {
        if i == t.len() || t[i] != t[start] {
            out.push(batch.slice(start, i - start));
            start = i;
        }
    }
    out
}

/// The forecast stage's run over an entity's whole history (train, then test), kept so that
/// tier-select can be run over it at several settings: per step its `metrics.norm` batch and
/// the forecasts it caused, and last the forecasts of the flush.
pub struct Replay {
    steps: Vec<(Option<RecordBatch>, Vec<RecordBatch>)>,
}

/// The forecast stage over `norm`, step by step as a live run feeds it.
pub fn wfe_forecasts(job: &JobConfig, norm: Vec<RecordBatch>) -> Result<Replay> {
    // The stage retrains into its model folder: it gets a private copy, so a backtest
    // neither changes the user's folder nor depends on earlier backtests.
    let (_scratch, job) = crate::scratch::scratch_models(job)?;
    let fcfg = job.stages.forecast.clone();
    let mut forecast = Forecast::new(fcfg, job.resources.clone())?;
    let mut fctx = Context::new("forecast");
    let mut steps = Vec::new();
    // Step by step: a replay's batches hold hours of steps, and the reactive floor must judge
    // each step against the fleet decided by then.
    for b in norm.iter().flat_map(by_time) {
        let mut fc = VecCollector::new();
        forecast.process_batch(Topic::MetricsNorm, b.clone(), &mut fctx, &mut fc)?;
        steps.push((Some(b), fc.of(Topic::Forecasts)));
    }
    let mut fc = VecCollector::new();
    forecast.flush(&mut fctx, &mut fc)?;
    steps.push((None, fc.of(Topic::Forecasts)));
    Ok(Replay { steps })
}

/// Tier-select with settings `tier` over a forecast run: each step to tier-select, then the
/// forecasts it caused; its decisions become the plan.
pub fn wfe_decide(
    d: &Demand,
    tier: TierSelectConfig,
    resources: &[wfe_forecast::ResourceMap],
    replay: &Replay,
) -> Result<Plan> {
    let mut tier = TierSelect::new(tier)?.with_resources(resources.to_vec());
    let catalog = tier.catalog().clone();
    let mut tctx = Context::new("tier-select");
    let mut decisions = VecCollector::new();
    for (step, forecasts) in &replay.steps {
        if let Some(b) = step {
            tier.process_batch(Topic::MetricsNorm, b.clone(), &mut tctx, &mut decisions)?;
        }
        for f in forecasts {
            tier.process_batch(Topic::Forecasts, f.clone(), &mut tctx, &mut decisions)?;
        }
    }
    let mut rows = Vec::new();
    for b in decisions.of(Topic::Decisions) {
        let at = timestamps(&b, "decided_at")?;
        let ty = strings(&b, "instance_type")?;
        let count = i64s(&b, "count")?;
        let spot = i64s(&b, "spot_count")?;
        for r in 0..b.num_rows() {
            let s = if spot.is_null(r) { 0 } else { spot.value(r) };
            rows.push((at.value(r), ty.value(r).to_string(), count.value(r), s));
        }
    }
    plan_of(d, &catalog, rows)
}

/// The plan a run's decisions make over `d`'s steps: each decision `(decided_at, instance
/// type, count, of it spot)` asks for its fleet at the first step at or after it; the one in
/// force when the steps begin (else the first) is in place at step 0.
pub fn plan_of(
    d: &Demand,
    catalog: &Catalog,
    decisions: impl IntoIterator<Item = (i64, String, i64, i64)>,
) -> Result<Plan> {
    let mut plan = Plan::new();
    let mut before: Option<Fleet> = None;
    for (t, ty, count, spot) in decisions {
        let i = catalog
            .instance
            .iter()
            .position(|x| x.r#type == ty)
            .ok_or_else(|| Error::bad_input("decisions", format!("unknown type {ty}")))?;
        let fleet = vec![(i, false, count - spot), (i, true, spot)];
        match d.times.iter().position(|&x| x >= t) {
            None => {}
            Some(0) if t < d.times[0] => before = Some(fleet),
            Some(k) => {
                if plan.is_empty() {
                    plan.push((0, before.take().unwrap_or_else(|| fleet.clone())));
                }
                ask(&mut plan, k, fleet)
            }
        }
    }
    if plan.is_empty() {
        let first = before.ok_or_else(|| {
            Error::config(
                "backtest",
                format!(
                    "{}: the stages made no decision (too little history for a forecast?)",
                    d.entity
                ),
            )
        })?;
        plan.push((0, first));
    }
    Ok(plan)
}
