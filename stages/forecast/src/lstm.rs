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
//! (`wfe_contract::features`: level, spread, quantiles, trend, autocorrelation, period) of
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
use wfe_contract::features::{FEATURES, FeatureWeights, window_features};
use wfe_contract::{Error, Result};
use wfe_neural::{ForecasterConfig, ForecasterShape, QuantileForecaster, TrainReport, Windows};

/// Smallest scale a window is divided by: flat windows would otherwise blow small moves up.
pub const MIN_SCALE: f64 = 0.005;

/// Features of a series' fingerprint: the window features but the cross-metric correlation
/// (a series has one metric).
pub const FINGERPRINT_LEN: usize = FEATURES.len() - 1;

/// Most series DBSCAN sorts into classes (a 2,000 x 2,000 distance matrix is 32 MB).
const MAX_CLUSTERED: usize = 2_000;

/// A standardised fingerprint feature is clipped to this many standard deviations, so that
/// one odd series cannot swamp the context.
const FP_CLIP: f64 = 5.0;

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

/// Settings of the LSTM model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LstmConfig {
    /// Steps of history in a window.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Training windows drawn from each series' history.
    #[serde(default = "d_per_series")]
    pub windows_per_series: usize,
    /// Most training windows in all.
    #[serde(default = "d_max_windows")]
    pub max_windows: usize,
    /// The network and its training.
    #[serde(default)]
    pub model: ForecasterConfig,
    /// The series' fingerprint: as context, and to sort series into classes.
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
}

fn d_steps() -> usize {
    48
}
fn d_per_series() -> usize {
    96
}
fn d_max_windows() -> usize {
    32_768
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            steps: d_steps(),
            windows_per_series: d_per_series(),
            max_windows: d_max_windows(),
            model: ForecasterConfig::default(),
            fingerprint: FingerprintConfig::default(),
        }
    }
}

impl LstmConfig {
    pub fn validate(&self, key: &str) -> Result<()> {
        self.model.validate(&format!("{key}.model"))?;
        self.fingerprint.validate(&format!("{key}.fingerprint"))
    }
}

/// The series' fingerprint as the LSTM reads it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// Add the series' fingerprint to the model's context.
    #[serde(default = "d_fp_context")]
    pub context: bool,
    /// Steps in one fingerprint window (the fingerprint stage's `window`).
    #[serde(default = "d_fp_window")]
    pub window: usize,
    /// Windows ending at the origin whose features are averaged (fewer while the history is
    /// shorter); 0: a season's worth, so that a fingerprint covers every time of day alike.
    #[serde(default)]
    pub windows: usize,
    /// Per-class variants of the model.
    #[serde(default)]
    pub classes: ClassConfig,
}

fn d_fp_context() -> bool {
    true
}
fn d_fp_window() -> usize {
    60
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            context: d_fp_context(),
            window: d_fp_window(),
            windows: 0,
            classes: ClassConfig::default(),
        }
    }
}

impl FingerprintConfig {
    fn validate(&self, key: &str) -> Result<()> {
        if self.window < 4 {
            return Err(Error::config(
                format!("{key}.window"),
                "a fingerprint needs windows of at least 4 steps",
            ));
        }
        self.classes.validate(&format!("{key}.classes"))
    }

    /// Whether training computes fingerprints at all.
    fn used(&self) -> bool {
        self.context || self.classes.enabled
    }
}

/// Per-class variants: DBSCAN over the training series' fingerprints, a fine-tuned copy of
/// the global model per class, kept where it beats the global model on held-out data.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Train per-class variants.
    #[serde(default = "d_classes")]
    pub enabled: bool,
    /// DBSCAN's core size: the fewest series within epsilon of a series for it to found or
    /// grow a class.
    #[serde(default = "d_min_series")]
    pub min_series: usize,
    /// DBSCAN's epsilon, as this quantile of the distances between the training series'
    /// standardised fingerprints.
    #[serde(default = "d_eps_q")]
    pub epsilon_quantile: f64,
    /// Most classes given a variant (the largest ones).
    #[serde(default = "d_max_classes")]
    pub max_classes: usize,
    /// Fine-tuning passes over a class's windows.
    #[serde(default = "d_class_epochs")]
    pub epochs: usize,
    /// Fine-tuning learning rate, as a share of the model's.
    #[serde(default = "d_lr_share")]
    pub learning_rate_share: f64,
    /// Least relative gain in held-out MAE over the global model for a variant to be kept.
    #[serde(default = "d_min_gain")]
    pub min_gain: f64,
}

