//! Statistical features of one window of a workload's scaled metrics: what fingerprints are made of.
//!
//! Shared by the fingerprint stage (which reduces them by PCA) and the forecast stage's LSTM
//! (which reads a series' features as its fingerprint, free of any PCA basis).
//!
//! Per metric, in groups that each carry a weight ([`FeatureWeights`]):
//! - **level**: mean; **spread**: standard deviation; **quantiles**: 10th, 50th, 90th;
//! - **trend**: least-squares slope times the window length (change across the window);
//! - **autocorrelation**: at lag 1 (smooth versus noisy);
//! - **period**: the lag of the highest autocorrelation between 2 and half the window, as a
//!   share of the window (0 when nothing repeats);
//! - **correlation**: mean absolute correlation with the workload's other metrics.
//!
//! The vector is PCA-reduced afterwards, and PCA follows variance: the weights decide how much
//! each group can move a fingerprint. Level, spread and quantiles are in the scaled metric
//! units; the shape features (trend, autocorrelation, period, correlation) span up to ±1 for
//! any metric, so their default weight is 0.1 to keep them from drowning the levels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::quantiles_select;

/// Weight of each feature group.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureWeights {
    /// Mean.
    pub level: f64,
    /// Standard deviation.
    pub spread: f64,
    /// 10th, 50th and 90th percentiles.
    pub quantiles: f64,
    /// Slope across the window.
    pub trend: f64,
    /// Lag-1 autocorrelation.
    pub autocorrelation: f64,
    /// Dominant period as a share of the window.
    pub period: f64,
    /// Mean absolute correlation with the other metrics.
    pub correlation: f64,
}

impl Default for FeatureWeights {
    fn default() -> Self {
        Self {
            level: 1.0,
            spread: 1.0,
            quantiles: 1.0,
            trend: 0.1,
            autocorrelation: 0.1,
            period: 0.1,
            correlation: 0.1,
        }
    }
}

/// Features per metric, in vector order.
pub const FEATURES: [&str; 9] = [
    "level",
    "spread",
    "q10",
    "q50",
    "q90",
    "trend",
    "autocorrelation",
    "period",
    "correlation",
];

impl FeatureWeights {
    fn per_feature(&self) -> [f64; 9] {
        [
            self.level,
            self.spread,
            self.quantiles,
            self.quantiles,
            self.quantiles,
            self.trend,
            self.autocorrelation,
            self.period,
            self.correlation,
        ]
    }

    pub fn validate(&self) -> Result<(), String> {
        match self
            .per_feature()
            .iter()
            .find(|w| !(w.is_finite() && **w >= 0.0))
        {
            Some(w) => Err(format!("{w} is not a finite weight >= 0")),
            None => Ok(()),
        }
    }
}

/// Autocorrelation of centred values at `lag` (0 when the series is flat).
fn autocorr(c: &[f64], var_sum: f64, lag: usize) -> f64 {
    if var_sum <= 1e-12 || lag >= c.len() {
        return 0.0;
    }
    c[lag..].iter().zip(c).map(|(a, b)| a * b).sum::<f64>() / var_sum
}

