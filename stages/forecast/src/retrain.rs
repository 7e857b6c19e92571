//! The stage's own retraining of the LSTM, off the hot path.
//!
//! Training takes seconds to minutes: inside `process_batch` it would stall the stage, and in
//! a Kafka service it would outlast `max.poll.interval.ms` and get the member evicted. So a
//! retrain copies the histories it trains on, trains (and compares with the current version)
//! on a thread of its own, and the batches go on meanwhile, forecast by the current model.
//!
//! The new version is saved and swapped in at a point of **event time**: the first batch
//! whose newest step is `retrain_swap_after_s` past the step that started it (or the end of
//! the input). Live, event time follows the wall clock and the training is long done by
//! then; in a fast replay the stage waits for it there. Either way, runs over the same input
//! swap at the same step and give the same forecasts; a swap at whatever batch happened to
//! be running when the thread finished would not.

use wfe_contract::{Context, Error, Event};

use crate::Forecast;
use crate::job::Resolved;
use crate::models::Model;
use crate::models::filled_same_len;
use crate::neural::{NoModel, RECENT, Retraining, Trained};
use crate::store::{self, LocalDir, ModelMeta};

impl Forecast {
    /// The feedback loop: files the resolved errors, exports the running error, and
    /// retrains the LSTM on drift or on schedule.
    pub(crate) fn feedback<'r>(
        &mut self,
        resolved: impl Iterator<Item = &'r Resolved>,
        ctx: &mut Context,
    ) {
        let lstm = self.fitted.iter().position(|m| *m == Model::Lstm);
        let mut touched = std::collections::BTreeSet::new();
        for r in resolved {
            // Every model's running error, for /metrics (weight 1/64: about the last 64).
            let w = self
                .running
                .entry((r.model, r.horizon))
                .or_insert((r.error, r.persistence));
            w.0 += (r.error - w.0) / 64.0;
            w.1 += (r.persistence - w.1) / 64.0;
            touched.insert((r.model, r.horizon));
            let (model, hi, e, step) = (
                r.model,
                r.horizon,
                (r.error, r.persistence),
                (r.step_ms / 1000) as u64,
            );
            if Some(model) == lstm
                && let Some(r) = self
                    .neural
                    .recent
                    .get_mut(&step)
                    .and_then(|r| r.get_mut(hi))
            {
                r.push_back(e);
                if r.len() > RECENT {
                    r.pop_front();
                }
            }
        }
        for (m, hi) in touched {
            let (Some(model), Some(h)) = (self.fitted.get(m), self.cfg.horizons_s.get(hi)) else {
                continue;
            };
            let (mae, persist) = self.running[&(m, hi)];
            let label = crate::horizon_label(*h);
            ctx.gauge(&format!("mae.{}.{label}", model.name()), mae);
            if persist > 0.0 {
                ctx.gauge(
                    &format!("relative_mae.{}.{label}", model.name()),
                    mae / persist,
                );
            }
        }
        self.settle_retrains(false, ctx);
        let mut todo = Vec::new();
        for (step, current) in &self.neural.current {
            if self.neural.retraining(*step) {
                continue;
            }
            let mut drift = None;
            for (hi, r) in self
                .neural
                .recent
                .get(step)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if r.is_empty() {
                    continue;
                }
                let mae = r.iter().map(|x| x.0).sum::<f64>() / r.len() as f64;
                let persist = r.iter().map(|x| x.1).sum::<f64>() / r.len() as f64;
                let label = crate::horizon_label(self.cfg.horizons_s[hi]);
                ctx.gauge(&format!("lstm.{step}s.mae.{label}"), mae);
                ctx.gauge(&format!("lstm.{step}s.relative_mae.{label}"), mae / persist);
                let valid = current
                    .meta
                    .validation_mae
                    .get(hi)
                    .copied()
                    .unwrap_or(f64::NAN)
                    / current
                        .meta
                        .persistence_mae
                        .get(hi)
                        .copied()
                        .unwrap_or(f64::NAN);
                if r.len() >= self.cfg.drift_window
                    && valid > 0.0
                    && persist > 0.0
                    && mae / persist > self.cfg.drift_ratio * valid
                {
                    drift = Some(format!(
                        "drift: running MAE {:.3} x persistence's at {label} > {} x the validation's {valid:.3}",
                        mae / persist,
                        self.cfg.drift_ratio
                    ));
                }
            }
            let due = self.cfg.retrain_every_s > 0
                && self.neural.latest.get(step).is_some_and(|t| {
                    t.saturating_sub(current.meta.trained.to_ms)
                        >= (self.cfg.retrain_every_s as i64).saturating_mul(1000)
                });
            let reason = drift.or_else(|| {
                due.then(|| {
                    format!(
                        "schedule: {} s of event time since the model's data",
                        self.cfg.retrain_every_s
                    )
                })
            });
            if let Some(reason) = reason {
                todo.push((*step, reason));
            }
        }
        for (step, reason) in todo {
            self.start_retrain(step, reason, ctx);
        }
    }

    /// Starts training a new version on the histories the stage holds.
    pub(crate) fn start_retrain(&mut self, step: u64, reason: String, ctx: &mut Context) {
        let (Some(repo), Some(current)) = (&self.neural.repo, self.neural.current.get(&step))
        else {
            return;
        };
        let step_ms = current.meta.trained.step_s as i64 * 1000;
        let cut = current.model.cut.clone();
        let min_len = cut.steps + cut.horizons.iter().copied().max().unwrap_or(1);
        let mut series = Vec::new();
        let (mut from, mut to) = (i64::MAX, i64::MIN);
        for wk in &self.workloads.items {
            if wk.step_ms != step_ms {
                continue;
            }
            for (ri, s) in wk.series.iter().enumerate() {
                if !wk.applies.get(ri).copied().unwrap_or(false) {
                    continue;
                }
                let cap = self.resources[ri].capacity;
                let v: Vec<f64> = s.history.values.iter().map(|v| v / cap).collect();
                if let (Some(a), Some(b)) = (s.history.times.front(), s.history.times.back()) {
                    from = from.min(a);
                    to = to.max(b);
                }
                // Only histories that hold a window and its targets teach anything.
                if v.iter().filter(|x| x.is_finite()).count() > min_len {
                    series.push(filled_same_len(&v));
                }
            }
        }
        if series.len() < self.cfg.retrain_min_series {
            let msg = format!(
                "retraining ({reason}): skipped: forecast-lstm {step}s v{} learned from {} series; the stage holds {} with a window and its targets, under retrain_min_series = {}",
                current.meta.version,
                current.meta.trained.series,
                series.len(),
                self.cfg.retrain_min_series
            );
            ctx.event(Event::Model {
                kind: "retrain_skipped",
                message: &msg,
            });
            self.postpone(step);
            return;
        }
        let meta = ModelMeta {
            version: 0,
            trained: store::Trained::now(
                format!("forecast stage retrain ({reason})"),
                series.len(),
                (from, to),
                step,
                &self.cfg,
            ),
            ..current.meta.clone()
        };
        let (repo, version, levels) = (
            repo.clone(),
            current.meta.version,
            current.meta.levels.clone(),
        );
        let cfg = self.cfg.lstm.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("forecast-retrain-{step}s"))
            .spawn(move || {
                // A panic in libtorch or the trainer is an error of this retrain, not a dead
                // thread.
                let at = format!("forecast-lstm {step}s retrain");
                wfe_contract::panic::contain(&at, || {
                    Ok(train(&repo, step, version, &series, cut, &levels, &cfg))
                })
                .unwrap_or_else(|e| Err(NoModel::Failed(e)))
            });
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                let msg = format!("retraining ({reason}): cannot start a thread: {e}");
                ctx.event(Event::Model {
                    kind: "retrain_failed",
                    message: &msg,
                });
                return;
            }
        };
        let started = self.neural.latest.get(&step).copied().unwrap_or(to);
        let after = (self.cfg.retrain_swap_after_s.min(i64::MAX as u64 / 1000) as i64) * 1000;
        ctx.count("model.retrain_started", 1);
        self.neural.retraining.insert(
            step,
            Retraining {
                reason,
                due_ms: started.saturating_add(after),
                meta,
                handle,
            },
        );
    }

    /// Applies the retrains whose swap point event time has reached (all of them at the end
    /// of the input), waiting for a training not finished yet.
    pub(crate) fn settle_retrains(&mut self, all: bool, ctx: &mut Context) {
        let due: Vec<u64> = self
            .neural
            .retraining
            .iter()
            .filter(|(step, r)| all || self.neural.latest.get(step).is_some_and(|t| *t >= r.due_ms))
            .map(|(step, _)| *step)
            .collect();
        for step in due {
            if let Some(r) = self.neural.retraining.remove(&step) {
                let at = format!("forecast-lstm {step}s retrain");
                let trained = r.handle.join().unwrap_or_else(|p| {
                    Err(NoModel::Failed(wfe_contract::panic::panicked(&at, p)))
                });
                self.apply_retrain(step, &r.reason, r.meta, trained, ctx);
            }
        }
    }

    /// Saves and loads the new version, or says why there is none and waits a schedule
    /// period before trying again.
    fn apply_retrain(
        &mut self,
        step: u64,
        reason: &str,
        meta: ModelMeta,
        trained: Trained,
        ctx: &mut Context,
    ) {
        let saved = trained.and_then(|(model, report, valid, persist)| {
            let Some(repo) = &self.neural.repo else {
                return Err(NoModel::Failed(Error::config(
                    "stages.forecast.model_dir",
                    "unset",
                )));
            };
            let meta = ModelMeta {
                validation_mae: valid,
                persistence_mae: persist,
                train: report,
                ..meta
            };
            store::save(repo, &model, meta).map_err(NoModel::Failed)
        });
        match saved {
            Ok(v) => {
                let msg = format!("forecast-lstm {step}s v{v} trained by the stage: {reason}");
                ctx.event(Event::Model {
                    kind: "retrained",
                    message: &msg,
                });
                // Load it now (the folder is looked at again immediately).
                self.neural.checked = None;
                self.neural.refresh(&self.cfg, ctx);
            }
            Err(no) => {
                let (kind, why) = match no {
                    NoModel::Failed(e) => ("retrain_failed", e.to_string()),
                    NoModel::Rejected(why) => ("retrain_rejected", why),
                };
                let msg = format!("retraining ({reason}): {why}");
                ctx.event(Event::Model {
                    kind,
                    message: &msg,
                });
                self.postpone(step);
            }
        }
    }

    /// Not again for a while: the schedule restarts from now, and drift is not judged again
    /// against the current version (its validation error set to infinity) until a new one
    /// is loaded.
    fn postpone(&mut self, step: u64) {
        let latest = self.neural.latest.get(&step).copied();
        if let Some(c) = self.neural.current.get_mut(&step) {
            c.meta.trained.to_ms = latest.unwrap_or(c.meta.trained.to_ms);
            c.meta
                .validation_mae
                .iter_mut()
                .for_each(|v| *v = f64::INFINITY);
        }
    }
}

/// The training thread: trains on the copied histories and keeps the result only if it
/// forecasts the same held-out steps better than the current version (loaded from the
/// folder here, off the hot path): a drift alarm raised by a few odd hours must not swap a
/// fleet's model for one trained on a handful of series.
fn train(
    repo: &LocalDir,
    step: u64,
    version: u64,
    series: &[Vec<f64>],
    cut: crate::lstm::Cut,
    levels: &[f64],
    cfg: &crate::lstm::LstmConfig,
) -> Trained {
    let (model, report, valid, persist) =
        crate::lstm::train_validated(series, cut, levels, cfg).map_err(NoModel::Failed)?;
    let (current, _) =
        store::load(repo, step, version, Some(cfg.model.device)).map_err(NoModel::Failed)?;
    let (old, _) = crate::lstm::tail_mae(&current, series).map_err(NoModel::Failed)?;
    if !crate::lstm::beats(&valid, &old) {
        return Err(NoModel::Rejected(format!(
            "forecast-lstm {step}s kept v{version}: on the held-out tails of {} series the new model's MAE per horizon {valid:.4?} is no better than the current one's {old:.4?}",
            series.len()
        )));
    }
    Ok((model, report, valid, persist))
}