fn d_classes() -> bool {
    true
}
fn d_min_series() -> usize {
    4
}
fn d_eps_q() -> f64 {
    0.1
}
fn d_max_classes() -> usize {
    8
}
fn d_class_epochs() -> usize {
    2
}
fn d_lr_share() -> f64 {
    0.1
}
fn d_min_gain() -> f64 {
    0.02
}

impl Default for ClassConfig {
    fn default() -> Self {
        Self {
            enabled: d_classes(),
            min_series: d_min_series(),
            epsilon_quantile: d_eps_q(),
            max_classes: d_max_classes(),
            epochs: d_class_epochs(),
            learning_rate_share: d_lr_share(),
            min_gain: d_min_gain(),
        }
    }
}

impl ClassConfig {
    fn validate(&self, key: &str) -> Result<()> {
        if self.min_series < 2 {
            return Err(Error::config(
                format!("{key}.min_series"),
                "a class needs at least 2 series",
            ));
        }
        if !(self.epsilon_quantile > 0.0 && self.epsilon_quantile <= 1.0) {
            return Err(Error::config(
                format!("{key}.epsilon_quantile"),
                "must be in (0, 1]",
            ));
        }
        if self.epochs == 0 || !(self.learning_rate_share > 0.0 && self.learning_rate_share <= 1.0)
        {
            return Err(Error::config(
                format!("{key}.epochs"),
                "epochs must be at least 1 and learning_rate_share in (0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&self.min_gain) {
            return Err(Error::config(
                format!("{key}.min_gain"),
                "must be in [0, 1)",
            ));
        }
        Ok(())
    }
}

/// The fingerprint of `y` at origin `o`: the mean, over up to `windows` whole windows of
/// `window` steps ending at `o`, of each window's features (level, spread, q10, q50, q90,
/// trend, lag-1 autocorrelation, period; unweighted). None while the history is shorter
/// than one window.
pub fn fingerprint(
    y: &[f64],
    o: usize,
    window: usize,
    windows: usize,
) -> Option<[f64; FINGERPRINT_LEN]> {
    if window < 2 || o >= y.len() || o + 1 < window {
        return None;
    }
    let have = ((o + 1) / window).min(windows.max(1));
    let weights = FeatureWeights {
        level: 1.0,
        spread: 1.0,
        quantiles: 1.0,
        trend: 1.0,
        autocorrelation: 1.0,
        period: 1.0,
        correlation: 1.0,
    };
    let mut acc = [0.0; FINGERPRINT_LEN];
    for k in 0..have {
        let end = o + 1 - k * window;
        let rows: Vec<&[f64]> = y[end - window..end]
            .iter()
            .map(std::slice::from_ref)
            .collect();
        let f = window_features(&rows, 1, &[], &weights, &BTreeMap::new());
        for (a, v) in acc.iter_mut().zip(&f) {
            *a += v / have as f64;
        }
    }
    Some(acc)
}

/// How a model reads fingerprints: the windows, whether they are context, and the training
/// set's standardisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintCut {
    pub window: usize,
    pub windows: usize,
    /// Whether the model's context holds the fingerprint.
    pub context: bool,
    /// Per feature: the training fingerprints' mean and standard deviation.
    pub centre: Vec<f64>,
    pub spread: Vec<f64>,
}

impl FingerprintCut {
    /// Standardisation from the fingerprints at up to 64 origins spread over each series.
    fn fit(series: &[Vec<f64>], cfg: &FingerprintConfig, season: usize) -> Self {
        let windows = match cfg.windows {
            0 => (season / cfg.window).max(1),
            n => n,
        };
        let mut all: Vec<[f64; FINGERPRINT_LEN]> = Vec::new();
        for y in series {
            let n = y.len();
            for k in 1..=64usize {
                let o = (k * n / 64).saturating_sub(1);
                if let Some(f) = fingerprint(y, o, cfg.window, windows) {
                    all.push(f);
                }
            }
        }
        let count = all.len().max(1) as f64;
        let centre: Vec<f64> = (0..FINGERPRINT_LEN)
            .map(|j| all.iter().map(|f| f[j]).sum::<f64>() / count)
            .collect();
        let spread = (0..FINGERPRINT_LEN)
            .map(|j| {
                let v = all.iter().map(|f| (f[j] - centre[j]).powi(2)).sum::<f64>() / count;
                v.sqrt().max(1e-6)
            })
            .collect();
        Self {
            window: cfg.window,
            windows,
            context: cfg.context,
            centre,
            spread,
        }
    }

