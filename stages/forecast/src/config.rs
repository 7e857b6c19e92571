//! The forecast stage's settings.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_domain::sizing::Policy;

use crate::gbm::GbmConfig;
use crate::{LstmConfig, Model, StatsConfig, models};

/// Settings of the forecast stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    /// Horizons in seconds.
    #[serde(default = "d_horizons")]
    pub horizons_s: Vec<u64>,
    /// Quantile levels, ascending, in (0, 1). The LSTM reads a level it was not trained on
    /// linearly between the two of its own around it; a level outside its range refuses it.
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
    /// `lstm` and `gbm` (each needs a trained model in `model_dir`: `wfe train` writes them;
    /// `gbm` is not among the defaults, its training tries a dozen candidates per horizon).
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
    /// Settings of the gradient-boosted model (`gbm`).
    #[serde(default)]
    pub gbm: GbmConfig,
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
    /// Fewest series (of the model's data step, each holding a window and its targets) the
    /// stage must hold to retrain on drift or schedule; with fewer, the retrain is skipped
    /// and said (`retrain_skipped`) and the schedule restarts. A version trained on a few
    /// dozen series learns those series, and the held-out tails it must beat the current
    /// version on are theirs: the fleet's model (`wfe train` on hundreds) would be swapped
    /// for one that fits a handful, or, as on the shared data, every such retrain is
    /// trained only to be rejected.
    #[serde(default = "d_retrain_min_series")]
    pub retrain_min_series: usize,
    /// A fitted model not chosen for a series runs at every this-many issuances only (the
    /// chosen one at every issuance): fits cost the most, and scores move slowly.
    #[serde(default = "d_challenge")]
    pub challenge_every: usize,
    /// A workload with no new step for this many seconds (wall clock: a replay of recorded
    /// data retires nothing) is retired: its state and name are dropped, and if it comes
    /// back it starts afresh. Pods come and go with new names, so without this a
    /// long-running stage would grow for ever. 0: never.
    #[serde(default = "d_retire")]
    pub retire_after_s: u64,
    /// Container sizes on the `recommendations` topic at each issuance, per workload and
    /// resource (VPA's lower bound, target and upper bound; `wfe_domain::sizing`). false:
    /// none.
    #[serde(default = "d_true")]
    pub recommend: bool,
    /// How those sizes are read from the issued forecasts: the request at `quantile` (0.9)
    /// plus `margin` (0.15), over the horizons up to `max_horizon_s` (86,400).
    #[serde(default)]
    pub recommendation: Policy,
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
fn d_retrain_min_series() -> usize {
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

fn d_retire() -> u64 {
    wfe_domain::retire::RETIRE_AFTER_S
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            retire_after_s: d_retire(),
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
            gbm: GbmConfig::default(),
            model_dir: None,
            reload_s: d_reload(),
            retrain_every_s: d_retrain(),
            retrain_swap_after_s: d_retrain_swap(),
            drift_ratio: d_drift_ratio(),
            drift_window: d_drift_window(),
            retrain_min_series: d_retrain_min_series(),
            challenge_every: d_challenge(),
            recommend: true,
            recommendation: Policy::default(),
        }
    }
}

impl ForecastConfig {
    pub fn validate(&self) -> Result<()> {
        if let (true, Err((setting, why))) = (self.recommend, self.recommendation.check()) {
            return Err(Error::config(
                format!("stages.forecast.recommendation.{setting}"),
                why,
            ));
        }
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
        if self.stats.mstl_seasons < 2
            || self.stats.ets_window < models::MIN_ETS
            || self.stats.ets_search_every == 0
        {
            return Err(Error::config(
                "stages.forecast.stats",
                format!(
                    "mstl_seasons must be at least 2, ets_window at least {} and ets_search_every at least 1",
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
        self.gbm.validate("stages.forecast.gbm")?;
        self.lstm.validate("stages.forecast.lstm")
    }
}
