//! The global models the evaluation trains on each data set: every series up to its
//! cross-validation tail, so that the tail and the test split score them on steps they never
//! saw, as they do the others.

use super::*;
use wfe_forecast::gbm::GbmModel;
use wfe_forecast::lstm::Cut;

/// Each metric of each entity's train split without its last `tail` steps (NaN kept).
fn train_series(all: &[(String, data::Series)], tail: usize) -> Vec<Vec<f64>> {
    all.iter()
        .flat_map(|(_, s)| {
            (0..s.metrics.len()).map(move |j| {
                let col: Vec<f64> = s
                    .raw_train
                    .iter()
                    .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
                    .collect();
                let keep = col.len().saturating_sub(tail);
                col[..keep].to_vec()
            })
        })
        .collect()
}

/// The quantile LSTM (its windows need gaps filled).
pub(super) fn lstm(
    dir: &Path,
    all: &[(String, data::Series)],
    tail: usize,
    season: usize,
    horizons: &[usize],
    levels: &[f64],
    cfg: &ForecastConfig,
) -> Result<LstmModel> {
    let cut = Cut::new(cfg.lstm.steps, season, horizons.to_vec());
    let series: Vec<Vec<f64>> = train_series(all, tail)
        .iter()
        .map(|y| filled_same_len(y))
        .collect();
    let (model, report) = LstmModel::train(&series, cut, levels, &cfg.lstm)
        .map_err(|e| Error::config(format!("{} lstm", dir.display()), e.to_string()))?;
    eprintln!(
        "lstm: {} windows, {} epochs, pinball {:.4} -> {:.4}, {:.1} s on {}",
        report.windows,
        report.epochs,
        report.first_loss,
        report.last_loss,
        report.seconds,
        report.device
    );
    for c in &model.classes.classes {
        eprintln!(
            "lstm class {}: {} series, held-out MAE {:.4} global / {:.4} variant: {}",
            c.id,
            c.members.len(),
            c.global_mae,
            c.variant_mae,
            if c.kept {
                "variant kept"
            } else {
                "global serves"
            }
        );
    }
    Ok(model)
}

/// The gradient-boosted model (missing values stay missing: the booster learns them).
pub(super) fn gbm(
    dir: &Path,
    all: &[(String, data::Series)],
    tail: usize,
    season: usize,
    horizons: &[usize],
    cfg: &ForecastConfig,
) -> Result<GbmModel> {
    let series = train_series(all, tail);
    let (model, report) = GbmModel::train(&series, horizons, season, &cfg.gbm)
        .map_err(|e| Error::config(format!("{} gbm", dir.display()), e.to_string()))?;
    eprintln!(
        "gbm: per horizon rows {:?}, kept {:?} ({:?} trees), held-out MAE {:.4?} (persistence {:.4?}), {:.1} s",
        report.rows,
        report.chosen,
        report.trees,
        report.holdout_mae,
        report.persistence_mae,
        report.seconds
    );
    Ok(model)
}
