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
    /// For each configured level, where it lies among the model's levels.
    pub(crate) levels: Vec<Between>,
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
        let levels: Option<Vec<Between>> = cfg
            .quantiles
            .iter()
            .map(|&l| Between::of(&meta.levels, l))
            .collect();
        let (Some(levels), Some(median)) = (levels, find(0.5)) else {
            return Err(wfe_contract::Error::bad_input(
                format!("forecast-lstm v{}", meta.version),
                format!(
                    "the model's levels {:?} lack 0.5 or do not span the configured {:?}",
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

    /// The configured levels of one horizon's model output `h` (the model's levels), times
    /// `cap`.
    pub(crate) fn configured(&self, h: &[f64], cap: f64) -> Vec<f64> {
        self.levels.iter().map(|b| b.read(h) * cap).collect()
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

/// A configured level read from a model's levels: one of them, or linearly between the two
/// around it (the piecewise-linear distribution tier-select reads too), so a job may ask for
/// levels a model was not trained on as long as they lie within its range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Between {
    lo: usize,
    hi: usize,
    /// Weight of `hi`; 0 where the level is one of the model's.
    w: f64,
}

impl Between {
    /// Where `level` lies among `model` (ascending); `None` outside their range.
    pub(crate) fn of(model: &[f64], level: f64) -> Option<Self> {
        if let Some(i) = model.iter().position(|m| (m - level).abs() < 1e-9) {
            return Some(Self {
                lo: i,
                hi: i,
                w: 0.0,
            });
        }
        let hi = model.iter().position(|&m| m > level)?;
        let lo = hi.checked_sub(1)?;
        let w = (level - model[lo]) / (model[hi] - model[lo]);
        Some(Self { lo, hi, w })
    }

    /// The level's value in one output `h` of the model's levels.
    pub(crate) fn read(&self, h: &[f64]) -> f64 {
        if self.w == 0.0 {
            return h[self.lo];
        }
        h[self.lo] + self.w * (h[self.hi] - h[self.lo])
    }
}

#[cfg(test)]
mod tests {
    use super::Between;

    #[test]
    fn a_level_is_read_from_the_model_s_own_or_between_the_two_around_it() {
        let model = [0.1, 0.5, 0.9];
        let h = [2.0, 4.0, 10.0];
        let at = |l: f64| Between::of(&model, l).map(|b| b.read(&h));
        assert_eq!(at(0.5), Some(4.0));
        assert_eq!(at(0.1), Some(2.0));
        assert_eq!(at(0.9), Some(10.0));
        assert!((at(0.3).unwrap() - 3.0).abs() < 1e-12);
        assert!((at(0.8).unwrap() - 8.5).abs() < 1e-12);
        // Outside the model's range: no extrapolation.
        assert_eq!(at(0.05), None);
        assert_eq!(at(0.95), None);
    }
}
