//! # wfe-forecast: `metrics.norm` in, `forecasts` out
//!
//! Per workload, each configured resource is a series in capacity units: the mean of its
//! metrics' raw values times the resource's capacity (see [`ResourceMap`]). Every
//! `every_s` seconds of event time the stage forecasts each resource at each horizon with
//! the model that has done best on that series so far:
//! - **persistence** (the last value) and **seasonal naive** (the value one season before
//!   the target): the baselines, whose errors are known at every step;
//! - **ETS** and **MSTL** (augurs; [`models`]), refitted on a bounded window at each forecast;
//! - the **LSTM** ([`lstm`]): one global quantile model per data step, trained by `wfe train`
//!   or by the stage itself, loaded from `model_dir` ([`store`]).
//!
//! A tour: [`Forecast::process_batch`] adds each step to the series' history and files the
//! baselines' errors; a forecast that falls due becomes a job with a snapshot of the history
//! and of the baselines' standing. At the end of the batch the jobs run ([`issue`]): the LSTM
//! in one call for the fleet, then series spread over the cores; a series' first job with
//! enough history cross-validates its fitted models on rolling origins; each forecast of a
//! fitted model is filed and its error recorded when its actual arrives. Per horizon the
//! lowest mean absolute error wins; each level is the model's value plus that level's
//! quantile of the model's own past errors (split conformal). The row carries the model, its
//! version, its score and why anything fell back. Spans the anomaly stage flags are masked
//! out of every error. The feedback loop exports the LSTM's running error and retrains it on
//! drift or schedule.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f64, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::state::Split;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};
use wfe_domain::retire::{Sweep, sweep_idle};
use wfe_domain::spans::AnomalySpans;

pub mod choice;
mod config;
mod ets;
mod issue;
pub mod lstm;
pub mod models;
mod observe;
mod ring;
mod snapshot;
pub mod store;

pub const MODEL_VERSION: &str = "1";

pub use wfe_domain::ResourceMap;

pub use config::ForecastConfig;
pub use lstm::LstmConfig;
pub use models::{Model, StatsConfig};
use observe::{fitted_standing, observe, resolve_series};
use ring::Ring;

/// Errors of one fitted model's forecasts at one horizon, as their actuals arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Track {
    /// Actual minus point forecast: the model's MAE and its choice.
    point: Ring,
    /// Per level: actual minus the model's value at that level, which calibrates the level.
    levels: Vec<Ring>,
}

impl Track {
    pub(crate) fn new(cfg: &ForecastConfig) -> Self {
        Self {
            point: Ring::new(cfg.residual_window),
            levels: vec![Ring::new(cfg.residual_window); cfg.quantiles.len()],
        }
    }
}

/// A fitted model's forecast waiting for its actual.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    origin: i64,
    target: i64,
    /// Index in the stage's fitted models, and the horizon's index.
    model: usize,
    horizon: usize,
    point: f64,
    values: Vec<f64>,
}

/// One resource of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    history: Ring,
    /// Per horizon: past errors (actual minus forecast) of persistence and seasonal naive,
    /// at every step (they cost nothing to compute).
    err_persist: Vec<Ring>,
    err_seasonal: Vec<Ring>,
    /// Per fitted model (ETS, MSTL, LSTM as configured) and horizon: errors of its issued
    /// forecasts (and of the cross-validation on the history).
    tracks: Vec<Vec<Track>>,
    pending: Vec<Pending>,
    /// Whether the rolling-origin cross-validation on the history has run.
    validated: bool,
    issued: u64,
    /// The model chosen at the last issuance, per horizon.
    chosen: Vec<Option<Model>>,
    /// While jobs of this series wait for the end of the batch: the time of the first, and
    /// the values the history pushed out since (a long batch can run past the history's
    /// length, and those jobs' targets must still find their actuals).
    #[serde(default)]
    hold_from: Option<i64>,
    #[serde(default)]
    spill: Vec<(i64, f64)>,
    /// Per fitted model: what its ETS fits remember between forecasts (`models::EtsMemo`).
    /// Kept in entries of their own (`ets/<workload>`), so that states written before it
    /// still restore.
    #[serde(skip)]
    memos: Vec<models::EtsMemo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Workload {
    slots: Slots,
    step_ms: i64,
    series: Vec<Series>,
    /// Slots of each resource's metrics, resolved when `slots` had `res_slots_at` entries.
    res_slots: Vec<Vec<usize>>,
    res_slots_at: usize,
    /// Which resources apply to this workload.
    applies: Vec<bool>,
    /// Each configured horizon in steps of this workload.
    horizons: Vec<usize>,
    last_issue: Option<i64>,
}

