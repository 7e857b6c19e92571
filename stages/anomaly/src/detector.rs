//! The detector ensemble: each detector's raw score is put on a common scale learned from the
//! workload's history, the scaled scores are added with their weights, and the sum is smoothed
//! over time.
//!
//! Why each piece:
//! - **Calibration**: detectors speak different units (squared errors, band widths, path
//!   lengths). Each is mapped to `(score - median) / (q99 - median)` of its own history scores,
//!   so that 1 means "as unusual as the top 1 % of history" for every detector.
//! - **Smoothing** (EWMA, `smoothing` = weight of the newest step): anomalies last several
//!   steps while single-step noise does not, so a short memory lifts real segments above
//!   noise. It is causal: a step's score never waits for later steps.
//! - **Contributions**: the range detector's deviations name the metrics that left their
//!   usual band (what experts look at); the PCA shares, scaled down by [`PCA_SHARE`], rank the
//!   metrics whose relationship broke while each stayed in band; the LSTM autoencoder's
//!   per-metric reconstruction errors likewise. The isolation forest has no per-metric view
//!   and adds none.
//! - **Context**: the LSTM scores a step from the window ending at it, so the ensemble keeps
//!   the last rows it scored (`tail`) for the next block.

use serde::{Deserialize, Serialize};
use wfe_domain::stats::quantiles_select;

use crate::iforest::IsolationForest;
use crate::lstm::LstmDetector;
use crate::pca::{Blocks, PcaModel};
use crate::range::RangeModel;
use crate::seasonal::{Clock, SeasonalModel};
use crate::{AnomalyConfig, DetectorKind, ThresholdMethod, pot};

/// Weight of a metric's PCA error share next to its range deviation (in band widths).
pub const PCA_SHARE: f64 = 0.1;
/// Weight of a metric's LSTM reconstruction error share, as for PCA.
pub const LSTM_SHARE: f64 = 0.1;

/// One fitted detector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Model {
    Pca(PcaModel),
    Range(RangeModel),
    IsolationForest(IsolationForest),
    /// Boxed: five times the size of the others, and most workloads have no LSTM (serde
    /// encodes a box as its content, so snapshots are unchanged).
    Lstm(Box<LstmDetector>),
    Seasonal(SeasonalModel),
}

impl Model {
    fn kind(&self) -> DetectorKind {
        match self {
            Model::Pca(_) => DetectorKind::Pca,
            Model::Range(_) => DetectorKind::Range,
            Model::IsolationForest(_) => DetectorKind::Iforest,
            Model::Lstm(_) => DetectorKind::Lstm,
            Model::Seasonal(_) => DetectorKind::Seasonal,
        }
    }

    /// Rows before a step that its score needs.
    fn context(&self) -> usize {
        match self {
            Model::Lstm(l) => l.context(),
            _ => 0,
        }
    }
}

/// A detector with its weight and calibration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub model: Model,
    pub weight: f64,
    /// Median of the history's raw scores.
    pub center: f64,
    /// q99 minus median of the history's raw scores (1 where that is 0).
    pub scale: f64,
}

/// The fitted detectors of one workload, and the threshold of their combined score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ensemble {
    pub parts: Vec<Part>,
    /// Metrics per step the models were fitted on.
    pub width: usize,
    /// EWMA weight of the newest step (1 = no smoothing).
    pub alpha: f64,
    /// Smoothed combined score above which a step is anomalous.
    pub threshold: f64,
    /// The last rows scored (or of the history), `width` values each: context for detectors
    /// that read a window (see [`Ensemble::context`]).
    pub tail: Vec<f64>,
}

/// The buffers [`Ensemble::score_block_with`] scores into and works in, kept by the caller
/// from block to block.
#[derive(Debug, Default)]
pub struct Scratch {
    /// One combined score per row of the last block.
    pub scores: Vec<f64>,
    /// Per-metric contributions of the last block, row-major, [`Ensemble::width`] per row.
    pub contrib: Vec<f64>,
    raw: Vec<f64>,
    fitted: Vec<f64>,
    work: Work,
}

/// What the parts work in while scoring a block.
#[derive(Debug, Default)]
struct Work {
    z: Vec<f64>,
    dev: Vec<f64>,
    pca: Blocks,
}

