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

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f64, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::spans::AnomalySpans;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

mod issue;
pub mod lstm;
pub mod models;
pub mod store;

pub const MODEL_VERSION: &str = "1";

pub use wfe_contract::ResourceMap;

/// Settings of the forecast stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    /// Horizons in seconds.
    #[serde(default = "d_horizons")]
    pub horizons_s: Vec<u64>,
    /// Quantile levels, ascending, in (0, 1).
    #[serde(default = "d_quantiles")]
    pub quantiles: Vec<f64>,
    /// Seconds of event time between forecasts of a workload.
    #[serde(default = "d_every")]
    pub every_s: u64,
    /// Season of the seasonal-naive model, in seconds.
    #[serde(default = "d_season")]
    pub season_s: u64,
    /// Steps of past errors the quantiles and the model choice come from.
    #[serde(default = "d_residuals")]
    pub residual_window: usize,
    /// Fewest past errors needed for intervals; with fewer, quantiles collapse to the point.
    #[serde(default = "d_min_residuals")]
    pub min_residuals: usize,
    /// Most past errors the quantiles are computed from: a longer window is sampled evenly
    /// (errors a step apart are strongly correlated, so little is lost).
    #[serde(default = "d_sample")]
    pub quantile_sample: usize,
    /// Forecasts between two computations of a series' error quantiles (1: every time).
    #[serde(default = "d_refresh")]
    pub quantile_refresh: usize,
    /// Keep spans the anomaly stage flagged out of what the models learn from: the stage also
    /// reads `anomalies`, and errors whose actual or origin falls in a flagged span (including
    /// errors already held when the span arrives) no longer count toward model choice, scores
    /// or intervals.
    #[serde(default = "d_true")]
    pub mask_anomalies: bool,
    /// The models that compete for each series, chosen per workload, resource and horizon
    /// by rolling-origin cross-validation: `persistence`, `seasonal-naive`, `ets`, `mstl`,
    /// `lstm` (the LSTM needs a trained model in `model_dir`).
    #[serde(default = "d_models")]
    pub models: Vec<Model>,
    /// Settings of ETS and MSTL.
    #[serde(default)]
    pub stats: StatsConfig,
    /// Forecast origins of the cross-validation on a series' own history, `every_s` apart,
    /// that choose its model before its live errors take over.
    #[serde(default = "d_cv_origins")]
    pub cv_origins: usize,
    /// Settings of the LSTM model.
    #[serde(default)]
    pub lstm: LstmConfig,
    /// Folder of trained models (`wfe train` writes versions there; the stage loads the
    /// newest and swaps to each new one while it runs).
    #[serde(default)]
    pub model_dir: Option<std::path::PathBuf>,
    /// Seconds (wall time) between looks at `model_dir` for a newer version.
    #[serde(default = "d_reload")]
    pub reload_s: u64,
    /// The stage retrains the LSTM on the histories it holds every this many seconds of
    /// event time (0: never on a schedule), into a new version in `model_dir`.
    #[serde(default = "d_retrain")]
    pub retrain_every_s: u64,
    /// A retrain runs on a thread of its own; its version is swapped in at the first batch
    /// whose event time is this many seconds past the step that started it (or at the end of
    /// the input), waiting there only for a training not done by then. Event time, so that
    /// runs over the same input swap at the same step.
    #[serde(default = "d_retrain_swap")]
    pub retrain_swap_after_s: u64,
    /// ...and when the LSTM's running error relative to persistence's on the same forecasts
    /// (over its last `drift_window` resolved forecasts of a horizon) exceeds this many times
    /// the same ratio in its validation: a relative test, so it holds for any resource.
    #[serde(default = "d_drift_ratio")]
    pub drift_ratio: f64,
    /// Fewest resolved LSTM forecasts of a horizon before drift is judged.
    #[serde(default = "d_drift_window")]
    pub drift_window: usize,
    /// A fitted model not chosen for a series runs at every this-many issuances only (the
    /// chosen one at every issuance): fits cost the most, and scores move slowly.
    #[serde(default = "d_challenge")]
    pub challenge_every: usize,
}

