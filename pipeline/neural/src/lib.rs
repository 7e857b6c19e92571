//! # wfe-neural: the LSTM models the stages share (tch, libtorch)
//!
//! [`SeqAutoencoder`]: an LSTM encoder reads a window of steps (each step a vector of scaled
//! metrics), its last hidden state goes through a linear layer to a small **embedding**, and
//! an LSTM decoder fed that embedding at every step reconstructs the window. Trained to
//! reconstruct ordinary behaviour, it serves twice:
//! - the anomaly stage's `lstm` detector scores a step by how badly the window ending at it is
//!   reconstructed at that step (per metric, so the error also ranks the metrics);
//! - the fingerprint stage's learned embedding is the bottleneck, averaged over a workload's
//!   windows.
//!
//! [`QuantileForecaster`]: an LSTM reads a window of steps, its last hidden state joined with
//! a context vector (what the caller knows of the future, e.g. the value one season before
//! each target) goes through a small dense head to one value per horizon and quantile level.
//! Trained by the mean pinball loss over the levels, across many series at once (a global
//! model), so one model serves a fleet and a new workload from its first window. The forecast
//! stage's `lstm` model.
//!
//! Missing values (NaN) enter as 0 and are masked out of the loss and of the errors.
//!
//! The models run on libtorch through tch, on the CPU or a CUDA device, and exist only with
//! the `torch` feature (the Makefile builds with it; PyTorch 2.11.0 comes from pip into the
//! project's `.venv`). A build without it keeps the same API: [`available`] is false and
//! training returns an error that says how to get it, so pure-statistics builds work.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

#[cfg(feature = "torch")]
mod lstm;
#[cfg(feature = "torch")]
pub use lstm::SeqAutoencoder;
#[cfg(feature = "torch")]
mod quantile;
#[cfg(feature = "torch")]
pub use quantile::{QuantileForecaster, matmul_flops};

#[cfg(not(feature = "torch"))]
mod unavailable;
#[cfg(not(feature = "torch"))]
pub use unavailable::{QuantileForecaster, SeqAutoencoder, matmul_flops};

/// Whether this build has libtorch.
pub const fn available() -> bool {
    cfg!(feature = "torch")
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// How an autoencoder is shaped and trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Hidden units of the encoder and decoder LSTMs.
    #[serde(default = "d_hidden")]
    pub hidden: usize,
    /// Length of the embedding (the bottleneck).
    #[serde(default = "d_embedding")]
    pub embedding: usize,
    /// Passes over the training windows.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Windows per optimiser step.
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// Adam's learning rate.
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Seed of the weights' initialisation and the shuffling: equal inputs, equal model.
    #[serde(default = "d_seed")]
    pub seed: i64,
    /// `auto`, `cpu` or `cuda`.
    #[serde(default)]
    pub device: DeviceChoice,
}

fn d_hidden() -> usize {
    32
}
fn d_embedding() -> usize {
    8
}
fn d_epochs() -> usize {
    8
}
fn d_batch() -> usize {
    128
}
fn d_lr() -> f64 {
    3e-3
}
fn d_seed() -> i64 {
    7
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            hidden: d_hidden(),
            embedding: d_embedding(),
            epochs: d_epochs(),
            batch: d_batch(),
            learning_rate: d_lr(),
            seed: d_seed(),
            device: DeviceChoice::Auto,
        }
    }
}

impl AutoencoderConfig {
    /// Checks the settings; `key` prefixes the setting names in errors.
    pub fn validate(&self, key: &str) -> Result<()> {
        if self.hidden == 0 || self.embedding == 0 {
            return Err(Error::config(
                format!("{key}.hidden"),
                "hidden and embedding must be at least 1",
            ));
        }
        check_training(key, self.epochs, self.batch, self.learning_rate)
    }
}

/// Windows of equal shape, row-major: `n` windows x `steps` steps x `features` values, NaN
/// where a value is missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows {
    pub data: Vec<f32>,
    pub n: usize,
    pub steps: usize,
    pub features: usize,
}

impl Windows {
    pub fn new(steps: usize, features: usize) -> Self {
        Self {
            data: Vec::new(),
            n: 0,
            steps,
            features,
        }
    }

    /// Appends one window of `steps x features` values.
    pub fn push(&mut self, window: impl IntoIterator<Item = f32>) -> Result<()> {
        let before = self.data.len();
        self.data.extend(window);
        let want = self.steps * self.features;
        if self.data.len() - before != want {
            self.data.truncate(before);
            return Err(Error::bad_input(
                "model input",
                format!(
                    "a window must hold {want} values ({} steps x {} features)",
                    self.steps, self.features
                ),
            ));
        }
        self.n += 1;
        Ok(())
    }

