//! # wfe-anomaly: `metrics.norm` in, `anomalies` out
//!
//! Per workload:
//! 1. **Learn** on the workload's history (steps labelled `split=train`, else its first
//!    `learn_steps` steps): fit each configured detector ([`detector`]): PCA reconstruction
//!    ([`pca`]), the range each metric keeps ([`range`]), an isolation forest ([`iforest`]),
//!    an LSTM autoencoder ([`lstm`], with libtorch: the `torch` feature).
//! 2. **Score** each later step: every detector's score on a scale calibrated on history,
//!    weighted and added, then smoothed over time; per-metric contributions say which metrics
//!    moved.
//! 3. **Threshold** without test labels: Peaks-Over-Threshold on the history's smoothed scores
//!    ([`pot`], extreme value theory), or a plain quantile of them.
//! 4. **Segments**: a step over the threshold opens a segment (`opened`), a new peak inside it
//!    is an `updated` row, and `close_after` steps under the threshold close it (`closed`,
//!    with the segment's end and peak). The metrics an event names are ranked by their
//!    contribution summed over the segment so far. Segment ids hash (workload, start): a
//!    replay yields the same ids.

pub mod detector;
pub mod iforest;
pub mod lstm;
mod pca;
pub mod pot;
pub mod range;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f64, list_str, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::retire::{Sweep, sweep_idle};
use wfe_contract::schemas::labels;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub use detector::Ensemble;
pub use pca::PcaModel;

/// A detector the ensemble can combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    /// PCA reconstruction error.
    Pca,
    /// Distance outside each metric's usual band.
    Range,
    /// Isolation Forest.
    Iforest,
    /// LSTM autoencoder reconstruction error (needs a build with libtorch).
    Lstm,
}

impl DetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Pca => "pca",
            DetectorKind::Range => "range",
            DetectorKind::Iforest => "iforest",
            DetectorKind::Lstm => "lstm",
        }
    }
}

/// How the label-free threshold is set from the history's scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdMethod {
    /// Peaks-Over-Threshold: a generalised Pareto tail fitted over `pot_initial`, cut at
    /// `pot_risk`.
    Pot,
    /// The `threshold_quantile` of the history's scores.
    Quantile,
}

/// Settings of the anomaly stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Detectors whose calibrated scores are added: any of `pca`, `range`, `iforest`, `lstm`.
    #[serde(default = "d_detectors")]
    pub detectors: Vec<DetectorKind>,
    /// Weight per detector (default 1), e.g. `{ iforest = 0.5 }`.
    #[serde(default)]
    pub weights: BTreeMap<DetectorKind, f64>,
    /// EWMA weight of the newest step in the combined score (1 = no smoothing).
    #[serde(default = "d_smoothing")]
    pub smoothing: f64,
    /// How the threshold is set: `pot` (extreme value theory) or `quantile`.
    #[serde(default = "d_threshold")]
    pub threshold: ThresholdMethod,
    /// POT: quantile of the history's scores whose excesses are fitted.
    #[serde(default = "d_pot_initial")]
    pub pot_initial: f64,
    /// POT: probability that a normal step's score exceeds the threshold.
    #[serde(default = "d_pot_risk")]
    pub pot_risk: f64,
    /// Share of the history (its latest steps) held out of fitting to calibrate the scores
    /// and set the threshold on steps the models have not seen; 0 uses the whole history.
    #[serde(default = "d_holdout")]
    pub holdout: f64,
    /// Quantile of the history's scores used as the threshold (`threshold = "quantile"`).
    #[serde(default = "d_quantile")]
    pub threshold_quantile: f64,
    /// PCA: share of the history's variance the kept components explain.
    #[serde(default = "d_variance")]
    pub variance: f64,
    /// Range: a metric's band is this quantile to one minus it of its history.
    #[serde(default = "d_range_q")]
    pub range_quantile: f64,
    /// Isolation forest: trees.
    #[serde(default = "d_trees")]
    pub iforest_trees: usize,
    /// Isolation forest: history steps each tree is grown on.
    #[serde(default = "d_sample")]
    pub iforest_sample: usize,
    /// Steps of history to learn from when the data has no `split` label.
    #[serde(default = "d_learn")]
    pub learn_steps: usize,
    /// Fewest history steps a model is fitted on; with fewer, the workload is not scored.
    #[serde(default = "d_min_learn")]
    pub min_learn_steps: usize,
    /// Steps under the threshold that close a segment.
    #[serde(default = "d_close")]
    pub close_after: usize,
    /// Metrics named per event.
    #[serde(default = "d_top")]
    pub top_metrics: usize,
    /// The `lstm` detector: window length, training windows, the autoencoder.
    #[serde(default)]
    pub lstm: lstm::LstmSettings,
    /// A workload with no new step for this many seconds (wall clock: a replay of recorded
    /// data retires nothing) is retired: its state and name are dropped, and if it comes
    /// back it starts afresh. Pods come and go with new names, so without this a
    /// long-running stage would grow for ever. 0: never.
    #[serde(default = "d_retire")]
    pub retire_after_s: u64,
}

