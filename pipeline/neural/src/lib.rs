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

mod config;
pub use config::{
    AutoencoderConfig, DeviceChoice, ForecasterConfig, ForecasterShape, Precision, TrainReport,
    Windows, unavailable,
};

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

#[cfg(test)]
mod tests;
