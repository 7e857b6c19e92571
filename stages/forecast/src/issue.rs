//! Issuing forecasts. Every due job runs the configured models: ETS and MSTL per job, the
//! LSTM in one batch across the fleet (the GPU-friendly path). The first time a series holds
//! enough history, every fitted model is cross-validated on it (rolling origins, `every_s`
//! apart), so the choice is informed from the start; afterwards each issued forecast's error
//! is filed when its actual arrives. Per horizon, the model with the lowest mean absolute
//! error wins, and its levels are calibrated by the quantiles of its own past errors.
//!
//! The LSTM comes from the model folder: the newest complete version is loaded at start and
//! every `reload_s` the folder is looked at again, so a version `wfe train` writes is swapped
//! in while the stage runs. The stage also retrains it itself (the feedback loop): when its
//! running error drifts past `drift_ratio` times its validation error, and every
//! `retrain_every_s` of event time, on a thread of its own ([`retrain`]).

use std::collections::BTreeMap;

use wfe_contract::Context;

use crate::choice::Choice;
use crate::job::{Env, FromGbm, Job, Made, Resolved};
use crate::models::{EtsMemo, Model, filled, filled_same_len, point_forecasts_with};
use crate::observe::{fitted_standing, resolve_series};
use crate::paired::{self, Expected, judged};
use crate::rows::Rows;
use crate::series::{Pending, Series, cv_origins, history_len, steps_of, validates};
use crate::{Forecast, MODEL_VERSION};

/// What one issuing thread returns: its jobs' rows, how many values it masked, and the
/// resolved forecasts, each under the index of its job (to put them back in job order).
type ThreadOut = (Vec<(usize, Rows)>, u64, Vec<(usize, Resolved)>);

/// What a job takes from the LSTM, computed before the jobs spread over threads (libtorch's
/// tensors stay on the calling thread).
#[derive(Default)]
struct FromLstm {
    /// This forecast's.
    now: Option<Made>,
    /// At each cross-validation origin, for the job that cross-validates its series.
    cv: Option<Vec<Option<Made>>>,
    /// The version in use for the job's step, and whether a model folder is set but has
    /// nothing usable for it.
    version: Option<u64>,
    missing: bool,
    /// The class whose variant made `now` (None: the global model).
    class: Option<u32>,
    /// What it takes from the gradient-boosted model.
    gbm: FromGbm,
}

