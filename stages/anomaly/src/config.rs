//! The anomaly stage's settings: the detectors, the threshold and the history they learn from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use crate::lstm;

/// A detector the ensemble can combine.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum DetectorKind {
    /// PCA reconstruction error.
    Pca,
    /// Distance outside each metric's usual band.
    Range,
    /// Isolation Forest.
    Iforest,
    /// LSTM autoencoder reconstruction error (needs a build with libtorch).
    Lstm,
    /// Distance from the metric's usual value at this time of the season (`seasonal.rs`).
    Seasonal,
}

impl DetectorKind {
    /// Its name in config and rows (the same as serde's).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How the label-free threshold is set from the history's scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdMethod {
    /// Peaks-Over-Threshold: a generalised Pareto tail fitted over `pot_initial`, cut at
    /// `pot_risk`.
    Pot,
    /// The `threshold_quantile` of the history's scores.
    Quantile,
}

/// Settings of the anomaly stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Detectors whose calibrated scores are added: any of `pca`, `range`, `iforest`, `lstm`,
    /// `seasonal`.
    #[serde(default = "d_detectors")]
    pub detectors: Vec<DetectorKind>,
    /// The detectors of a workload with a single metric (a CloudWatch metric, one gauge),
    /// instead of `detectors`: a PCA across metrics has nothing to work with there, and what is
    /// unusual for one series is mostly unusual for its time of day.
    #[serde(default = "d_single")]
    pub single_metric_detectors: Vec<DetectorKind>,
    /// `seasonal`: the season's length (s) and the slices its profile is cut into (a profile
    /// holds `season_buckets` values per metric whatever the step).
    #[serde(default = "d_season")]
    pub season_s: u64,
    #[serde(default = "d_buckets")]
    pub season_buckets: usize,
    /// Weight per detector (default 1), e.g. `{ iforest = 0.5 }`.
    #[serde(default)]
    pub weights: BTreeMap<DetectorKind, f64>,
    /// EWMA weight of the newest step in the combined score (1 = no smoothing).
    #[serde(default = "d_smoothing")]
    pub smoothing: f64,
    /// How the threshold is set: `pot` (extreme value theory) or `quantile`.
    #[serde(default = "d_threshold")]
    pub threshold: ThresholdMethod,
    /// POT: quantile of the history's scores whose excesses are fitted.
    #[serde(default = "d_pot_initial")]
    pub pot_initial: f64,
    /// POT: probability that a normal step's score exceeds the threshold.
    #[serde(default = "d_pot_risk")]
    pub pot_risk: f64,
    /// Share of the history (its latest steps) held out of fitting to calibrate the scores
    /// and set the threshold on steps the models have not seen; 0 uses the whole history.
    #[serde(default = "d_holdout")]
    pub holdout: f64,
    /// Quantile of the history's scores used as the threshold (`threshold = "quantile"`).
    #[serde(default = "d_quantile")]
    pub threshold_quantile: f64,
    /// PCA: share of the history's variance the kept components explain.
    #[serde(default = "d_variance")]
    pub variance: f64,
    /// Range: a metric's band is this quantile to one minus it of its history.
    #[serde(default = "d_range_q")]
    pub range_quantile: f64,
    /// Isolation forest: trees.
    #[serde(default = "d_trees")]
    pub iforest_trees: usize,
    /// Isolation forest: history steps each tree is grown on.
    #[serde(default = "d_sample")]
    pub iforest_sample: usize,
    /// Steps of history to learn from when the data has no `split` label.
    #[serde(default = "d_learn")]
    pub learn_steps: usize,
    /// Fewest history steps a model is fitted on; with fewer, the workload is not scored.
    #[serde(default = "d_min_learn")]
    pub min_learn_steps: usize,
    /// Hours of mean scores whose median the threshold follows: after a lasting move of the
    /// workload's behaviour, the threshold is raised by how far that median is above the
    /// history's median score, so a move longer than half of it becomes the new normal
    /// instead of one segment that never closes (see `level.rs`). 0: a fixed threshold.
    #[serde(default = "d_level_window")]
    pub level_window_h: usize,
    /// Alerts (segments opened) per workload and day an operator accepts: once a workload has
    /// opened this many in the trailing 24 hours, a new segment opens only if its score passes
    /// the weakest peak among the day's strongest this-many alerts (see `budget.rs`). 0: no
    /// budget.
    #[serde(default)]
    pub alert_budget_per_day: usize,
    /// Steps under the threshold that close a segment.
    #[serde(default = "d_close")]
    pub close_after: usize,
    /// Metrics named per event.
    #[serde(default = "d_top")]
    pub top_metrics: usize,
    /// The `lstm` detector: window length, training windows, the autoencoder.
    #[serde(default)]
    pub lstm: lstm::LstmSettings,
    /// A workload with no new step for this many seconds (wall clock: a replay of recorded
    /// data retires nothing) is retired: its state and name are dropped, and if it comes
    /// back it starts afresh. Pods come and go with new names, so without this a
    /// long-running stage would grow for ever. 0: never.
    #[serde(default = "d_retire")]
    pub retire_after_s: u64,
}

