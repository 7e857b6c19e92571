//! The LSTM's lifecycle in the stage: the versions loaded from the model folder per data
//! step, and the recent errors the feedback loop judges them by.

use std::collections::{BTreeMap, VecDeque};
use std::thread::JoinHandle;
use std::time::Instant;

use wfe_contract::{Context, Error, Event};

use crate::config::ForecastConfig;
use crate::lstm::LstmModel;
use crate::models::Model;
use crate::store::{self, LocalDir, ModelMeta};

/// Recent errors (the LSTM's, persistence's) kept per horizon for the LSTM's running error.
pub(crate) const RECENT: usize = 256;

/// The LSTM's lifecycle in the stage.
/// One model per data step (seconds): a model counts its window and horizons in steps.
pub(crate) struct Neural {
    pub(crate) repo: Option<LocalDir>,
    pub(crate) current: BTreeMap<u64, Loaded>,
    pub(crate) checked: Option<Instant>,
    /// Per step, recent |error| / capacity of the LSTM's forecasts and of persistence over
    /// the same spans, per horizon.
    pub(crate) recent: BTreeMap<u64, Vec<VecDeque<(f64, f64)>>>,
    /// Per step, the latest event time seen (ms): sets with different clocks (replays of
    /// recorded data) each keep their own schedule.
    pub(crate) latest: BTreeMap<u64, i64>,
    /// (step, version) that failed to load (not tried again).
    pub(crate) refused: Vec<(u64, u64)>,
    /// Retrains under way, by step ([`retrain`]).
    pub(crate) retraining: BTreeMap<u64, Retraining>,
    pub(crate) horizons: usize,
}

pub(crate) struct Loaded {
    pub(crate) model: LstmModel,
    pub(crate) meta: ModelMeta,
    /// For each configured level, its index among the model's levels.
    pub(crate) levels: Vec<usize>,
    /// The model's median level.
    pub(crate) median: usize,
}

impl Neural {
    pub(crate) fn new(cfg: &ForecastConfig) -> Self {
        Self {
            repo: cfg.model_dir.as_ref().map(LocalDir::new),
            current: BTreeMap::new(),
            checked: None,
            recent: BTreeMap::new(),
            latest: BTreeMap::new(),
            refused: Vec::new(),
            retraining: BTreeMap::new(),
            horizons: cfg.horizons_s.len(),
        }
    }

    /// The model for series of `step_ms`, if one is loaded.
    pub(crate) fn for_step(&self, step_ms: i64) -> Option<&Loaded> {
        u64::try_from(step_ms / 1000)
            .ok()
            .and_then(|s| self.current.get(&s))
            .filter(|l| l.fits(step_ms))
    }

    /// The loaded version for series of `step_ms`.
    pub(crate) fn version(&self, step_ms: i64) -> Option<u64> {
        self.for_step(step_ms).map(|l| l.meta.version)
    }

    /// Loads the newest complete version when it is newer than the one in use (at most
    /// every `reload_s`).
    pub(crate) fn refresh(&mut self, cfg: &ForecastConfig, ctx: &mut Context) {
        let Some(repo) = &self.repo else { return };
        if !cfg.models.contains(&Model::Lstm)
            || self
                .checked
                .is_some_and(|t| t.elapsed().as_secs_f64() < cfg.reload_s as f64)
        {
            return;
        }
        self.checked = Some(Instant::now());
        let in_use = |step| self.current.get(&step).map(|l| l.meta.version);
        for (step, newest) in store::newer_versions(repo, store::KIND, &self.refused, in_use, ctx) {
            let loaded = store::load(repo, step, newest, Some(cfg.lstm.model.device))
                .and_then(|(m, meta)| Loaded::new(m, meta, cfg));
            match loaded {
                Ok(l) => {
                    let msg = format!(
                        "forecast-lstm {step}s v{} from {} ({} series; validation MAE {:?})",
                        l.meta.version,
                        l.meta.trained.source,
                        l.meta.trained.series,
                        l.meta.validation_mae
                    );
                    ctx.event(Event::Model {
                        kind: "loaded",
                        message: &msg,
                    });
                    self.recent
                        .insert(step, vec![VecDeque::new(); self.horizons]);
                    self.current.insert(step, l);
                }
                Err(e) => {
                    self.refused.push((step, newest));
                    let msg = format!("forecast-lstm {step}s v{newest}: {e}");
                    ctx.event(Event::Model {
                        kind: "load_failed",
                        message: &msg,
                    });
                }
            }
        }
    }
}

impl Loaded {
    pub(crate) fn new(
        model: LstmModel,
        meta: ModelMeta,
        cfg: &ForecastConfig,
    ) -> wfe_contract::Result<Self> {
        let find = |l: f64| meta.levels.iter().position(|m| (m - l).abs() < 1e-9);
        let levels: Option<Vec<usize>> = cfg.quantiles.iter().map(|&l| find(l)).collect();
        let (Some(levels), Some(median)) = (levels, find(0.5)) else {
            return Err(wfe_contract::Error::bad_input(
                format!("forecast-lstm v{}", meta.version),
                format!(
                    "the model's levels {:?} lack the configured {:?} or 0.5",
                    meta.levels, cfg.quantiles
                ),
            ));
        };
        meta.trained
            .check(&format!("forecast-lstm v{}", meta.version), cfg)?;
        Ok(Self {
            model,
            meta,
            levels,
            median,
        })
    }

    /// Whether a series of this step is what the model was trained for.
    pub(crate) fn fits(&self, step_ms: i64) -> bool {
        self.meta.trained.fits(step_ms)
    }
}

/// What the training thread hands back: the new model and its report and held-out errors,
/// or why there is none.
pub(crate) type Trained = Result<(LstmModel, wfe_neural::TrainReport, Vec<f64>, Vec<f64>), NoModel>;

/// Why a retraining left no new version.
#[derive(Debug)]
pub(crate) enum NoModel {
    /// Training, loading or saving failed.
    Failed(Error),
    /// The new model forecast the held-out tails no better than the current version: not a
    /// fault (nothing was wrong with the input), the current version stays.
    Rejected(String),
}

/// A retrain under way for one data step.
pub(crate) struct Retraining {
    pub(crate) reason: String,
    /// Event time (ms) from which its result is applied.
    pub(crate) due_ms: i64,
    /// The new version's meta, but for its errors and report.
    pub(crate) meta: ModelMeta,
    pub(crate) handle: JoinHandle<Trained>,
}

impl Neural {
    /// Whether a retrain of `step`'s model is under way.
    pub(crate) fn retraining(&self, step: u64) -> bool {
        self.retraining.contains_key(&step)
    }
}