impl Forecast {
    /// Runs the due jobs and returns their rows. Series are independent, so their jobs run
    /// on all cores (a series' jobs in order on one), and rows come out in job order.
    pub(crate) fn issue(&mut self, jobs: Vec<Job>, ctx: &mut Context) -> (Rows, Vec<Resolved>) {
        let mut rows = Rows::default();
        if jobs.is_empty() {
            return (rows, Vec::new());
        }
        for j in &jobs {
            let t = self
                .neural
                .latest
                .entry((j.step_ms / 1000).max(0) as u64)
                .or_insert(j.time);
            *t = (*t).max(j.time);
        }
        let mut extras = self.lstm_extras(&jobs);
        for (e, g) in extras.iter_mut().zip(self.gbm_extras(&jobs)) {
            e.gbm = g;
        }
        // Each series' jobs, in order.
        let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (j, job) in jobs.iter().enumerate() {
            groups
                .entry((job.workload, job.resource))
                .or_default()
                .push(j);
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(groups.len())
            .max(1);
        let names: Vec<String> = jobs
            .iter()
            .map(|j| self.workloads.names.names[j.workload].clone())
            .collect();
        let mut jobs: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
        // Disjoint borrows of the series that have jobs, dealt to the threads with their jobs.
        type Bundle<'a> = Vec<(&'a mut Series, Vec<usize>, Vec<(usize, Job, FromLstm)>)>;
        let mut bundles: Vec<Bundle<'_>> = (0..threads).map(|_| Vec::new()).collect();
        let mut dealt = 0;
        for (wi, wk) in self.workloads.items.iter_mut().enumerate() {
            for (ri, s) in wk.series.iter_mut().enumerate() {
                let Some(list) = groups.remove(&(wi, ri)) else {
                    continue;
                };
                let mine = list
                    .into_iter()
                    .filter_map(|j| Some((j, jobs[j].take()?, std::mem::take(&mut extras[j]))))
                    .collect();
                bundles[dealt % threads].push((s, wk.horizons.clone(), mine));
                dealt += 1;
            }
        }
        let (cfg, resources, spans, fitted) =
            (&self.cfg, &self.resources, &self.spans, &self.fitted);
        let names = &names;
        let results: Vec<ThreadOut> = std::thread::scope(|scope| {
            let handles: Vec<_> = bundles
                .into_iter()
                .map(|bundle| {
                    scope.spawn(move || {
                        let mut scratch = Vec::new();
                        let mut env = Env::new(cfg, resources, spans, &mut scratch);
                        let mut rows = Vec::new();
                        let mut resolved = Vec::new();
                        for (s, horizons, mine) in bundle {
                            for (j, mut job, from) in mine {
                                let mut r = Rows::default();
                                issue_one(
                                    &mut env, fitted, s, &names[j], &horizons, &mut job, from,
                                    &mut r,
                                );
                                rows.push((j, r));
                                resolved.extend(env.resolved.drain(..).map(|x| (j, x)));
                            }
                        }
                        (rows, env.masked, resolved)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut all_rows: Vec<(usize, Rows)> = Vec::new();
        let mut all_resolved: Vec<(usize, Resolved)> = Vec::new();
        let mut masked = 0;
        for (r, m, res) in results {
            all_rows.extend(r);
            all_resolved.extend(res);
            masked += m;
        }
        all_rows.sort_by_key(|(j, _)| *j);
        all_resolved.sort_by_key(|(j, _)| *j);
        for (_, r) in all_rows {
            rows.append(r);
        }
        let resolved: Vec<Resolved> = all_resolved.into_iter().map(|(_, r)| r).collect();
        ctx.count("errors.masked", masked);
        for wk in &mut self.workloads.items {
            for s in wk.series.iter_mut().filter(|s| s.hold_from.is_some()) {
                s.hold_from = None;
                s.spill.clear();
            }
        }
        (rows, resolved)
    }

    /// Each job's forecasts from the gradient-boosted model, in capacity units (the model
    /// reads and forecasts utilisation, as it was trained).
    pub(crate) fn gbm_extras(&self, jobs: &[Job]) -> Vec<FromGbm> {
        let mut out: Vec<FromGbm> = jobs.iter().map(|_| FromGbm::default()).collect();
        if !self.fitted.contains(&Model::Gbm) {
            return out;
        }
        let nl = self.cfg.quantiles.len();
        let mut validating = std::collections::BTreeSet::new();
        for (job, o) in jobs.iter().zip(&mut out) {
            let Some((version, model)) = self.boosted.for_step(job.step_ms) else {
                o.missing = true;
                continue;
            };
            o.version = Some(version);
            let cap = self.resources[job.resource].capacity;
            let util: Vec<f64> = job.history.iter().map(|v| v / cap).collect();
            let made = |p: Vec<f64>| Made::flat(p.iter().map(|v| v * cap).collect(), nl);
            o.now = model.forecast(&filled(&util)).map(made);
            let wk = &self.workloads.items[job.workload];
            let s = &wk.series[job.resource];
            // The first job whose history is long enough is the one that validates.
            if validates(&self.cfg, s, job.history.len(), &wk.horizons, job.step_ms)
                && validating.insert((job.workload, job.resource))
            {
                let yf = filled_same_len(&util);
                let origins = cv_origins(&self.cfg, yf.len(), &wk.horizons, job.step_ms);
                o.cv = Some(
                    model
                        .forecast_at(&yf, &origins)
                        .into_iter()
                        .map(|p| p.map(made))
                        .collect(),
                );
            }
        }
        out
    }

    /// What each job takes from the LSTM: this forecast (one batch per model across the
    /// fleet), the cross-validation forecasts of a series' first validation, the version.
    fn lstm_extras(&self, jobs: &[Job]) -> Vec<FromLstm> {
        let mut out: Vec<FromLstm> = jobs
            .iter()
            .map(|j| FromLstm {
                version: self.neural.version(j.step_ms),
                missing: self.neural.repo.is_some() && self.neural.for_step(j.step_ms).is_none(),
                ..Default::default()
            })
            .collect();
        if !self.fitted.contains(&Model::Lstm) {
            return out;
        }
        // For each series, the job that will cross-validate it.
        let mut seen = std::collections::BTreeSet::new();
        for (j, job) in jobs.iter().enumerate() {
            let wk = &self.workloads.items[job.workload];
            let s = &wk.series[job.resource];
            // The first job whose history is long enough is the one that validates.
            if !validates(&self.cfg, s, job.history.len(), &wk.horizons, job.step_ms)
                || !seen.insert((job.workload, job.resource))
            {
                continue;
            }
            let Some(l) = self.neural.for_step(job.step_ms) else {
                continue;
            };
            let cap = self.resources[job.resource].capacity;
            let yf = filled_same_len(&job.history);
            let origins = cv_origins(&self.cfg, yf.len(), &wk.horizons, job.step_ms);
            let util: Vec<f64> = yf.iter().map(|v| v / cap).collect();
            let made = l
                .model
                .forecast(&util, &origins)
                .unwrap_or_else(|_| vec![None; origins.len()]);
            out[j].cv = Some(
                made.into_iter()
                    .map(|q| {
                        q.map(|q| Made {
                            points: q.iter().map(|h| h[l.median] * cap).collect(),
                            levels: q.iter().map(|h| l.configured(h, cap)).collect(),
                        })
                    })
                    .collect(),
            );
        }
        let now = self.lstm_batch(jobs);
        for (o, n) in out.iter_mut().zip(now) {
            if let Some((made, class)) = n {
                o.now = Some(made);
                o.class = class;
            }
        }
        out
    }

    /// The LSTM's forecasts of every job it can serve, one batch per network (capacity
    /// units), with the class whose variant made each.
    fn lstm_batch(&self, jobs: &[Job]) -> Vec<Option<(Made, Option<u32>)>> {
        let mut out = vec![None; jobs.len()];
        for l in self.neural.current.values() {
            let (mut idx, mut utils) = (Vec::new(), Vec::new());
            for (j, job) in jobs.iter().enumerate() {
                if !l.fits(job.step_ms) {
                    continue;
                }
                let cap = self.resources[job.resource].capacity;
                let util: Vec<f64> = filled_same_len(&job.history)
                    .iter()
                    .map(|v| v / cap)
                    .collect();
                idx.push(j);
                utils.push(util);
            }
            let reqs: Vec<(&[f64], usize)> = utils
                .iter()
                .map(|u| (u.as_slice(), u.len().saturating_sub(1)))
                .collect();
            let Ok(made) = l.model.forecast_many(&reqs) else {
                continue;
            };
            for (j, f) in idx.into_iter().zip(made) {
                let Some(f) = f else { continue };
                let cap = self.resources[jobs[j].resource].capacity;
                out[j] = Some((
                    Made {
                        points: f.levels.iter().map(|h| h[l.median] * cap).collect(),
                        levels: f.levels.iter().map(|h| l.configured(h, cap)).collect(),
                    },
                    f.class,
                ));
            }
        }
        out
    }
}

/// Runs one job's models, cross-validates a new series, files the forecasts as pending, and
/// writes one row per horizon with the chosen model.
#[allow(clippy::too_many_arguments)]
fn issue_one(
    env: &mut Env<'_>,
    fitted: &[Model],
    s: &mut Series,
    name: &str,
    horizons: &[usize],
    job: &mut Job,
    from: FromLstm,
    rows: &mut Rows,
) {
    let cfg = env.cfg;
    let res = &env.resources[job.resource];
    let nl = cfg.quantiles.len();
    let season = steps_of(cfg.season_s, job.step_ms);
    let keep = history_len(cfg, job.step_ms);
    let yf = filled_same_len(&job.history);
    let tail = filled(&job.history[job.history.len().saturating_sub(keep)..]);
    let mut notes: Vec<String> = Vec::new();
    let FromLstm {
        now: mut lstm,
        cv: lstm_cv,
        version,
        missing,
        class,
        gbm,
    } = from;
    let FromGbm {
        now: mut gbm_now,
        cv: gbm_cv,
        version: gbm_version,
        missing: gbm_missing,
    } = gbm;
    // This issuance's forecasts of the fitted models: the chosen ones every time, the
    // others every `challenge_every` issuances (their fits cost the most).
    let turn = !s.validated || s.issued.is_multiple_of(cfg.challenge_every.max(1) as u64);
    s.memos.resize(fitted.len(), EtsMemo::default());
    let memos = &mut s.memos;
    let now: Vec<Option<Made>> = fitted
        .iter()
        .zip(memos.iter_mut())
        .map(|(&m, memo)| {
            if !turn && !s.chosen.contains(&Some(m)) {
                return None;
            }
            match m {
                Model::Lstm => {
                    let made = lstm.take();
                    if made.is_none() && missing {
                        notes.push(
                            "lstm: no usable trained model in model_dir (run `wfe train`)".into(),
                        );
                    }
                    made
                }
                Model::Gbm => {
                    let made = gbm_now.take();
                    if made.is_none() {
                        notes.push(if gbm_missing {
                            "gbm: no usable trained model in model_dir (run `wfe train`)".into()
                        } else {
                            "gbm: history shorter than its longest window".into()
                        });
                    }
                    made
                }
                _ => match point_forecasts_with(m, &tail, season, horizons, &cfg.stats, memo) {
                    Ok(p) => Some(Made::flat(p, nl)),
                    Err(e) => {
                        notes.push(format!("{}: {e}", m.name()));
                        None
                    }
                },
            }
        })
        .collect();
    if validates(cfg, s, yf.len(), horizons, job.step_ms) {
        // Errors filed for targets up to now are from the short history's forecasts: the
        // cross-validation replaces them.
        for t in s.tracks.iter_mut().flatten() {
            t.point.clear_until(job.time);
            t.levels.iter_mut().for_each(|r| r.clear_until(job.time));
        }
        s.paired.iter_mut().for_each(|p| p.clear_until(job.time));
        let given = [(Model::Lstm, lstm_cv), (Model::Gbm, gbm_cv)];
        cross_validate(env, fitted, given, s, name, horizons, job, &yf, season);
        s.validated = true;
    }
    s.issued += 1;
    let Some(last) = tail.last().copied() else {
        return;
    };
    let standing = std::mem::take(&mut job.standing);
    for (hi, st) in standing.into_iter().enumerate() {
        let st_fitted = fitted_standing(cfg, s, hi, job.time, env.scratch);

        // The model, its MAE and its index among the fitted (None: a baseline).
        // A baseline is judged on its errors at the fitted models' origins once it has
        // enough of them (the same forecasts as theirs), before that on every step's.
        let (pairs, min) = (s.paired.get(hi), cfg.min_residuals);
        let mut choice = Choice::new(min);
        if let Some((n, mae, _)) = &st.persistence {
            let on = judged(pairs.map(|p| &p.persistence), job.time, min, (*n, *mae));
            choice.consider(Model::Persistence, on, None);
        }
        if let Some((n, mae, _)) = &st.seasonal {
            let on = judged(pairs.map(|p| &p.seasonal), job.time, min, (*n, *mae));
            choice.consider(Model::SeasonalNaive, on, None);
        }
        for (fi, m) in fitted.iter().enumerate() {
            let (n, mae, _) = &st_fitted[fi];
            if now[fi].is_some() {
                choice.consider(*m, (*n, *mae), Some(fi));
            }
        }
        let best = choice.best();
        let mut fallback: Vec<String> = notes.clone();
        let (model, values, score) = match best {
            Some((m, mae, Some(fi))) => {
                let made = now[fi].as_ref().map(|x| &x.levels[hi]);
                let mut v: Vec<f64> = (0..nl)
                    .map(|li| {
                        let q = made.map_or(last, |l| l[li]);
                        (q + st_fitted[fi].2[li].unwrap_or(0.0)).max(0.0)
                    })
                    .collect();
                v.sort_by(f64::total_cmp);
                (m, v, Some(mae))
            }
            Some((m, mae, None)) => {
                let v = match m {
                    Model::SeasonalNaive => st.seasonal.map(|x| x.2),
                    _ => st.persistence.map(|x| x.2),
                };
                (m, v.unwrap_or_else(|| vec![last.max(0.0); nl]), Some(mae))
            }
            None => {
                fallback.push(
                    "too little history for intervals: quantiles are the point forecast".into(),
                );
                (Model::Persistence, vec![last.max(0.0); nl], None)
            }
        };
        if model == Model::Persistence
            && !st.seasonal_runs
            && cfg.models.contains(&Model::SeasonalNaive)
        {
            fallback.insert(
                0,
                "history shorter than a season: seasonal naive cannot run".into(),
            );
        }
        s.chosen[hi] = Some(model);
        rows.issued.push(job.time);
        rows.target
            .push(job.time + cfg.horizons_s[hi] as i64 * 1000);
        rows.workload.push(name.to_string());
        rows.resource.push(res.name.clone());
        rows.unit.push(res.unit.clone());
        rows.horizon.push(cfg.horizons_s[hi] as i64);
        rows.levels.push(cfg.quantiles.clone());
        rows.values.push(values);
        rows.model.push(model.name());
        rows.version.push(match (model, version) {
            (Model::Lstm, Some(v)) => match class {
                Some(c) => format!("lstm v{v} class {c}"),
                None => format!("lstm v{v}"),
            },
            (Model::Gbm, _) => {
                gbm_version.map_or(MODEL_VERSION.to_string(), |v| format!("gbm v{v}"))
            }
            _ => MODEL_VERSION.to_string(),
        });
        rows.score.push(score);
        rows.fallback
            .push((!fallback.is_empty()).then(|| fallback.join("; ")));
    }
    for (fi, made) in now.iter().enumerate() {
        let Some(made) = made else { continue };
        for hi in 0..horizons.len() {
            s.pending.push(Pending {
                origin: job.time,
                target: job.time + cfg.horizons_s[hi] as i64 * 1000,
                model: fi,
                horizon: hi,
                point: made.points[hi],
                values: made.levels[hi].clone(),
            });
        }
    }
    if now.iter().any(Option::is_some) {
        let n = job.history.len();
        let time_of = |i: usize| job.time + (i as i64 - n as i64 + 1) * job.step_ms;
        for (hi, &h) in horizons.iter().enumerate() {
            let e = Expected::at(&job.history, n.saturating_sub(1), h, season, time_of);
            paired::expect(cfg, &mut s.paired, hi, e);
        }
    }
    // Targets that already passed (the batch ran on past them) are resolved now, so every
    // later job sees the same errors whatever the batches were.
    if let Some(end) = s.history.times.back() {
        resolve_series(env, s, name, end, res.capacity, job.step_ms);
    }
}

/// Rolling-origin cross-validation of the fitted models on a series' held history: origins
/// `every_s` apart, each forecast from the history before it, errors filed as if live. The
/// trained models' forecasts at the origins are `given` (made before the jobs spread).
#[allow(clippy::too_many_arguments)]
fn cross_validate(
    env: &mut Env<'_>,
    fitted: &[Model],
    given: [(Model, Option<Vec<Option<Made>>>); 2],
    s: &mut Series,
    name: &str,
    horizons: &[usize],
    job: &Job,
    yf: &[f64],
    season: usize,
) {
    let cfg = env.cfg;
    let nl = cfg.quantiles.len();
    let keep = history_len(cfg, job.step_ms);
    let n = yf.len();
    let origins = cv_origins(cfg, n, horizons, job.step_ms);
    let time_of = |i: usize| job.time - (n - 1 - i) as i64 * job.step_ms;
    s.memos.resize(fitted.len(), EtsMemo::default());
    for (fi, &m) in fitted.iter().enumerate() {
        // The origins in time order, each fit remembered for the next as live forecasts are.
        let memo = &mut s.memos[fi];
        let made: Vec<Option<Made>> = match m {
            Model::Lstm | Model::Gbm => given
                .iter()
                .find(|(g, _)| *g == m)
                .and_then(|(_, made)| made.clone())
                .unwrap_or_else(|| vec![None; origins.len()]),
            _ => origins
                .iter()
                .map(|&o| {
                    let hist = &yf[(o + 1).saturating_sub(keep)..=o];
                    point_forecasts_with(m, hist, season, horizons, &cfg.stats, memo)
                        .ok()
                        .map(|p| Made::flat(p, nl))
                })
                .collect(),
        };
        for (&o, made) in origins.iter().zip(made) {
            let Some(made) = made else { continue };
            for (hi, &h) in horizons.iter().enumerate() {
                let actual = job.history[o + h];
                if !actual.is_finite() {
                    continue;
                }
                let (t, origin) = (time_of(o + h), time_of(o));
                let e = env.error(name, t, origin, actual - made.points[hi]);
                let track = &mut s.tracks[fi][hi];
                track.point.push(t, e);
                for (ring, v) in track.levels.iter_mut().zip(&made.levels[hi]) {
                    ring.push(t, if e.is_finite() { actual - v } else { f64::NAN });
                }
            }
        }
    }
    // The baselines at the same origins, for a choice on the same forecasts.
    for &o in &origins {
        for (hi, &h) in horizons.iter().enumerate() {
            let actual = job.history[o + h];
            if actual.is_finite() {
                let e = Expected::at(&job.history, o, h, season, time_of);
                paired::file(env, &mut s.paired, name, hi, &e, actual);
            }
        }
    }
}
