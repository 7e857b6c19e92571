//! Fitting one horizon's booster: the training rows, the candidates judged on each series'
//! held-out tail, and the winner refitted on every row.
//!
//! Why a choice at all: perpetual stops adding trees when its training loss stalls, and on
//! these targets where it stops (and so how good the model is) moves a lot with the loss and
//! the budget; which one suits a data set is only known by trying. The held-out tail is the
//! end of each training series, after its train origins' targets: nothing of it is seen in
//! the fit that is judged on it.

use perpetual::PerpetualBooster;
use wfe_contract::{Error, Result};

use super::features::{Design, min_history};
use super::head::{GbmConfig, Head, Loss};

/// Training origins of every series for a target `h` steps ahead, split into those that fit
/// and those that judge (each series' last `holdout` share, past its fitting targets), at
/// most `max_rows` in all, evenly spread.
/// An origin: its series and index.
type At<'a> = (&'a [f64], usize);

fn rows<'a>(series: &'a [Vec<f64>], h: usize, cfg: &GbmConfig) -> (Vec<At<'a>>, Vec<At<'a>>) {
    let first = min_history(h);
    let total: usize = series
        .iter()
        .map(|y| y.len().saturating_sub(first + h))
        .sum();
    let stride = total.div_ceil(cfg.max_rows).max(1);
    let (mut fit, mut judge) = (Vec::new(), Vec::new());
    for y in series {
        let end = y.len().saturating_sub(h);
        if end <= first {
            continue;
        }
        let cut = end - ((end - first) as f64 * cfg.holdout) as usize;
        for o in (first..end).step_by(stride) {
            if !(y[o].is_finite() && y[o + h].is_finite()) {
                continue;
            }
            if o >= cut {
                judge.push((y.as_slice(), o));
            } else if o + h < cut {
                fit.push((y.as_slice(), o));
            }
        }
    }
    (fit, judge)
}

/// Mean |change| of the targets (1 where they never change).
fn scale_of(at: &[At<'_>], h: usize) -> f64 {
    let s = at
        .iter()
        .map(|(y, o)| (y[o + h] - y[*o]).abs())
        .sum::<f64>()
        / at.len().max(1) as f64;
    if s > 1e-12 { s } else { 1.0 }
}

/// A booster of `loss` and `budget` fitted on rows `at`.
fn fitted(
    at: &[At<'_>],
    h: usize,
    season: usize,
    candidate: (Loss, f32, bool),
    scale: f64,
    seed: u64,
) -> Result<PerpetualBooster> {
    let (loss, budget, relative) = candidate;
    let design = Design::of(at.iter().copied(), h, season, scale, relative);
    let target: Vec<f64> = at
        .iter()
        .zip(&design.units)
        .map(|((y, o), u)| (y[o + h] - y[*o]) / u)
        .collect();
    let mut booster = PerpetualBooster::default()
        .set_objective(loss.objective())
        .set_budget(budget)
        .set_seed(seed);
    booster
        .fit(&design.matrix(), &target, None, None)
        .map_err(|e| Error::config("gbm", format!("training at horizon {h}: {e}")))?;
    Ok(booster)
}

/// Mean absolute error of `head` on rows `at`, and persistence's.
fn judged(head: &Head, at: &[At<'_>], season: usize) -> (f64, f64) {
    let points = head.predict(at.iter().copied(), season);
    let n = at.len().max(1) as f64;
    let model = at
        .iter()
        .zip(&points)
        .map(|((y, o), p)| (y[o + head.h] - p).abs())
        .sum::<f64>();
    let persistence = at
        .iter()
        .map(|(y, o)| (y[o + head.h] - y[*o]).abs())
        .sum::<f64>();
    (model / n, persistence / n)
}

/// The horizon's best candidate, refitted on every row; and how many rows that is.
pub(super) fn head(
    series: &[Vec<f64>],
    h: usize,
    season: usize,
    cfg: &GbmConfig,
) -> Result<(Head, usize)> {
    let (fit, judge) = rows(series, h, cfg);
    if fit.len() < 100 || judge.len() < 20 {
        return Err(Error::config(
            "gbm",
            format!(
                "{} training and {} held-out rows at horizon {h} (need 100 and 20): the series are shorter than a few times {} steps",
                fit.len(),
                judge.len(),
                min_history(h) + h + 1
            ),
        ));
    }
    let scale = scale_of(&fit, h);
    let mut best: Option<Head> = None;
    for &budget in &cfg.budgets {
        for loss in Loss::ALL {
            for relative in [false, true] {
                let booster = fitted(&fit, h, season, (loss, budget, relative), scale, cfg.seed)?;
                let mut head = Head {
                    h,
                    scale,
                    relative,
                    loss,
                    budget,
                    holdout_mae: f64::NAN,
                    persistence_mae: f64::NAN,
                    booster,
                };
                (head.holdout_mae, head.persistence_mae) = judged(&head, &judge, season);
                if best
                    .as_ref()
                    .is_none_or(|b| head.holdout_mae < b.holdout_mae)
                {
                    best = Some(head);
                }
            }
        }
    }
    let mut best = best.ok_or_else(|| Error::config("gbm", "no candidate to fit"))?;
    // The winner learns from every row, the latest included.
    let all: Vec<At<'_>> = fit.iter().chain(&judge).copied().collect();
    best.scale = scale_of(&all, h);
    best.booster = fitted(
        &all,
        h,
        season,
        (best.loss, best.budget, best.relative),
        best.scale,
        cfg.seed,
    )?;
    Ok((best, all.len()))
}
