//! `wfe eval forecast`: every forecast model, and the one cross-validation selects, scored on
//! the test split of labelled data, per entity and mean, at each configured horizon.
//!
//! Each metric of an entity is one series of its values as ingested (for SMD and ASD, their
//! published [0, 1] scaling), as the stage forecasts raw values. Forecasts are issued from origins `every_s` apart:
//! `cv_origins` of them at the end of the train split choose the model per metric and
//! horizon (lowest MAE), then every origin of the test split is scored. Each origin's
//! history is everything before it, as the stage sees it. Quantiles come from the model's
//! forecast at each level plus the matching quantile of that level's past errors (split
//! conformal: the cross-validation errors, then the test errors already realised at the
//! origin), so the intervals adapt as the stage's do.
//!
//! Figures: MAE of the point forecast; MASE, that MAE over the in-sample MAE of the seasonal
//! naive forecast (a season of `season_s`) on the train split; mean pinball loss over the
//! levels; coverage of the central 80 % and 95 % intervals.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use wfe_contract::{Error, Result};
use wfe_forecast::lstm::{Cut, LstmModel};
use wfe_forecast::models::{Model, filled, filled_same_len, point_forecasts};
use wfe_forecast::{ForecastConfig, quantiles_select};

use super::data;

/// The figures of one model at one horizon, for an entity or the mean.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub mae: f64,
    pub mase: f64,
    pub pinball: f64,
    pub coverage_80: f64,
    pub coverage_95: f64,
}

/// model (and `selected`) -> horizon label -> entity (and `mean`) -> figures.
pub type Table = BTreeMap<String, BTreeMap<String, BTreeMap<String, Figures>>>;

#[derive(Debug, Serialize)]
pub struct ForecastReport {
    pub data: String,
    pub models: Table,
    /// Per horizon: how many series cross-validation gave to each model.
    pub chosen: BTreeMap<String, BTreeMap<String, usize>>,
    /// Forecasts where a model could not run and persistence stood in, per model.
    pub fallbacks: BTreeMap<String, usize>,
}

pub use wfe_forecast::horizon_label;

/// Sums over a series' scored forecasts of one model at one horizon.
#[derive(Debug, Clone, Default)]
struct Sums {
    abs: f64,
    pinball: f64,
    in80: f64,
    in95: f64,
    n: f64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.abs += o.abs;
        self.pinball += o.pinball;
        self.in80 += o.in80;
        self.in95 += o.in95;
        self.n += o.n;
    }
}

/// One series' results: per model slot (the models, then `selected`) and horizon.
struct SeriesResult {
    sums: Vec<Vec<Sums>>,
    /// Seasonal naive's in-sample MAE on the train split (MASE's scale).
    scale: f64,
    chosen: Vec<Model>,
    fallbacks: Vec<usize>,
}

/// Forecasts of the models at a list of origins: `[origin][horizon][level]`.
type Quantiles = Vec<Vec<Vec<f64>>>;

/// A metric's index and the LSTM's forecasts for it (with its fallback count).
type MetricJob = (usize, Option<(Quantiles, usize)>);

/// What scoring one series needs beyond the series itself.
struct Plan<'a> {
    cfg: &'a ForecastConfig,
    models: &'a [Model],
    levels: &'a [f64],
    season: usize,
    horizons: &'a [usize],
    stride: usize,
    /// Longest history a model is given.
    keep: usize,
}

