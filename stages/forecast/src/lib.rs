//! # wfe-forecast: `metrics.norm` in, `forecasts` out
//!
//! Per workload, each configured resource is a series in capacity units: the mean of its
//! metrics' raw values times the resource's capacity (see [`ResourceMap`]). Every
//! `every_s` seconds of event time the stage forecasts each resource at each horizon with the
//! two baselines every model must beat:
//! - **persistence**: the last value;
//! - **seasonal naive**: the value one season before the target time.
//!
//! Quantiles are empirical: the model's point forecast plus the quantiles of its own errors at
//! that horizon over the last `residual_window` steps. The model with the lower mean absolute
//! error over that window is selected, and its score is in the row. With less history than a
//! season, seasonal naive cannot run and persistence is used, and the row says why.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f64, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::spans::AnomalySpans;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub const MODEL_VERSION: &str = "1";

/// How one resource is computed from metrics.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceMap {
    /// Resource name: `cpu`, `memory`, `network`, `disk` or any other.
    pub name: String,
    /// Metrics whose mean is the resource's utilisation (a fraction of capacity at 1.0).
    pub metrics: Vec<String>,
    /// Capacity unit, e.g. `vcpu`, `gib`, `gbps`.
    pub unit: String,
    /// Units of capacity that a value of 1.0 stands for.
    pub capacity: f64,
    /// Only workloads whose id starts with this; default: every workload.
    #[serde(default)]
    pub workload_prefix: Option<String>,
}

impl ResourceMap {
    pub fn applies_to(&self, workload: &str) -> bool {
        self.workload_prefix
            .as_deref()
            .is_none_or(|p| workload.starts_with(p))
    }
}

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
        if self.every_s == 0 || self.season_s == 0 {
            return Err(Error::config(
                "stages.forecast.every_s",
                "every_s and season_s must be positive",
            ));
        }
        Ok(())
    }
}

/// The models this stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Model {
    Persistence,
    SeasonalNaive,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Persistence => "persistence",
            Model::SeasonalNaive => "seasonal-naive",
        }
    }
}

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
    fn push(&mut self, t: i64, v: f64) {
        if self.values.len() == self.cap {
            self.times.pop_front();
            if let Some(old) = self.values.pop_front().filter(|o| o.is_finite()) {
                self.abs_sum -= old.abs();
                self.finite -= 1;
            }
        }
        if v.is_finite() {
            self.abs_sum += v.abs();
            self.finite += 1;
        }
        self.values.push_back(v);
        self.times.push_back(t);
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

/// One resource of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    history: Ring,
    /// Per horizon: past errors (actual minus forecast) of persistence and seasonal naive.
    err_persist: Vec<Ring>,
    err_seasonal: Vec<Ring>,
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
    score: Vec<Option<f64>>,
    fallback: Vec<Option<String>>,
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
    let season = steps_of(cfg.season_s, step_ms);
    let longest = cfg
        .horizons_s
        .iter()
        .map(|h| steps_of(*h, step_ms))
        .max()
        .unwrap_or(1);
    let n = cfg.horizons_s.len();
    Series {
        history: Ring::new(season + longest + 1),
        err_persist: vec![Ring::new(cfg.residual_window); n],
        err_seasonal: vec![Ring::new(cfg.residual_window); n],
    }
}

pub use wfe_contract::stats::quantile;

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

/// Adds one step of a workload's resource values and, when due, forecasts.
fn observe(
    env: &mut Env<'_>,
    wk: &mut Workload,
    name: &str,
    time: i64,
    step_ms: i64,
    raw: &[f64],
    rows: &mut Rows,
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
        s.history.push(time, y);
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
    let every = cfg.every_s as i64 * 1000;
    let due =
        wk.last_issue.is_none_or(|last| time - last >= every) && time.rem_euclid(every) < step_ms;
    if !due {
        return;
    }
    wk.last_issue = Some(time);
    for (ri, res) in resources.iter().enumerate() {
        if !wk.applies[ri] {
            continue;
        }
        let s = &mut wk.series[ri];
        let Some(last) = s.history.ago(0) else {
            continue;
        };
        for (hi, &h) in wk.horizons.iter().enumerate() {
            let seasonal_point = if h <= season {
                s.history.ago(season - h)
            } else {
                None
            };
            let (ep, es) = (&s.err_persist[hi], &s.err_seasonal[hi]);
            let (model, point, fallback) = match seasonal_point {
                Some(sp) if es.finite >= cfg.min_residuals => {
                    if es.mae() < ep.mae() || ep.finite < cfg.min_residuals {
                        (Model::SeasonalNaive, sp, None)
                    } else {
                        (Model::Persistence, last, None)
                    }
                }
                _ => (
                    Model::Persistence,
                    last,
                    Some("history shorter than a season: seasonal naive cannot run"),
                ),
            };
            let errs = match model {
                Model::SeasonalNaive => &mut s.err_seasonal[hi],
                Model::Persistence => &mut s.err_persist[hi],
            };
            let (values, score, fallback) = if errs.finite >= cfg.min_residuals {
                let offsets = errs.quantiles(cfg, env.scratch);
                let v = offsets.iter().map(|e| (point + e).max(0.0)).collect();
                (v, Some(errs.mae()), fallback.map(String::from))
            } else {
                let v = vec![point.max(0.0); cfg.quantiles.len()];
                let why = "too little history for intervals: quantiles are the point forecast";
                (
                    v,
                    None,
                    Some(fallback.map_or(why.to_string(), |f| format!("{f}; {why}"))),
                )
            };
            rows.issued.push(time);
            rows.target.push(time + cfg.horizons_s[hi] as i64 * 1000);
            rows.workload.push(name.to_string());
            rows.resource.push(res.name.clone());
            rows.unit.push(res.unit.clone());
            rows.horizon.push(cfg.horizons_s[hi] as i64);
            rows.levels.push(cfg.quantiles.clone());
            rows.values.push(values);
            rows.model.push(model.name());
            rows.score.push(score);
            rows.fallback.push(fallback);
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
            Arc::new(StringArray::from(vec![MODEL_VERSION; n])),
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
        let nb = NormBatch::new(&batch)?;
        let mut rows = Rows::default();
        let mut env = Env {
            cfg: &self.cfg,
            resources: &self.resources,
            spans: &self.spans,
            scratch: &mut self.scratch,
            masked: 0,
        };
        let replayed = nb.for_each_dense(&mut self.workloads, |d| {
            observe(
                &mut env,
                d.state,
                d.step.workload,
                d.step.time,
                d.step.step_ms,
                d.raw,
                &mut rows,
            );
            Ok(())
        })?;
        ctx.count("errors.masked", env.masked);
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        if !rows.issued.is_empty() {
            out.emit(Topic::Forecasts, Self::finish(rows)?)?;
        }
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
