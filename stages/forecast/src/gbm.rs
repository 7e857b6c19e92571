//! The global gradient-boosted model (`gbm`): one booster per horizon, trained on the windows
//! of every series of one data step, that predicts the change from the origin's value (the
//! direct strategy: no forecast feeds another).
//!
//! What a booster sees at an origin `o` for a target `h` steps ahead, every value relative to
//! the origin's value `v0` so that one model serves series of any level ([`features`]):
//! - `v0` itself (a series near its floor or ceiling moves differently);
//! - recent lags `y[o - i] - v0`;
//! - rolling mean (minus `v0`) and spread over a short window, `h` and `4 h`;
//! - the values one season before the target's phase: `y[o + h - season] - v0`, its
//!   neighbourhood's mean, and the change the series made over the same span a season ago
//!   (`y[o + h - season] - y[o - season]`), and the same two seasons back.
//!
//! Changes are counted in a unit (the mean |change| of the training targets, and optionally
//! the row's own spread), the loss is L1, L2 or Huber and the budget one of `budgets`: per
//! horizon the candidate that forecasts the end of the training series best is kept
//! ([`fit`]). Quantiles come as for every other point model, from its own past errors (split
//! conformal, in the stage and the eval). Missing values stay NaN: the booster learns where
//! they go.
//!
//! The booster is perpetual's (pure Rust, no learning rate or tree count to tune: one
//! `budget`), see ARCHITECTURE.md.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

mod features;
mod fit;
mod head;
pub use features::min_history;
use head::Head;
pub use head::{GbmConfig, Loss};

/// One booster per horizon, for series of one data step.
#[derive(Clone, Serialize, Deserialize)]
pub struct GbmModel {
    /// Season in steps.
    pub season: usize,
    heads: Vec<Head>,
}

impl std::fmt::Debug for GbmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbmModel")
            .field("horizons", &self.horizons())
            .field("season", &self.season)
            .field("trees", &self.trees())
            .finish()
    }
}

/// What training did, per horizon.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GbmReport {
    pub rows: Vec<usize>,
    pub trees: Vec<usize>,
    /// The candidate each horizon kept: `loss budget units`.
    pub chosen: Vec<String>,
    /// Held-out MAE per horizon, the kept candidate's and persistence's.
    pub holdout_mae: Vec<f64>,
    pub persistence_mae: Vec<f64>,
    pub seconds: f64,
}