fn d_detectors() -> Vec<DetectorKind> {
    vec![DetectorKind::Pca, DetectorKind::Range]
}
fn d_smoothing() -> f64 {
    0.3
}
fn d_threshold() -> ThresholdMethod {
    ThresholdMethod::Pot
}
fn d_pot_initial() -> f64 {
    0.98
}
fn d_pot_risk() -> f64 {
    1e-2
}
fn d_holdout() -> f64 {
    0.2
}
fn d_variance() -> f64 {
    0.95
}
fn d_range_q() -> f64 {
    0.005
}
fn d_trees() -> usize {
    100
}
fn d_sample() -> usize {
    256
}
fn d_quantile() -> f64 {
    0.995
}
fn d_learn() -> usize {
    1440
}
fn d_min_learn() -> usize {
    30
}
fn d_close() -> usize {
    5
}
fn d_top() -> usize {
    5
}

fn d_retire() -> u64 {
    wfe_contract::retire::RETIRE_AFTER_S
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            retire_after_s: d_retire(),
            detectors: d_detectors(),
            weights: BTreeMap::new(),
            smoothing: d_smoothing(),
            threshold: d_threshold(),
            pot_initial: d_pot_initial(),
            pot_risk: d_pot_risk(),
            holdout: d_holdout(),
            threshold_quantile: d_quantile(),
            variance: d_variance(),
            range_quantile: d_range_q(),
            iforest_trees: d_trees(),
            iforest_sample: d_sample(),
            learn_steps: d_learn(),
            min_learn_steps: d_min_learn(),
            close_after: d_close(),
            top_metrics: d_top(),
            lstm: lstm::LstmSettings::default(),
        }
    }
}

impl AnomalyConfig {
    /// The weight of a detector (1 unless configured).
    pub fn weight(&self, kind: DetectorKind) -> f64 {
        self.weights.get(&kind).copied().unwrap_or(1.0)
    }

    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::config(format!("stages.anomaly.{key}"), why));
        if self.detectors.is_empty() {
            return bad(
                "detectors",
                "name at least one of pca, range, iforest, lstm",
            );
        }
        if self.detectors.contains(&DetectorKind::Lstm) {
            if !wfe_neural::available() {
                return Err(wfe_neural::unavailable("stages.anomaly.detectors (lstm)"));
            }
            if self.lstm.steps < 2 || self.lstm.max_windows < 2 {
                return bad("lstm.steps", "steps and max_windows must be at least 2");
            }
            self.lstm.model.validate("stages.anomaly.lstm.model")?;
        }
        if !(0.0 < self.variance && self.variance <= 1.0) {
            return bad("variance", "must be in (0, 1]");
        }
        if !(0.0 < self.threshold_quantile && self.threshold_quantile < 1.0) {
            return bad("threshold_quantile", "must be in (0, 1)");
        }
        if !(0.0 < self.smoothing && self.smoothing <= 1.0) {
            return bad("smoothing", "must be in (0, 1]");
        }
        if !(0.0 < self.pot_initial && self.pot_initial < 1.0) {
            return bad("pot_initial", "must be in (0, 1)");
        }
        if !(0.0 < self.pot_risk && self.pot_risk < 1.0 - self.pot_initial) {
            return bad("pot_risk", "must be in (0, 1 - pot_initial)");
        }
        if !(0.0..0.9).contains(&self.holdout) {
            return bad("holdout", "must be in [0, 0.9)");
        }
        if !(0.0..0.5).contains(&self.range_quantile) {
            return bad("range_quantile", "must be in [0, 0.5)");
        }
        if self.iforest_trees == 0 || self.iforest_sample < 2 {
            return bad(
                "iforest_trees",
                "need at least 1 tree and iforest_sample of at least 2",
            );
        }
        if let Some((k, w)) = self
            .weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return bad(
                &format!("weights.{}", k.as_str()),
                &format!("{w} is not a finite weight >= 0"),
            );
        }
        Ok(())
    }
}

pub use wfe_contract::stats::quantile;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    start: i64,
    last_anomalous: i64,
    peak: f64,
    below: usize,
    /// Per-metric contributions summed over the segment's anomalous steps.
    sum: Vec<f64>,
    top: Vec<(String, f64)>,
}