    /// The standardised fingerprint of `y` at `o`, None while the history is shorter than a
    /// window.
    pub fn at(&self, y: &[f64], o: usize) -> Option<Vec<f64>> {
        let f = fingerprint(y, o, self.window, self.windows)?;
        Some(
            f.iter()
                .zip(self.centre.iter().zip(&self.spread))
                .map(|(v, (c, s))| ((v - c) / s).clamp(-FP_CLIP, FP_CLIP))
                .collect(),
        )
    }

    /// The series' fingerprint over its whole history: the mean of its fingerprints at
    /// origins a profile's length apart (what training sorts series by).
    fn profile(&self, y: &[f64]) -> Option<Vec<f64>> {
        let span = self.window * self.windows;
        let mut acc = vec![0.0; FINGERPRINT_LEN];
        let mut n = 0.0;
        let mut o = y.len().checked_sub(1)?;
        while let Some(f) = self.at(y, o) {
            acc.iter_mut().zip(&f).for_each(|(a, v)| *a += v);
            n += 1.0;
            match o.checked_sub(span) {
                Some(next) => o = next,
                None => break,
            }
        }
        (n > 0.0).then(|| acc.iter().map(|a| a / n).collect())
    }
}

/// How windows are cut: the model's steps, the season and the horizons, in steps, and how the
/// series' fingerprint is read (set by training from [`FingerprintConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    pub steps: usize,
    pub season: usize,
    pub horizons: Vec<usize>,
    /// Absent in models trained without fingerprints (and in those of earlier versions).
    #[serde(default)]
    pub fingerprint: Option<FingerprintCut>,
}

impl Cut {
    /// A cut without fingerprints: training adds them as configured.
    pub fn new(steps: usize, season: usize, horizons: Vec<usize>) -> Self {
        Self {
            steps,
            season,
            horizons,
            fingerprint: None,
        }
    }

    fn fingerprint_context(&self) -> bool {
        self.fingerprint.as_ref().is_some_and(|f| f.context)
    }

    pub fn shape(&self, levels: &[f64]) -> ForecasterShape {
        let fp = if self.fingerprint_context() {
            FINGERPRINT_LEN + 1
        } else {
            0
        };
        ForecasterShape {
            steps: self.steps,
            features: 2,
            context: self.horizons.len() + 3 + fp,
            horizons: self.horizons.len(),
            levels: levels.to_vec(),
        }
    }

    /// Appends the window of `y` ending at `o` and its context; returns (last, scale), or
    /// None when the history is shorter than a window.
    pub fn push(
        &self,
        y: &[f64],
        o: usize,
        w: &mut Windows,
        ctx: &mut Vec<f32>,
    ) -> Option<(f64, f64)> {
        if o + 1 < self.steps || o >= y.len() {
            return None;
        }
        let win = &y[o + 1 - self.steps..=o];
        let last = y[o];
        let mean = win.iter().sum::<f64>() / win.len() as f64;
        let var = win.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / win.len() as f64;
        let scale = var.sqrt().max(MIN_SCALE);
        w.push(
            win.iter()
                .flat_map(|&v| [((v - last) / scale) as f32, v as f32]),
        )
        .ok()?;
        let season = self.season.max(1);
        let have_season = o + 1 >= season;
        for &h in &self.horizons {
            let k = h.max(1).div_ceil(season);
            let back = o + h;
            let v = back
                .checked_sub(k * season)
                .map(|i| ((y[i] - last) / scale) as f32)
                .unwrap_or(0.0);
            ctx.push(v);
        }
        let day = &y[(o + 1).saturating_sub(season)..=o];
        let day_mean = day.iter().sum::<f64>() / day.len() as f64;
        ctx.push(((day_mean - last) / scale) as f32);
        ctx.push(f32::from(have_season as u8));
        ctx.push(scale.ln() as f32);
        if let Some(fp) = self.fingerprint.as_ref().filter(|f| f.context) {
            match fp.at(y, o) {
                Some(f) => {
                    ctx.extend(f.iter().map(|&v| v as f32));
                    ctx.push(1.0);
                }
                None => ctx.extend(std::iter::repeat_n(0.0, FINGERPRINT_LEN + 1)),
            }
        }
        Some((last, scale))
    }

