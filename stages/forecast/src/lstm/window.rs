//! What the model reads at an origin: the series fingerprint ([`fingerprint`], standardised
//! by [`FingerprintCut`]) and the window, context and targets ([`Cut`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wfe_domain::features::{FEATURES, FeatureWeights, window_features};
use wfe_neural::{ForecasterShape, Windows};

use super::config::FingerprintConfig;

/// Smallest scale a window is divided by: flat windows would otherwise blow small moves up.
pub const MIN_SCALE: f64 = 0.005;

/// Features of a series' fingerprint: the window features but the cross-metric correlation
/// (a series has one metric).
pub const FINGERPRINT_LEN: usize = FEATURES.len() - 1;

/// A standardised fingerprint feature is clipped to this many standard deviations, so that
/// one odd series cannot swamp the context.
pub(crate) const FP_CLIP: f64 = 5.0;

/// The fingerprint of `y` at origin `o`: the mean, over up to `windows` whole windows of
/// `window` steps ending at `o`, of each window's features (level, spread, q10, q50, q90,
/// trend, lag-1 autocorrelation, period; unweighted). None while the history is shorter
/// than one window.
pub fn fingerprint(
    y: &[f64],
    o: usize,
    window: usize,
    windows: usize,
) -> Option<[f64; FINGERPRINT_LEN]> {
    if window < 2 || o >= y.len() || o + 1 < window {
        return None;
    }
    let have = ((o + 1) / window).min(windows.max(1));
    let weights = FeatureWeights {
        level: 1.0,
        spread: 1.0,
        quantiles: 1.0,
        trend: 1.0,
        autocorrelation: 1.0,
        period: 1.0,
        correlation: 1.0,
    };
    let mut acc = [0.0; FINGERPRINT_LEN];
    for k in 0..have {
        let end = o + 1 - k * window;
        let rows: Vec<&[f64]> = y[end - window..end]
            .iter()
            .map(std::slice::from_ref)
            .collect();
        let f = window_features(&rows, 1, &[], &weights, &BTreeMap::new());
        for (a, v) in acc.iter_mut().zip(&f) {
            *a += v / have as f64;
        }
    }
    Some(acc)
}

/// How a model reads fingerprints: the windows, whether they are context, and the training
/// set's standardisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintCut {
    pub window: usize,
    pub windows: usize,
    /// Whether the model's context holds the fingerprint.
    pub context: bool,
    /// Per feature: the training fingerprints' mean and standard deviation.
    pub centre: Vec<f64>,
    pub spread: Vec<f64>,
}

impl FingerprintCut {
    /// Standardisation from the fingerprints at up to 64 origins spread over each series.
    pub(crate) fn fit(series: &[Vec<f64>], cfg: &FingerprintConfig, season: usize) -> Self {
        let windows = match cfg.windows {
            0 => (season / cfg.window).max(1),
            n => n,
        };
        let mut all: Vec<[f64; FINGERPRINT_LEN]> = Vec::new();
        for y in series {
            let n = y.len();
            for k in 1..=64usize {
                let o = (k * n / 64).saturating_sub(1);
                if let Some(f) = fingerprint(y, o, cfg.window, windows) {
                    all.push(f);
                }
            }
        }
        let count = all.len().max(1) as f64;
        let centre: Vec<f64> = (0..FINGERPRINT_LEN)
            .map(|j| all.iter().map(|f| f[j]).sum::<f64>() / count)
            .collect();
        let spread = (0..FINGERPRINT_LEN)
            .map(|j| {
                let v = all.iter().map(|f| (f[j] - centre[j]).powi(2)).sum::<f64>() / count;
                v.sqrt().max(1e-6)
            })
            .collect();
        Self {
            window: cfg.window,
            windows,
            context: cfg.context,
            centre,
            spread,
        }
    }

    /// The standardised fingerprint of `y` at `o`, None while the history is shorter than a
    /// window.
    pub fn at(&self, y: &[f64], o: usize) -> Option<Vec<f64>> {
        let f = fingerprint(y, o, self.window, self.windows)?;
        Some(
            f.iter()
                .zip(self.centre.iter().zip(&self.spread))
                .map(|(v, (c, s))| ((v - c) / s).clamp(-FP_CLIP, FP_CLIP))
                .collect(),
        )
    }

    /// The series' fingerprint over its whole history: the mean of its fingerprints at
    /// origins a profile's length apart (what training sorts series by).
    pub(crate) fn profile(&self, y: &[f64]) -> Option<Vec<f64>> {
        let span = self.window * self.windows;
        let mut acc = [0.0; FINGERPRINT_LEN];
        let mut n = 0.0;
        let mut o = y.len().checked_sub(1)?;
        while let Some(f) = self.at(y, o) {
            acc.iter_mut().zip(&f).for_each(|(a, v)| *a += v);
            n += 1.0;
            match o.checked_sub(span) {
                Some(next) => o = next,
                None => break,
            }
        }
        (n > 0.0).then(|| acc.iter().map(|a| a / n).collect())
    }
}

/// How windows are cut: the model's steps, the season and the horizons, in steps, and how the
/// series' fingerprint is read (set by training from [`FingerprintConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    pub steps: usize,
    pub season: usize,
    pub horizons: Vec<usize>,
    /// Absent in models trained without fingerprints (and in those of earlier versions).
    #[serde(default)]
    pub fingerprint: Option<FingerprintCut>,
}

impl Cut {
    /// A cut without fingerprints: training adds them as configured.
    pub fn new(steps: usize, season: usize, horizons: Vec<usize>) -> Self {
        Self {
            steps,
            season,
            horizons,
            fingerprint: None,
        }
    }

    fn fingerprint_context(&self) -> bool {
        self.fingerprint.as_ref().is_some_and(|f| f.context)
    }

    pub fn shape(&self, levels: &[f64]) -> ForecasterShape {
        let fp = if self.fingerprint_context() {
            FINGERPRINT_LEN + 1
        } else {
            0
        };
        ForecasterShape {
            steps: self.steps,
            features: 2,
            context: self.horizons.len() + 3 + fp,
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
        if let Some(fp) = self.fingerprint.as_ref().filter(|f| f.context) {
            match fp.at(y, o) {
                Some(f) => {
                    ctx.extend(f.iter().map(|&v| v as f32));
                    ctx.push(1.0);
                }
                None => ctx.extend(std::iter::repeat_n(0.0, FINGERPRINT_LEN + 1)),
            }
        }
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
        let mut rng = wfe_domain::stats::SplitMix(0x9e37_79b9_7f4a_7c15);
        for y in series {
            let Some(span) = y.len().checked_sub(self.steps + longest) else {
                continue;
            };
            if span == 0 {
                continue;
            }
            for k in 0..per {
                let jitter = rng.below((span / per).max(1));
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