fn d_horizons() -> Vec<u64> {
    vec![900, 3600]
}
fn d_quantiles() -> Vec<f64> {
    vec![0.1, 0.5, 0.9]
}
fn d_every() -> u64 {
    3600
}
fn d_season() -> u64 {
    86_400
}
fn d_residuals() -> usize {
    2016
}
fn d_min_residuals() -> usize {
    12
}
fn d_sample() -> usize {
    256
}
fn d_refresh() -> usize {
    3
}
/// The statistical models, and the LSTM where this build has libtorch.
fn d_models() -> Vec<Model> {
    let mut m = Model::STATISTICAL.to_vec();
    if wfe_neural::available() {
        m.push(Model::Lstm);
    }
    m
}
fn d_reload() -> u64 {
    30
}
fn d_retrain() -> u64 {
    7 * 86_400
}
fn d_retrain_swap() -> u64 {
    3600
}
fn d_drift_ratio() -> f64 {
    1.5
}
fn d_drift_window() -> usize {
    64
}
fn d_challenge() -> usize {
    4
}
fn d_cv_origins() -> usize {
    48
}
fn d_true() -> bool {
    true
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            horizons_s: d_horizons(),
            quantiles: d_quantiles(),
            every_s: d_every(),
            season_s: d_season(),
            residual_window: d_residuals(),
            min_residuals: d_min_residuals(),
            quantile_sample: d_sample(),
            quantile_refresh: d_refresh(),
            mask_anomalies: true,
            models: d_models(),
            stats: StatsConfig::default(),
            cv_origins: d_cv_origins(),
            lstm: LstmConfig::default(),
            model_dir: None,
            reload_s: d_reload(),
            retrain_every_s: d_retrain(),
            retrain_swap_after_s: d_retrain_swap(),
            drift_ratio: d_drift_ratio(),
            drift_window: d_drift_window(),
            challenge_every: d_challenge(),
        }
    }
}

impl ForecastConfig {
    pub fn validate(&self) -> Result<()> {
        if self.horizons_s.is_empty() || self.horizons_s.contains(&0) {
            return Err(Error::config(
                "stages.forecast.horizons_s",
                "needs at least one positive horizon",
            ));
        }
        if self.quantiles.is_empty()
            || self.quantiles.iter().any(|q| !(*q > 0.0 && *q < 1.0))
            || self.quantiles.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::config(
                "stages.forecast.quantiles",
                "must be ascending levels in (0, 1)",
            ));
        }
        if !(self.drift_ratio.is_finite() && self.drift_ratio > 0.0) {
            return Err(Error::config(
                "stages.forecast.drift_ratio",
                "must be a positive number",
            ));
        }
        if self.models.is_empty() {
            return Err(Error::config(
                "stages.forecast.models",
                "name at least one model (persistence is always the fallback)",
            ));
        }
        if self.stats.mstl_seasons < 2 || self.stats.ets_window < models::MIN_ETS {
            return Err(Error::config(
                "stages.forecast.stats",
                format!(
                    "mstl_seasons must be at least 2 and ets_window at least {}",
                    models::MIN_ETS
                ),
            ));
        }
        if self.every_s == 0 || self.season_s == 0 {
            return Err(Error::config(
                "stages.forecast.every_s",
                "every_s and season_s must be positive",
            ));
        }
        self.lstm.validate("stages.forecast.lstm")
    }
}

pub use lstm::LstmConfig;
pub use models::{Model, StatsConfig};

