//! The LSTM autoencoder detector (`lstm`): an autoencoder ([`wfe_neural::SeqAutoencoder`])
//! learns to reconstruct windows of `steps` steps of the workload's history; a step's score is
//! the mean squared error with which the window ending at it is reconstructed at that step.
//! Unlike PCA it sees the order of steps, so a metric that moves at the wrong moment, or an
//! oscillation that stops, scores even when every value stays in its usual band. The error per
//! metric is its contribution. Causal: a step's window holds it and the steps before it (the
//! ensemble keeps the last `steps - 1` rows between blocks).

use serde::{Deserialize, Serialize};
use wfe_neural::{AutoencoderConfig, SeqAutoencoder, Windows};

/// Settings of the `lstm` detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LstmSettings {
    /// Steps per window.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Most training windows cut from the history (evenly spaced over it).
    #[serde(default = "d_max_windows")]
    pub max_windows: usize,
    /// The autoencoder's shape and training.
    #[serde(default)]
    pub model: AutoencoderConfig,
}

fn d_steps() -> usize {
    16
}
fn d_max_windows() -> usize {
    2048
}

impl Default for LstmSettings {
    fn default() -> Self {
        Self {
            steps: d_steps(),
            max_windows: d_max_windows(),
            model: AutoencoderConfig::default(),
        }
    }
}

/// A fitted `lstm` detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LstmDetector {
    ae: SeqAutoencoder,
}

impl LstmDetector {
    /// Steps of context a score needs before the scored step.
    pub fn context(&self) -> usize {
        self.ae.steps() - 1
    }

    /// Trains on windows cut from `history` (rows of `d` scaled values, NaN = missing).
    pub fn fit(history: &[Vec<f64>], d: usize, s: &LstmSettings) -> Result<Self, String> {
        let steps = s.steps.max(2);
        if history.len() < steps + 1 {
            return Err(format!(
                "lstm: {} steps of history, need more than {steps}",
                history.len()
            ));
        }
        let starts = history.len() - steps + 1;
        let stride = starts.div_ceil(s.max_windows.max(2)).max(1);
        let mut w = Windows::new(steps, d);
        for start in (0..starts).step_by(stride) {
            w.push(
                history[start..start + steps]
                    .iter()
                    .flat_map(|r| (0..d).map(|j| r.get(j).copied().unwrap_or(f64::NAN) as f32)),
            )
            .map_err(|e| e.to_string())?;
        }
        let (ae, report) = SeqAutoencoder::train(&w, &s.model).map_err(|e| e.to_string())?;
        tracing::debug!(
            windows = report.windows,
            loss = report.last_loss,
            seconds = report.seconds,
            "lstm detector trained"
        );
        Ok(Self { ae })
    }

    /// Raw scores of `rows` (`d` values each) given the rows before them (`context`, up to
    /// [`Self::context`] rows, fewer at the start of a stream: the first row is repeated), and
    /// each metric's squared error when `errors` is given (row-major, NaN where missing).
    pub fn score(
        &self,
        context: &[f64],
        rows: &[f64],
        d: usize,
        raw: &mut Vec<f64>,
        errors: Option<&mut Vec<f64>>,
    ) {
        let steps = self.ae.steps();
        let m = rows.len() / d;
        raw.clear();
        if m == 0 {
            return;
        }
        let all: Vec<f64> = context.iter().chain(rows).copied().collect();
        let before = context.len() / d;
        let mut w = Windows::new(steps, d);
        for r in 0..m {
            let end = before + r; // index of the scored row in `all`
            let window = (0..steps).flat_map(|k| {
                let i = (end + k + 1).saturating_sub(steps);
                all[i * d..(i + 1) * d].iter().map(|v| *v as f32)
            });
            // Shapes are ours: a push cannot fail here.
            if w.push(window).is_err() {
                raw.resize(m, f64::NAN);
                return;
            }
        }
        let errs = match self.ae.last_step_errors(&w) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("lstm detector could not score: {e}");
                raw.resize(m, f64::NAN);
                return;
            }
        };
        for r in 0..m {
            let row = &errs[r * d..(r + 1) * d];
            let (sum, n) = row
                .iter()
                .filter(|v| v.is_finite())
                .fold((0.0, 0), |(s, n), v| (s + *v as f64, n + 1));
            raw.push(if n > 0 { sum / n as f64 } else { f64::NAN });
        }
        if let Some(out) = errors {
            out.clear();
            out.extend(errs.iter().map(|v| *v as f64));
        }
    }
}