impl Plan<'_> {
    /// Each statistical model's forecasts at the origins (every level the point), with
    /// persistence standing in where the model cannot run.
    fn stats(
        &self,
        y: &[f64],
        origins: &[usize],
        model: Model,
        fallbacks: &mut usize,
    ) -> Quantiles {
        origins
            .iter()
            .map(|&o| {
                let hist = filled(&y[(o + 1).saturating_sub(self.keep)..=o]);
                let points =
                    point_forecasts(model, &hist, self.season, self.horizons, &self.cfg.stats)
                        .or_else(|_| {
                            *fallbacks += 1;
                            point_forecasts(
                                Model::Persistence,
                                &hist,
                                self.season,
                                self.horizons,
                                &self.cfg.stats,
                            )
                        })
                        .unwrap_or_else(|_| vec![f64::NAN; self.horizons.len()]);
                points.iter().map(|&p| vec![p; self.levels.len()]).collect()
            })
            .collect()
    }

    /// The LSTM's quantiles at a series' origins (and how many fell back to persistence,
    /// where the history is shorter than a window).
    fn neural(&self, net: &LstmModel, y: &[f64], n_train: usize) -> Result<(Quantiles, usize)> {
        let (cv, test) = self.origins(n_train, y.len());
        let origins: Vec<usize> = cv.into_iter().chain(test).collect();
        let yf = filled_same_len(y);
        let out = net.forecast(&yf, &origins)?;
        let mut fallbacks = 0;
        let q = origins
            .iter()
            .zip(out)
            .map(|(&o, q)| {
                q.unwrap_or_else(|| {
                    fallbacks += 1;
                    vec![vec![yf[o]; self.levels.len()]; self.horizons.len()]
                })
            })
            .collect();
        Ok((q, fallbacks))
    }

    fn median(&self) -> usize {
        self.levels
            .iter()
            .position(|l| (*l - 0.5).abs() < 1e-9)
            .unwrap_or(self.levels.len() / 2)
    }

    /// The cross-validation origins (before `n_train`) and the test origins of a series of
    /// `len` values.
    fn origins(&self, n_train: usize, len: usize) -> (Vec<usize>, Vec<usize>) {
        let longest = self.horizons.iter().copied().max().unwrap_or(1);
        let cv: Vec<usize> = (0..self.cfg.cv_origins)
            .filter_map(|k| (n_train - 1).checked_sub(longest + k * self.stride))
            .filter(|&o| o > 0)
            .rev()
            .collect();
        let test: Vec<usize> = (0..)
            .map(|k| n_train - 1 + k * self.stride)
            .take_while(|&o| o + 1 < len)
            .collect();
        (cv, test)
    }

    /// Scores one series (`n_train` values of train, then test); `neural` holds the LSTM's
    /// forecasts at its origins when the LSTM competes.
    fn series(
        &self,
        y: &[f64],
        n_train: usize,
        neural: Option<(Quantiles, usize)>,
    ) -> SeriesResult {
        let (cv, test) = self.origins(n_train, y.len());
        let origins: Vec<usize> = cv.iter().chain(&test).copied().collect();
        let mut fallbacks = vec![0; self.models.len()];
        let mut neural = neural;
        let forecasts: Vec<Quantiles> = self
            .models
            .iter()
            .zip(&mut fallbacks)
            .map(|(&m, fb)| match neural.take_if(|_| m == Model::Lstm) {
                Some((q, n)) => {
                    *fb += n;
                    q
                }
                None => self.stats(y, &origins, m, fb),
            })
            .collect();
        let mid = self.median();
        // Cross-validation: each horizon's model by the MAE of its point forecasts.
        let chosen: Vec<usize> = (0..self.horizons.len())
            .map(|hi| {
                let h = self.horizons[hi];
                let mae = |mi: usize| {
                    let (mut s, mut n) = (0.0, 0.0);
                    for (k, &o) in cv.iter().enumerate() {
                        let (a, p) = (y[o + h], forecasts[mi][k][hi][mid]);
                        if a.is_finite() && p.is_finite() {
                            s += (a - p).abs();
                            n += 1.0;
                        }
                    }
                    if n > 0.0 { s / n } else { f64::INFINITY }
                };
                (0..self.models.len())
                    .min_by(|&a, &b| mae(a).total_cmp(&mae(b)))
                    .unwrap_or(0)
            })
            .collect();
        let slots = self.models.len() + 1;
        let mut sums = vec![vec![Sums::default(); self.horizons.len()]; slots];
        for (hi, &h) in self.horizons.iter().enumerate() {
            for (slot, row) in sums.iter_mut().enumerate() {
                let mi = if slot == self.models.len() {
                    chosen[hi]
                } else {
                    slot
                };
                row[hi] = self.score(y, &origins, cv.len(), &forecasts[mi], hi, h);
            }
        }
        let season = self.season;
        let (mut s, mut n) = (0.0, 0.0);
        for t in season..n_train {
            let (a, b) = (y[t], y[t - season]);
            if a.is_finite() && b.is_finite() {
                s += (a - b).abs();
                n += 1.0;
            }
        }
        SeriesResult {
            sums,
            scale: if n > 0.0 { s / n } else { f64::NAN },
            chosen: chosen.iter().map(|&i| self.models[i]).collect(),
            fallbacks,
        }
    }

    /// Scores the test origins of one model at one horizon, calibrating each level by the
    /// errors realised before the origin.
    fn score(
        &self,
        y: &[f64],
        origins: &[usize],
        n_cv: usize,
        q: &Quantiles,
        hi: usize,
        h: usize,
    ) -> Sums {
        let nl = self.levels.len();
        let mid = self.median();
        // Per level, errors in the order they become known (target time).
        let mut errors: Vec<Vec<f64>> = vec![Vec::new(); nl];
        let mut known = 0; // origins whose errors are in `errors`
        let window = self.cfg.residual_window.max(1);
        let mut scratch = Vec::new();
        let mut out = Sums::default();
        let (lo80, hi80, lo95, hi95) = (
            self.level_index(0.1),
            self.level_index(0.9),
            self.level_index(0.025),
            self.level_index(0.975),
        );
        for (k, &o) in origins.iter().enumerate().skip(n_cv) {
            while known < origins.len() && origins[known] + h <= o {
                let a = y[origins[known] + h];
                if a.is_finite() {
                    for (li, e) in errors.iter_mut().enumerate() {
                        e.push(a - q[known][hi][li]);
                    }
                }
                known += 1;
            }
            let Some(&actual) = y.get(o + h).filter(|a| a.is_finite()) else {
                continue;
            };
            let point = q[k][hi][mid];
            if !point.is_finite() {
                continue;
            }
            let mut calibrated: Vec<f64> = (0..nl)
                .map(|li| {
                    let e = &errors[li];
                    let recent = &e[e.len().saturating_sub(window)..];
                    let stride = recent
                        .len()
                        .div_ceil(self.cfg.quantile_sample.max(1))
                        .max(1);
                    scratch.clear();
                    scratch.extend(recent.iter().rev().step_by(stride).copied());
                    let offset = if scratch.len() >= self.cfg.min_residuals {
                        quantiles_select(&mut scratch, &[self.levels[li]])[0]
                    } else {
                        0.0
                    };
                    (q[k][hi][li] + offset).max(0.0)
                })
                .collect();
            // Quantiles must not cross: sort them (a monotone rearrangement).
            calibrated.sort_by(f64::total_cmp);
            out.abs += (actual - point).abs();
            out.pinball += self
                .levels
                .iter()
                .zip(&calibrated)
                .map(|(&l, &v)| pinball(l, actual, v))
                .sum::<f64>()
                / nl as f64;
            out.in80 += f64::from(calibrated[lo80] <= actual && actual <= calibrated[hi80]);
            out.in95 += f64::from(calibrated[lo95] <= actual && actual <= calibrated[hi95]);
            out.n += 1.0;
        }
        out
    }

    fn level_index(&self, l: f64) -> usize {
        self.levels
            .iter()
            .position(|x| (x - l).abs() < 1e-9)
            .unwrap_or(0)
    }
}