/// A bounded series of recent values (NaN = missing), with the running sum of |value| over
/// its finite values so a mean absolute error costs nothing to read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ring {
    cap: usize,
    values: VecDeque<f64>,
    /// Event time (ms) of each value: what anomaly masking matches.
    times: VecDeque<i64>,
    abs_sum: f64,
    finite: usize,
    /// Quantiles of the values at the configured levels, and calls since they were computed.
    offsets: Vec<f64>,
    age: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            values: VecDeque::with_capacity(cap.min(4096)),
            times: VecDeque::with_capacity(cap.min(4096)),
            abs_sum: 0.0,
            finite: 0,
            offsets: Vec::new(),
            age: 0,
        }
    }
    /// Adds a value; returns the one it pushed out, if the ring was full.
    fn push(&mut self, t: i64, v: f64) -> Option<(i64, f64)> {
        let mut evicted = None;
        if self.values.len() == self.cap {
            let old_t = self.times.pop_front();
            let old = self.values.pop_front();
            if let Some(o) = old.filter(|o| o.is_finite()) {
                self.abs_sum -= o.abs();
                self.finite -= 1;
            }
            evicted = old_t.zip(old);
        }
        if v.is_finite() {
            self.abs_sum += v.abs();
            self.finite += 1;
        }
        // Kept in time order: a fitted model's errors can be filed out of order (a forecast
        // whose target passed before it was registered is resolved at once).
        if self.times.back().is_none_or(|&b| b <= t) {
            self.values.push_back(v);
            self.times.push_back(t);
        } else {
            let at = self.times.partition_point(|&x| x <= t);
            self.values.insert(at, v);
            self.times.insert(at, t);
        }
        evicted
    }
    /// Count and mean absolute value of the finite entries at or before `until`.
    fn stats_until(&self, until: i64) -> (usize, f64) {
        let end = self.times.partition_point(|&x| x <= until);
        let (mut n, mut sum) = (0, 0.0);
        for v in self.values.range(..end).filter(|v| v.is_finite()) {
            n += 1;
            sum += v.abs();
        }
        (n, sum / n.max(1) as f64)
    }
    /// The quantile at `level` of the entries at or before `until` (a sample of at most
    /// `quantile_sample`), or None with fewer than `min_residuals` of them.
    fn level_offset_until(
        &self,
        level: f64,
        until: i64,
        cfg: &ForecastConfig,
        scratch: &mut Vec<f64>,
    ) -> Option<f64> {
        let end = self.times.partition_point(|&x| x <= until);
        let stride = end.div_ceil(cfg.quantile_sample.max(1)).max(1);
        scratch.clear();
        scratch.extend(
            self.values
                .range(..end)
                .rev()
                .step_by(stride)
                .copied()
                .filter(|v| v.is_finite()),
        );
        (scratch.len() >= cfg.min_residuals.max(1)).then(|| quantiles_select(scratch, &[level])[0])
    }
    /// Drops the entries at or before `t`.
    fn clear_until(&mut self, t: i64) {
        while self.times.front().is_some_and(|&x| x <= t) {
            self.times.pop_front();
            if let Some(v) = self.values.pop_front().filter(|v| v.is_finite()) {
                self.abs_sum -= v.abs();
                self.finite -= 1;
            }
        }
    }
    /// Drops (sets missing) the values whose time is in `[start, end]`; returns how many.
    fn mask(&mut self, start: i64, end: i64) -> u64 {
        let from = self.times.partition_point(|&t| t < start);
        let mut n = 0;
        for i in from..self.values.len() {
            if self.times[i] > end {
                break;
            }
            let v = self.values[i];
            if v.is_finite() {
                self.abs_sum -= v.abs();
                self.finite -= 1;
                self.values[i] = f64::NAN;
                n += 1;
            }
        }
        if n > 0 {
            // The error quantiles are stale: recompute at the next forecast.
            self.offsets.clear();
        }
        n
    }
    /// Mean absolute value of the finite entries.
    fn mae(&self) -> f64 {
        self.abs_sum.max(0.0) / self.finite.max(1) as f64
    }
    /// The value at event time `t`, if held and observed.
    fn at(&self, t: i64) -> Option<f64> {
        let i = self.times.partition_point(|&x| x < t);
        (self.times.get(i) == Some(&t))
            .then(|| self.values[i])
            .filter(|v| v.is_finite())
    }
    /// The value `back` steps before the latest (0 = latest).
    fn ago(&self, back: usize) -> Option<f64> {
        let n = self.values.len();
        (back < n)
            .then(|| self.values[n - 1 - back])
            .filter(|v| v.is_finite())
    }
    /// The quantiles of the errors at the configured levels, recomputed every
    /// `quantile_refresh` calls (the window moves little between two issuances).
    fn quantiles(&mut self, cfg: &ForecastConfig, scratch: &mut Vec<f64>) -> &[f64] {
        if self.offsets.len() != cfg.quantiles.len() || self.age >= cfg.quantile_refresh.max(1) {
            self.finite_into(scratch, cfg.quantile_sample);
            self.offsets = quantiles_select(scratch, &cfg.quantiles);
            self.age = 0;
        }
        self.age += 1;
        &self.offsets
    }

    /// Copies the finite entries into `out` (reused between calls), every `stride`-th one
    /// counted back from the newest, so the quantiles of a long window cost a bounded sample.
    fn finite_into(&self, out: &mut Vec<f64>, max_sample: usize) {
        out.clear();
        let stride = self.values.len().div_ceil(max_sample.max(1)).max(1);
        out.extend(
            self.values
                .iter()
                .rev()
                .step_by(stride)
                .copied()
                .filter(|v| v.is_finite()),
        );
    }
}

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
    }
}

