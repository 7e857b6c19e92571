//! Scoring one series: the model chosen per horizon on the train split's last origins, then
//! every origin of the test split, with conformal quantiles from the errors realised so far.

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

    /// Scores one series (`n_train` values of train, then test); `neural` holds the LSTM's
    /// forecasts at its origins when the LSTM competes.
    pub(super) fn series(
        &self,
        y: &[f64],
        n_train: usize,
        neural: Option<(Quantiles, usize)>,
    ) -> SeriesResult {
        let (cv, test) = self.origins(n_train, y.len());
        let origins: Vec<usize> = cv.iter().chain(&test).copied().collect();
        let mut fallbacks = vec![0; self.models.len()];
        let mut neural = neural;
        let forecasts: Vec<Quantiles> = self
            .models
            .iter()
            .zip(&mut fallbacks)
            .map(|(&m, fb)| match neural.take_if(|_| m == Model::Lstm) {
                Some((q, n)) => {
                    *fb += n;
                    q
                }
                None => self.stats(y, &origins, m, fb),
            })
            .collect();
        let mid = self.median();
        // Cross-validation: each horizon's model by the MAE of its point forecasts.
        let chosen: Vec<usize> = (0..self.horizons.len())
            .map(|hi| {
                let h = self.horizons[hi];
                let mae = |mi: usize| {
                    let (mut s, mut n) = (0.0, 0.0);
                    for (k, &o) in cv.iter().enumerate() {
                        let (a, p) = (y[o + h], forecasts[mi][k][hi][mid]);
                        if a.is_finite() && p.is_finite() {
                            s += (a - p).abs();
                            n += 1.0;
                        }
                    }
                    if n > 0.0 { s / n } else { f64::INFINITY }
                };
                (0..self.models.len())
                    .min_by(|&a, &b| mae(a).total_cmp(&mae(b)))
                    .unwrap_or(0)
            })
            .collect();
        let slots = self.models.len() + 1;
        let mut sums = vec![vec![Sums::default(); self.horizons.len()]; slots];
        for (hi, &h) in self.horizons.iter().enumerate() {
            for (slot, row) in sums.iter_mut().enumerate() {
                let mi = if slot == self.models.len() {
                    chosen[hi]
                } else {
                    slot
                };
                row[hi] = self.score(y, &origins, cv.len(), &forecasts[mi], hi, h);
            }
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
            chosen: chosen.iter().map(|&i| self.models[i]).collect(),
            fallbacks,
        }
    }

    /// Scores the test origins of one model at one horizon, calibrating each level by the
    /// errors realised before the origin.
    fn score(
        &self,
        y: &[f64],
        origins: &[usize],
        n_cv: usize,
        q: &Quantiles,
        hi: usize,
        h: usize,
    ) -> Sums {
        let nl = self.levels.len();
        let mid = self.median();
        // Per level, errors in the order they become known (target time).
        let mut errors: Vec<Vec<f64>> = vec![Vec::new(); nl];
        let mut known = 0; // origins whose errors are in `errors`
        let window = self.cfg.residual_window.max(1);
        let mut scratch = Vec::new();
        let mut out = Sums::default();
        let (lo80, hi80, lo95, hi95) = (
            self.level_index(0.1),
            self.level_index(0.9),
            self.level_index(0.025),
            self.level_index(0.975),
        );
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
            let Some(&actual) = y.get(o + h).filter(|a| a.is_finite()) else {
                continue;
            };
            let point = q[k][hi][mid];
            if !point.is_finite() {
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
            out.abs += (actual - point).abs();
            out.pinball += self
                .levels
                .iter()
                .zip(&calibrated)
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