impl GbmModel {
    /// Trains one booster per horizon (steps) on `series` (NaN = missing; each oldest
    /// first): per horizon, every candidate (budget x loss x units) is fitted on the first
    /// part of each series' origins and judged on the rest, and the best is refitted on all.
    pub fn train(
        series: &[Vec<f64>],
        horizons: &[usize],
        season: usize,
        cfg: &GbmConfig,
    ) -> Result<(GbmModel, GbmReport)> {
        cfg.validate("gbm")?;
        let started = std::time::Instant::now();
        let mut report = GbmReport::default();
        let mut heads = Vec::with_capacity(horizons.len());
        for &h in horizons {
            let head = fit::head(series, h, season, cfg)?;
            report.rows.push(head.1);
            report
                .trees
                .push(head.0.booster.get_prediction_trees().len());
            report.chosen.push(format!(
                "{:?} {} {}",
                head.0.loss,
                head.0.budget,
                if head.0.relative { "relative" } else { "fixed" }
            ));
            report.holdout_mae.push(head.0.holdout_mae);
            report.persistence_mae.push(head.0.persistence_mae);
            heads.push(head.0);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok((GbmModel { season, heads }, report))
    }

    /// Horizons in steps, one booster each.
    pub fn horizons(&self) -> Vec<usize> {
        self.heads.iter().map(|b| b.h).collect()
    }

    /// Trees per horizon.
    pub fn trees(&self) -> Vec<usize> {
        self.heads
            .iter()
            .map(|b| b.booster.get_prediction_trees().len())
            .collect()
    }

    /// Point forecasts at `origins` of `y`, per origin one value per horizon; None where the
    /// origin has too little history or its value is missing.
    pub fn forecast_at(&self, y: &[f64], origins: &[usize]) -> Vec<Option<Vec<f64>>> {
        let mut out: Vec<Option<Vec<f64>>> = origins
            .iter()
            .map(|&o| (o < y.len() && y[o].is_finite()).then(Vec::new))
            .collect();
        for head in &self.heads {
            let ok: Vec<usize> = (0..origins.len())
                .filter(|&k| out[k].is_some() && origins[k] + 1 >= min_history(head.h))
                .collect();
            let points = head.predict(ok.iter().map(|&k| (y, origins[k])), self.season);
            let mut done = vec![false; origins.len()];
            for (&k, p) in ok.iter().zip(points) {
                if let Some(v) = out[k].as_mut() {
                    v.push(p);
                    done[k] = true;
                }
            }
            for (k, slot) in out.iter_mut().enumerate() {
                if !done[k] {
                    *slot = None;
                }
            }
        }
        out
    }

    /// Point forecasts from the end of `history` (oldest first), one per horizon.
    pub fn forecast(&self, history: &[f64]) -> Option<Vec<f64>> {
        let o = history.len().checked_sub(1)?;
        self.forecast_at(history, &[o]).pop().flatten()
    }

    /// The model as bytes (JSON: perpetual's own form of its trees).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::config("gbm", e.to_string()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<GbmModel> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::config("gbm model", format!("unreadable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daily pattern (season 48) with uniform noise from the one seeded generator.
    fn seasonal(len: usize, phase: usize, seed: u64) -> Vec<f64> {
        let mut rng = wfe_domain::stats::SplitMix(seed);
        (0..len)
            .map(|t| {
                let x = ((t + phase) % 48) as f64 / 48.0 * std::f64::consts::TAU;
                0.5 + 0.3 * x.sin() + 0.04 * (rng.unit() - 0.5)
            })
            .collect()
    }

    /// One budget: six candidates per horizon, enough to test and quicker.
    fn one_budget() -> GbmConfig {
        GbmConfig {
            budgets: vec![0.5],
            ..GbmConfig::default()
        }
    }

    #[test]
    fn learns_a_season_persistence_cannot_see() {
        let series: Vec<Vec<f64>> = (0..6).map(|i| seasonal(600, i * 7, i as u64)).collect();
        let (model, report) = GbmModel::train(&series, &[12], 48, &one_budget()).unwrap();
        assert!(report.trees[0] > 1, "{report:?}");
        assert!(
            report.holdout_mae[0] < report.persistence_mae[0],
            "{report:?}"
        );
        let test = seasonal(400, 5, 99);
        let origins: Vec<usize> = (100..380).collect();
        let got = model.forecast_at(&test, &origins);
        let (mut gbm, mut persistence) = (0.0, 0.0);
        for (&o, f) in origins.iter().zip(&got) {
            let f = f.as_ref().expect("history is long enough");
            gbm += (test[o + 12] - f[0]).abs();
            persistence += (test[o + 12] - test[o]).abs();
        }
        assert!(
            gbm < 0.5 * persistence,
            "gbm {gbm:.3} against persistence {persistence:.3}"
        );
        // Saved and read back, the same forecasts.
        let back = GbmModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
        assert_eq!(back.forecast_at(&test, &origins), got);
    }

    #[test]
    fn short_history_and_missing_origins_fall_back() {
        let series: Vec<Vec<f64>> = (0..3).map(|i| seasonal(400, i, i as u64)).collect();
        let (model, _) = GbmModel::train(&series, &[2, 12], 48, &one_budget()).unwrap();
        let mut y = seasonal(200, 0, 7);
        y[150] = f64::NAN;
        let got = model.forecast_at(&y, &[10, 150, 160]);
        assert_eq!(got[0], None, "fewer steps than the longest window");
        assert_eq!(got[1], None, "the origin's value is missing");
        assert!(got[2].as_ref().is_some_and(|v| v.len() == 2));
        let err = GbmModel::train(&[vec![0.5; 30]], &[2], 48, &GbmConfig::default());
        assert!(err.unwrap_err().to_string().contains("held-out rows"));
    }
}
