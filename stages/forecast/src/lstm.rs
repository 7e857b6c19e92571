//! The `lstm` model: what the global quantile LSTM of `wfe-neural` reads and how its output
//! becomes forecasts, its per-class variants, and its training from histories.
//!
//! A forecast from origin `o` of a gap-free series `y` reads the window of the latest `steps`
//! values, each as (value - last) / scale and as the value itself, with `scale` the window's
//! standard deviation (at least [`MIN_SCALE`]), so one model serves series of any level and
//! volatility. Its context is, per horizon, the value one season before the target (as the
//! same scaled difference; 0 with a flag when the history is shorter than a season), the
//! last season's mean, and the scale's logarithm. It predicts (y[o + h] - last) / scale at each
//! level, and the forecast is last + scale x that.
//!
//! **The series' fingerprint** ([`fingerprint`]): the fingerprint stage's window features
//! (`wfe_domain::features`: level, spread, quantiles, trend, autocorrelation, period) of
//! the series, averaged over its latest windows and standardised by the training set's
//! spread. It is computed here from the history the model reads, not taken from the
//! fingerprint stage's rows: those are reduced by a PCA basis that is refitted as the fleet
//! grows, and a model trained on one basis could not read vectors of the next. With
//! `fingerprint.context` it joins the context (and a flag for whether the history held a
//! window).
//!
//! **Classes** ([`Classes`]): with `fingerprint.classes.enabled`, training sorts the series by
//! their fingerprints with DBSCAN (augurs-clustering), fine-tunes a copy of the global model
//! on each class's series, and keeps a variant only where it beats the global model on the
//! class's held-out tails. A series is served by the variant of the class whose training
//! fingerprint is nearest its own, when within the class's radius ([`ClassMeta::radius`]);
//! every other series, and every series of a class whose variant was not kept, by the global
//! model.

use std::collections::BTreeMap;

use augurs_clustering::{DbscanCluster, DbscanClusterer, DistanceMatrix};
use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_neural::{QuantileForecaster, TrainReport, Windows};

mod config;
mod window;
pub use config::{ClassConfig, FingerprintConfig, LstmConfig};
pub use window::{Cut, FINGERPRINT_LEN, FingerprintCut, MIN_SCALE, fingerprint};

/// Most series DBSCAN sorts into classes (a 2,000 x 2,000 distance matrix is 32 MB).
const MAX_CLUSTERED: usize = 2_000;

/// The configured levels, the median and the bounds of the 80 % and 95 % intervals: what a
/// trained model forecasts (so it serves any of them) and what an evaluation scores.
pub fn served_levels(configured: &[f64]) -> Vec<f64> {
    let mut l: Vec<f64> = configured
        .iter()
        .copied()
        .chain([0.025, 0.1, 0.5, 0.9, 0.975])
        .collect();
    l.sort_by(f64::total_cmp);
    l.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    l
}

/// Classes of series with similar fingerprints and how their variants did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Classes {
    /// DBSCAN's epsilon, in standardised fingerprint units.
    pub epsilon: f64,
    pub classes: Vec<ClassMeta>,
}

/// One class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMeta {
    pub id: u32,
    /// The whole-history fingerprints of its training series.
    pub members: Vec<Vec<f64>>,
    /// How far from its nearest member a series' fingerprint may be to be of the class: the
    /// 90th percentile of that distance for the members' own fingerprints at origins spread
    /// over their histories (a fingerprint at one origin wanders about the whole-history
    /// one), and at least epsilon.
    pub radius: f64,
    /// Mean held-out MAE over the horizons on the class's series: the global model's and
    /// the fine-tuned variant's.
    pub global_mae: f64,
    pub variant_mae: f64,
    /// Whether the variant serves the class (it beat the global model by `min_gain`).
    pub kept: bool,
    pub train: TrainReport,
}