    /// Training windows from gap-free train histories: up to `per_series` origins per series,
    /// spread evenly with a seeded jitter, each with targets at every horizon.
    pub fn training_set(
        &self,
        series: &[Vec<f64>],
        per_series: usize,
        max_windows: usize,
    ) -> (Windows, Vec<f32>, Vec<f32>) {
        let longest = self.horizons.iter().copied().max().unwrap_or(1);
        let per = per_series.min(max_windows / series.len().max(1)).max(1);
        let mut w = Windows::new(self.steps, 2);
        let (mut ctx, mut targets) = (Vec::new(), Vec::new());
        let mut rng = wfe_contract::stats::SplitMix(0x9e37_79b9_7f4a_7c15);
        for y in series {
            let Some(span) = y.len().checked_sub(self.steps + longest) else {
                continue;
            };
            if span == 0 {
                continue;
            }
            for k in 0..per {
                let jitter = rng.below((span / per).max(1));
                let o = self.steps - 1 + (k * span / per + jitter).min(span - 1);
                if let Some((last, scale)) = self.push(y, o, &mut w, &mut ctx) {
                    targets.extend(
                        self.horizons
                            .iter()
                            .map(|&h| ((y[o + h] - last) / scale) as f32),
                    );
                }
            }
        }
        (w, ctx, targets)
    }
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
        let epsilon = wfe_contract::stats::quantile(&pairs, ccfg.epsilon_quantile);
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
    wfe_contract::stats::quantile(&d, 0.9).max(epsilon)
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
mod fingerprint_tests {
    use super::*;

    fn sine(n: usize, period: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 0.5 + 0.3 * (std::f64::consts::TAU * i as f64 / period as f64).sin())
            .collect()
    }

    #[test]
    fn a_series_fingerprint_reads_its_level_spread_and_period() {
        let y = sine(240, 10);
        let f = fingerprint(&y, 239, 60, 4).unwrap();
        assert!((f[0] - 0.5).abs() < 1e-3, "level {}", f[0]);
        assert!((f[1] - 0.3 / 2f64.sqrt()).abs() < 5e-3, "spread {}", f[1]);
        assert!((f[7] - 10.0 / 60.0).abs() < 1e-9, "period {}", f[7]);
        let flat = fingerprint(&[0.2; 120], 119, 60, 4).unwrap();
        assert!(
            (flat[0] - 0.2).abs() < 1e-12 && flat[1].abs() < 1e-12,
            "{flat:?}"
        );
        assert!(flat.iter().all(|v| v.is_finite()));
        // Shorter than a window, or an origin past the end: no fingerprint, no panic.
        assert!(fingerprint(&y, 30, 60, 4).is_none());
        assert!(fingerprint(&y, 240, 60, 4).is_none());
        // Fewer windows than asked: the ones there are.
        assert_eq!(fingerprint(&y, 119, 60, 12), fingerprint(&y, 119, 60, 2));
    }