fn pinball(level: f64, actual: f64, q: f64) -> f64 {
    let d = actual - q;
    if d >= 0.0 {
        level * d
    } else {
        (level - 1.0) * d
    }
}

/// Scores every metric of one entity, the metrics spread over the cores (the LSTM's
/// forecasts first, batched, as libtorch runs one model at a time).
fn entity(
    plan: &Plan<'_>,
    s: &data::Series,
    lstm: Option<&LstmModel>,
) -> Result<Vec<SeriesResult>> {
    let width = s.metrics.len();
    let n_train = s.raw_train.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(width.max(1));
    let column = |j: usize| -> Vec<f64> {
        s.raw_train
            .iter()
            .chain(&s.raw_test)
            .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
            .collect()
    };
    let mut neural: Vec<Option<(Quantiles, usize)>> = Vec::with_capacity(width);
    for j in 0..width {
        neural.push(match lstm {
            Some(net) => Some(plan.neural(net, &column(j), n_train)?),
            None => None,
        });
    }
    let mut slots: Vec<Vec<MetricJob>> = (0..threads).map(|_| Vec::new()).collect();
    for (j, q) in neural.into_iter().enumerate() {
        slots[j % threads].push((j, q));
    }
    let mut results: Vec<(usize, SeriesResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .into_iter()
            .map(|mine| {
                let column = &column;
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|(j, q)| (j, plan.series(&column(j), n_train, q)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(j, _)| *j);
    if results.len() != width {
        return Err(Error::config("eval forecast", "a scoring thread failed"));
    }
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// Evaluates every entity of `dir` with the stage's settings.
pub fn evaluate(dir: &Path, cfg: &ForecastConfig) -> Result<ForecastReport> {
    cfg.validate()?;
    let mut models: Vec<Model> = cfg.models.clone();
    if !wfe_neural::available() && models.contains(&Model::Lstm) {
        eprintln!("lstm left out: this wfe was built without libtorch (`make build` has it)");
        models.retain(|m| *m != Model::Lstm);
    }
    let levels = wfe_forecast::lstm::served_levels(&cfg.quantiles);
    let mut all = Vec::new();
    for name in data::entities(dir)? {
        let s = data::load(dir, &name)?;
        all.push((name, s));
    }
    let step_s = step_seconds(dir, &all)?;
    let steps = |sec: u64| (sec / step_s.max(1)).max(1) as usize;
    let horizons: Vec<usize> = cfg.horizons_s.iter().map(|&h| steps(h)).collect();
    let season = steps(cfg.season_s);
    let stride = steps(cfg.every_s);
    let lstm = if models.contains(&Model::Lstm) {
        let cut = Cut::new(cfg.lstm.steps, season, horizons.clone());
        // Train on each series up to its cross-validation tail, so that the tail scores the
        // LSTM on steps it never saw, as it does the others.
        let tail = cfg.cv_origins * stride + horizons.iter().max().copied().unwrap_or(1);
        let series: Vec<Vec<f64>> = all
            .iter()
            .flat_map(|(_, s)| {
                (0..s.metrics.len()).map(move |j| {
                    let col: Vec<f64> = s
                        .raw_train
                        .iter()
                        .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
                        .collect();
                    let keep = col.len().saturating_sub(tail);
                    filled_same_len(&col[..keep])
                })
            })
            .collect();
        let (model, report) = LstmModel::train(&series, cut, &levels, &cfg.lstm)
            .map_err(|e| Error::config(format!("{} lstm", dir.display()), e.to_string()))?;
        eprintln!(
            "lstm: {} windows, {} epochs, pinball {:.4} -> {:.4}, {:.1} s on {}",
            report.windows,
            report.epochs,
            report.first_loss,
            report.last_loss,
            report.seconds,
            report.device
        );
        for c in &model.classes.classes {
            eprintln!(
                "lstm class {}: {} series, held-out MAE {:.4} global / {:.4} variant: {}",
                c.id,
                c.members.len(),
                c.global_mae,
                c.variant_mae,
                if c.kept {
                    "variant kept"
                } else {
                    "global serves"
                }
            );
        }
        Some(model)
    } else {
        None
    };
    let names: Vec<String> = models
        .iter()
        .map(|m| m.name().to_string())
        .chain(["selected".to_string()])
        .collect();
    let labels: Vec<String> = cfg.horizons_s.iter().map(|&h| horizon_label(h)).collect();
    let mut table: Table = BTreeMap::new();
    let mut chosen: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut fallbacks: BTreeMap<String, usize> = BTreeMap::new();
    let mut means: BTreeMap<(usize, usize), Vec<Figures>> = BTreeMap::new();
    let plan = Plan {
        cfg,
        models: &models,
        levels: &levels,
        season,
        horizons: &horizons,
        stride,
        keep: (season * cfg.stats.mstl_seasons).max(cfg.stats.ets_window) + 1,
    };
    for (entity_name, s) in &all {
        let results = entity(&plan, s, lstm.as_ref())?;
        for r in &results {
            for (hi, m) in r.chosen.iter().enumerate() {
                *chosen
                    .entry(labels[hi].clone())
                    .or_default()
                    .entry(m.name().into())
                    .or_default() += 1;
            }
            for (mi, &n) in r.fallbacks.iter().enumerate() {
                *fallbacks.entry(models[mi].name().into()).or_default() += n;
            }
        }
        for (slot, name) in names.iter().enumerate() {
            for (hi, label) in labels.iter().enumerate() {
                let mut total = Sums::default();
                let (mut mase, mut mase_n) = (0.0, 0.0);
                for r in &results {
                    let x = &r.sums[slot][hi];
                    total.add(x);
                    if x.n > 0.0 && r.scale > 1e-9 {
                        mase += x.abs / x.n / r.scale;
                        mase_n += 1.0;
                    }
                }
                let n = total.n.max(1.0);
                let f = Figures {
                    mae: total.abs / n,
                    mase: if mase_n > 0.0 {
                        mase / mase_n
                    } else {
                        f64::NAN
                    },
                    pinball: total.pinball / n,
                    coverage_80: total.in80 / n,
                    coverage_95: total.in95 / n,
                };
                means.entry((slot, hi)).or_default().push(f.clone());
                table
                    .entry(name.clone())
                    .or_default()
                    .entry(label.clone())
                    .or_default()
                    .insert(entity_name.to_string(), f);
            }
        }
    }
    for ((slot, hi), figs) in means {
        let n = figs.len() as f64;
        let avg = |f: fn(&Figures) -> f64| figs.iter().map(f).sum::<f64>() / n;
        let mean = Figures {
            mae: avg(|f| f.mae),
            mase: avg(|f| f.mase),
            pinball: avg(|f| f.pinball),
            coverage_80: avg(|f| f.coverage_80),
            coverage_95: avg(|f| f.coverage_95),
        };
        table
            .entry(names[slot].clone())
            .or_default()
            .entry(labels[hi].clone())
            .or_default()
            .insert("mean".into(), mean);
    }
    Ok(ForecastReport {
        data: dir.display().to_string(),
        models: table,
        chosen,
        fallbacks,
    })
}

/// The step of the data in seconds (the smallest gap between steps; every entity the same).
fn step_seconds(dir: &Path, all: &[(String, data::Series)]) -> Result<u64> {
    let mut step = None;
    for (name, s) in all {
        let st = s
            .times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > 0)
            .min()
            .ok_or_else(|| {
                Error::config(format!("{}/{name}", dir.display()), "fewer than 2 steps")
            })?;
        match step {
            None => step = Some(st),
            Some(prev) if prev != st => {
                return Err(Error::config(
                    format!("{}/{name}", dir.display()),
                    format!(
                        "a step of {} s where the other entities have {} s",
                        st / 1000,
                        prev / 1000
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(step.unwrap_or(60_000) as u64 / 1000)
}

/// The mean figures of every model per horizon, then the selected model per entity.
pub fn render(r: &ForecastReport) -> String {
    let mut s = format!("forecast evaluation of {}\n\n", r.data);
    s.push_str("| model | horizon | MAE | MASE | pinball | coverage 80% | coverage 95% |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for (model, horizons) in &r.models {
        for (h, entities) in horizons {
            if let Some(f) = entities.get("mean") {
                s.push_str(&format!(
                    "| {model} | {h} | {:.4} | {:.3} | {:.4} | {:.3} | {:.3} |\n",
                    f.mae, f.mase, f.pinball, f.coverage_80, f.coverage_95
                ));
            }
        }
    }
    s.push_str("\nselected model per entity\n\n| entity | horizon | MAE | MASE | pinball | coverage 80% | coverage 95% |\n|---|---|---:|---:|---:|---:|---:|\n");
    if let Some(horizons) = r.models.get("selected") {
        for (h, entities) in horizons {
            for (e, f) in entities {
                s.push_str(&format!(
                    "| {e} | {h} | {:.4} | {:.3} | {:.4} | {:.3} | {:.3} |\n",
                    f.mae, f.mase, f.pinball, f.coverage_80, f.coverage_95
                ));
            }
        }
    }
    s.push_str("\nmodels chosen by cross-validation (series per horizon)\n\n");
    for (h, counts) in &r.chosen {
        let list: Vec<String> = counts.iter().map(|(m, n)| format!("{m} {n}")).collect();
        s.push_str(&format!("- {h}: {}\n", list.join(", ")));
    }
    let fb: Vec<String> = r
        .fallbacks
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    if !fb.is_empty() {
        s.push_str(&format!(
            "\npersistence stood in (could not run): {}\n",
            fb.join(", ")
        ));
    }
    s
}