/// Raw scores of a detector that deviates per metric (`score` fills a row's deviations and
/// returns their sum): each row's sum into `raw`, and each deviation, weighted, into
/// `contrib` when given (experts name the metrics that left their usual values).
fn deviations(
    m: usize,
    d: usize,
    weight: f64,
    mut score: impl FnMut(usize, &mut [f64]) -> f64,
    (raw, dev): (&mut Vec<f64>, &mut Vec<f64>),
    mut contrib: Option<&mut [f64]>,
) {
    dev.clear();
    dev.resize(d, 0.0);
    for r in 0..m {
        raw.push(score(r, dev));
        if let Some(c) = contrib.as_deref_mut() {
            for (j, v) in dev.iter().enumerate() {
                c[r * d + j] += weight * v;
            }
        }
    }
}

/// Median, and q99 minus median (1 where that is 0), of finite raw scores.
fn calibration(raw: &[f64]) -> (f64, f64) {
    let mut sorted: Vec<f64> = raw.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return (0.0, 1.0);
    }
    // By selection: the same order statistics as a sort, interpolated the same way.
    let [center, q99] = quantiles_select(&mut sorted, &[0.5, 0.99])[..] else {
        return (0.0, 1.0);
    };
    let spread = q99 - center;
    (center, if spread > 1e-12 { spread } else { 1.0 })
}

fn flatten(history: &[Vec<f64>], d: usize) -> Vec<f64> {
    let mut flat = Vec::with_capacity(history.len() * d);
    for r in history {
        flat.extend((0..d).map(|j| r.get(j).copied().unwrap_or(f64::NAN)));
    }
    flat
}

impl Ensemble {
    /// Fits every configured detector on the history (rows of scaled values, NaN = missing)
    /// and sets the threshold from the history's own combined scores: no labels needed. The
    /// `clock` places the history's steps in time, which the `seasonal` detector needs.
    pub fn fit(
        history: &[Vec<f64>],
        clock: Option<Clock>,
        cfg: &AnomalyConfig,
    ) -> Result<Self, String> {
        Self::fit_scored(history, clock, cfg).map(|(ens, _)| ens)
    }

    /// [`Ensemble::fit`], also returning the smoothed scores the threshold was set on (the
    /// held-out part of the history): the base of the workload's [`crate::Level`].
    pub fn fit_scored(
        history: &[Vec<f64>],
        clock: Option<Clock>,
        cfg: &AnomalyConfig,
    ) -> Result<(Self, Vec<f64>), String> {
        let n = history.len();
        let d = history.iter().map(Vec::len).max().unwrap_or(0);
        if n < 2 || d == 0 {
            return Err(format!(
                "need at least 2 steps of at least 1 metric, have {n} x {d}"
            ));
        }
        let times = clock.map(|c| c.times(n)).unwrap_or_default();
        let parts = Self::fit_parts(history, &times, d, cfg)?;
        let mut ens = Self {
            parts,
            width: d,
            alpha: cfg.smoothing,
            threshold: f64::INFINITY,
            tail: Vec::new(),
        };
        // Calibrate and threshold on scores the models did not see while fitting: the last
        // `holdout` share of the history, scored by models fitted on the rest (the models
        // kept are fitted on everything). In-sample scores are too low (a band always holds
        // its own history), which would put the threshold under ordinary new steps.
        let split = ((n as f64) * (1.0 - cfg.holdout)).round() as usize;
        let held_out = cfg.holdout > 0.0 && split >= 2 && n - split >= 2;
        let (probe, calib_rows) = if held_out {
            (
                Self::fit_parts(&history[..split], times.get(..split).unwrap_or(&[]), d, cfg)?,
                &history[split..],
            )
        } else {
            (ens.parts.clone(), history)
        };
        let context = ens.context();
        let before = if held_out { split } else { 0 };
        let probe = Self {
            parts: probe,
            width: d,
            alpha: ens.alpha,
            threshold: f64::INFINITY,
            tail: flatten(&history[before.saturating_sub(context)..before], d),
        };
        let flat = flatten(calib_rows, d);
        let calib_times = times.get(n - calib_rows.len()..).unwrap_or(&[]);
        let (mut raw, mut combined) = (Vec::new(), vec![0.0; calib_rows.len()]);
        let mut work = Work::default();
        for (i, part) in ens.parts.iter_mut().enumerate() {
            probe.part_scores(i, &flat, calib_times, &mut raw, &mut work, None);
            (part.center, part.scale) = calibration(&raw);
            for (c, r) in combined.iter_mut().zip(&raw) {
                let v = part.weight * (r - part.center) / part.scale;
                if v.is_finite() {
                    *c += v;
                }
            }
        }
        let mut smoothed = Vec::with_capacity(combined.len());
        let mut prev = None;
        for s in combined {
            let v = ens.smooth(prev, s);
            prev = Some(v);
            smoothed.push(v);
        }
        // Scoring continues from the end of the history.
        ens.tail = flatten(&history[n.saturating_sub(context)..], d);
        ens.threshold = match cfg.threshold {
            ThresholdMethod::Pot => pot::pot_threshold(&smoothed, cfg.pot_initial, cfg.pot_risk),
            ThresholdMethod::Quantile => {
                quantiles_select(&mut smoothed.clone(), &[cfg.threshold_quantile])[0]
            }
        };
        Ok((ens, smoothed))
    }

