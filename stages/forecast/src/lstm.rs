//! The `lstm` model: what the global quantile LSTM of `wfe-neural` reads and how its output
//! becomes forecasts, and its training from histories.
//!
//! A forecast from origin `o` of a gap-free series `y` reads the window of the latest `steps`
//! values, each as (value - last) / scale and as the value itself, with `scale` the window's
//! standard deviation (at least [`MIN_SCALE`]), so one model serves series of any level and
//! volatility. Its context is, per horizon, the value one season before the target (as the
//! same scaled difference; 0 with a flag when the history is shorter than a season), the
//! last season's mean, and the scale's logarithm. It predicts (y[o + h] - last) / scale at each
//! level, and the forecast is last + scale x that.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_neural::{ForecasterConfig, ForecasterShape, QuantileForecaster, TrainReport, Windows};

/// Smallest scale a window is divided by: flat windows would otherwise blow small moves up.
pub const MIN_SCALE: f64 = 0.005;

/// The configured levels, the median and the bounds of the 80 % and 95 % intervals: what a
/// trained model forecasts (so it serves any of them) and what an evaluation scores.
pub fn served_levels(configured: &[f64]) -> Vec<f64> {
    let mut l: Vec<f64> = configured
        .iter()
        .copied()
        .chain([0.025, 0.1, 0.5, 0.9, 0.975])
        .collect();
    l.sort_by(f64::total_cmp);
    l.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    l
}

/// Settings of the LSTM model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LstmConfig {
    /// Steps of history in a window.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Training windows drawn from each series' history.
    #[serde(default = "d_per_series")]
    pub windows_per_series: usize,
    /// Most training windows in all.
    #[serde(default = "d_max_windows")]
    pub max_windows: usize,
    /// The network and its training.
    #[serde(default)]
    pub model: ForecasterConfig,
}

fn d_steps() -> usize {
    48
}
fn d_per_series() -> usize {
    96
}
fn d_max_windows() -> usize {
    32_768
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            steps: d_steps(),
            windows_per_series: d_per_series(),
            max_windows: d_max_windows(),
            model: ForecasterConfig::default(),
        }
    }
}

/// How windows are cut: the model's steps, the season and the horizons, in steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    pub steps: usize,
    pub season: usize,
    pub horizons: Vec<usize>,
}

impl Cut {
    pub fn shape(&self, levels: &[f64]) -> ForecasterShape {
        ForecasterShape {
            steps: self.steps,
            features: 2,
            context: self.horizons.len() + 3,
            horizons: self.horizons.len(),
            levels: levels.to_vec(),
        }
    }

    /// Appends the window of `y` ending at `o` and its context; returns (last, scale), or
    /// None when the history is shorter than a window.
    pub fn push(
        &self,
        y: &[f64],
        o: usize,
        w: &mut Windows,
        ctx: &mut Vec<f32>,
    ) -> Option<(f64, f64)> {
        if o + 1 < self.steps || o >= y.len() {
            return None;
        }
        let win = &y[o + 1 - self.steps..=o];
        let last = y[o];
        let mean = win.iter().sum::<f64>() / win.len() as f64;
        let var = win.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / win.len() as f64;
        let scale = var.sqrt().max(MIN_SCALE);
        w.push(
            win.iter()
                .flat_map(|&v| [((v - last) / scale) as f32, v as f32]),
        )
        .ok()?;
        let season = self.season.max(1);
        let have_season = o + 1 >= season;
        for &h in &self.horizons {
            let k = h.max(1).div_ceil(season);
            let back = o + h;
            let v = back
                .checked_sub(k * season)
                .map(|i| ((y[i] - last) / scale) as f32)
                .unwrap_or(0.0);
            ctx.push(v);
        }
        let day = &y[(o + 1).saturating_sub(season)..=o];
        let day_mean = day.iter().sum::<f64>() / day.len() as f64;
        ctx.push(((day_mean - last) / scale) as f32);
        ctx.push(f32::from(have_season as u8));
        ctx.push(scale.ln() as f32);
        Some((last, scale))
    }

