//! ETS as the stage fits it: augurs' AutoETS "AZN" search (additive error, no season: the
//! season is MSTL's job), run candidate by candidate, and what a series remembers of it.
//!
//! A search fits three models (level only, additive trend, damped additive trend) and keeps
//! the one with the lowest AICc. Which of the three wins changes slowly on a series of server
//! metrics, while the fits themselves are the default job's largest cost; so a series keeps
//! the winner ([`EtsMemo`]) and fits only it until `ets_search_every` fits have passed, then
//! searches again (a fit of the remembered kind that fails searches at once). Parameters and
//! the initial state are still fitted at every forecast, on the latest window.

use std::borrow::Cow;
use std::cell::Cell;

use augurs_core::{Forecast as AugursForecast, Predict};
use augurs_ets::model::{
    ErrorComponent, Model as EtsModel, ModelType, SeasonalComponent, TrendComponent, Unfit,
};
use augurs_mstl::{FittedTrendModel, TrendModel};
use serde::{Deserialize, Serialize};

/// The models AutoETS "AZN" searches, in its order: level only, additive trend, damped
/// additive trend.
const CANDIDATES: [(TrendComponent, bool); 3] = [
    (TrendComponent::None, false),
    (TrendComponent::Additive, false),
    (TrendComponent::Additive, true),
];

/// What a series remembers between the ETS fits of one model (ETS itself, or MSTL's trend).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtsMemo {
    /// The candidate the last search chose (an index into the search's candidates).
    chosen: Option<u8>,
    /// Fits since that search, the search's own included.
    fits: u32,
}

/// Fits ETS on `y`: the remembered candidate while fewer than `every` fits have passed since
/// the last search, else (or when that fit fails) the whole search, remembered in `memo`.
/// With `every` 1, or a fresh memo, this is AutoETS's fit.
pub fn fit(y: &[f64], memo: &mut EtsMemo, every: usize) -> Result<EtsModel, String> {
    // A memo naming no candidate (a damaged changelog entry) is no memo.
    if let Some(i) = memo
        .chosen
        .map(usize::from)
        .filter(|&i| i < CANDIDATES.len())
        && (memo.fits as usize) < every.max(1)
        && let Some(m) = fit_one(y, i).ok().filter(|m| !m.aicc().is_nan())
    {
        memo.fits = memo.fits.saturating_add(1);
        return Ok(m);
    }
    let (i, model) = search(y)?;
    *memo = EtsMemo {
        chosen: Some(i as u8),
        fits: 1,
    };
    Ok(model)
}

