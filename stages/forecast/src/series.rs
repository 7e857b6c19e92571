//! What the stage keeps per workload and resource: the history, the baselines' and fitted
//! models' errors per horizon, the forecasts waiting for their actuals; and the lengths
//! (steps of a horizon, of the history a model reads) derived from the settings.

use serde::{Deserialize, Serialize};
use wfe_contract::norm::{HasSlots, Slots};

use crate::config::ForecastConfig;
use crate::models::{self, Model};
use crate::paired::Paired;
use crate::ring::{Errors, Ring};

/// Errors of one fitted model's forecasts at one horizon, as their actuals arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Track {
    /// Actual minus point forecast: the model's MAE and its choice.
    pub(crate) point: Errors,
    /// Per level: actual minus the model's value at that level, which calibrates the level.
    pub(crate) levels: Vec<Errors>,
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
pub(crate) struct Pending {
    pub(crate) origin: i64,
    pub(crate) target: i64,
    /// Index in the stage's fitted models, and the horizon's index.
    pub(crate) model: usize,
    pub(crate) horizon: usize,
    pub(crate) point: f64,
    pub(crate) values: Vec<f64>,
}

/// One resource of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Series {
    pub(crate) history: Ring,
    /// Per horizon: past errors (actual minus forecast) of persistence and seasonal naive,
    /// at every step (they cost nothing to compute).
    pub(crate) err_persist: Vec<Errors>,
    pub(crate) err_seasonal: Vec<Errors>,
    /// Per fitted model (ETS, MSTL, LSTM as configured) and horizon: errors of its issued
    /// forecasts (and of the cross-validation on the history).
    pub(crate) tracks: Vec<Vec<Track>>,
    pub(crate) pending: Vec<Pending>,
    /// Whether the rolling-origin cross-validation on the history has run.
    pub(crate) validated: bool,
    pub(crate) issued: u64,
    /// The model chosen at the last issuance, per horizon.
    pub(crate) chosen: Vec<Option<Model>>,
    /// While jobs of this series wait for the end of the batch: the time of the first, and
    /// the values the history pushed out since (a long batch can run past the history's
    /// length, and those jobs' targets must still find their actuals).
    #[serde(default)]
    pub(crate) hold_from: Option<i64>,
    #[serde(default)]
    pub(crate) spill: Vec<(i64, f64)>,
    /// Per fitted model: what its ETS fits remember between forecasts (`models::EtsMemo`).
    /// Kept in entries of their own (`ets/<workload>`), so that states written before it
    /// still restore.
    #[serde(skip)]
    pub(crate) memos: Vec<models::EtsMemo>,
    /// Per horizon: the baselines' errors at the fitted models' origins
    /// ([`crate::paired`]), in entries of their own (`pairs/<workload>`) for the same reason.
    #[serde(skip)]
    pub(crate) paired: Vec<Paired>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Workload {
    pub(crate) slots: Slots,
    pub(crate) step_ms: i64,
    pub(crate) series: Vec<Series>,
    /// Slots of each resource's metrics, resolved when `slots` had `res_slots_at` entries.
    pub(crate) res_slots: Vec<Vec<usize>>,
    pub(crate) res_slots_at: usize,
    /// Which resources apply to this workload.
    pub(crate) applies: Vec<bool>,
    /// Each configured horizon in steps of this workload.
    pub(crate) horizons: Vec<usize>,
    pub(crate) last_issue: Option<i64>,
}

impl HasSlots for Workload {
    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}

pub(crate) fn steps_of(seconds: u64, step_ms: i64) -> usize {
    ((seconds as i64 * 1000) / step_ms.max(1)).max(1) as usize
}

/// The series of a resource that does not apply to its workload (another prefix's): no rings.
/// Each series of the default job holds 65 rings of 144 bytes before it holds a value, and
/// a fleet's workload is one of the config's prefixes: with a series for every resource, the
/// empty rings took 378 MB of a 1.35 GB heap peak at 10,000 workloads.
pub(crate) fn unused_series() -> Series {
    Series {
        history: Ring::new(0),
        err_persist: Vec::new(),
        err_seasonal: Vec::new(),
        tracks: Vec::new(),
        pending: Vec::new(),
        validated: false,
        issued: 0,
        chosen: Vec::new(),
        hold_from: None,
        spill: Vec::new(),
        memos: Vec::new(),
        paired: Vec::new(),
    }
}

impl Series {
    /// Whether this is an [`unused_series`] (a series in use has a ring per horizon).
    pub(crate) fn is_unused(&self) -> bool {
        self.err_persist.is_empty()
    }
}

pub(crate) fn new_series(cfg: &ForecastConfig, step_ms: i64) -> Series {
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
        paired: Vec::new(),
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
pub(crate) fn fitted_models(cfg: &ForecastConfig) -> Vec<Model> {
    cfg.models
        .iter()
        .copied()
        .filter(|m| !m.is_baseline())
        .collect()
}

/// The cross-validation origins of a history of `n` values (indices, ascending).
pub(crate) fn cv_origins(
    cfg: &ForecastConfig,
    n: usize,
    horizons: &[usize],
    step_ms: i64,
) -> Vec<usize> {
    let keep = history_len(cfg, step_ms);
    let every = steps_of(cfg.every_s, step_ms);
    let longest = horizons.iter().copied().max().unwrap_or(1);
    (0..cfg.cv_origins)
        .filter_map(|k| (n - 1).checked_sub(longest + k * every))
        .filter(|&o| o >= keep.min(n / 2))
        .rev()
        .collect()
}

/// Whether a job with this history cross-validates a series not validated yet.
pub(crate) fn validates(
    cfg: &ForecastConfig,
    s: &Series,
    n: usize,
    horizons: &[usize],
    step_ms: i64,
) -> bool {
    let longest = horizons.iter().copied().max().unwrap_or(1);
    !s.validated && n >= history_len(cfg, step_ms) + longest + steps_of(cfg.every_s, step_ms)
}