impl Segment {
    /// Ranks the metrics by summed contribution; shares of the total are reported.
    fn rank(&mut self, names: &[String], k: usize) {
        let total: f64 = self.sum.iter().filter(|v| **v > 0.0).sum();
        let mut idx: Vec<usize> = (0..self.sum.len()).filter(|&i| self.sum[i] > 0.0).collect();
        idx.sort_by(|&a, &b| self.sum[b].total_cmp(&self.sum[a]).then(a.cmp(&b)));
        self.top = idx
            .into_iter()
            .take(k)
            .filter_map(|i| Some((names.get(i)?.clone(), self.sum[i] / total)))
            .collect();
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Workload {
    slots: Slots,
    /// History rows (scaled values, NaN where missing) until the model is fitted.
    history: Vec<Vec<f64>>,
    model: Option<Ensemble>,
    /// Smoothed score of the last scored step.
    smoothed: Option<f64>,
    /// Set when learning ended without enough history: the workload is not scored.
    unscored: bool,
    segment: Option<Segment>,
}

impl HasSlots for Workload {
    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}

/// The anomaly stage.
pub struct Anomaly {
    cfg: AnomalyConfig,
    workloads: Keyed<Workload>,
    /// When to retire idle workloads (`retire_after_s`; not in the snapshot).
    sweep: Sweep,
}

#[derive(Default)]
struct Rows {
    time: Vec<i64>,
    workload: Vec<String>,
    segment_id: Vec<String>,
    event: Vec<&'static str>,
    start: Vec<i64>,
    end: Vec<Option<i64>>,
    score: Vec<f64>,
    threshold: Vec<f64>,
    detector: Vec<String>,
    top: Vec<Vec<String>>,
    contrib: Vec<Vec<f64>>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        time: i64,
        workload: &str,
        event: &'static str,
        seg: &Segment,
        score: f64,
        threshold: f64,
        detector: &str,
    ) {
        self.time.push(time);
        self.workload.push(workload.to_string());
        self.segment_id.push(segment_id(workload, seg.start));
        self.event.push(event);
        self.start.push(seg.start);
        self.end
            .push((event == "closed").then_some(seg.last_anomalous));
        self.score.push(score);
        self.threshold.push(threshold);
        self.detector.push(detector.to_string());
        self.top
            .push(seg.top.iter().map(|(m, _)| m.clone()).collect());
        self.contrib.push(seg.top.iter().map(|(_, c)| *c).collect());
    }

    fn finish(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(self.time),
            Arc::new(StringArray::from(self.workload)),
            Arc::new(StringArray::from(self.segment_id)),
            Arc::new(StringArray::from(self.event)),
            timestamp_column(self.start),
            Arc::new(
                arrow_array::TimestampMillisecondArray::from(self.end)
                    .with_timezone(wfe_contract::schemas::TZ),
            ),
            Arc::new(Float64Array::from(self.score)),
            Arc::new(Float64Array::from(self.threshold)),
            Arc::new(StringArray::from(self.detector)),
            list_str(self.top.into_iter().map(Some)),
            list_f64(self.contrib),
        ];
        Ok(RecordBatch::try_new(Topic::Anomalies.schema(), columns)?)
    }
}

/// Deterministic segment id: a replay of the same data gives the same id.
pub fn segment_id(workload: &str, start: i64) -> String {
    wfe_contract::id::stable_id(&[workload, &start.to_string()])
}