/// Steps of history a fitted model is given at a forecast.
fn history_len(cfg: &ForecastConfig, step_ms: i64) -> usize {
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

pub use wfe_contract::stats::quantile;

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
    /// Persistence and seasonal naive, when they can be judged: (MAE, calibrated values).
    persistence: Option<(f64, Vec<f64>)>,
    seasonal: Option<(f64, Vec<f64>)>,
    /// Whether the history reaches a season back from the target.
    seasonal_runs: bool,
}

/// The standing of every model of a series at each horizon, now.
fn standing(
    cfg: &ForecastConfig,
    s: &mut Series,
    horizons: &[usize],
    season: usize,
    scratch: &mut Vec<f64>,
) -> Vec<Standing> {
    let last = s.history.ago(0).unwrap_or(f64::NAN);
    horizons
        .iter()
        .enumerate()
        .map(|(hi, &h)| {
            let seasonal_point = (h <= season).then(|| s.history.ago(season - h)).flatten();
            let judged = |ring: &mut Ring, point: f64, scratch: &mut Vec<f64>| {
                (ring.finite >= cfg.min_residuals).then(|| {
                    let v = ring
                        .quantiles(cfg, scratch)
                        .iter()
                        .map(|e| (point + e).max(0.0))
                        .collect();
                    (ring.mae(), v)
                })
            };
            let persistence = cfg
                .models
                .contains(&Model::Persistence)
                .then(|| judged(&mut s.err_persist[hi], last, scratch))
                .flatten();
            let seasonal = match seasonal_point {
                Some(p) if cfg.models.contains(&Model::SeasonalNaive) => {
                    judged(&mut s.err_seasonal[hi], p, scratch)
                }
                _ => None,
            };
            Standing {
                persistence,
                seasonal,
                seasonal_runs: seasonal_point.is_some(),
            }
        })
        .collect()
}

/// Per fitted model, at horizon `hi`, from its errors filed for targets up to `until` (so
/// the result does not depend on how the input was cut into batches): errors held, MAE,
/// and each level's error quantile.
fn fitted_standing(
    cfg: &ForecastConfig,
    s: &Series,
    hi: usize,
    until: i64,
    scratch: &mut Vec<f64>,
) -> Vec<(usize, f64, Vec<Option<f64>>)> {
    s.tracks
        .iter()
        .map(|t| {
            let t = &t[hi];
            let (n, mae) = t.point.stats_until(until);
            let offsets = cfg
                .quantiles
                .iter()
                .zip(&t.levels)
                .map(|(&l, ring)| ring.level_offset_until(l, until, cfg, scratch))
                .collect();
            (n, mae, offsets)
        })
        .collect()
}

