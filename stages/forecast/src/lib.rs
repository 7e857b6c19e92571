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
//!   or by the stage itself, loaded from `model_dir` ([`store`]);
//! - **gbm** ([`gbm`]): one global gradient-boosted model per data step and horizon, trained
//!   by `wfe train`, loaded from `model_dir` ([`boosted`]).
//!
//! A tour: [`Forecast::process_batch`] adds each step to the series' history and files the
//! baselines' errors; a forecast that falls due becomes a job with a snapshot of the history
//! and of the baselines' standing. At the end of the batch the jobs run ([`issue`]): the LSTM
//! in one call for the fleet, then series spread over the cores; a series' first job with
//! enough history cross-validates its fitted models on rolling origins; each forecast of a
//! fitted model is filed and its error recorded when its actual arrives, the baselines'
//! errors at the same origins beside it ([`paired`]). Per horizon the lowest mean absolute
//! error wins, every model judged on the same origins ([`choice`]); each level is the
//! model's value plus that level's quantile of the model's own past errors (split
//! conformal). The row carries the model, its
//! version, its score and why anything fell back. Spans the anomaly stage flags are masked
//! out of every error. The feedback loop exports the LSTM's running error and retrains it on
//! drift or schedule.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use wfe_contract::norm::{Keyed, NormBatch};
use wfe_contract::state::{Changes, Split};
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};
use wfe_domain::retire::{Sweep, sweep_idle};
use wfe_domain::spans::AnomalySpans;

pub mod boosted;
pub mod choice;
mod config;
mod ets;
pub mod gbm;
mod issue;
mod job;
pub mod lstm;
pub mod models;
mod neural;
mod observe;
mod paired;
mod recommend;
mod retrain;
mod ring;
mod rows;
mod runs;
mod series;
mod snapshot;
pub mod store;
mod times;

pub const MODEL_VERSION: &str = "1";

pub use wfe_domain::ResourceMap;

pub use config::ForecastConfig;
use job::Env;
pub use lstm::LstmConfig;
pub use models::{Model, StatsConfig};
use neural::Neural;
use observe::observe;
pub use series::history_len;
use series::{Workload, fitted_models, steps_of};

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
    neural: Neural,
    /// The gradient-boosted model's versions in use.
    boosted: boosted::Boosted,
    /// Per (model, horizon), exponentially weighted |error| / capacity of the model's and of
    /// persistence's forecasts across the fleet: telemetry (`mae.*`, `relative_mae.*`
    /// measurements), never read by a decision, so not in the snapshot.
    running: BTreeMap<(usize, usize), (f64, f64)>,
    /// When to retire idle workloads (`retire_after_s`; not in the snapshot).
    sweep: Sweep,
    /// Which workloads changed since a snapshot: marked wherever a workload's state is
    /// changed (its steps, which are also what its forecasts run from; a mask; a retirement
    /// moves every place).
    changes: Changes,
}