impl HasSlots for Workload {
    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}

/// The forecast stage.
pub struct Forecast {
    cfg: ForecastConfig,
    resources: Vec<ResourceMap>,
    workloads: Keyed<Workload>,
    /// Spans flagged by the anomaly stage (with `mask_anomalies`).
    spans: AnomalySpans,
    /// Reused buffer for quantile selection.
    scratch: Vec<f64>,
    /// The fitted models of the config, in order (index of `Series::tracks`).
    fitted: Vec<Model>,
    /// The LSTM: the model folder, the loaded version, and the feedback loop.
    neural: issue::Neural,
    /// Per (model, horizon), exponentially weighted |error| / capacity of the model's and of
    /// persistence's forecasts across the fleet: telemetry (`mae.*`, `relative_mae.*`
    /// measurements), never read by a decision, so not in the snapshot.
    running: BTreeMap<(usize, usize), (f64, f64)>,
    /// When to retire idle workloads (`retire_after_s`; not in the snapshot).
    sweep: Sweep,
}

#[derive(Default)]
struct Rows {
    issued: Vec<i64>,
    target: Vec<i64>,
    workload: Vec<String>,
    resource: Vec<String>,
    unit: Vec<String>,
    horizon: Vec<i64>,
    levels: Vec<Vec<f64>>,
    values: Vec<Vec<f64>>,
    model: Vec<&'static str>,
    version: Vec<String>,
    score: Vec<Option<f64>>,
    fallback: Vec<Option<String>>,
}

impl Rows {
    /// Appends another set of rows after these.
    fn append(&mut self, o: Rows) {
        self.issued.extend(o.issued);
        self.target.extend(o.target);
        self.workload.extend(o.workload);
        self.resource.extend(o.resource);
        self.unit.extend(o.unit);
        self.horizon.extend(o.horizon);
        self.levels.extend(o.levels);
        self.values.extend(o.values);
        self.model.extend(o.model);
        self.version.extend(o.version);
        self.score.extend(o.score);
        self.fallback.extend(o.fallback);
    }
}

/// [`quantile`] at several ascending levels of unsorted values, by successive selections on
/// the part not yet partitioned: about twice the length in comparisons instead of a sort's
/// n log n (a fleet's forecasts compute many of these). Reorders `values`.
pub fn quantiles_select(values: &mut [f64], levels: &[f64]) -> Vec<f64> {
    let n = values.len();
    if n == 0 {
        return vec![0.0; levels.len()];
    }
    let mut base = 0;
    levels
        .iter()
        .map(|&q| {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (
                (pos.floor() as usize).max(base),
                (pos.ceil() as usize).max(base),
            );
            // values[..base] are all <= values[base..], so the lo-th smallest is in values[base..].
            let (_, &mut a, right) =
                values[base..].select_nth_unstable_by(lo - base, f64::total_cmp);
            let b = if hi > lo {
                right.iter().copied().min_by(f64::total_cmp).unwrap_or(a)
            } else {
                a
            };
            base = lo;
            a + (b - a) * (pos - pos.floor())
        })
        .collect()
}

fn steps_of(seconds: u64, step_ms: i64) -> usize {
    ((seconds as i64 * 1000) / step_ms.max(1)).max(1) as usize
}

fn new_series(cfg: &ForecastConfig, step_ms: i64) -> Series {
    let longest = cfg
        .horizons_s
        .iter()
        .map(|h| steps_of(*h, step_ms))
        .max()
        .unwrap_or(1);
    let n = cfg.horizons_s.len();
    let every = steps_of(cfg.every_s, step_ms);
    Series {
        history: Ring::new(history_len(cfg, step_ms) + longest + cfg.cv_origins * every + 1),
        err_persist: vec![Ring::new(cfg.residual_window); n],
        err_seasonal: vec![Ring::new(cfg.residual_window); n],
        tracks: vec![vec![Track::new(cfg); n]; fitted_models(cfg).len()],
        pending: Vec::new(),
        validated: false,
        issued: 0,
        chosen: vec![None; n],
        hold_from: None,
        spill: Vec::new(),
        memos: vec![models::EtsMemo::default(); fitted_models(cfg).len()],
    }
}

/// Steps of history a fitted model is given at a forecast.
pub fn history_len(cfg: &ForecastConfig, step_ms: i64) -> usize {
    let season = steps_of(cfg.season_s, step_ms);
    (season * cfg.stats.mstl_seasons)
        .max(cfg.stats.ets_window)
        .max(cfg.lstm.steps)
        .max(season + 1)
}