/// AutoETS "AZN" (augurs' search: the same candidates, settings and choice, the lowest AICc
/// and the first on a tie), fitted candidate by candidate so that `nmse` can be 1. The fit
/// maximises the likelihood, which the AMSE horizon `nmse` does not enter; but augurs computes
/// `nmse` forecasts at every step of every evaluation (three in `AutoETS`, which has no setter
/// for it). The fitted model is the same.
fn search(y: &[f64]) -> Result<(usize, EtsModel), String> {
    let mut best: Option<(usize, EtsModel)> = None;
    let mut last_error = None;
    for i in 0..CANDIDATES.len() {
        match fit_one(y, i) {
            Ok(m) if m.aicc().is_nan() => {}
            Ok(m) => {
                if best.as_ref().is_none_or(|(_, b)| m.aicc() < b.aicc()) {
                    best = Some((i, m));
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    best.ok_or_else(|| match last_error {
        Some(e) => format!("ETS fit: {e}"),
        None => "ETS fit: no model found".into(),
    })
}

fn fit_one(y: &[f64], candidate: usize) -> Result<EtsModel, augurs_ets::Error> {
    let (trend, damped) = CANDIDATES[candidate];
    let model_type = ModelType {
        error: ErrorComponent::Additive,
        trend,
        season: SeasonalComponent::None,
    };
    Unfit::new(model_type).damped(damped).nmse(1).fit(y)
}

/// MSTL's trend model: ETS on the latest `window` values only (MSTL hands its trend model the
/// whole deseasonalised span, and ETS's cost grows with its length), with the series' memo.
#[derive(Debug)]
pub(crate) struct TailEts<'a> {
    pub window: usize,
    pub every: usize,
    /// MSTL takes its trend model by value and fits through `&self`.
    pub memo: &'a Cell<EtsMemo>,
}

type DynError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl TrendModel for TailEts<'_> {
    fn name(&self) -> Cow<'_, str> {
        "ets (latest window)".into()
    }

    fn fit(&self, y: &[f64]) -> Result<Box<dyn FittedTrendModel + Sync + Send>, DynError> {
        let mut memo = self.memo.get();
        let model = fit(
            &y[y.len().saturating_sub(self.window)..],
            &mut memo,
            self.every,
        );
        self.memo.set(memo);
        Ok(Box::new(FittedEts(model?)))
    }
}

/// A fitted ETS model as MSTL's trend.
#[derive(Debug)]
struct FittedEts(EtsModel);

impl FittedTrendModel for FittedEts {
    fn predict_inplace(
        &self,
        horizon: usize,
        level: Option<f64>,
        forecast: &mut AugursForecast,
    ) -> Result<(), DynError> {
        Ok(self.0.predict_inplace(horizon, level, forecast)?)
    }

    fn predict_in_sample_inplace(
        &self,
        level: Option<f64>,
        forecast: &mut AugursForecast,
    ) -> Result<(), DynError> {
        Ok(self.0.predict_in_sample_inplace(level, forecast)?)
    }

    fn training_data_size(&self) -> Option<usize> {
        Some(self.0.training_data_size())
    }
}

#[cfg(test)]
mod tests {
    use augurs_core::Fit;

    use super::*;

    /// Series of each kind the search tells apart: level only, trending, damped.
    fn series(rng: &mut wfe_domain::stats::SplitMix, kind: usize) -> Vec<f64> {
        let slope = [0.0, 0.02, -0.01][kind % 3] * (kind / 3) as f64;
        let mut level = 5.0;
        (0..256)
            .map(|i| {
                level += slope * 0.99f64.powi(i) + (rng.unit() - 0.5) * 0.2;
                level + (rng.unit() - 0.5) * 0.5
            })
            .collect()
    }

    /// The search is augurs' AutoETS "AZN", forecast for forecast, bit for bit.
    #[test]
    fn the_search_forecasts_exactly_as_augurs_autoets() {
        let mut rng = wfe_domain::stats::SplitMix(7);
        let mut chosen = std::collections::BTreeSet::new();
        for kind in 0..12 {
            let y = series(&mut rng, kind);
            let (i, ours) = search(&y).unwrap();
            let theirs = augurs_ets::AutoETS::new(1, "AZN").unwrap().fit(&y).unwrap();
            assert_eq!(ours.aicc(), theirs.model().aicc(), "series {kind}");
            let (a, b) = (
                ours.predict(60, None).unwrap(),
                theirs.predict(60, None).unwrap(),
            );
            assert_eq!(a.point, b.point, "series {kind}");
            chosen.insert(i);
        }
        assert!(chosen.len() >= 2, "one kind of model only: {chosen:?}");
    }

    /// Between searches only the remembered kind is fitted (the same model a search would
    /// give when it wins again); every `every` fits the search runs again, and a memo that
    /// does not fit the series any more is replaced at once.
    #[test]
    fn the_memo_fits_the_chosen_kind_until_the_next_search() {
        let mut rng = wfe_domain::stats::SplitMix(11);
        let trending = series(&mut rng, 4);
        let mut memo = EtsMemo::default();
        let first = fit(&trending, &mut memo, 3).unwrap();
        let kind = memo.chosen;
        assert_eq!(memo.fits, 1);
        let again = fit(&trending, &mut memo, 3).unwrap();
        assert_eq!((memo.chosen, memo.fits), (kind, 2));
        assert_eq!(
            first.predict(12, None).unwrap().point,
            again.predict(12, None).unwrap().point
        );
        fit(&trending, &mut memo, 3).unwrap();
        assert_eq!(memo.fits, 3);
        // The fourth fit searches again.
        fit(&trending, &mut memo, 3).unwrap();
        assert_eq!((memo.chosen, memo.fits), (kind, 1));
        // A remembered kind whose fit fails (six values: too few for a damped trend's five
        // parameters) gives way to a search on the spot.
        let mut damped = EtsMemo {
            chosen: Some(2),
            fits: 1,
        };
        assert!(fit_one(&trending[..6], 2).is_err());
        fit(&trending[..6], &mut damped, 24).unwrap();
        assert_ne!(damped.chosen, Some(2));
        assert_eq!(damped.fits, 1);
        // A memo that names no candidate searches.
        let mut damaged = EtsMemo {
            chosen: Some(9),
            fits: 1,
        };
        fit(&trending, &mut damaged, 24).unwrap();
        assert_eq!((damaged.chosen, damaged.fits), (kind, 1));
        // `every` 1: a search at every fit, as AutoETS.
        let mut each = EtsMemo::default();
        for _ in 0..3 {
            fit(&trending, &mut each, 1).unwrap();
            assert_eq!(each.fits, 1);
        }
    }
}