pub use wfe_domain::stats::{quantile, quantiles_select};

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
            neural: Neural::new(&cfg),
            boosted: boosted::Boosted::new(&cfg),
            running: BTreeMap::new(),
            cfg,
            resources,
            workloads: Keyed::default(),
            spans: AnomalySpans::default(),
            scratch: Vec::new(),
            sweep: Sweep::default(),
            changes: Changes::default(),
        })
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
            // Through the names' index: a scan per span was quadratic in a wide fleet.
            let Some(i) = self.workloads.names.find(&name) else {
                continue;
            };
            self.changes.mark(i as usize);
            let wk = &mut self.workloads.items[i as usize];
            let step = wk.step_ms.max(1);
            let season = steps_of(self.cfg.season_s, step) as i64 * step;
            for s in wk.series.iter_mut().filter(|s| !s.is_unused()) {
                for (hi, &h) in wk.horizons.iter().enumerate() {
                    let h = h as i64 * step;
                    masked += s.err_persist[hi].mask(start, end + h);
                    masked += s.err_seasonal[hi].mask(start, end);
                    masked += s.err_seasonal[hi].mask(start + season, end + season);
                    if let Some(pair) = s.paired.get_mut(hi) {
                        masked += pair.mask(start, end, h, season);
                    }
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
        if self.cfg.recommend {
            vec![Topic::Forecasts, Topic::Recommendations]
        } else {
            vec![Topic::Forecasts]
        }
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
        self.boosted.refresh(&self.cfg, ctx);
        let nb = NormBatch::new(&batch)?;
        let mut jobs = Vec::new();
        let mut env = Env::new(&self.cfg, &self.resources, &self.spans, &mut self.scratch);
        let changes = &mut self.changes;
        let replayed = nb.for_each_dense(&mut self.workloads, |d| {
            // Its forecasts, issued below, run from these steps: no other workload changes.
            changes.mark(d.id);
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
            let sizes = if self.cfg.recommend {
                recommend::recommendations(&rows, &self.cfg.recommendation)?
            } else {
                None
            };
            out.emit(Topic::Forecasts, rows.finish()?)?;
            if let Some(sizes) = sizes {
                out.emit(Topic::Recommendations, sizes)?;
            }
        }
        let after = self.cfg.retire_after_s;
        if let Some(r) = sweep_idle(&mut self.workloads, &mut self.sweep, after) {
            if !r.gone.is_empty() {
                self.changes.mark_all();
            }
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
        let pairs = snapshot::pairs(self.workloads.iter().map(|(n, w)| (n, w, w)));
        let whole = (&self.workloads, &self.spans, memos, pairs);
        wfe_contract::state::encode(self.name(), &whole)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let (workloads, spans, memos, pairs) = snapshot::decode_whole(self.name(), state)?;
        (self.workloads, self.spans) = (workloads, spans);
        snapshot::put_memos(&mut self.workloads, memos, &self.cfg);
        snapshot::put_pairs(&mut self.workloads, pairs);
        self.changes.mark_all();
        Ok(())
    }

    fn snapshot_split(&self) -> Result<Option<Split>> {
        Ok(self.snapshot_changes(None)?.map(|(split, _)| split))
    }

    /// Per workload, its entries under its name ([`Split::put_for`]): each ring's tail in
    /// `w/`, the rest in runs ([`runs`]), its ETS memos (`ets/`) and paired errors
    /// (`pairs/`); a workload not marked changed since `since` is kept, not encoded. The
    /// spans, few, are written whole.
    fn snapshot_changes(&self, since: Option<u64>) -> Result<Option<(Split, u64)>> {
        let stage = self.name();
        let mut split = Split::new();
        for (i, (name, wk)) in self.workloads.iter().enumerate() {
            if !self.changes.since(i, since) {
                split.keep(name);
                continue;
            }
            split.put_for(name, |split| {
                let tail = runs::cut(split, stage, name, wk)?;
                // At the workload's place in the map: the order it is restored in.
                let at = i as u64;
                split.put(stage, "w", name, at, &tail)?;
                if snapshot::has_memos(wk) {
                    let per_series: Vec<_> = wk.series.iter().map(|s| &s.memos).collect();
                    split.put(stage, "ets", name, at, &per_series)?;
                }
                if snapshot::has_pairs(wk) {
                    let per_series: Vec<_> = tail.series.iter().map(|s| &s.paired).collect();
                    split.put(stage, "pairs", name, at, &per_series)?;
                }
                Ok(())
            })?;
        }
        split.put_unordered(stage, "spans", self.spans.iter())?;
        Ok(Some((split, self.changes.token())))
    }

    fn restore_split(&mut self, state: Split) -> Result<()> {
        self.workloads = Keyed::from_items(state.items(self.name(), "w")?);
        self.spans = AnomalySpans::from_items(state.items(self.name(), "spans")?);
        let memos = state.items(self.name(), "ets")?;
        snapshot::put_memos(&mut self.workloads, memos, &self.cfg);
        let pairs = state.items(self.name(), "pairs")?;
        snapshot::put_pairs(&mut self.workloads, pairs);
        runs::put_back(self.name(), &mut self.workloads, &state)?;
        self.changes.mark_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
