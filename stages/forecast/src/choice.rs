//! The choice of model for a series at one horizon, made at every forecast: the lowest mean
//! absolute error over each model's recent errors (the last `residual_window` of them whose
//! targets were known at the origin), among the models with at least `min_residuals` such
//! errors; on a tie, the first considered (persistence, seasonal naive, then the fitted
//! models in config order). Where fitted models run, the baselines are judged on their
//! errors at the same origins (`paired.rs`), so every model is compared on the same
//! forecasts. The stage chooses with it, and `wfe eval forecast` scores the same choice, so
//! the two cannot drift apart.

use crate::Model;

/// A running choice among candidates; `T` is what the caller needs back of the winner.
#[derive(Debug)]
pub struct Choice<T> {
    min_residuals: usize,
    best: Option<(Model, f64, T)>,
}

impl<T> Choice<T> {
    pub fn new(min_residuals: usize) -> Self {
        Self {
            min_residuals,
            best: None,
        }
    }

    /// `model`, whose recent errors are `errors` many with mean absolute value `mae`.
    pub fn consider(&mut self, model: Model, (errors, mae): (usize, f64), tag: T) {
        if errors >= self.min_residuals && self.best.as_ref().is_none_or(|b| mae < b.1) {
            self.best = Some((model, mae, tag));
        }
    }

    /// The winner (model, its MAE, its tag); None when no model has enough errors.
    pub fn best(self) -> Option<(Model, f64, T)> {
        self.best
    }
}

/// How many of `errors` are finite, and their mean absolute value (0 with none): what
/// [`Choice::consider`] takes of a model's recent errors.
pub fn recent_mae(errors: impl IntoIterator<Item = f64>) -> (usize, f64) {
    let (mut n, mut sum) = (0, 0.0);
    for e in errors.into_iter().filter(|e| e.is_finite()) {
        n += 1;
        sum += e.abs();
    }
    (n, sum / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_mae_with_enough_errors_wins_and_the_first_on_a_tie() {
        let mut c = Choice::new(3);
        c.consider(Model::Persistence, (5, 0.4), 0);
        c.consider(Model::SeasonalNaive, (5, 0.2), 1);
        c.consider(Model::Ets, (2, 0.1), 2); // too few errors to be judged
        c.consider(Model::Mstl, (9, 0.2), 3); // a tie: the first stays
        assert_eq!(c.best(), Some((Model::SeasonalNaive, 0.2, 1)));
        assert_eq!(Choice::<()>::new(1).best(), None);
        assert_eq!(recent_mae([1.0, -3.0, f64::NAN]), (2, 2.0));
        assert_eq!(recent_mae([]), (0, 0.0));
    }
}