    /// Training windows from gap-free train histories: up to `per_series` origins per series,
    /// spread evenly with a seeded jitter, each with targets at every horizon.
    pub fn training_set(
        &self,
        series: &[Vec<f64>],
        per_series: usize,
        max_windows: usize,
    ) -> (Windows, Vec<f32>, Vec<f32>) {
        let longest = self.horizons.iter().copied().max().unwrap_or(1);
        let per = per_series.min(max_windows / series.len().max(1)).max(1);
        let mut w = Windows::new(self.steps, 2);
        let (mut ctx, mut targets) = (Vec::new(), Vec::new());
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for y in series {
            let Some(span) = y.len().checked_sub(self.steps + longest) else {
                continue;
            };
            if span == 0 {
                continue;
            }
            for k in 0..per {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let jitter = (seed >> 33) as usize % (span / per).max(1);
                let o = self.steps - 1 + (k * span / per + jitter).min(span - 1);
                if let Some((last, scale)) = self.push(y, o, &mut w, &mut ctx) {
                    targets.extend(
                        self.horizons
                            .iter()
                            .map(|&h| ((y[o + h] - last) / scale) as f32),
                    );
                }
            }
        }
        (w, ctx, targets)
    }
}

/// A trained LSTM model and how its windows are cut.
#[derive(Debug)]
pub struct LstmModel {
    pub net: QuantileForecaster,
    pub cut: Cut,
}

impl LstmModel {
    /// Trains the global model on gap-free histories.
    pub fn train(
        series: &[Vec<f64>],
        cut: Cut,
        levels: &[f64],
        cfg: &LstmConfig,
    ) -> Result<(Self, TrainReport)> {
        let (w, ctx, targets) = cut.training_set(series, cfg.windows_per_series, cfg.max_windows);
        if w.n < 2 {
            return Err(Error::bad_input(
                "lstm training",
                format!(
                    "the histories give {} windows: each series needs more than {} steps",
                    w.n,
                    cut.steps + cut.horizons.iter().max().copied().unwrap_or(1)
                ),
            ));
        }
        let shape = cut.shape(levels);
        let (net, report) = QuantileForecaster::train(&w, &ctx, &targets, shape, &cfg.model)?;
        Ok((Self { net, cut }, report))
    }

    /// Quantile forecasts `[origin][horizon][level]` of `y` (gap-free) from each origin; None
    /// for an origin whose history is shorter than a window.
    pub fn forecast(&self, y: &[f64], origins: &[usize]) -> Result<Vec<Option<Vec<Vec<f64>>>>> {
        let mut w = Windows::new(self.cut.steps, 2);
        let mut ctx = Vec::new();
        let mut at = Vec::with_capacity(origins.len());
        for &o in origins {
            at.push(self.cut.push(y, o, &mut w, &mut ctx));
        }
        let levels = self.net.shape().levels.len();
        let h = self.cut.horizons.len();
        let out = if w.n > 0 {
            self.net.predict(&w, &ctx, 0, wfe_neural::Precision::Fp32)?
        } else {
            Vec::new()
        };
        let mut k = 0;
        Ok(at
            .into_iter()
            .map(|a| {
                a.map(|(last, scale)| {
                    let block = &out[k * h * levels..(k + 1) * h * levels];
                    k += 1;
                    block
                        .chunks(levels)
                        .map(|q| q.iter().map(|&v| last + scale * v as f64).collect())
                        .collect()
                })
            })
            .collect())
    }
}