    #[test]
    fn the_context_grows_by_the_fingerprint_and_a_flag_when_it_is_read() {
        let series = vec![sine(600, 20), sine(600, 50), vec![0.3; 600]];
        let mut cut = Cut::new(16, 24, vec![1, 4]);
        let levels = [0.1, 0.5, 0.9];
        assert_eq!(cut.shape(&levels).context, 2 + 3);
        let fp = FingerprintCut::fit(&series, &FingerprintConfig::default(), 24);
        assert_eq!(
            (fp.centre.len(), fp.spread.len()),
            (FINGERPRINT_LEN, FINGERPRINT_LEN)
        );
        assert!(fp.spread.iter().all(|s| *s > 0.0));
        cut.fingerprint = Some(fp);
        let shape = cut.shape(&levels);
        assert_eq!(shape.context, 2 + 3 + FINGERPRINT_LEN + 1);
        let (w, ctx, targets) = cut.training_set(&series, 8, 100);
        assert_eq!(ctx.len(), w.n * shape.context);
        assert_eq!(targets.len(), w.n * 2);
        assert!(ctx.iter().all(|v| v.is_finite()));
        // A history shorter than a fingerprint window: zeros and the flag down.
        let short = sine(30, 20);
        let mut w = Windows::new(16, 2);
        let mut c = Vec::new();
        cut.push(&short, 29, &mut w, &mut c).unwrap();
        assert_eq!(c.len(), shape.context);
        assert!(c[5..].iter().all(|v| *v == 0.0));
        // Standardised values are clipped: an odd series cannot swamp the context.
        let wild: Vec<f64> = (0..600)
            .map(|i| if i % 2 == 0 { 50.0 } else { -50.0 })
            .collect();
        let f = cut.fingerprint.as_ref().unwrap().at(&wild, 599).unwrap();
        assert!(f.iter().all(|v| v.abs() <= FP_CLIP), "{f:?}");
    }

    #[test]
    fn a_retrained_model_must_beat_the_current_one_on_the_same_steps() {
        assert!(beats(&[0.1, 0.2], &[0.2, 0.2]));
        assert!(
            !beats(&[0.2, 0.2], &[0.2, 0.2]),
            "a tie keeps the current model"
        );
        assert!(!beats(&[0.1, 0.5], &[0.2, 0.2]));
        // Horizons either cannot score are left out of the comparison.
        assert!(beats(&[0.1, f64::NAN], &[0.2, 0.05]) == (0.1 < 0.2));
        assert!(!beats(&[f64::NAN, f64::NAN], &[0.2, 0.2]));
        assert!(beats(&[f64::NAN], &[f64::NAN]), "nothing to lose");
        assert!(
            beats(&[0.3], &[0.1, 0.1]),
            "other horizons: the configured ones win"
        );
    }

