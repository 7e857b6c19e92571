//! The learned fingerprint (`method = "lstm"`): the bottleneck of an LSTM autoencoder
//! ([`wfe_neural::SeqAutoencoder`]) that reads a window step by step and must rebuild it, so
//! its few numbers have to carry the window's level, rhythm and how the metrics move together.
//!
//! Per metric set, windows (raw values) are sampled into a reservoir as they come; when
//! `fit_windows` have been seen the autoencoder is trained once on the sample, with each
//! metric scaled by the sample's range (kept with the model, so levels still tell workloads
//! apart, unlike a per-workload scaling). Then every window is embedded, those that waited
//! for the model included, and a workload's profile is the mean of its embeddings, measured
//! from the mean of every embedding made.

use serde::{Deserialize, Serialize};
use wfe_domain::stats::SplitMix;
use wfe_neural::{AutoencoderConfig, SeqAutoencoder, TrainReport, Windows};

/// Settings of the learned embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LstmEmbedding {
    /// Windows seen before the autoencoder is trained (rows wait until then).
    #[serde(default = "d_fit")]
    pub fit_windows: usize,
    /// Windows kept (uniform sample) to train on.
    #[serde(default = "d_reservoir")]
    pub reservoir: usize,
    /// The autoencoder; `embedding` is the fingerprint's length.
    #[serde(default)]
    pub model: AutoencoderConfig,
}

fn d_fit() -> usize {
    256
}
fn d_reservoir() -> usize {
    1024
}

impl Default for LstmEmbedding {
    fn default() -> Self {
        Self {
            fit_windows: d_fit(),
            reservoir: d_reservoir(),
            model: AutoencoderConfig::default(),
        }
    }
}

/// One metric set's sample, model and centre.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Embedder {
    /// Windows (steps x metrics raw values) sampled for training.
    reservoir: Vec<Vec<f32>>,
    /// Set when training failed: no retry at every window.
    pub failed: bool,
    seen: u64,
    rng: u64,
    steps: usize,
    width: usize,
    /// Per metric (min, range) of the training sample: the model's input scaling.
    scale: Vec<(f64, f64)>,
    pub model: Option<SeqAutoencoder>,
    /// 1 once trained: vectors of one version compare.
    pub version: u32,
    sum: Vec<f64>,
    made: u64,
}

impl Embedder {
    /// Samples a window (`steps x width` raw values, NaN = missing); trains when it is the
    /// `fit_windows`-th. Every window before that waits (held by the stage) and is embedded
    /// once the model exists.
    pub fn add(
        &mut self,
        window: &[f32],
        steps: usize,
        s: &LstmEmbedding,
    ) -> Result<Option<TrainReport>, String> {
        if self.model.is_some() {
            return Ok(None);
        }
        let width = window.len() / steps.max(1);
        if self.seen == 0 || (self.steps, self.width) != (steps, width) {
            // First window, or the shape changed (a metric set always has one width).
            self.reservoir.clear();
            (self.steps, self.width, self.seen) = (steps, width, 0);
        }
        self.seen += 1;
        // Sampled as the PCA basis samples its windows.
        let mut rng = SplitMix(self.rng);
        rng.sample_into(self.seen, s.reservoir, &mut self.reservoir, || {
            window.to_vec()
        });
        self.rng = rng.0;
        if (self.seen as usize) < s.fit_windows {
            return Ok(None);
        }
        self.train(s).map(Some)
    }

    /// Trains now on whatever was sampled (at least 2 windows): the end of a short input.
    pub fn train_now(&mut self, s: &LstmEmbedding) -> Result<Option<TrainReport>, String> {
        if self.model.is_some() || self.reservoir.len() < 2 {
            return Ok(None);
        }
        self.train(s).map(Some)
    }

    fn train(&mut self, s: &LstmEmbedding) -> Result<TrainReport, String> {
        let (steps, width) = (self.steps, self.width);
        self.scale = (0..width)
            .map(|j| {
                let (lo, hi) = self
                    .reservoir
                    .iter()
                    .flat_map(|w| w.iter().skip(j).step_by(width))
                    .filter(|v| v.is_finite())
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(*v as f64), hi.max(*v as f64))
                    });
                if lo.is_finite() && hi > lo {
                    (lo, hi - lo)
                } else {
                    (if lo.is_finite() { lo } else { 0.0 }, 1.0)
                }
            })
            .collect();
        let mut w = Windows::new(steps, width);
        for x in &self.reservoir {
            w.push(self.scaled(x)).map_err(|e| e.to_string())?;
        }
        let (model, report) = SeqAutoencoder::train(&w, &s.model).map_err(|e| e.to_string())?;
        self.model = Some(model);
        self.version = 1;
        // The sample has served; the held windows are embedded as they are released.
        self.reservoir = Vec::new();
        Ok(report)
    }

    fn scaled<'a>(&'a self, x: &'a [f32]) -> impl Iterator<Item = f32> + 'a {
        let width = self.width;
        x.iter().enumerate().map(move |(i, v)| {
            let (lo, range) = self.scale[i % width];
            ((*v as f64 - lo) / range) as f32
        })
    }

    fn count(&mut self, v: &[f64]) {
        if self.sum.len() != v.len() {
            self.sum = vec![0.0; v.len()];
        }
        self.sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        self.made += 1;
    }

    /// The embedding of a window (counted in the fleet's centre); None before training or
    /// for a window of another shape.
    pub fn embed(&mut self, window: &[f32]) -> Option<Vec<f64>> {
        let model = self.model.as_ref()?;
        if window.len() != self.steps * self.width {
            return None;
        }
        let mut w = Windows::new(self.steps, self.width);
        w.push(self.scaled(window)).ok()?;
        let z = match model.embed(&w) {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!("fingerprint embedding failed: {e}");
                return None;
            }
        };
        let v: Vec<f64> = z.iter().map(|x| *x as f64).collect();
        self.count(&v);
        Some(v)
    }

    /// The mean of every embedding made.
    pub fn centre(&self) -> Vec<f64> {
        let n = self.made.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }
}