/// Trains on each series but its latest tenth (at least four longest horizons), then scores
/// the model's median and persistence on origins in those held-out tails. Returns the model,
/// its training report, and the validation MAE per horizon of the model and of persistence.
pub fn train_validated(
    series: &[Vec<f64>],
    cut: Cut,
    levels: &[f64],
    cfg: &LstmConfig,
) -> Result<(LstmModel, TrainReport, Vec<f64>, Vec<f64>)> {
    let longest = cut.horizons.iter().copied().max().unwrap_or(1);
    let hold = |n: usize| (n / 10).max(4 * longest);
    let heads: Vec<Vec<f64>> = series
        .iter()
        .map(|y| y[..y.len().saturating_sub(hold(y.len()))].to_vec())
        .collect();
    let (model, report) = LstmModel::train(&heads, cut, levels, cfg)?;
    let median = levels
        .iter()
        .position(|l| (l - 0.5).abs() < 1e-9)
        .unwrap_or(levels.len() / 2);
    let h = model.cut.horizons.clone();
    let (mut err, mut persist, mut n) =
        (vec![0.0; h.len()], vec![0.0; h.len()], vec![0.0; h.len()]);
    for y in series {
        let start = y.len().saturating_sub(hold(y.len()));
        let Some(span) = y.len().saturating_sub(1).checked_sub(start + longest) else {
            continue;
        };
        let origins: Vec<usize> = (0..16).map(|k| start + k * span / 16).collect();
        for (&o, q) in origins.iter().zip(model.forecast(y, &origins)?) {
            let Some(q) = q else { continue };
            for (hi, &hz) in h.iter().enumerate() {
                err[hi] += (y[o + hz] - q[hi][median]).abs();
                persist[hi] += (y[o + hz] - y[o]).abs();
                n[hi] += 1.0;
            }
        }
    }
    let mean = |v: Vec<f64>| {
        v.iter()
            .zip(&n)
            .map(|(s, c)| if *c > 0.0 { s / c } else { f64::NAN })
            .collect()
    };
    Ok((model, report, mean(err), mean(persist)))
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;

    #[test]
    fn lstm_learns_a_daily_pattern_and_brackets_it() {
        let season = 24;
        let series: Vec<Vec<f64>> = (0..6)
            .map(|s| {
                (0..season * 20)
                    .map(|i| {
                        let ph = ((i + s * 5) % season) as f64 / season as f64;
                        let noise = (((i * 7919 + s * 104729) % 101) as f64 / 101.0 - 0.5) * 0.04;
                        0.5 + 0.3 * (std::f64::consts::TAU * ph).sin() + noise
                    })
                    .collect()
            })
            .collect();
        let cut = Cut {
            steps: 16,
            season,
            horizons: vec![1, 6],
        };
        let cfg = LstmConfig {
            windows_per_series: 200,
            model: ForecasterConfig {
                epochs: 12,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        let (model, report) = LstmModel::train(&series, cut, &[0.1, 0.5, 0.9], &cfg).unwrap();
        assert!(report.last_loss < report.first_loss, "{report:?}");
        let y = &series[0];
        let origins: Vec<usize> = (season * 18..season * 20 - 7).collect();
        let f = model.forecast(y, &origins).unwrap();
        let (mut err, mut persist, mut inside) = (0.0, 0.0, 0.0);
        for (o, q) in origins.iter().zip(&f) {
            let q = q.as_ref().unwrap();
            let actual = y[o + 6];
            err += (q[1][1] - actual).abs();
            persist += (y[*o] - actual).abs();
            inside += f64::from(q[1][0] <= actual && actual <= q[1][2]);
        }
        let n = origins.len() as f64;
        assert!(err < 0.5 * persist, "lstm {err} vs persistence {persist}");
        assert!(inside / n > 0.5, "80% band covered {}", inside / n);
        // A window longer than the history is not a forecast, not a panic.
        assert!(model.forecast(&y[..5], &[4]).unwrap()[0].is_none());
    }

    #[test]
    fn empty_and_short_histories_are_skipped_not_a_panic() {
        let long: Vec<f64> = (0..800)
            .map(|i| 0.4 + 0.1 * (i as f64 / 30.0).sin())
            .collect();
        let series = vec![Vec::new(), vec![0.5; 3], long];
        let cut = Cut {
            steps: 16,
            season: 96,
            horizons: vec![1, 4],
        };
        let cfg = LstmConfig {
            model: ForecasterConfig {
                epochs: 1,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        let (_, report, valid, persist) =
            train_validated(&series, cut.clone(), &[0.1, 0.5, 0.9], &cfg).unwrap();
        assert!(report.windows > 0 && valid.iter().chain(&persist).all(|v| v.is_finite()));
        // Nothing long enough at all: a clear error.
        let err = LstmModel::train(&series[..2], cut, &[0.5], &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("each series needs more than"), "{err}");
    }
}
