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

/// How many threads libtorch splits one operation over, for each thread that runs a model
/// after this call (libtorch sets up a thread's pool at its first operation, from this
/// number); `0` leaves libtorch's default, one per core. Nothing to set without libtorch.
///
/// The stages run side by side, and the forecast stage also fits on a thread per core and
/// retrains on a thread of its own: with a pool of one thread per core behind every thread
/// that runs a model, the pools spun and switched on cores that had work of their own.
pub fn set_threads(n: usize) {
    #[cfg(feature = "torch")]
    if n > 0 {
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
    #[cfg(not(feature = "torch"))]
    let _ = n;
}

#[cfg(test)]
mod tests;