fn d_detectors() -> Vec<DetectorKind> {
    vec![DetectorKind::Pca, DetectorKind::Range]
}
fn d_single() -> Vec<DetectorKind> {
    vec![DetectorKind::Seasonal, DetectorKind::Range]
}
fn d_season() -> u64 {
    86_400
}
fn d_buckets() -> usize {
    288
}
/// The most slices a season's profile may have: each is a value per metric per workload.
pub const MAX_SEASON_BUCKETS: usize = 10_080;
fn d_smoothing() -> f64 {
    0.3
}
fn d_threshold() -> ThresholdMethod {
    ThresholdMethod::Pot
}
fn d_pot_initial() -> f64 {
    0.98
}
fn d_pot_risk() -> f64 {
    1e-2
}
fn d_holdout() -> f64 {
    0.2
}
fn d_variance() -> f64 {
    0.95
}
fn d_range_q() -> f64 {
    0.005
}
fn d_trees() -> usize {
    100
}
fn d_sample() -> usize {
    256
}
fn d_quantile() -> f64 {
    0.995
}
fn d_learn() -> usize {
    1440
}
fn d_min_learn() -> usize {
    30
}
fn d_level_window() -> usize {
    48
}
fn d_close() -> usize {
    5
}
fn d_top() -> usize {
    5
}

fn d_retire() -> u64 {
    wfe_domain::retire::RETIRE_AFTER_S
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            retire_after_s: d_retire(),
            detectors: d_detectors(),
            single_metric_detectors: d_single(),
            season_s: d_season(),
            season_buckets: d_buckets(),
            weights: BTreeMap::new(),
            smoothing: d_smoothing(),
            threshold: d_threshold(),
            pot_initial: d_pot_initial(),
            pot_risk: d_pot_risk(),
            holdout: d_holdout(),
            threshold_quantile: d_quantile(),
            variance: d_variance(),
            range_quantile: d_range_q(),
            iforest_trees: d_trees(),
            iforest_sample: d_sample(),
            learn_steps: d_learn(),
            min_learn_steps: d_min_learn(),
            level_window_h: d_level_window(),
            alert_budget_per_day: 0,
            close_after: d_close(),
            top_metrics: d_top(),
            lstm: lstm::LstmSettings::default(),
        }
    }
}

impl AnomalyConfig {
    /// The weight of a detector (1 unless configured).
    pub fn weight(&self, kind: DetectorKind) -> f64 {
        self.weights.get(&kind).copied().unwrap_or(1.0)
    }

    /// The detectors of a workload with `width` metrics.
    pub fn detectors_for(&self, width: usize) -> &[DetectorKind] {
        if width == 1 {
            &self.single_metric_detectors
        } else {
            &self.detectors
        }
    }

    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::config(format!("stages.anomaly.{key}"), why));
        for (key, kinds) in [
            ("detectors", &self.detectors),
            ("single_metric_detectors", &self.single_metric_detectors),
        ] {
            if kinds.is_empty() {
                return bad(
                    key,
                    "name at least one of pca, range, iforest, lstm, seasonal",
                );
            }
        }
        let all = || self.detectors.iter().chain(&self.single_metric_detectors);
        if all().any(|&k| k == DetectorKind::Seasonal)
            && !(self.season_s > 0 && (1..=MAX_SEASON_BUCKETS).contains(&self.season_buckets))
        {
            return bad(
                "season_s",
                &format!(
                    "the seasonal detector needs season_s > 0 and season_buckets in 1..={MAX_SEASON_BUCKETS}"
                ),
            );
        }
        if all().any(|&k| k == DetectorKind::Lstm) {
            if !wfe_neural::available() {
                return Err(wfe_neural::unavailable("stages.anomaly.detectors (lstm)"));
            }
            if self.lstm.steps < 2 || self.lstm.max_windows < 2 {
                return bad("lstm.steps", "steps and max_windows must be at least 2");
            }
            self.lstm.model.validate("stages.anomaly.lstm.model")?;
        }
        if !(0.0 < self.variance && self.variance <= 1.0) {
            return bad("variance", "must be in (0, 1]");
        }
        if !(0.0 < self.threshold_quantile && self.threshold_quantile < 1.0) {
            return bad("threshold_quantile", "must be in (0, 1)");
        }
        if !(0.0 < self.smoothing && self.smoothing <= 1.0) {
            return bad("smoothing", "must be in (0, 1]");
        }
        if !(0.0 < self.pot_initial && self.pot_initial < 1.0) {
            return bad("pot_initial", "must be in (0, 1)");
        }
        if !(0.0 < self.pot_risk && self.pot_risk < 1.0 - self.pot_initial) {
            return bad("pot_risk", "must be in (0, 1 - pot_initial)");
        }
        if !(0.0..0.9).contains(&self.holdout) {
            return bad("holdout", "must be in [0, 0.9)");
        }
        if !(0.0..0.5).contains(&self.range_quantile) {
            return bad("range_quantile", "must be in [0, 0.5)");
        }
        if self.iforest_trees == 0 || self.iforest_sample < 2 {
            return bad(
                "iforest_trees",
                "need at least 1 tree and iforest_sample of at least 2",
            );
        }
        if let Some((k, w)) = self
            .weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return bad(
                &format!("weights.{}", k.as_str()),
                &format!("{w} is not a finite weight >= 0"),
            );
        }
        Ok(())
    }
}
