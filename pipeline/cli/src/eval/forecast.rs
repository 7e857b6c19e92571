//! `wfe eval forecast`: every forecast model, and the one the stage would choose, scored on
//! the test split of labelled data, per entity and mean, at each configured horizon.
//!
//! Each metric of an entity is one series of its values as ingested (for SMD and ASD, their
//! published [0, 1] scaling), as the stage forecasts raw values, at the step normalise
//! settled on. Forecasts are issued from origins `every_s` apart: `cv_origins` of them at the
//! end of the train split give every model its first errors, then every origin of the test
//! split is scored. `selected` is the stage's own choice ([`wfe_forecast::choice`]) made
//! again at each test origin from the errors realised before it, so the evaluation scores
//! what the stage does. Each origin's history is the stage's (`history_len` steps before
//! it). Quantiles come from the model's
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
use wfe_forecast::gbm::GbmModel;
use wfe_forecast::lstm::LstmModel;
use wfe_forecast::models::{
    EtsMemo, Model, filled, filled_same_len, point_forecasts, point_forecasts_with,
};
use wfe_forecast::{ForecastConfig, quantiles_select};

use super::data;

mod plan;
mod train;
use plan::Plan;

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
    /// Per horizon: how many test origins (over every series) the stage's choice gave to
    /// each model.
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
    /// Per horizon, how many test origins the stage's choice gave to each model.
    chosen: Vec<BTreeMap<Model, usize>>,
    fallbacks: Vec<usize>,
}

/// Forecasts of the models at a list of origins: `[origin][horizon][level]`.
type Quantiles = Vec<Vec<Vec<f64>>>;

/// The trained global models' forecasts for one series (each with its fallback count).
type Given = Vec<(Model, (Quantiles, usize))>;

/// A metric's index and the trained models' forecasts for it.
type MetricJob = (usize, Given);

fn pinball(level: f64, actual: f64, q: f64) -> f64 {
    let d = actual - q;
    if d >= 0.0 {
        level * d
    } else {
        (level - 1.0) * d
    }
}

/// Scores every metric of one entity, the metrics spread over the cores (the trained
/// models' forecasts first, batched: libtorch runs one model at a time).
fn entity(
    plan: &Plan<'_>,
    s: &data::Series,
    lstm: Option<&LstmModel>,
    gbm: Option<&GbmModel>,
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
    let mut given: Vec<Given> = Vec::with_capacity(width);
    for j in 0..width {
        let y = column(j);
        let mut g = Given::new();
        if let Some(net) = lstm {
            g.push((Model::Lstm, plan.neural(net, &y, n_train)?));
        }
        if let Some(gbm) = gbm {
            g.push((Model::Gbm, plan.boosted(gbm, &y, n_train)));
        }
        given.push(g);
    }
    let mut slots: Vec<Vec<MetricJob>> = (0..threads).map(|_| Vec::new()).collect();
    for (j, q) in given.into_iter().enumerate() {
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
    let tail = cfg.cv_origins * stride + horizons.iter().max().copied().unwrap_or(1);
    let lstm = if models.contains(&Model::Lstm) {
        Some(train::lstm(
            dir, &all, tail, season, &horizons, &levels, cfg,
        )?)
    } else {
        None
    };
    let gbm = if models.contains(&Model::Gbm) {
        Some(train::gbm(dir, &all, tail, season, &horizons, cfg)?)
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
        keep: wfe_forecast::history_len(cfg, step_s as i64 * 1000),
    };
    for (entity_name, s) in &all {
        let results = entity(&plan, s, lstm.as_ref(), gbm.as_ref())?;
        for r in &results {
            for (hi, counts) in r.chosen.iter().enumerate() {
                for (m, n) in counts {
                    *chosen
                        .entry(labels[hi].clone())
                        .or_default()
                        .entry(m.name().into())
                        .or_default() += n;
                }
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

/// The step of the data in seconds, as normalise settled on it (every entity the same).
fn step_seconds(dir: &Path, all: &[(String, data::Series)]) -> Result<u64> {
    let mut step = None;
    for (name, s) in all {
        let at = || format!("{}/{name}", dir.display());
        if s.step_ms <= 0 {
            return Err(Error::config(
                at(),
                "no step: fewer than four distinct timestamps",
            ));
        }
        match step {
            None => step = Some(s.step_ms),
            Some(prev) if prev != s.step_ms => {
                return Err(Error::config(
                    at(),
                    format!(
                        "a step of {} ms where the other entities have {prev} ms",
                        s.step_ms
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
    s.push_str("\nmodels the stage's choice took (test origins per horizon)\n\n");
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
