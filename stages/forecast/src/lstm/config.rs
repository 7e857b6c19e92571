//! Settings of the LSTM model: the network and its training sample, the series fingerprint
//! in its context, and the per-class variants.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_neural::ForecasterConfig;

/// Settings of the LSTM model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LstmConfig {
    /// Steps of history in a window.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Training windows drawn from each series' history.
    #[serde(default = "d_per_series")]
    pub windows_per_series: usize,
    /// Most training windows in all.
    #[serde(default = "d_max_windows")]
    pub max_windows: usize,
    /// The network and its training.
    #[serde(default)]
    pub model: ForecasterConfig,
    /// The series' fingerprint: as context, and to sort series into classes.
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
}

fn d_steps() -> usize {
    48
}
fn d_per_series() -> usize {
    96
}
fn d_max_windows() -> usize {
    32_768
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            steps: d_steps(),
            windows_per_series: d_per_series(),
            max_windows: d_max_windows(),
            model: ForecasterConfig::default(),
            fingerprint: FingerprintConfig::default(),
        }
    }
}

impl LstmConfig {
    pub fn validate(&self, key: &str) -> Result<()> {
        self.model.validate(&format!("{key}.model"))?;
        self.fingerprint.validate(&format!("{key}.fingerprint"))
    }
}

/// The series' fingerprint as the LSTM reads it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// Add the series' fingerprint to the model's context.
    #[serde(default = "d_fp_context")]
    pub context: bool,
    /// Steps in one fingerprint window (the fingerprint stage's `window`).
    #[serde(default = "d_fp_window")]
    pub window: usize,
    /// Windows ending at the origin whose features are averaged (fewer while the history is
    /// shorter); 0: a season's worth, so that a fingerprint covers every time of day alike.
    #[serde(default)]
    pub windows: usize,
    /// Per-class variants of the model.
    #[serde(default)]
    pub classes: ClassConfig,
}

fn d_fp_context() -> bool {
    true
}
fn d_fp_window() -> usize {
    60
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            context: d_fp_context(),
            window: d_fp_window(),
            windows: 0,
            classes: ClassConfig::default(),
        }
    }
}

impl FingerprintConfig {
    fn validate(&self, key: &str) -> Result<()> {
        if self.window < 4 {
            return Err(Error::config(
                format!("{key}.window"),
                "a fingerprint needs windows of at least 4 steps",
            ));
        }
        self.classes.validate(&format!("{key}.classes"))
    }

    /// Whether training computes fingerprints at all.
    pub(crate) fn used(&self) -> bool {
        self.context || self.classes.enabled
    }
}

/// Per-class variants: DBSCAN over the training series' fingerprints, a fine-tuned copy of
/// the global model per class, kept where it beats the global model on held-out data.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Train per-class variants.
    #[serde(default = "d_classes")]
    pub enabled: bool,
    /// DBSCAN's core size: the fewest series within epsilon of a series for it to found or
    /// grow a class.
    #[serde(default = "d_min_series")]
    pub min_series: usize,
    /// DBSCAN's epsilon, as this quantile of the distances between the training series'
    /// standardised fingerprints.
    #[serde(default = "d_eps_q")]
    pub epsilon_quantile: f64,
    /// Most classes given a variant (the largest ones).
    #[serde(default = "d_max_classes")]
    pub max_classes: usize,
    /// Fine-tuning passes over a class's windows.
    #[serde(default = "d_class_epochs")]
    pub epochs: usize,
    /// Fine-tuning learning rate, as a share of the model's.
    #[serde(default = "d_lr_share")]
    pub learning_rate_share: f64,
    /// Least relative gain in held-out MAE over the global model for a variant to be kept.
    #[serde(default = "d_min_gain")]
    pub min_gain: f64,
}

fn d_classes() -> bool {
    true
}
fn d_min_series() -> usize {
    4
}
fn d_eps_q() -> f64 {
    0.1
}
fn d_max_classes() -> usize {
    8
}
fn d_class_epochs() -> usize {
    2
}
fn d_lr_share() -> f64 {
    0.1
}
fn d_min_gain() -> f64 {
    0.02
}

impl Default for ClassConfig {
    fn default() -> Self {
        Self {
            enabled: d_classes(),
            min_series: d_min_series(),
            epsilon_quantile: d_eps_q(),
            max_classes: d_max_classes(),
            epochs: d_class_epochs(),
            learning_rate_share: d_lr_share(),
            min_gain: d_min_gain(),
        }
    }
}

impl ClassConfig {
    fn validate(&self, key: &str) -> Result<()> {
        if self.min_series < 2 {
            return Err(Error::config(
                format!("{key}.min_series"),
                "a class needs at least 2 series",
            ));
        }
        if !(self.epsilon_quantile > 0.0 && self.epsilon_quantile <= 1.0) {
            return Err(Error::config(
                format!("{key}.epsilon_quantile"),
                "must be in (0, 1]",
            ));
        }
        if self.epochs == 0 || !(self.learning_rate_share > 0.0 && self.learning_rate_share <= 1.0)
        {
            return Err(Error::config(
                format!("{key}.epochs"),
                "epochs must be at least 1 and learning_rate_share in (0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&self.min_gain) {
            return Err(Error::config(
                format!("{key}.min_gain"),
                "must be in [0, 1)",
            ));
        }
        Ok(())
    }
}
