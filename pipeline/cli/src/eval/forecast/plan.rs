//! Scoring one series: every model at every origin of the test split (the train split's last
//! origins give the first errors), with conformal quantiles from the errors realised so far,
//! and the model the stage's choice takes at each origin.

use wfe_forecast::choice::{Choice, recent_mae};

use super::*;

/// What scoring one series needs beyond the series itself.
pub(super) struct Plan<'a> {
    pub(super) cfg: &'a ForecastConfig,
    pub(super) models: &'a [Model],
    pub(super) levels: &'a [f64],
    pub(super) season: usize,
    pub(super) horizons: &'a [usize],
    pub(super) stride: usize,
    /// Longest history a model is given.
    pub(super) keep: usize,
}

impl Plan<'_> {
    /// Each statistical model's forecasts at the origins (every level the point), with
    /// persistence standing in where the model cannot run. The origins are in time order and
    /// the model keeps its memo from one to the next, as the stage's series do.
    fn stats(
        &self,
        y: &[f64],
        origins: &[usize],
        model: Model,
        fallbacks: &mut usize,
    ) -> Quantiles {
        let mut memo = EtsMemo::default();
        origins
            .iter()
            .map(|&o| {
                let hist = filled(&y[(o + 1).saturating_sub(self.keep)..=o]);
                let (season, horizons, stats) = (self.season, self.horizons, &self.cfg.stats);
                let points = point_forecasts_with(model, &hist, season, horizons, stats, &mut memo)
                    .or_else(|_| {
                        *fallbacks += 1;
                        point_forecasts(
                            Model::Persistence,
                            &hist,
                            self.season,
                            self.horizons,
                            &self.cfg.stats,
                        )
                    })
                    .unwrap_or_else(|_| vec![f64::NAN; self.horizons.len()]);
                points.iter().map(|&p| vec![p; self.levels.len()]).collect()
            })
            .collect()
    }

    /// The LSTM's quantiles at a series' origins (and how many fell back to persistence,
    /// where the history is shorter than a window).
    pub(super) fn neural(
        &self,
        net: &LstmModel,
        y: &[f64],
        n_train: usize,
    ) -> Result<(Quantiles, usize)> {
        let (cv, test) = self.origins(n_train, y.len());
        let origins: Vec<usize> = cv.into_iter().chain(test).collect();
        let yf = filled_same_len(y);
        let out = net.forecast(&yf, &origins)?;
        let mut fallbacks = 0;
        let q = origins
            .iter()
            .zip(out)
            .map(|(&o, q)| {
                q.unwrap_or_else(|| {
                    fallbacks += 1;
                    vec![vec![yf[o]; self.levels.len()]; self.horizons.len()]
                })
            })
            .collect();
        Ok((q, fallbacks))
    }

    /// The gradient-boosted model's point forecasts at a series' origins (every level the
    /// point, as the statistical models'), and how many fell back to persistence (too little
    /// history, or a missing value at the origin).
    pub(super) fn boosted(&self, gbm: &GbmModel, y: &[f64], n_train: usize) -> (Quantiles, usize) {
        let (cv, test) = self.origins(n_train, y.len());
        let origins: Vec<usize> = cv.into_iter().chain(test).collect();
        let yf = filled_same_len(y);
        let mut fallbacks = 0;
        let q = origins
            .iter()
            .zip(gbm.forecast_at(y, &origins))
            .map(|(&o, points)| {
                let points = points.unwrap_or_else(|| {
                    fallbacks += 1;
                    vec![yf[o]; self.horizons.len()]
                });
                points.iter().map(|&p| vec![p; self.levels.len()]).collect()
            })
            .collect();
        (q, fallbacks)
    }

    fn median(&self) -> usize {
        self.levels
            .iter()
            .position(|l| (*l - 0.5).abs() < 1e-9)
            .unwrap_or(self.levels.len() / 2)
    }

    /// The cross-validation origins (before `n_train`) and the test origins of a series of
    /// `len` values.
    fn origins(&self, n_train: usize, len: usize) -> (Vec<usize>, Vec<usize>) {
        let longest = self.horizons.iter().copied().max().unwrap_or(1);
        let cv: Vec<usize> = (0..self.cfg.cv_origins)
            .filter_map(|k| (n_train - 1).checked_sub(longest + k * self.stride))
            .filter(|&o| o > 0)
            .rev()
            .collect();
        let test: Vec<usize> = (0..)
            .map(|k| n_train - 1 + k * self.stride)
            .take_while(|&o| o + 1 < len)
            .collect();
        (cv, test)
    }

    /// Scores one series (`n_train` values of train, then test); `given` holds the forecasts
    /// at its origins of the trained global models (the LSTM, gbm) that compete.
    pub(super) fn series(&self, y: &[f64], n_train: usize, given: Given) -> SeriesResult {
        let (cv, test) = self.origins(n_train, y.len());
        let origins: Vec<usize> = cv.iter().chain(&test).copied().collect();
        let mut fallbacks = vec![0; self.models.len()];
        let mut given = given;
        let forecasts: Vec<Quantiles> = self
            .models
            .iter()
            .zip(&mut fallbacks)
            .map(|(&m, fb)| match given.iter().position(|(g, _)| *g == m) {
                Some(i) => {
                    let (q, n) = given.swap_remove(i).1;
                    *fb += n;
                    q
                }
                None => self.stats(y, &origins, m, fb),
            })
            .collect();
        let n_cv = cv.len();
        let slots = self.models.len() + 1;
        let mut sums = vec![vec![Sums::default(); self.horizons.len()]; slots];
        let mut chosen = vec![BTreeMap::new(); self.horizons.len()];
        for (hi, &h) in self.horizons.iter().enumerate() {
            let calibrated: Vec<Vec<Option<Vec<f64>>>> = forecasts
                .iter()
                .map(|q| self.calibrated(y, &origins, n_cv, q, hi, h))
                .collect();
            let point = |mi: usize, k: usize| forecasts[mi][k][hi][self.median()];
            for (mi, cal) in calibrated.iter().enumerate() {
                sums[mi][hi] = self.sums(y, &origins, n_cv, h, |k| {
                    Some((point(mi, k), cal[k - n_cv].as_deref()?))
                });
            }
            // The stage's choice at every test origin, from the errors realised before it.
            let picks: Vec<usize> = (n_cv..origins.len())
                .map(|k| self.choose(y, &origins, &forecasts, k, hi, h))
                .collect();
            for &mi in &picks {
                *chosen[hi].entry(self.models[mi]).or_insert(0) += 1;
            }
            sums[self.models.len()][hi] = self.sums(y, &origins, n_cv, h, |k| {
                let mi = picks[k - n_cv];
                Some((point(mi, k), calibrated[mi][k - n_cv].as_deref()?))
            });
        }
        let season = self.season;
        let (mut s, mut n) = (0.0, 0.0);
        for t in season..n_train {
            let (a, b) = (y[t], y[t - season]);
            if a.is_finite() && b.is_finite() {
                s += (a - b).abs();
                n += 1.0;
            }
        }
        SeriesResult {
            sums,
            scale: if n > 0.0 { s / n } else { f64::NAN },
            chosen,
            fallbacks,
        }
    }

    /// The model the stage would choose at test origin `k` for horizon `h` ([`Choice`]): each
    /// model judged by its last `residual_window` point errors whose targets are known at the
    /// origin; the baselines' errors are known at every step (as the stage files them), the
    /// others' at the origins before. Persistence when none can be judged.
    fn choose(
        &self,
        y: &[f64],
        origins: &[usize],
        forecasts: &[Quantiles],
        k: usize,
        hi: usize,
        h: usize,
    ) -> usize {
        let (o, window, mid) = (origins[k], self.cfg.residual_window.max(1), self.median());
        let recent_steps = |back: usize| {
            let from = (o + 1).saturating_sub(window).max(back);
            recent_mae((from..=o).map(|t| y[t] - y[t - back]))
        };
        let known = origins[..k].partition_point(|&j| j + h <= o);
        let recent = |mi: usize| {
            let from = known.saturating_sub(window);
            recent_mae((from..known).map(|j| y[origins[j] + h] - forecasts[mi][j][hi][mid]))
        };
        // A baseline's errors at the same origins (the stage files them where a fitted model
        // forecasts), its choice once it has enough of them.
        let fitted = self.models.iter().any(|m| !m.is_baseline());
        let paired = |back: usize| {
            let from = known.saturating_sub(window);
            let at = |j: usize| {
                let t = origins[j] + h; // known: t <= the origin
                (t >= back).then(|| y[t] - y[t - back])
            };
            Some(recent_mae((from..known).filter_map(at)))
                .filter(|(n, _)| fitted && *n >= self.cfg.min_residuals)
                .unwrap_or_else(|| recent_steps(back))
        };
        let index = |m: Model| self.models.iter().position(|x| *x == m);
        let mut choice = Choice::new(self.cfg.min_residuals);
        if let Some(mi) = index(Model::Persistence) {
            choice.consider(Model::Persistence, paired(h), mi);
        }
        if let Some(mi) = index(Model::SeasonalNaive).filter(|_| h <= self.season) {
            choice.consider(Model::SeasonalNaive, paired(self.season), mi);
        }
        for (mi, &m) in self.models.iter().enumerate() {
            if !m.is_baseline() {
                choice.consider(m, recent(mi), mi);
            }
        }
        choice
            .best()
            .map(|(_, _, mi)| mi)
            .or_else(|| index(Model::Persistence))
            .unwrap_or(0)
    }

    /// Per test origin of one model at one horizon, its quantiles calibrated by that level's
    /// errors realised before the origin (None where its point forecast is missing).
    fn calibrated(
        &self,
        y: &[f64],
        origins: &[usize],
        n_cv: usize,
        q: &Quantiles,
        hi: usize,
        h: usize,
    ) -> Vec<Option<Vec<f64>>> {
        let nl = self.levels.len();
        let mid = self.median();
        // Per level, errors in the order they become known (target time).
        let mut errors: Vec<Vec<f64>> = vec![Vec::new(); nl];
        let mut known = 0; // origins whose errors are in `errors`
        let window = self.cfg.residual_window.max(1);
        let mut scratch = Vec::new();
        let mut out = Vec::with_capacity(origins.len() - n_cv);
        for (k, &o) in origins.iter().enumerate().skip(n_cv) {
            while known < origins.len() && origins[known] + h <= o {
                let a = y[origins[known] + h];
                if a.is_finite() {
                    for (li, e) in errors.iter_mut().enumerate() {
                        e.push(a - q[known][hi][li]);
                    }
                }
                known += 1;
            }
            if !q[k][hi][mid].is_finite() {
                out.push(None);
                continue;
            }
            let mut calibrated: Vec<f64> = (0..nl)
                .map(|li| {
                    let e = &errors[li];
                    let recent = &e[e.len().saturating_sub(window)..];
                    let stride = recent
                        .len()
                        .div_ceil(self.cfg.quantile_sample.max(1))
                        .max(1);
                    scratch.clear();
                    scratch.extend(recent.iter().rev().step_by(stride).copied());
                    let offset = if scratch.len() >= self.cfg.min_residuals {
                        quantiles_select(&mut scratch, &[self.levels[li]])[0]
                    } else {
                        0.0
                    };
                    (q[k][hi][li] + offset).max(0.0)
                })
                .collect();
            // Quantiles must not cross: sort them (a monotone rearrangement).
            calibrated.sort_by(f64::total_cmp);
            out.push(Some(calibrated));
        }
        out
    }

    /// Scores the test origins at horizon `h`: `at(k)` gives origin `k`'s point forecast and
    /// calibrated quantiles.
    fn sums<'q>(
        &self,
        y: &[f64],
        origins: &[usize],
        n_cv: usize,
        h: usize,
        at: impl Fn(usize) -> Option<(f64, &'q [f64])>,
    ) -> Sums {
        let nl = self.levels.len();
        let (lo80, hi80, lo95, hi95) = (
            self.level_index(0.1),
            self.level_index(0.9),
            self.level_index(0.025),
            self.level_index(0.975),
        );
        let mut out = Sums::default();
        for (k, &o) in origins.iter().enumerate().skip(n_cv) {
            let Some(&actual) = y.get(o + h).filter(|a| a.is_finite()) else {
                continue;
            };
            let Some((point, calibrated)) = at(k) else {
                continue;
            };
            out.abs += (actual - point).abs();
            out.pinball += self
                .levels
                .iter()
                .zip(calibrated)
                .map(|(&l, &v)| pinball(l, actual, v))
                .sum::<f64>()
                / nl as f64;
            out.in80 += f64::from(calibrated[lo80] <= actual && actual <= calibrated[hi80]);
            out.in95 += f64::from(calibrated[lo95] <= actual && actual <= calibrated[hi95]);
            out.n += 1.0;
        }
        out
    }

    fn level_index(&self, l: f64) -> usize {
        self.levels
            .iter()
            .position(|x| (x - l).abs() < 1e-9)
            .unwrap_or(0)
    }
}
