//! A horizon's booster and the settings and losses it is fitted with: what training makes
//! and forecasting reads (see [`super`]).

use perpetual::PerpetualBooster;
use perpetual::objective::Objective;
use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use super::features::Design;

/// Settings of the gradient-boosted model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GbmConfig {
    /// perpetual's complexity budgets tried (about 0.3 underfits, 2 overfits): each horizon
    /// keeps the candidate (budget, loss, units) that forecasts its held-out tail best.
    #[serde(default = "d_budgets")]
    pub budgets: Vec<f32>,
    /// Most training rows per horizon: origins are taken evenly from every series to stay
    /// under it (training time grows about linearly with it).
    #[serde(default = "d_max_rows")]
    pub max_rows: usize,
    /// Share of each series' origins, at its end, that judges the candidates (they are then
    /// refitted on every origin).
    #[serde(default = "d_holdout")]
    pub holdout: f64,
    /// Seed of the booster's sampling: the same data and seed train the same model.
    #[serde(default)]
    pub seed: u64,
}

fn d_budgets() -> Vec<f32> {
    vec![0.5, 1.0]
}
fn d_max_rows() -> usize {
    200_000
}
fn d_holdout() -> f64 {
    0.2
}

impl Default for GbmConfig {
    fn default() -> Self {
        Self {
            budgets: d_budgets(),
            max_rows: d_max_rows(),
            holdout: d_holdout(),
            seed: 0,
        }
    }
}

impl GbmConfig {
    pub fn validate(&self, at: &str) -> Result<()> {
        if self.budgets.is_empty()
            || self.budgets.iter().any(|b| !(b.is_finite() && *b > 0.0))
            || self.max_rows < 100
            || !(self.holdout > 0.0 && self.holdout < 0.9)
        {
            return Err(Error::config(
                at,
                "budgets must be positive numbers (at least one), max_rows at least 100 and holdout in (0, 0.9)",
            ));
        }
        Ok(())
    }
}

/// The loss a booster is fitted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// L1: the median change (the figure forecasts are judged by).
    Absolute,
    /// L2: the mean change.
    Squared,
    /// Huber at one unit: L2 near the point, L1 beyond.
    Huber,
}

impl Loss {
    pub(super) const ALL: [Loss; 3] = [Loss::Absolute, Loss::Squared, Loss::Huber];

    pub(super) fn objective(self) -> Objective {
        match self {
            Loss::Absolute => Objective::AbsoluteLoss,
            Loss::Squared => Objective::SquaredLoss,
            Loss::Huber => Objective::HuberLoss { delta: Some(1.0) },
        }
    }
}

/// One horizon's booster and how its rows are made.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Head {
    /// Steps ahead.
    pub(super) h: usize,
    /// The mean |change| of the training targets: every change is counted in this unit
    /// (perpetual's L1 takes a unit hessian, so its leaves move in steps of about its
    /// learning rate: changes of a few hundredths would be overshot tenfold).
    pub(super) scale: f64,
    /// Counted also in the row's own 4 h spread ([`Design::of`]).
    pub(super) relative: bool,
    pub(super) loss: Loss,
    pub(super) budget: f32,
    /// Mean absolute error on the held-out tail (raw units), and persistence's there.
    pub(super) holdout_mae: f64,
    pub(super) persistence_mae: f64,
    pub(super) booster: PerpetualBooster,
}

impl Head {
    /// The point forecasts at origins `at` (each `(series, origin)`; their origins' values
    /// are finite).
    pub(super) fn predict<'a>(
        &self,
        at: impl ExactSizeIterator<Item = (&'a [f64], usize)> + Clone,
        season: usize,
    ) -> Vec<f64> {
        if at.len() == 0 {
            return Vec::new();
        }
        let design = Design::of(at.clone(), self.h, season, self.scale, self.relative);
        let change = self.booster.predict(&design.matrix(), false);
        at.zip(change)
            .zip(&design.units)
            .map(|(((y, o), d), u)| y[o] + d * u)
            .collect()
    }
}
