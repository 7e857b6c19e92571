//! What every model kind's metadata says of where a version came from: written once for the
//! LSTM and gbm.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use crate::config::ForecastConfig;

/// Where a version came from (flattened into each kind's `meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    /// wfe's version that trained it.
    pub code_version: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Where the history came from, its series count and event-time range (ms).
    pub source: String,
    pub series: usize,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Step of the training data in seconds; horizons and season in seconds too.
    pub step_s: u64,
    pub horizons_s: Vec<u64>,
    pub season_s: u64,
}

impl Trained {
    /// Trained now by this wfe, for the stage's horizons and season.
    pub fn now(
        source: String,
        series: usize,
        (from_ms, to_ms): (i64, i64),
        step_s: u64,
        cfg: &ForecastConfig,
    ) -> Self {
        Self {
            code_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            source,
            series,
            from_ms,
            to_ms,
            step_s,
            horizons_s: cfg.horizons_s.clone(),
            season_s: cfg.season_s,
        }
    }

    /// Refused (naming `what`) unless it forecasts the stage's horizons with its season.
    pub fn check(&self, what: &str, cfg: &ForecastConfig) -> Result<()> {
        if self.horizons_s != cfg.horizons_s || self.season_s != cfg.season_s {
            return Err(Error::bad_input(
                what,
                format!(
                    "trained for horizons {:?} s and a season of {} s; the stage forecasts {:?} s with {} s",
                    self.horizons_s, self.season_s, cfg.horizons_s, cfg.season_s
                ),
            ));
        }
        Ok(())
    }

    /// Whether a series of this step is what the model was trained for.
    pub fn fits(&self, step_ms: i64) -> bool {
        self.step_s as i64 * 1000 == step_ms
    }
}
