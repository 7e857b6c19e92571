//! The statistical models: each turns one univariate history (oldest first, NaN = missing)
//! into point forecasts at several horizons, counted in steps after the last value.
//!
//! - **persistence**: the last observed value (the baseline every model must beat);
//! - **seasonal naive**: the value at the same phase one season earlier (the other baseline);
//! - **ETS**: exponential smoothing (augurs' AutoETS search, [`crate::ets`]: additive error,
//!   no/additive/damped trend chosen by AICc every `ets_search_every` fits) fitted on the
//!   latest `ets_window` steps;
//! - **MSTL**: the latest `mstl_seasons` seasons split by MSTL (augurs) into a daily pattern
//!   and the rest; the rest is forecast by the same ETS on its latest `ets_window` steps and the
//!   pattern is added back at each target's phase.
//!
//! Models are refitted at every forecast from the history they are given: augurs exposes no
//! state update with fixed parameters, and fitting on a bounded window keeps that cheap
//! (`wfe bench --forecast` measures it). A model that cannot run on a history says why, and
//! the caller falls back to a simpler one and puts the reason in the row.

use std::cell::Cell;

use augurs_core::{Fit, Forecast as AugursForecast, Predict};
use augurs_mstl::MSTLModel;
use serde::{Deserialize, Serialize};

pub use crate::ets::EtsMemo;
use crate::ets::{self, TailEts};

/// Every model of the stage.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Model {
    Persistence,
    SeasonalNaive,
    Ets,
    Mstl,
    /// The quantile LSTM of `wfe-neural` (trained by `wfe train`).
    Lstm,
    /// The global gradient-boosted model ([`crate::gbm`], trained by `wfe train`).
    Gbm,
}

impl Model {
    pub const STATISTICAL: [Model; 4] = [
        Model::Persistence,
        Model::SeasonalNaive,
        Model::Ets,
        Model::Mstl,
    ];

    /// Its name in config and rows (the same as serde's).
    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Model> {
        s.parse().ok()
    }

    /// The baselines: what the others are measured against.
    pub fn is_baseline(self) -> bool {
        matches!(self, Model::Persistence | Model::SeasonalNaive)
    }
}

/// Settings of the fitted statistical models.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Latest steps ETS is fitted on (and MSTL's non-seasonal part): a fit costs about linear
    /// time in this.
    #[serde(default = "d_ets_window")]
    pub ets_window: usize,
    /// Seasons of history MSTL decomposes (at least 2).
    #[serde(default = "d_mstl_seasons")]
    pub mstl_seasons: usize,
    /// ETS fits of a series (and of MSTL's trend) from one search of its kind of trend (none,
    /// additive, damped: three fits) to the next; the fits between fit only the kind the last
    /// search chose (parameters and state are fitted every time). 1: a search at every fit.
    #[serde(default = "d_ets_search_every")]
    pub ets_search_every: usize,
}

fn d_ets_window() -> usize {
    256
}
fn d_mstl_seasons() -> usize {
    2
}
fn d_ets_search_every() -> usize {
    24
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            ets_window: d_ets_window(),
            mstl_seasons: d_mstl_seasons(),
            ets_search_every: d_ets_search_every(),
        }
    }
}

/// Fewest values ETS is fitted on.
pub const MIN_ETS: usize = 16;

/// The history with each missing value replaced by the one before it (leading missing values
/// dropped): the models need a gap-free series, and carrying the last value forward adds no
/// movement that was not observed.
pub fn filled(history: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(history.len());
    let mut last = None;
    for &v in history {
        if v.is_finite() {
            last = Some(v);
        }
        if let Some(l) = last {
            out.push(l);
        }
    }
    out
}

/// [`filled`] of the same length: leading missing values take the first observed one (0 when
/// none is), so indices still match times.
pub fn filled_same_len(history: &[f64]) -> Vec<f64> {
    let first = history
        .iter()
        .copied()
        .find(|v| v.is_finite())
        .unwrap_or(0.0);
    let mut last = first;
    history
        .iter()
        .map(|&v| {
            if v.is_finite() {
                last = v;
            }
            last
        })
        .collect()
}