impl Classes {
    /// The class whose member is nearest `fp`, when within its radius.
    fn nearest(&self, fp: &[f64]) -> Option<&ClassMeta> {
        let mut best: Option<(&ClassMeta, f64)> = None;
        for c in &self.classes {
            for m in &c.members {
                let d = euclid(m, fp);
                if best.is_none_or(|b| d < b.1) {
                    best = Some((c, d));
                }
            }
        }
        best.filter(|b| b.1 <= b.0.radius).map(|b| b.0)
    }
}

fn euclid(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// One forecast: `[horizon][level]` and the class whose variant made it (None: the global
/// model).
#[derive(Debug, Clone, PartialEq)]
pub struct Forecasted {
    pub levels: Vec<Vec<f64>>,
    pub class: Option<u32>,
}

/// A trained LSTM model, how its windows are cut, and its kept class variants.
#[derive(Debug)]
pub struct LstmModel {
    pub net: QuantileForecaster,
    pub cut: Cut,
    pub classes: Classes,
    /// The kept variants by class id.
    pub variants: BTreeMap<u32, QuantileForecaster>,
}

impl LstmModel {
    /// Trains the global model on gap-free histories, then the class variants when
    /// configured.
    pub fn train(
        series: &[Vec<f64>],
        mut cut: Cut,
        levels: &[f64],
        cfg: &LstmConfig,
    ) -> Result<(Self, TrainReport)> {
        cfg.validate("lstm")?;
        // The fingerprint's standardisation is this training set's, whatever the cut held.
        cut.fingerprint = cfg
            .fingerprint
            .used()
            .then(|| FingerprintCut::fit(series, &cfg.fingerprint, cut.season));
        let (w, ctx, targets) = cut.training_set(series, cfg.windows_per_series, cfg.max_windows);
        if w.n < 2 {
            return Err(Error::bad_input(
                "lstm training",
                format!(
                    "the histories give {} windows: each series needs more than {} steps",
                    w.n,
                    cut.steps + cut.horizons.iter().max().copied().unwrap_or(1)
                ),
            ));
        }
        let shape = cut.shape(levels);
        let (net, report) = QuantileForecaster::train(&w, &ctx, &targets, shape, &cfg.model)?;
        let mut model = Self {
            net,
            cut,
            classes: Classes::default(),
            variants: BTreeMap::new(),
        };
        if cfg.fingerprint.classes.enabled {
            model.train_classes(series, cfg)?;
        }
        Ok((model, report))
    }

    /// Sorts the series into classes by their whole-history fingerprints (DBSCAN), fine-tunes
    /// the global model on the heads of each class's series, and keeps a variant where its
    /// MAE on their held-out tails beats the global model's by `min_gain`. The global model
    /// has seen those tails and the variant has not, so a kept variant won against the odds.
    fn train_classes(&mut self, series: &[Vec<f64>], cfg: &LstmConfig) -> Result<()> {
        let ccfg = &cfg.fingerprint.classes;
        let Some(fp) = self.cut.fingerprint.clone() else {
            return Ok(());
        };
        let mut profiles: Vec<(usize, Vec<f64>)> = series
            .iter()
            .enumerate()
            .filter_map(|(i, y)| fp.profile(y).map(|p| (i, p)))
            .collect();
        // DBSCAN reads a full distance matrix: a large fleet is clustered on an even sample
        // (its other series still join a class when served, by their nearest member).
        if profiles.len() > MAX_CLUSTERED {
            let stride = profiles.len().div_ceil(MAX_CLUSTERED);
            profiles = profiles.into_iter().step_by(stride).collect();
        }
        if profiles.len() < ccfg.min_series {
            return Ok(());
        }
        let n = profiles.len();
        let mut matrix = vec![vec![0.0; n]; n];
        let mut pairs = Vec::with_capacity(n * (n - 1) / 2);
        for a in 0..n {
            for b in a + 1..n {
                let d = euclid(&profiles[a].1, &profiles[b].1);
                matrix[a][b] = d;
                matrix[b][a] = d;
                pairs.push(d);
            }
        }
        pairs.sort_by(f64::total_cmp);
        let epsilon = wfe_domain::stats::quantile(&pairs, ccfg.epsilon_quantile);
        let matrix = DistanceMatrix::try_from_square(matrix)
            .map_err(|e| Error::bad_input("lstm classes", e.to_string()))?;
        let found = DbscanClusterer::new(epsilon, ccfg.min_series).fit(&matrix);
        let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (k, c) in found.iter().enumerate() {
            if let DbscanCluster::Cluster(id) = c {
                by_class.entry(id.get()).or_default().push(k);
            }
        }
        // The largest classes, up to `max_classes`, renumbered 1.. by size.
        let mut sized: Vec<Vec<usize>> = by_class.into_values().collect();
        sized.sort_by_key(|m| std::cmp::Reverse(m.len()));
        sized.truncate(ccfg.max_classes);
        let hold = holdout(&self.cut);
        self.classes.epsilon = epsilon;
        for (k, members) in sized.into_iter().enumerate() {
            let id = k as u32 + 1;
            let ys: Vec<&Vec<f64>> = members.iter().map(|&m| &series[profiles[m].0]).collect();
            let heads: Vec<Vec<f64>> = ys
                .iter()
                .map(|y| y[..y.len().saturating_sub(hold(y.len()))].to_vec())
                .collect();
            let (w, ctx, targets) =
                self.cut
                    .training_set(&heads, cfg.windows_per_series, cfg.max_windows);
            if w.n < 2 {
                continue;
            }
            let (variant, report) = self.net.fine_tune(
                &w,
                &ctx,
                &targets,
                ccfg.epochs,
                cfg.model.learning_rate * ccfg.learning_rate_share,
            )?;
            let tails: Vec<&[f64]> = ys.iter().map(|y| y.as_slice()).collect();
            let global_mae = self.holdout_mae(&self.net, &tails, hold)?;
            let variant_mae = self.holdout_mae(&variant, &tails, hold)?;
            let radius = class_radius(&fp, &ys, &members, &profiles, epsilon);
            let kept = variant_mae.is_finite()
                && global_mae.is_finite()
                && variant_mae < global_mae * (1.0 - ccfg.min_gain);
            if kept {
                self.variants.insert(id, variant);
            }
            self.classes.classes.push(ClassMeta {
                id,
                members: members.iter().map(|&m| profiles[m].1.clone()).collect(),
                radius,
                global_mae,
                variant_mae,
                kept,
                train: report,
            });
        }
        Ok(())
    }

    /// Mean absolute error of `net`'s median over the horizons, at 16 origins in each
    /// series' held-out tail of `hold(len)` steps.
    fn holdout_mae(
        &self,
        net: &QuantileForecaster,
        series: &[&[f64]],
        hold: impl Fn(usize) -> usize,
    ) -> Result<f64> {
        let longest = self.cut.horizons.iter().copied().max().unwrap_or(1);
        let median = median_of(&net.shape().levels);
        let (mut err, mut n) = (0.0, 0.0);
        for y in series {
            let reqs: Vec<(&[f64], usize)> = tail_origins(y.len(), hold(y.len()), longest)
                .into_iter()
                .map(|o| (*y, o))
                .collect();
            for ((_, o), q) in reqs.iter().zip(self.predict_with(net, &reqs)?) {
                let Some(q) = q else { continue };
                for (hi, &h) in self.cut.horizons.iter().enumerate() {
                    err += (y[o + h] - q[hi][median]).abs();
                    n += 1.0;
                }
            }
        }
        Ok(if n > 0.0 { err / n } else { f64::NAN })
    }

    /// Forecasts of one network for each (series, origin), in one batch.
    fn predict_with(
        &self,
        net: &QuantileForecaster,
        reqs: &[(&[f64], usize)],
    ) -> Result<Vec<Option<Vec<Vec<f64>>>>> {
        let mut w = Windows::new(self.cut.steps, 2);
        let mut ctx = Vec::new();
        let at: Vec<Option<(f64, f64)>> = reqs
            .iter()
            .map(|&(y, o)| self.cut.push(y, o, &mut w, &mut ctx))
            .collect();
        let levels = net.shape().levels.len();
        let h = self.cut.horizons.len();
        let out = if w.n > 0 {
            net.predict(&w, &ctx, 0, wfe_neural::Precision::Fp32)?
        } else {
            Vec::new()
        };
        let mut k = 0;
        Ok(at
            .into_iter()
            .map(|a| {
                a.map(|(last, scale)| {
                    let block = &out[k * h * levels..(k + 1) * h * levels];
                    k += 1;
                    block
                        .chunks(levels)
                        .map(|q| q.iter().map(|&v| last + scale * v as f64).collect())
                        .collect()
                })
            })
            .collect())
    }

    /// The class variant that serves a series at `o`, if any.
    fn class_at(&self, y: &[f64], o: usize) -> Option<u32> {
        if self.variants.is_empty() {
            return None;
        }
        let fp = self.cut.fingerprint.as_ref()?.at(y, o)?;
        let c = self.classes.nearest(&fp)?;
        self.variants.contains_key(&c.id).then_some(c.id)
    }

    /// Quantile forecasts for each (gap-free series, origin), each by its class's variant or
    /// the global model, one batch per network; None where the history is shorter than a
    /// window.
    pub fn forecast_many(&self, reqs: &[(&[f64], usize)]) -> Result<Vec<Option<Forecasted>>> {
        let classes: Vec<Option<u32>> = reqs.iter().map(|&(y, o)| self.class_at(y, o)).collect();
        let mut out: Vec<Option<Forecasted>> = vec![None; reqs.len()];
        let groups = std::iter::once(None).chain(self.variants.keys().map(|&c| Some(c)));
        for class in groups {
            let net = class.map_or(&self.net, |c| &self.variants[&c]);
            let idx: Vec<usize> = (0..reqs.len()).filter(|&i| classes[i] == class).collect();
            if idx.is_empty() {
                continue;
            }
            let sub: Vec<(&[f64], usize)> = idx.iter().map(|&i| reqs[i]).collect();
            for (i, q) in idx.into_iter().zip(self.predict_with(net, &sub)?) {
                out[i] = q.map(|levels| Forecasted { levels, class });
            }
        }
        Ok(out)
    }

    /// Quantile forecasts `[origin][horizon][level]` of `y` (gap-free) from each origin; None
    /// for an origin whose history is shorter than a window.
    pub fn forecast(&self, y: &[f64], origins: &[usize]) -> Result<Vec<Option<Vec<Vec<f64>>>>> {
        let reqs: Vec<(&[f64], usize)> = origins.iter().map(|&o| (y, o)).collect();
        Ok(self
            .forecast_many(&reqs)?
            .into_iter()
            .map(|f| f.map(|f| f.levels))
            .collect())
    }
}

/// A class's radius (see [`ClassMeta::radius`]): the members' fingerprints at 8 origins
/// each, against the class's whole-history fingerprints.
fn class_radius(
    fp: &FingerprintCut,
    ys: &[&Vec<f64>],
    members: &[usize],
    profiles: &[(usize, Vec<f64>)],
    epsilon: f64,
) -> f64 {
    let mut d = Vec::new();
    for y in ys {
        for k in 1..=8usize {
            let Some(at) = fp.at(y, (k * y.len() / 8).saturating_sub(1)) else {
                continue;
            };
            let nearest = members
                .iter()
                .map(|&m| euclid(&profiles[m].1, &at))
                .fold(f64::INFINITY, f64::min);
            d.push(nearest);
        }
    }
    d.sort_by(f64::total_cmp);
    wfe_domain::stats::quantile(&d, 0.9).max(epsilon)
}

/// 16 origins spread over the held-out tail (the last `hold` steps) of a series of `len`
/// steps, each with its longest horizon inside the series; none when the tail is too short.
fn tail_origins(len: usize, hold: usize, longest: usize) -> Vec<usize> {
    let start = len.saturating_sub(hold);
    match len.saturating_sub(1).checked_sub(start + longest) {
        Some(span) => (0..16).map(|k| start + k * span / 16).collect(),
        None => Vec::new(),
    }
}

fn median_of(levels: &[f64]) -> usize {
    levels
        .iter()
        .position(|l| (l - 0.5).abs() < 1e-9)
        .unwrap_or(levels.len() / 2)
}

/// Trains on each series but its latest tenth (at least four longest horizons), then scores
/// the model's median and persistence on origins in those held-out tails. Returns the model,
/// its training report, and the validation MAE per horizon of the model and of persistence.
pub fn train_validated(
    series: &[Vec<f64>],
    cut: Cut,
    levels: &[f64],
    cfg: &LstmConfig,
) -> Result<(LstmModel, TrainReport, Vec<f64>, Vec<f64>)> {
    let hold = holdout(&cut);
    let heads: Vec<Vec<f64>> = series
        .iter()
        .map(|y| y[..y.len().saturating_sub(hold(y.len()))].to_vec())
        .collect();
    let (model, report) = LstmModel::train(&heads, cut, levels, cfg)?;
    let (valid, persist) = tail_mae(&model, series)?;
    Ok((model, report, valid, persist))
}

/// How many of a series' last steps [`train_validated`] holds out: a tenth, at least four
/// longest horizons.
fn holdout(cut: &Cut) -> impl Fn(usize) -> usize + Copy + use<> {
    let longest = cut.horizons.iter().copied().max().unwrap_or(1);
    move |n: usize| (n / 10).max(4 * longest)
}

/// The MAE per horizon of `model`'s median and of persistence at origins in the held-out
/// tails of `series` (those [`train_validated`] holds out), so that two models can be
/// scored on the same steps.
pub fn tail_mae(model: &LstmModel, series: &[Vec<f64>]) -> Result<(Vec<f64>, Vec<f64>)> {
    let hold = holdout(&model.cut);
    let h = &model.cut.horizons;
    let longest = h.iter().copied().max().unwrap_or(1);
    let median = median_of(&model.net.shape().levels);
    let (mut err, mut persist, mut n) =
        (vec![0.0; h.len()], vec![0.0; h.len()], vec![0.0; h.len()]);
    for y in series {
        let origins = tail_origins(y.len(), hold(y.len()), longest);
        for (&o, q) in origins.iter().zip(model.forecast(y, &origins)?) {
            let Some(q) = q else { continue };
            for (hi, &hz) in h.iter().enumerate() {
                err[hi] += (y[o + hz] - q[hi][median]).abs();
                persist[hi] += (y[o + hz] - y[o]).abs();
                n[hi] += 1.0;
            }
        }
    }
    let mean = |v: Vec<f64>| {
        v.iter()
            .zip(&n)
            .map(|(s, c)| if *c > 0.0 { s / c } else { f64::NAN })
            .collect()
    };
    Ok((mean(err), mean(persist)))
}

/// Whether per-horizon errors `new` beat `old`: a lower sum over the horizons both score
/// (finite in both). A model that scores nothing is beaten by any, and errors of other
/// horizons (the configuration changed) cannot be compared: the new model is the one asked for.
pub fn beats(new: &[f64], old: &[f64]) -> bool {
    if new.len() != old.len() || !old.iter().any(|v| v.is_finite()) {
        return true;
    }
    let (mut a, mut b, mut any) = (0.0, 0.0, false);
    for (x, y) in new.iter().zip(old) {
        if x.is_finite() && y.is_finite() {
            a += x;
            b += y;
            any = true;
        }
    }
    any && a < b
}

#[cfg(test)]
mod tests;