/// The configured models that are fitted (all but the two baselines), in config order.
fn fitted_models(cfg: &ForecastConfig) -> Vec<Model> {
    cfg.models
        .iter()
        .copied()
        .filter(|m| !m.is_baseline())
        .collect()
}

pub use wfe_domain::stats::quantile;

/// `3600` -> `1h`, `900` -> `15m`, `86400` -> `24h`: how horizons are named in figures.
pub fn horizon_label(s: u64) -> String {
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

impl Forecast {
    pub fn new(cfg: ForecastConfig, resources: Vec<ResourceMap>) -> Result<Self> {
        cfg.validate()?;
        if resources.is_empty() {
            return Err(Error::config(
                "resources",
                "map at least one resource to metrics",
            ));
        }
        for r in &resources {
            if r.metrics.is_empty() || !(r.capacity.is_finite() && r.capacity > 0.0) {
                return Err(Error::config(
                    format!("resources.{}", r.name),
                    "needs at least one metric and a positive capacity",
                ));
            }
        }
        Ok(Self {
            fitted: fitted_models(&cfg),
            neural: issue::Neural::new(&cfg),
            running: BTreeMap::new(),
            cfg,
            resources,
            workloads: Keyed::default(),
            spans: AnomalySpans::default(),
            scratch: Vec::new(),
            sweep: Sweep::default(),
        })
    }
}

/// What every workload's step reads: the settings, the flagged spans, a scratch buffer, and
/// the count of errors masked.
struct Env<'a> {
    cfg: &'a ForecastConfig,
    resources: &'a [ResourceMap],
    spans: &'a AnomalySpans,
    scratch: &'a mut Vec<f64>,
    masked: u64,
    /// The fitted models' forecasts resolved in this batch.
    resolved: Vec<Resolved>,
}

impl Env<'_> {
    /// An error at `t` from a forecast made at `origin`, or missing when either is flagged.
    fn error(&mut self, name: &str, t: i64, origin: i64, e: f64) -> f64 {
        if self.cfg.mask_anomalies
            && (self.spans.covers(name, t) || self.spans.covers(name, origin))
        {
            self.masked += 1;
            return f64::NAN;
        }
        e
    }
}

/// A fitted model's forecast whose actual arrived: its absolute error and persistence's over
/// the same span, both over the resource's capacity.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    model: usize,
    horizon: usize,
    error: f64,
    persistence: f64,
    step_ms: i64,
}

/// A forecast due: one resource of one workload at one time, with the history it reads.
struct Job {
    workload: usize,
    resource: usize,
    time: i64,
    step_ms: i64,
    /// Gap-filled later; oldest first, ending at `time`.
    history: Vec<f64>,
    /// The models' errors as they stood at `time`, per horizon.
    standing: Vec<Standing>,
}

/// What a series' errors said of each model at one horizon when a forecast was due: the
/// batch goes on before its jobs run, and later errors must not leak into them.
struct Standing {
    /// Persistence and seasonal naive, when they can be judged: (errors, MAE, calibrated
    /// values).
    persistence: Option<(usize, f64, Vec<f64>)>,
    seasonal: Option<(usize, f64, Vec<f64>)>,
    /// Whether the history reaches a season back from the target.
    seasonal_runs: bool,
}

impl Forecast {
    /// Records the spans of an `anomalies` batch and masks the errors already held that they
    /// touch: an error at `t` of a forecast from `t - h` is masked when `t` or `t - h` is
    /// flagged. Returns how many were masked.
    fn mask(&mut self, batch: &RecordBatch) -> Result<u64> {
        let added = self.spans.add_batch(batch)?;
        let mut masked = 0;
        for (name, start, end) in added {
            let Some(i) = self.workloads.names.names.iter().position(|n| *n == name) else {
                continue;
            };
            let wk = &mut self.workloads.items[i];
            let step = wk.step_ms.max(1);
            let season = steps_of(self.cfg.season_s, step) as i64 * step;
            for s in &mut wk.series {
                for (hi, &h) in wk.horizons.iter().enumerate() {
                    let h = h as i64 * step;
                    masked += s.err_persist[hi].mask(start, end + h);
                    masked += s.err_seasonal[hi].mask(start, end);
                    masked += s.err_seasonal[hi].mask(start + season, end + season);
                    // A fitted model's error is filed at its target: masked when the target
                    // or the origin (a horizon before) is flagged.
                    for t in s.tracks.iter_mut().filter_map(|t| t.get_mut(hi)) {
                        masked += t.point.mask(start, end + h);
                        for ring in &mut t.levels {
                            ring.mask(start, end + h);
                        }
                    }
                }
            }
            // Spans older than everything a series still holds can no longer mask anything.
            let held = self.cfg.residual_window as i64 * step + season;
            if let Some(latest) = wk
                .series
                .iter()
                .filter_map(|s| s.history.times.back())
                .max()
            {
                self.spans.forget_before(&name, latest - held);
            }
        }
        Ok(masked)
    }