/// Point forecasts of `model` at each horizon (steps ahead, at least 1), or why it cannot run
/// on this history. `history` must be gap-free (see [`filled`]); `season` is in steps. ETS's
/// trend is searched afresh: a series forecast again and again goes through
/// [`point_forecasts_with`] and its memo.
pub fn point_forecasts(
    model: Model,
    history: &[f64],
    season: usize,
    horizons: &[usize],
    cfg: &StatsConfig,
) -> Result<Vec<f64>, String> {
    let mut memo = EtsMemo::default();
    point_forecasts_with(model, history, season, horizons, cfg, &mut memo)
}

/// [`point_forecasts`] of a series that keeps `memo` (one per model) from one forecast to the
/// next: ETS, and MSTL's trend, search their kind of trend every `ets_search_every` fits.
pub fn point_forecasts_with(
    model: Model,
    history: &[f64],
    season: usize,
    horizons: &[usize],
    cfg: &StatsConfig,
    memo: &mut EtsMemo,
) -> Result<Vec<f64>, String> {
    let Some(&last) = history.last() else {
        return Err("no observed values".into());
    };
    let longest = horizons.iter().copied().max().unwrap_or(1).max(1);
    let points = match model {
        Model::Persistence => vec![last; horizons.len()],
        Model::SeasonalNaive => seasonal_naive(history, season, horizons)?,
        Model::Ets | Model::Mstl if is_constant(history) => vec![last; horizons.len()],
        Model::Ets => {
            let tail = &history[history.len().saturating_sub(cfg.ets_window.max(MIN_ETS))..];
            if tail.len() < MIN_ETS {
                return Err(format!(
                    "ETS needs {MIN_ETS} values, the history has {}",
                    tail.len()
                ));
            }
            let fitted = ets::fit(tail, memo, cfg.ets_search_every)?;
            let f = fitted
                .predict(longest, None)
                .map_err(|e| format!("ETS forecast: {e}"))?;
            at(&f, horizons)
        }
        Model::Mstl => {
            let need = season * cfg.mstl_seasons.max(2);
            if history.len() < need || season < 2 {
                return Err(format!(
                    "MSTL needs {} seasons ({need} values), the history has {}",
                    cfg.mstl_seasons.max(2),
                    history.len()
                ));
            }
            let shared = Cell::new(*memo);
            let trend = TailEts {
                window: cfg.ets_window.max(MIN_ETS),
                every: cfg.ets_search_every,
                memo: &shared,
            };
            let fitted = MSTLModel::new(vec![season], trend).fit(&history[history.len() - need..]);
            *memo = shared.get();
            let fitted = fitted.map_err(|e| format!("MSTL fit: {e}"))?;
            let f = fitted
                .predict(longest, None)
                .map_err(|e| format!("MSTL forecast: {e}"))?;
            at(&f, horizons)
        }
        Model::Lstm => return Err("the LSTM forecasts in batches (wfe-neural), not here".into()),
        Model::Gbm => {
            return Err("gbm forecasts with its trained boosters (gbm.rs), not here".into());
        }
    };
    if points.iter().any(|p| !p.is_finite()) {
        return Err(format!("{} gave a non-finite forecast", model.name()));
    }
    Ok(points)
}

fn at(f: &AugursForecast, horizons: &[usize]) -> Vec<f64> {
    horizons
        .iter()
        .map(|&h| f.point.get(h.max(1) - 1).copied().unwrap_or(f64::NAN))
        .collect()
}

fn is_constant(y: &[f64]) -> bool {
    let (lo, hi) = y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    hi - lo <= 1e-12 * hi.abs().max(1.0)
}