    /// Fits each detector configured for `d` metrics (uncalibrated) on `history`, whose steps
    /// are at `times` (none: no detector may need them).
    fn fit_parts(
        history: &[Vec<f64>],
        times: &[i64],
        d: usize,
        cfg: &AnomalyConfig,
    ) -> Result<Vec<Part>, String> {
        let mut parts = Vec::new();
        for &kind in cfg.detectors_for(d) {
            let model = match kind {
                DetectorKind::Pca => Model::Pca(PcaModel::fit(history, cfg.variance)?),
                DetectorKind::Range => {
                    Model::Range(RangeModel::fit(history, d, cfg.range_quantile)?)
                }
                DetectorKind::Iforest => Model::IsolationForest(IsolationForest::fit(
                    history,
                    d,
                    cfg.iforest_trees,
                    cfg.iforest_sample,
                    0x5EED,
                )?),
                DetectorKind::Lstm => {
                    Model::Lstm(Box::new(LstmDetector::fit(history, d, &cfg.lstm)?))
                }
                DetectorKind::Seasonal if times.is_empty() => {
                    return Err("the seasonal detector needs the times of the history".into());
                }
                DetectorKind::Seasonal => Model::Seasonal(SeasonalModel::fit(
                    history,
                    times,
                    d,
                    i64::try_from(cfg.season_s.saturating_mul(1000)).unwrap_or(i64::MAX),
                    cfg.season_buckets,
                )?),
            };
            parts.push(Part {
                weight: cfg.weight(kind),
                model,
                center: 0.0,
                scale: 1.0,
            });
        }
        Ok(parts)
    }

    /// Name of the combination, for the `detector` column: `pca+range`.
    pub fn name(&self) -> String {
        self.parts
            .iter()
            .map(|p| p.model.kind().as_str())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Rows of context the parts need before a step.
    pub fn context(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.model.context())
            .max()
            .unwrap_or(0)
    }

