//! The models of a build without libtorch: the same API, and no value can exist.

use serde::{Deserialize, Serialize};
use wfe_contract::Result;

use crate::{AutoencoderConfig, TrainReport, Windows, unavailable};

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