fn seasonal_naive(y: &[f64], season: usize, horizons: &[usize]) -> Result<Vec<f64>, String> {
    let n = y.len();
    horizons
        .iter()
        .map(|&h| {
            // The latest value at the target's phase: `k` whole seasons before the target.
            let k = h.max(1).div_ceil(season.max(1));
            let back = k * season;
            (back <= n - 1 + h)
                .then(|| y[n - 1 + h - back])
                .ok_or_else(|| format!("seasonal naive needs a season ({season} values) of history, the history has {n}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StatsConfig {
        StatsConfig::default()
    }

    #[test]
    fn baselines_are_exact() {
        let y: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(
            point_forecasts(Model::Persistence, &y, 4, &[1, 3], &cfg()).unwrap(),
            vec![9.0, 9.0]
        );
        // Season 4: the target 1 step ahead (t=10) has phase of t=6; 5 ahead (t=14) of t=6 too
        // (k = 2 seasons back); 4 ahead (t=13) of t=9.
        assert_eq!(
            point_forecasts(Model::SeasonalNaive, &y, 4, &[1, 4, 5], &cfg()).unwrap(),
            vec![6.0, 9.0, 6.0]
        );
        let short = [1.0, 2.0];
        let err = point_forecasts(Model::SeasonalNaive, &short, 4, &[1], &cfg()).unwrap_err();
        assert!(err.contains("needs a season"), "{err}");
    }

    #[test]
    fn ets_follows_a_level_and_refuses_too_little() {
        let y: Vec<f64> = (0..200)
            .map(|i| 5.0 + ((i * 7919) % 13) as f64 * 0.01)
            .collect();
        let p = point_forecasts(Model::Ets, &y, 24, &[1, 60], &cfg()).unwrap();
        assert!(p.iter().all(|v| (4.9..5.2).contains(v)), "{p:?}");
        let err = point_forecasts(Model::Ets, &y[..5], 24, &[1], &cfg()).unwrap_err();
        assert!(err.contains("ETS needs"), "{err}");
    }

    #[test]
    fn mstl_carries_the_daily_pattern() {
        let season = 24;
        let y: Vec<f64> = (0..season * 4)
            .map(|i| {
                let phase = (i % season) as f64 / season as f64;
                10.0 + 3.0 * (std::f64::consts::TAU * phase).sin() + ((i * 31) % 7) as f64 * 0.01
            })
            .collect();
        let horizons = [1, 6, 12];
        let p = point_forecasts(Model::Mstl, &y, season, &horizons, &cfg()).unwrap();
        for (h, v) in horizons.iter().zip(&p) {
            let phase = ((y.len() - 1 + h) % season) as f64 / season as f64;
            let want = 10.0 + 3.0 * (std::f64::consts::TAU * phase).sin();
            assert!((v - want).abs() < 0.3, "h {h}: {v} vs {want}");
        }
        let err = point_forecasts(Model::Mstl, &y[..30], season, &[1], &cfg()).unwrap_err();
        assert!(err.contains("MSTL needs 2 seasons"), "{err}");
    }

    /// MSTL with the stage's ETS search as its trend (a fresh memo: a search) forecasts as
    /// MSTL with augurs' AutoETS trend model, bit for bit.
    #[test]
    fn mstl_forecasts_exactly_as_with_augurs_autoets_trend() {
        let mut rng = wfe_domain::stats::SplitMix(3);
        for series in 0..6 {
            let slope = [0.0, 0.02, -0.01][series % 3];
            let y: Vec<f64> = (0..256)
                .map(|i| {
                    let phase = (i % 96) as f64 / 96.0;
                    5.0 + slope * i as f64
                        + (std::f64::consts::TAU * phase).sin()
                        + (rng.unit() - 0.5) * 0.3
                })
                .collect();
            // Two seasons of 96 steps: shorter than the ETS window, so both see all of them.
            let horizons = [1, 12, 60];
            let got = point_forecasts(Model::Mstl, &y, 96, &horizons, &cfg()).unwrap();
            let trend = augurs_ets::AutoETS::new(1, "AZN")
                .unwrap()
                .into_trend_model();
            let f = MSTLModel::new(vec![96], trend)
                .fit(&y[y.len() - 192..])
                .unwrap()
                .predict(60, None)
                .unwrap();
            assert_eq!(got, at(&f, &horizons), "series {series}");
        }
    }

    #[test]
    fn constant_and_gappy_histories_are_defined() {
        let y = vec![0.25; 400];
        for m in Model::STATISTICAL {
            let p = point_forecasts(m, &y, 100, &[1, 50], &cfg()).unwrap();
            assert_eq!(p, vec![0.25, 0.25], "{}", m.name());
        }
        assert_eq!(filled(&[f64::NAN, 1.0, f64::NAN, 3.0]), vec![1.0, 1.0, 3.0]);
        let err = point_forecasts(Model::Ets, &[], 4, &[1], &cfg()).unwrap_err();
        assert!(err.contains("no observed values"));
    }
}