    #[test]
    fn class_settings_are_checked() {
        let mut c = LstmConfig::default();
        c.fingerprint.classes.min_series = 1;
        assert!(
            c.validate("lstm")
                .unwrap_err()
                .to_string()
                .contains("min_series")
        );
        let mut c = LstmConfig::default();
        c.fingerprint.classes.epsilon_quantile = 0.0;
        assert!(
            c.validate("lstm")
                .unwrap_err()
                .to_string()
                .contains("epsilon_quantile")
        );
        let mut c = LstmConfig::default();
        c.fingerprint.window = 2;
        assert!(
            c.validate("lstm")
                .unwrap_err()
                .to_string()
                .contains("window")
        );
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;

    #[test]
    fn lstm_learns_a_daily_pattern_and_brackets_it() {
        let season = 24;
        let series: Vec<Vec<f64>> = (0..6)
            .map(|s| {
                (0..season * 20)
                    .map(|i| {
                        let ph = ((i + s * 5) % season) as f64 / season as f64;
                        let noise = (((i * 7919 + s * 104729) % 101) as f64 / 101.0 - 0.5) * 0.04;
                        0.5 + 0.3 * (std::f64::consts::TAU * ph).sin() + noise
                    })
                    .collect()
            })
            .collect();
        let cut = Cut::new(16, season, vec![1, 6]);
        let cfg = LstmConfig {
            windows_per_series: 200,
            model: ForecasterConfig {
                epochs: 12,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        let (model, report) = LstmModel::train(&series, cut, &[0.1, 0.5, 0.9], &cfg).unwrap();
        assert!(report.last_loss < report.first_loss, "{report:?}");
        let y = &series[0];
        let origins: Vec<usize> = (season * 18..season * 20 - 7).collect();
        let f = model.forecast(y, &origins).unwrap();
        let (mut err, mut persist, mut inside) = (0.0, 0.0, 0.0);
        for (o, q) in origins.iter().zip(&f) {
            let q = q.as_ref().unwrap();
            let actual = y[o + 6];
            err += (q[1][1] - actual).abs();
            persist += (y[*o] - actual).abs();
            inside += f64::from(q[1][0] <= actual && actual <= q[1][2]);
        }
        let n = origins.len() as f64;
        assert!(err < 0.5 * persist, "lstm {err} vs persistence {persist}");
        assert!(inside / n > 0.5, "80% band covered {}", inside / n);
        // A window longer than the history is not a forecast, not a panic.
        assert!(model.forecast(&y[..5], &[4]).unwrap()[0].is_none());
    }

    #[test]
    fn empty_and_short_histories_are_skipped_not_a_panic() {
        let long: Vec<f64> = (0..800)
            .map(|i| 0.4 + 0.1 * (i as f64 / 30.0).sin())
            .collect();
        let series = vec![Vec::new(), vec![0.5; 3], long];
        let cut = Cut::new(16, 96, vec![1, 4]);
        let cfg = LstmConfig {
            model: ForecasterConfig {
                epochs: 1,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        let (_, report, valid, persist) =
            train_validated(&series, cut.clone(), &[0.1, 0.5, 0.9], &cfg).unwrap();
        assert!(report.windows > 0 && valid.iter().chain(&persist).all(|v| v.is_finite()));
        // Nothing long enough at all: a clear error.
        let err = LstmModel::train(&series[..2], cut, &[0.5], &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("each series needs more than"), "{err}");
    }

    /// Two kinds of series: smooth daily waves, and a noisy level with steps.
    fn two_kinds(n: usize, len: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let wave = |s: usize| -> Vec<f64> {
            (0..len)
                .map(|i| {
                    let ph = (i % 24) as f64 / 24.0;
                    let k = s as f64 * 0.01;
                    0.6 + k + (0.25 + k) * (std::f64::consts::TAU * ph).sin()
                })
                .collect()
        };
        let rough = |s: usize| -> Vec<f64> {
            let mut seed = 99 + s as u64;
            (0..len)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.1;
                    let level = if (i / 37) % 2 == 0 { 0.15 } else { 0.3 };
                    level + noise
                })
                .collect()
        };
        ((0..n).map(wave).collect(), (0..n).map(rough).collect())
    }

    #[test]
    fn classes_sort_series_by_fingerprint_and_a_variant_serves_its_class_only() {
        let (waves, rough) = two_kinds(6, 24 * 30);
        let series: Vec<Vec<f64>> = waves.iter().chain(&rough).cloned().collect();
        let mut cfg = LstmConfig {
            windows_per_series: 64,
            model: ForecasterConfig {
                epochs: 3,
                device: wfe_neural::DeviceChoice::Cpu,
                ..Default::default()
            },
            ..Default::default()
        };
        cfg.fingerprint.window = 8;
        cfg.fingerprint.classes.min_series = 3;
        cfg.fingerprint.classes.epsilon_quantile = 0.3;
        cfg.fingerprint.classes.epochs = 2;
        let levels = [0.1, 0.5, 0.9];
        let cut = Cut::new(16, 24, vec![1, 6]);
        let (mut model, _) = LstmModel::train(&series, cut, &levels, &cfg).unwrap();
        // Two classes of six: the waves and the rough ones.
        let classes = &model.classes.classes;
        assert_eq!(classes.len(), 2, "{classes:?}");
        assert!(classes.iter().all(|c| c.members.len() == 6), "{classes:?}");
        assert!(model.classes.epsilon > 0.0);
        for c in classes {
            assert!(c.radius >= model.classes.epsilon, "{c:?}");
            assert!(
                c.global_mae.is_finite() && c.variant_mae.is_finite(),
                "{c:?}"
            );
            let gain = 1.0 - cfg.fingerprint.classes.min_gain;
            assert_eq!(c.kept, c.variant_mae < c.global_mae * gain, "{c:?}");
            assert_eq!(model.variants.contains_key(&c.id), c.kept);
        }
        let fp = model.cut.fingerprint.clone().unwrap();
        assert_eq!(fp.windows, 3, "a season's worth of windows");
        let wave_class = model
            .classes
            .nearest(&fp.at(&waves[0], 719).unwrap())
            .unwrap()
            .id;
        let rough_class = model
            .classes
            .nearest(&fp.at(&rough[0], 719).unwrap())
            .unwrap()
            .id;
        assert_ne!(wave_class, rough_class);
        // Serve the waves' class by a variant (whether or not training kept one): the waves
        // go to it, the rough series and a series unlike any stay with the global model.
        let fw = model.cut.training_set(&waves, 32, 1000);
        let (variant, report) = model.net.fine_tune(&fw.0, &fw.1, &fw.2, 1, 1e-3).unwrap();
        assert!(report.first_loss.is_finite() && report.windows == fw.0.n);
        assert_eq!(variant.shape(), model.net.shape());
        model.variants.insert(wave_class, variant);
        model.variants.remove(&rough_class);
        for c in &mut model.classes.classes {
            c.kept = c.id == wave_class;
        }
        let odd: Vec<f64> = (0..720).map(|i| (i % 5) as f64 * 2.0).collect();
        let reqs: Vec<(&[f64], usize)> = vec![
            (&waves[1], 719),
            (&rough[1], 719),
            (&odd, 719),
            (&waves[2], 5),
        ];
        let out = model.forecast_many(&reqs).unwrap();
        assert_eq!(out[0].as_ref().unwrap().class, Some(wave_class));
        assert_eq!(out[1].as_ref().unwrap().class, None);
        assert_eq!(out[2].as_ref().unwrap().class, None);
        assert!(out[3].is_none(), "shorter than a window");
        // Saved and loaded, the model forecasts the same, variant included.
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::store::LocalDir::new(dir.path());
        let meta = crate::store::ModelMeta {
            format: crate::store::FORMAT,
            version: 0,
            code_version: "test".into(),
            created_unix: 0,
            source: "synthetic".into(),
            series: series.len(),
            from_ms: 0,
            to_ms: 0,
            step_s: 3600,
            horizons_s: vec![3600, 6 * 3600],
            season_s: 86_400,
            cut: Cut::new(1, 1, vec![1]),
            levels: levels.to_vec(),
            validation_mae: vec![],
            persistence_mae: vec![],
            train: report,
            classes: Classes::default(),
        };
        let v = crate::store::save(&repo, &model, meta).unwrap();
        let (back, meta) = crate::store::load(&repo, 3600, v, None).unwrap();
        assert_eq!(meta.cut, model.cut, "the model's own cut is saved");
        // (JSON keeps floats to their last bit or so.)
        let sum = |c: &Classes| -> Vec<(u32, bool, usize, f64)> {
            let s = |m: &ClassMeta| m.members.iter().flatten().sum::<f64>() + m.radius;
            c.classes
                .iter()
                .map(|m| (m.id, m.kept, m.members.len(), s(m)))
                .collect()
        };
        for (a, b) in sum(&back.classes).iter().zip(sum(&model.classes)) {
            assert!(a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && (a.3 - b.3).abs() < 1e-9);
        }
        assert_eq!(back.variants.keys().collect::<Vec<_>>(), vec![&wave_class]);
        let again = back.forecast_many(&reqs).unwrap();
        for (a, b) in out.iter().zip(&again) {
            let (Some(a), Some(b)) = (a, b) else {
                assert_eq!(a.is_none(), b.is_none());
                continue;
            };
            assert_eq!(a.class, b.class);
            let gap = a.levels.iter().flatten().zip(b.levels.iter().flatten());
            assert!(gap.map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) < 1e-5);
        }
        // A variant's file gone: the version is refused with its name, not served half.
        std::fs::remove_file(
            dir.path()
                .join(format!("forecast-lstm/3600s/v{v}/class-{wave_class}.bin")),
        )
        .unwrap();
        let err = crate::store::load(&repo, 3600, v, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("class-{wave_class}.bin")), "{err}");
    }
}