    fn finish(rows: Rows) -> Result<RecordBatch> {
        let n = rows.issued.len();
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(rows.issued),
            timestamp_column(rows.target),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.resource)),
            Arc::new(StringArray::from(rows.unit)),
            Arc::new(Int64Array::from(rows.horizon)),
            list_f64(rows.levels),
            list_f64(rows.values),
            Arc::new(StringArray::from(rows.model)),
            Arc::new(StringArray::from(rows.version)),
            Arc::new(StringArray::from(vec!["mae"; n])),
            Arc::new(Float64Array::from(rows.score)),
            Arc::new(StringArray::from(rows.fallback)),
        ];
        Ok(RecordBatch::try_new(Topic::Forecasts.schema(), columns)?)
    }
}

impl Stage for Forecast {
    fn name(&self) -> &'static str {
        "forecast"
    }

    fn inputs(&self) -> Vec<Topic> {
        if self.cfg.mask_anomalies {
            vec![Topic::MetricsNorm, Topic::Anomalies]
        } else {
            vec![Topic::MetricsNorm]
        }
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Forecasts]
    }

    fn process_batch(
        &mut self,
        topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        if topic == Topic::Anomalies {
            let masked = self.mask(&batch)?;
            ctx.count("errors.masked", masked);
            return Ok(());
        }
        self.neural.refresh(&self.cfg, ctx);
        let nb = NormBatch::new(&batch)?;
        let mut jobs = Vec::new();
        let mut env = Env {
            cfg: &self.cfg,
            resources: &self.resources,
            spans: &self.spans,
            scratch: &mut self.scratch,
            masked: 0,
            resolved: Vec::new(),
        };
        let replayed = nb.for_each_dense(&mut self.workloads, |d| {
            observe(
                &mut env,
                d.state,
                d.id,
                d.step.workload,
                d.step.time,
                d.step.step_ms,
                d.raw,
                &mut jobs,
            );
            Ok(())
        })?;
        let (masked, resolved) = (env.masked, env.resolved);
        ctx.count("errors.masked", masked);
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        let (rows, resolved_now) = self.issue(jobs, ctx);
        self.feedback(resolved.iter().chain(&resolved_now), ctx);
        if !rows.issued.is_empty() {
            out.emit(Topic::Forecasts, Self::finish(rows)?)?;
        }
        let after = self.cfg.retire_after_s;
        if let Some(r) = sweep_idle(&mut self.workloads, &mut self.sweep, after) {
            for (name, _) in &r.gone {
                self.spans.forget(name);
            }
            ctx.count("workload.retired", r.gone.len() as u64);
        }
        Ok(())
    }

    /// The end of the input: retrains under way are waited for and applied.
    fn flush(&mut self, ctx: &mut Context, _out: &mut dyn Collector) -> Result<()> {
        self.settle_retrains(true, ctx);
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        let memos = snapshot::memos(&self.workloads);
        wfe_contract::state::encode(self.name(), &(&self.workloads, &self.spans, memos))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let (workloads, spans, memos) = snapshot::decode_whole(self.name(), state)?;
        (self.workloads, self.spans) = (workloads, spans);
        snapshot::put_memos(&mut self.workloads, memos, &self.cfg);
        Ok(())
    }

    fn snapshot_split(&self) -> Result<Option<Split>> {
        let mut split = Split::new();
        split.put_items(self.name(), "w", self.workloads.iter())?;
        split.put_unordered(self.name(), "spans", self.spans.iter())?;
        let memos = snapshot::memos(&self.workloads);
        split.put_items(
            self.name(),
            "ets",
            memos.iter().map(|(w, m)| (w.as_str(), m)),
        )?;
        Ok(Some(split))
    }

    fn restore_split(&mut self, state: Split) -> Result<()> {
        self.workloads = Keyed::from_items(state.items(self.name(), "w")?);
        self.spans = AnomalySpans::from_items(state.items(self.name(), "spans")?);
        let memos = state.items(self.name(), "ets")?;
        snapshot::put_memos(&mut self.workloads, memos, &self.cfg);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
