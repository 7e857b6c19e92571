//! What the models share and the crate's users hand them: devices, settings, the windows a
//! model reads, its shape and training report. A leaf module: the models use it, it uses no
//! model.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

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
         (PyTorch 2.11.0's wheel from pip into .venv, LIBTORCH naming its folder), or \
         choose a model that needs no LSTM",
    )
}
