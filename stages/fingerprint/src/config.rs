//! The fingerprint stage's settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use crate::{Distance, FeatureWeights, embed};

/// How a window becomes a vector.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Method {
    /// Statistical features per metric, reduced by PCA.
    #[default]
    StatsPca,
    /// The bottleneck of an LSTM autoencoder over the window's steps (needs libtorch).
    Lstm,
}

impl Method {
    /// Its name in config and rows (the same as serde's).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Settings of the fingerprint stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// `stats-pca` (statistical features reduced by PCA) or `lstm` (a learned embedding).
    #[serde(default)]
    pub method: Method,
    /// The learned embedding of `method = "lstm"`.
    #[serde(default)]
    pub lstm: embed::LstmEmbedding,
    /// Steps per window.
    #[serde(default = "d_window")]
    pub window: usize,
    /// Steps between fingerprints (equal to `window`: tumbling windows).
    #[serde(default = "d_window")]
    pub hop: usize,
    /// A workload is `cold_start` while it has at most this many observed steps.
    #[serde(default = "d_window")]
    pub learning_steps: usize,
    /// Weight of each feature group.
    #[serde(default)]
    pub weights: FeatureWeights,
    /// Weight per metric name (default 1), e.g. `{ cpu = 2.0 }`.
    #[serde(default)]
    pub metric_weights: BTreeMap<String, f64>,
    /// Share of the window features' variance the PCA keeps.
    #[serde(default = "d_variance")]
    pub variance: f64,
    /// Most PCA components (fingerprint length).
    #[serde(default = "d_max_components")]
    pub max_components: usize,
    /// Windows seen before the first basis is fitted (rows wait until then); it is refitted
    /// after twice as many, four times, and so on.
    #[serde(default = "d_fit_windows")]
    pub fit_windows: usize,
    /// Windows kept (uniform sample) to fit the basis on.
    #[serde(default = "d_reservoir")]
    pub reservoir: usize,
    /// Neighbours per row (0: none).
    #[serde(default = "d_neighbours")]
    pub neighbours: usize,
    /// `cosine` or `euclidean`.
    #[serde(default)]
    pub distance: Distance,
    /// Known workloads of one metric set from which neighbours are searched with an HNSW
    /// index instead of exactly (0: always exact). The index is rebuilt when that set has
    /// grown by a quarter or the basis changed; its candidates (4 x `neighbours`) are
    /// re-ranked by current profiles.
    #[serde(default = "d_index_above")]
    pub index_above: usize,
    /// Candidates the HNSW index examines per search (its `ef`; at least the 4 x `neighbours`
    /// it returns): larger finds the true neighbours more often and costs more per row.
    /// 0 (auto): 32 below 50,000 indexed profiles, 128 from there ([`crate::knn::auto_ef`]).
    #[serde(default)]
    pub index_ef: usize,
    /// Quantile of a window's raw values that counts as the workload's allocation.
    #[serde(default = "d_alloc_q")]
    pub allocation_quantile: f64,
    /// A workload with no new step for this many seconds (wall clock: a replay of recorded
    /// data retires nothing) is retired: its state and name are dropped, and if it comes
    /// back it starts afresh. Pods come and go with new names, so without this a
    /// long-running stage would grow for ever. 0: never.
    #[serde(default = "d_retire")]
    pub retire_after_s: u64,
}

fn d_window() -> usize {
    60
}
fn d_variance() -> f64 {
    0.95
}
fn d_max_components() -> usize {
    16
}
fn d_fit_windows() -> usize {
    32
}
fn d_reservoir() -> usize {
    4096
}
fn d_neighbours() -> usize {
    3
}
fn d_index_above() -> usize {
    4096
}
fn d_alloc_q() -> f64 {
    0.95
}

fn d_retire() -> u64 {
    wfe_domain::retire::RETIRE_AFTER_S
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            retire_after_s: d_retire(),
            method: Method::StatsPca,
            lstm: embed::LstmEmbedding::default(),
            window: 60,
            hop: 60,
            learning_steps: 60,
            weights: FeatureWeights::default(),
            metric_weights: BTreeMap::new(),
            variance: d_variance(),
            max_components: d_max_components(),
            fit_windows: d_fit_windows(),
            reservoir: d_reservoir(),
            neighbours: d_neighbours(),
            distance: Distance::default(),
            index_above: d_index_above(),
            index_ef: 0,
            allocation_quantile: d_alloc_q(),
        }
    }
}

impl FingerprintConfig {
    /// What the neighbour search's index is built with.
    pub(crate) fn index(&self) -> crate::fleet::Index {
        crate::fleet::Index {
            above: self.index_above,
            ef: self.index_ef,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, why: String| Err(Error::config(format!("stages.fingerprint.{key}"), why));
        if self.window < 2 || self.hop == 0 {
            return bad(
                "window",
                "window must be at least 2 and hop at least 1".into(),
            );
        }
        if let Err(e) = self.weights.validate() {
            return bad("weights", e);
        }
        if let Some((k, w)) = self
            .metric_weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return bad(
                &format!("metric_weights.{k}"),
                format!("{w} is not a finite weight >= 0"),
            );
        }
        if !(0.0 < self.variance && self.variance <= 1.0) {
            return bad("variance", "must be in (0, 1]".into());
        }
        if self.max_components == 0 || self.fit_windows < 2 || self.reservoir < 2 {
            return bad(
                "max_components",
                "max_components must be at least 1, fit_windows and reservoir at least 2".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.allocation_quantile) {
            return bad("allocation_quantile", "must be in [0, 1]".into());
        }
        if self.method == Method::Lstm {
            if !wfe_neural::available() {
                return Err(wfe_neural::unavailable("stages.fingerprint.method (lstm)"));
            }
            if self.lstm.fit_windows < 2 || self.lstm.reservoir < 2 {
                return bad(
                    "lstm.fit_windows",
                    "fit_windows and reservoir must be at least 2".into(),
                );
            }
            self.lstm.model.validate("stages.fingerprint.lstm.model")?;
        }
        Ok(())
    }
}