    /// Checks the shape before anything reaches libtorch.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.steps == 0 || self.features == 0 {
            return Err(Error::bad_input(
                what,
                "windows need at least 1 step and 1 feature",
            ));
        }
        if self.data.len() != self.n * self.steps * self.features {
            return Err(Error::bad_input(
                what,
                format!(
                    "{} values do not make {} windows of {} x {}",
                    self.data.len(),
                    self.n,
                    self.steps,
                    self.features
                ),
            ));
        }
        Ok(())
    }
}

/// The training settings both models share: epochs, batch and learning rate.
fn check_training(key: &str, epochs: usize, batch: usize, learning_rate: f64) -> Result<()> {
    if epochs == 0 || batch == 0 {
        return Err(Error::config(
            format!("{key}.epochs"),
            "epochs and batch must be at least 1",
        ));
    }
    if !(learning_rate.is_finite() && learning_rate > 0.0) {
        return Err(Error::config(
            format!("{key}.learning_rate"),
            "must be a positive number",
        ));
    }
    Ok(())
}

/// How a forecaster is shaped and trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterConfig {
    /// Hidden units of the LSTM and the head.
    #[serde(default = "d_f_hidden")]
    pub hidden: usize,
    /// Stacked LSTM layers.
    #[serde(default = "d_layers")]
    pub layers: usize,
    /// Passes over the training windows.
    #[serde(default = "d_f_epochs")]
    pub epochs: usize,
    /// Windows per optimiser step.
    #[serde(default = "d_f_batch")]
    pub batch: usize,
    /// Adam's learning rate.
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Seed of the initial weights and the shuffling.
    #[serde(default = "d_seed")]
    pub seed: i64,
    /// `auto`, `cpu` or `cuda`.
    #[serde(default)]
    pub device: DeviceChoice,
}

fn d_f_hidden() -> usize {
    48
}
fn d_layers() -> usize {
    1
}
fn d_f_epochs() -> usize {
    6
}
fn d_f_batch() -> usize {
    256
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        Self {
            hidden: d_f_hidden(),
            layers: d_layers(),
            epochs: d_f_epochs(),
            batch: d_f_batch(),
            learning_rate: d_lr(),
            seed: d_seed(),
            device: DeviceChoice::Auto,
        }
    }
}

impl ForecasterConfig {
    /// Checks the settings; `key` prefixes the setting names in errors.
    pub fn validate(&self, key: &str) -> Result<()> {
        if self.hidden == 0 || self.layers == 0 {
            return Err(Error::config(
                format!("{key}.hidden"),
                "hidden and layers must be at least 1",
            ));
        }
        check_training(key, self.epochs, self.batch, self.learning_rate)
    }
}

/// What a forecaster reads and writes: windows of `steps x features`, a context of `context`
/// values per window, and `horizons x levels` quantiles out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecasterShape {
    pub steps: usize,
    pub features: usize,
    pub context: usize,
    pub horizons: usize,
    /// Quantile levels, ascending in (0, 1).
    pub levels: Vec<f64>,
}

impl ForecasterShape {
    /// Checks windows and their context against this shape.
    pub fn check(&self, w: &Windows, context: &[f32], what: &str) -> Result<()> {
        w.check(what)?;
        if (w.steps, w.features) != (self.steps, self.features) {
            return Err(Error::bad_input(
                what,
                format!(
                    "windows of {} x {} for a model of {} x {}",
                    w.steps, w.features, self.steps, self.features
                ),
            ));
        }
        if context.len() != w.n * self.context {
            return Err(Error::bad_input(
                what,
                format!(
                    "{} context values for {} windows x {}",
                    context.len(),
                    w.n,
                    self.context
                ),
            ));
        }
        if self.horizons == 0 || self.levels.is_empty() {
            return Err(Error::bad_input(
                what,
                "a forecaster needs horizons and levels",
            ));
        }
        Ok(())
    }
}

/// Arithmetic of inference: fp32, or mixed precision (autocast to half precision where
/// libtorch deems it safe; CUDA only, the CPU computes fp32 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    Mixed,
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub windows: usize,
    pub epochs: usize,
    /// Mean masked squared error per value, after the first and the last epoch.
    pub first_loss: f64,
    pub last_loss: f64,
    pub device: String,
    pub seconds: f64,
}

/// The error of a build without libtorch.
pub fn unavailable(what: &str) -> Error {
    Error::config(
        what,
        "this wfe was built without libtorch (the `torch` feature): build with `make build` \
         (PyTorch 2.11.0 from pip into .venv, LIBTORCH_USE_PYTORCH=1), or choose a model that \
         needs no LSTM",
    )
}

#[cfg(test)]
mod tests;