/// Adds one step of a workload's resource values and, when a forecast is due, files a job.
#[allow(clippy::too_many_arguments)]
fn observe(
    env: &mut Env<'_>,
    wk: &mut Workload,
    id: usize,
    name: &str,
    time: i64,
    step_ms: i64,
    raw: &[f64],
    jobs: &mut Vec<Job>,
) {
    let (cfg, resources) = (env.cfg, env.resources);
    let season = steps_of(cfg.season_s, step_ms);
    if wk.series.is_empty() || wk.step_ms != step_ms {
        wk.horizons = cfg
            .horizons_s
            .iter()
            .map(|h| steps_of(*h, step_ms))
            .collect();
        wk.series = resources.iter().map(|_| new_series(cfg, step_ms)).collect();
        wk.applies = resources.iter().map(|r| r.applies_to(name)).collect();
        wk.step_ms = step_ms;
    }
    if wk.res_slots.len() != resources.len() || wk.res_slots_at != wk.slots.len() {
        // Resolve each resource's metrics to slots again only when new metrics appeared.
        wk.res_slots = resources
            .iter()
            .map(|r| {
                r.metrics
                    .iter()
                    .filter_map(|m| wk.slots.names.iter().position(|n| n == m))
                    .collect()
            })
            .collect();
        wk.res_slots_at = wk.slots.len();
    }
    for (ri, res) in resources.iter().enumerate() {
        if !wk.applies[ri] {
            continue;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for &slot in &wk.res_slots[ri] {
            if let Some(v) = raw.get(slot).copied().filter(|v| v.is_finite()) {
                sum += v;
                n += 1;
            }
        }
        let y = if n == 0 {
            f64::NAN
        } else {
            sum / n as f64 * res.capacity
        };
        let s = &mut wk.series[ri];
        if let Some((t, v)) = s.history.push(time, y)
            && s.hold_from.is_some_and(|from| t >= from)
        {
            s.spill.push((t, v));
        }
        if y.is_finite() {
            let ago = |k: usize| time - k as i64 * step_ms;
            for (hi, &h) in wk.horizons.iter().enumerate() {
                if let Some(p) = s.history.ago(h) {
                    let e = env.error(name, time, ago(h), y - p);
                    s.err_persist[hi].push(time, e);
                }
                if h <= season
                    && let Some(p) = s.history.ago(season)
                {
                    let e = env.error(name, time, ago(season), y - p);
                    s.err_seasonal[hi].push(time, e);
                }
            }
        }
    }
    resolve_pending(env, wk, name, time);
    let every = cfg.every_s as i64 * 1000;
    let due =
        wk.last_issue.is_none_or(|last| time - last >= every) && time.rem_euclid(every) < step_ms;
    if !due {
        return;
    }
    wk.last_issue = Some(time);
    let keep = history_len(cfg, step_ms);
    for (ri, _) in resources.iter().enumerate() {
        if !wk.applies[ri] || wk.series[ri].history.ago(0).is_none() {
            continue;
        }
        let s = &wk.series[ri];
        // The cross-validation reads the whole held history once; later forecasts the latest.
        let take = if s.validated {
            keep
        } else {
            s.history.values.len()
        };
        let from = s.history.values.len().saturating_sub(take);
        let hist: Vec<f64> = s.history.values.range(from..).copied().collect();
        let standing = standing(cfg, &mut wk.series[ri], &wk.horizons, season, env.scratch);
        wk.series[ri].hold_from.get_or_insert(time);
        jobs.push(Job {
            workload: id,
            resource: ri,
            time,
            step_ms,
            history: hist,
            standing,
        });
    }
}

/// Files the errors of fitted models' forecasts whose target time has come.
fn resolve_pending(env: &mut Env<'_>, wk: &mut Workload, name: &str, time: i64) {
    let step_ms = wk.step_ms;
    for (ri, s) in wk.series.iter_mut().enumerate() {
        let cap = env.resources.get(ri).map_or(1.0, |r| r.capacity);
        resolve_series(env, s, name, time, cap, step_ms);
    }
}

/// [`resolve_pending`] for one series.
fn resolve_series(
    env: &mut Env<'_>,
    s: &mut Series,
    name: &str,
    time: i64,
    cap: f64,
    step_ms: i64,
) {
    if s.pending.iter().all(|p| p.target > time) {
        return;
    }
    let (due, wait): (Vec<Pending>, Vec<Pending>) =
        s.pending.drain(..).partition(|p| p.target <= time);
    s.pending = wait;
    for p in due {
        let spilled = || {
            s.spill
                .iter()
                .find(|(t, _)| *t == p.target)
                .map(|x| x.1)
                .filter(|v| v.is_finite())
        };
        let Some(actual) = s.history.at(p.target).or_else(spilled) else {
            continue;
        };
        let e = env.error(name, p.target, p.origin, actual - p.point);
        let t = &mut s.tracks[p.model][p.horizon];
        t.point.push(p.target, e);
        for (ring, v) in t.levels.iter_mut().zip(&p.values) {
            let e = if e.is_finite() { actual - v } else { f64::NAN };
            ring.push(p.target, e);
        }
        // Persistence's error over the same span: the yardstick the drift check divides by.
        let at_origin = s.history.at(p.origin).or_else(|| {
            s.spill
                .iter()
                .find(|(t, _)| *t == p.origin)
                .map(|x| x.1)
                .filter(|v| v.is_finite())
        });
        if e.is_finite()
            && let Some(o) = at_origin
        {
            env.resolved.push(Resolved {
                model: p.model,
                horizon: p.horizon,
                error: (actual - p.point).abs() / cap,
                persistence: (actual - o).abs() / cap,
                step_ms,
            });
        }
    }
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
        Ok(())
    }

    /// The end of the input: retrains under way are waited for and applied.
    fn flush(&mut self, ctx: &mut Context, _out: &mut dyn Collector) -> Result<()> {
        self.settle_retrains(true, ctx);
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &(&self.workloads, &self.spans))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        (self.workloads, self.spans) = wfe_contract::state::decode(self.name(), state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