    /// Raw scores of part `i` for each row of `rows` (`width` values each, following the rows
    /// in `tail`, at `times`); adds its weighted per-metric contributions into `contrib` when
    /// given.
    fn part_scores(
        &self,
        i: usize,
        rows: &[f64],
        times: &[i64],
        raw: &mut Vec<f64>,
        work: &mut Work,
        contrib: Option<&mut [f64]>,
    ) {
        let d = self.width;
        let m = rows.len() / d;
        raw.clear();
        let part = &self.parts[i];
        match &part.model {
            Model::Pca(p) => {
                let z = &mut work.z;
                p.score_block_in(rows, d, raw, z, &mut work.pca);
                if let Some(c) = contrib {
                    let pd = p.mean.len();
                    for r in 0..m {
                        let zr = &z[r * pd..(r + 1) * pd];
                        let pos: f64 = zr.iter().map(|v| v.max(0.0)).sum();
                        if pos > 0.0 {
                            for (j, v) in zr.iter().enumerate() {
                                c[r * d + j] += part.weight * PCA_SHARE * v.max(0.0) / pos;
                            }
                        }
                    }
                }
            }
            Model::Range(rm) => {
                let score =
                    |r: usize, dev: &mut [f64]| rm.deviations_into(&rows[r * d..(r + 1) * d], dev);
                deviations(m, d, part.weight, score, (raw, &mut work.dev), contrib);
            }
            Model::Seasonal(sm) => {
                // A step without its time (none given) deviates by 0.
                let score = |r: usize, dev: &mut [f64]| match times.get(r) {
                    Some(&t) => sm.deviations_into(t, &rows[r * d..(r + 1) * d], dev),
                    None => {
                        dev.fill(0.0);
                        0.0
                    }
                };
                deviations(m, d, part.weight, score, (raw, &mut work.dev), contrib);
            }
            Model::IsolationForest(f) => {
                raw.extend((0..m).map(|r| f.score(&rows[r * d..(r + 1) * d])));
            }
            Model::Lstm(l) => {
                let keep = (l.context() * d).min(self.tail.len());
                let context = &self.tail[self.tail.len() - keep..];
                let mut errors = Vec::new();
                l.score(
                    context,
                    rows,
                    d,
                    raw,
                    contrib.is_some().then_some(&mut errors),
                );
                if let Some(c) = contrib {
                    for r in 0..m.min(errors.len() / d) {
                        let e = &errors[r * d..(r + 1) * d];
                        let total: f64 = e.iter().filter(|v| v.is_finite()).sum();
                        if total > 0.0 {
                            for (j, v) in e.iter().enumerate().filter(|(_, v)| v.is_finite()) {
                                c[r * d + j] += part.weight * LSTM_SHARE * v / total;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Combined calibrated (unsmoothed) score per row of `rows` (`width` values each, NaN =
    /// missing; extra columns beyond the fitted width are ignored; one time per row, which
    /// the `seasonal` detector reads), and per-metric contributions, row-major with
    /// [`Ensemble::width`] per row.
    pub fn score_block(
        &mut self,
        rows: &[f64],
        width: usize,
        times: &[i64],
        scores: &mut Vec<f64>,
        contrib: &mut Vec<f64>,
    ) {
        let mut scratch = Scratch {
            scores: std::mem::take(scores),
            contrib: std::mem::take(contrib),
            ..Scratch::default()
        };
        self.score_block_with(rows, width, times, &mut scratch);
        (*scores, *contrib) = (scratch.scores, scratch.contrib);
    }

    /// [`Ensemble::score_block`] into `scratch.scores` and `scratch.contrib`, with the
    /// working buffers of `scratch`: the stage scores a block per workload and batch, a few
    /// rows each in a wide fleet, where allocating them was most of the cost.
    pub fn score_block_with(
        &mut self,
        rows: &[f64],
        width: usize,
        times: &[i64],
        scratch: &mut Scratch,
    ) {
        let d = self.width;
        let m = rows.len().checked_div(width).unwrap_or(0);
        // Re-lay rows to the fitted width (a metric that appeared later is not modelled).
        let fitted: &[f64] = if width == d {
            rows
        } else {
            let v = &mut scratch.fitted;
            v.clear();
            for r in 0..m {
                v.extend((0..d).map(|j| {
                    if j < width {
                        rows[r * width + j]
                    } else {
                        f64::NAN
                    }
                }));
            }
            v
        };
        let Scratch {
            scores,
            contrib,
            raw,
            work,
            ..
        } = scratch;
        scores.clear();
        scores.resize(m, 0.0);
        contrib.clear();
        contrib.resize(m * d, 0.0);
        for i in 0..self.parts.len() {
            self.part_scores(i, fitted, times, raw, work, Some(contrib));
            let p = &self.parts[i];
            for (s, r) in scores.iter_mut().zip(raw.iter()) {
                let v = p.weight * (r - p.center) / p.scale;
                if v.is_finite() {
                    *s += v;
                }
            }
        }
        // The last rows become the next block's context.
        let keep = self.context() * d;
        if keep > 0 {
            let mut tail = std::mem::take(&mut self.tail);
            tail.extend_from_slice(fitted);
            let drop = tail.len().saturating_sub(keep);
            tail.drain(..drop);
            self.tail = tail;
        }
    }

    /// The smoothed score after `raw`, given the previous smoothed score.
    pub fn smooth(&self, prev: Option<f64>, raw: f64) -> f64 {
        match prev {
            Some(p) if p.is_finite() => self.alpha * raw + (1.0 - self.alpha) * p,
            _ => raw,
        }
    }
}