/// The feature vector of a window: `rows` are steps of scaled values by slot (NaN = missing,
/// imputed with the metric's window mean), `names` the slots' metric names for
/// `metric_weights`. Length: `width * FEATURES.len()`.
pub fn window_features(
    rows: &[&[f64]],
    width: usize,
    names: &[String],
    weights: &FeatureWeights,
    metric_weights: &BTreeMap<String, f64>,
) -> Vec<f64> {
    let n = rows.len();
    let fw = weights.per_feature();
    // Centred columns, missing values imputed with the column mean.
    let mut centred: Vec<Vec<f64>> = Vec::with_capacity(width);
    let mut out = Vec::with_capacity(width * FEATURES.len());
    let mut feats = Vec::with_capacity(width);
    for j in 0..width {
        let col: Vec<f64> = rows
            .iter()
            .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
            .collect();
        let finite: Vec<f64> = col.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            centred.push(vec![0.0; n]);
            feats.push([0.0; 9]);
            continue;
        }
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let c: Vec<f64> = col
            .iter()
            .map(|v| if v.is_finite() { v - mean } else { 0.0 })
            .collect();
        let var_sum: f64 = c.iter().map(|v| v * v).sum();
        let std = (var_sum / n.max(1) as f64).sqrt();
        // The quantiles by selection: the same order statistics as a sort, interpolated the
        // same way.
        let mut finite = finite;
        let q = quantiles_select(&mut finite, &[0.1, 0.5, 0.9]);
        let tm = (n as f64 - 1.0) / 2.0;
        let tt: f64 = (0..n).map(|t| (t as f64 - tm).powi(2)).sum();
        let slope = if tt > 0.0 {
            c.iter()
                .enumerate()
                .map(|(t, v)| (t as f64 - tm) * v)
                .sum::<f64>()
                / tt
        } else {
            0.0
        };
        let ac1 = autocorr(&c, var_sum, 1);
        let (mut best, mut period) = (0.2, 0.0);
        for lag in 2..=n / 2 {
            let a = autocorr(&c, var_sum, lag);
            if a > best {
                best = a;
                period = lag as f64 / n as f64;
            }
        }
        feats.push([
            mean,
            std,
            q[0],
            q[1],
            q[2],
            slope * n as f64,
            ac1,
            period,
            0.0,
        ]);
        centred.push(c);
    }
    // Mean absolute correlation with the other metrics (flat metrics correlate with none).
    let norms: Vec<f64> = centred
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    if width > 1 {
        // Each pair's |correlation| once (a product and its swap are the same bits), summed
        // per metric in the order of the other metrics.
        let flat = |j: usize| norms[j] <= 1e-12;
        let mut corr = vec![0.0; width * width];
        for a in (0..width).filter(|&a| !flat(a)) {
            for b in (a + 1..width).filter(|&b| !flat(b)) {
                let dot: f64 = centred[a].iter().zip(&centred[b]).map(|(x, y)| x * y).sum();
                let r = (dot / (norms[a] * norms[b])).abs();
                corr[a * width + b] = r;
                corr[b * width + a] = r;
            }
        }
        for a in (0..width).filter(|&a| !flat(a)) {
            let mut s = 0.0;
            for b in (0..width).filter(|&b| b != a && !flat(b)) {
                s += corr[a * width + b];
            }
            feats[a][8] = s / (width - 1) as f64;
        }
    }
    for (j, f) in feats.iter().enumerate() {
        let mw = names
            .get(j)
            .and_then(|n| metric_weights.get(n))
            .copied()
            .unwrap_or(1.0);
        out.extend(f.iter().zip(fw).map(|(v, w)| v * w * mw));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_of_known_series() {
        // Metric 0: a sine of period 10 over 40 steps; metric 1: a ramp 0..1; metric 2: flat
        // with a missing value.
        let rows: Vec<Vec<f64>> = (0..40)
            .map(|t| {
                let x = t as f64;
                vec![
                    0.5 + 0.5 * (2.0 * std::f64::consts::PI * x / 10.0).sin(),
                    x / 39.0,
                    if t == 3 { f64::NAN } else { 0.25 },
                ]
            })
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(|r| r.as_slice()).collect();
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let w = FeatureWeights {
            trend: 1.0,
            autocorrelation: 1.0,
            period: 1.0,
            correlation: 1.0,
            ..Default::default()
        };
        let f = window_features(&refs, 3, &names, &w, &BTreeMap::new());
        assert_eq!(f.len(), 27);
        let (sine, ramp, flat) = (&f[0..9], &f[9..18], &f[18..27]);
        assert!((sine[0] - 0.5).abs() < 1e-9, "level {}", sine[0]);
        assert!(
            (sine[7] - 0.25).abs() < 1e-9,
            "period 10 of 40 steps: {}",
            sine[7]
        );
        assert!((ramp[5] - 40.0 / 39.0).abs() < 1e-9, "trend {}", ramp[5]);
        assert!(ramp[6] > 0.9, "a ramp is smooth: {}", ramp[6]);
        assert_eq!(flat[..2], [0.25, 0.0]);
        assert!(flat.iter().all(|v| v.is_finite()));
        assert_eq!(flat[8], 0.0, "a flat metric correlates with nothing");
        // Weights scale their groups; a metric weight scales all of its features.
        let mut mw = BTreeMap::new();
        mw.insert("a".to_string(), 2.0);
        let g = window_features(&refs, 3, &names, &w, &mw);
        assert!((g[0] - 2.0 * f[0]).abs() < 1e-12 && g[9] == f[9]);
        // One step, or no metrics: defined, finite output.
        let one = window_features(&refs[..1], 3, &names, &w, &BTreeMap::new());
        assert!(one.iter().all(|v| v.is_finite()));
        assert!(window_features(&refs, 0, &names, &w, &BTreeMap::new()).is_empty());
    }
}