impl Anomaly {
    pub fn new(cfg: AnomalyConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            workloads: Keyed::default(),
            sweep: Sweep::default(),
        })
    }

    /// Ends a workload's learning: fits the detectors on its history, if there is enough.
    fn fit(cfg: &AnomalyConfig, name: &str, wk: &mut Workload, ctx: &mut Context) {
        let history = std::mem::take(&mut wk.history);
        if history.len() < cfg.min_learn_steps {
            wk.unscored = true;
            ctx.count("unscored.too_little_history", 1);
            tracing::warn!(
                workload = name,
                steps = history.len(),
                "too little history to fit a detector"
            );
            return;
        }
        match Ensemble::fit(&history, cfg) {
            Ok(model) => wk.model = Some(model),
            Err(e) => {
                wk.unscored = true;
                ctx.count("unscored.fit_failed", 1);
                tracing::warn!(workload = name, "detector fit failed: {e}");
            }
        }
    }

    /// One scored step: smooths, then opens, updates or closes the workload's segment.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        name: &str,
        wk: &mut Workload,
        time: i64,
        rows: &mut Rows,
        ctx: &mut Context,
        raw: f64,
        contrib: &[f64],
    ) {
        let Some(model) = &wk.model else { return };
        let score = model.smooth(wk.smoothed, raw);
        wk.smoothed = Some(score);
        let threshold = model.threshold;
        // Named only for the rows it writes: most steps write none.
        let detector = || model.name();
        let k = self.cfg.top_metrics;
        if score > threshold {
            match &mut wk.segment {
                None => {
                    let mut seg = Segment {
                        start: time,
                        last_anomalous: time,
                        peak: score,
                        below: 0,
                        sum: contrib.to_vec(),
                        top: Vec::new(),
                    };
                    seg.rank(&wk.slots.names, k);
                    rows.push(time, name, "opened", &seg, score, threshold, &detector());
                    ctx.count("segments.opened", 1);
                    wk.segment = Some(seg);
                }
                Some(seg) => {
                    seg.last_anomalous = time;
                    seg.below = 0;
                    for (s, c) in seg.sum.iter_mut().zip(contrib) {
                        *s += c;
                    }
                    if score > seg.peak {
                        seg.peak = score;
                        seg.rank(&wk.slots.names, k);
                        rows.push(time, name, "updated", seg, score, threshold, &detector());
                    }
                }
            }
        } else if let Some(seg) = &mut wk.segment {
            seg.below += 1;
            if seg.below >= self.cfg.close_after {
                seg.rank(&wk.slots.names, k);
                rows.push(time, name, "closed", seg, seg.peak, threshold, &detector());
                wk.segment = None;
            }
        }
    }
}

impl Stage for Anomaly {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsNorm]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Anomalies]
    }

    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let nb = NormBatch::new(&batch)?;
        let mut rows = Rows::default();
        let mut workloads = std::mem::take(&mut self.workloads);
        // Steps to score, per workload: (id, times, width, values), scored as one block.
        let mut pending: Vec<(usize, Vec<i64>, usize, Vec<f64>)> = Vec::new();
        let cfg = &self.cfg;
        let replayed = nb.for_each_dense(&mut workloads, |d| {
            let wk = d.state;
            if wk.model.is_none() && !wk.unscored {
                let split = d.step.label.and_then(|l| labels::get(l, "split"));
                let learning = match split {
                    Some(s) => s == "train",
                    None => wk.history.len() < cfg.learn_steps,
                };
                if learning {
                    wk.history.push(d.scaled.to_vec());
                    return Ok(());
                }
                Self::fit(cfg, d.step.workload, wk, ctx);
            }
            let Some(model) = &wk.model else {
                return Ok(());
            };
            let width = model.width;
            let pos = match pending.iter().position(|p| p.0 == d.id) {
                Some(p) => p,
                None => {
                    pending.push((d.id, Vec::new(), width, Vec::new()));
                    pending.len() - 1
                }
            };
            let block = &mut pending[pos];
            block.1.push(d.step.time);
            block
                .3
                .extend((0..width).map(|j| d.scaled.get(j).copied().unwrap_or(f64::NAN)));
            Ok(())
        })?;
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        let (mut scores, mut contrib) = (Vec::new(), Vec::new());
        for (id, times, width, values) in pending {
            let name = workloads.names.names[id].clone();
            let wk = &mut workloads.items[id];
            let Some(model) = &mut wk.model else { continue };
            model.score_block(&values, width, &mut scores, &mut contrib);
            let d = model.width;
            for (i, &time) in times.iter().enumerate() {
                self.step(
                    &name,
                    wk,
                    time,
                    &mut rows,
                    ctx,
                    scores[i],
                    &contrib[i * d..(i + 1) * d],
                );
            }
        }
        self.workloads = workloads;
        if !rows.time.is_empty() {
            out.emit(Topic::Anomalies, rows.finish()?)?;
        }
        // A retired workload's open segment goes with it: nothing would ever close it.
        let after = self.cfg.retire_after_s;
        if let Some(r) = sweep_idle(&mut self.workloads, &mut self.sweep, after) {
            ctx.count("workload.retired", r.gone.len() as u64);
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Context, _out: &mut dyn Collector) -> Result<()> {
        // Workloads still learning get their model now (a later run restores it); open
        // segments stay open: the input stopped, the anomaly did not end.
        for (name, wk) in self.workloads.iter_mut() {
            if wk.model.is_none() && !wk.unscored && !wk.history.is_empty() {
                Self::fit(&self.cfg, name, wk, ctx);
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &self.workloads)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.workloads = wfe_contract::state::decode(self.name(), state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
