//! The models of a build without libtorch: the same API, and no value can exist.

use serde::{Deserialize, Serialize};
use wfe_contract::Result;

use crate::config::{AutoencoderConfig, TrainReport, Windows, unavailable};

/// See the `torch` build; here a type with no values, so every method is unreachable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SeqAutoencoder {}

impl SeqAutoencoder {
    pub fn train(_w: &Windows, cfg: &AutoencoderConfig) -> Result<(Self, TrainReport)> {
        cfg.validate("autoencoder")?;
        Err(unavailable("lstm autoencoder"))
    }

    pub fn steps(&self) -> usize {
        match *self {}
    }

    pub fn features(&self) -> usize {
        match *self {}
    }

    pub fn embedding(&self) -> usize {
        match *self {}
    }

    pub fn last_step_errors(&self, _w: &Windows) -> Result<Vec<f32>> {
        match *self {}
    }

    pub fn embed(&self, _w: &Windows) -> Result<Vec<f32>> {
        match *self {}
    }
}

/// See the `torch` build; here a type with no values.
#[derive(Debug)]
pub enum QuantileForecaster {}

impl QuantileForecaster {
    pub fn train(
        _w: &Windows,
        _context: &[f32],
        _targets: &[f32],
        _shape: crate::config::ForecasterShape,
        cfg: &crate::config::ForecasterConfig,
    ) -> Result<(Self, TrainReport)> {
        cfg.validate("forecaster")?;
        Err(unavailable("lstm forecaster"))
    }

    pub fn fine_tune(
        &self,
        _w: &Windows,
        _context: &[f32],
        _targets: &[f32],
        _epochs: usize,
        _learning_rate: f64,
    ) -> Result<(Self, TrainReport)> {
        match *self {}
    }

    pub fn shape(&self) -> &crate::config::ForecasterShape {
        match *self {}
    }

    pub fn config(&self) -> &crate::config::ForecasterConfig {
        match *self {}
    }

    pub fn device(&self) -> String {
        match *self {}
    }

    pub fn predict(
        &self,
        _w: &Windows,
        _context: &[f32],
        _chunk: usize,
        _precision: crate::config::Precision,
    ) -> Result<Vec<f32>> {
        match *self {}
    }

    pub fn flops_per_window(&self) -> f64 {
        match *self {}
    }

    pub fn synchronize(&self) {
        match *self {}
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        match *self {}
    }

    pub fn from_bytes(_bytes: &[u8], _device: Option<crate::config::DeviceChoice>) -> Result<Self> {
        Err(unavailable("lstm forecaster model file"))
    }
}

/// See the `torch` build.
pub fn matmul_flops(
    _device: crate::config::DeviceChoice,
    _precision: crate::config::Precision,
) -> Result<f64> {
    Err(unavailable("matrix-multiply benchmark"))
}
