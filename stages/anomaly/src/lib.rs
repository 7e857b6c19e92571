//! # wfe-anomaly: `metrics.norm` in, `anomalies` out
//!
//! The first detector is PCA reconstruction error, per workload:
//! 1. **Learn** on the workload's history (steps labelled `split=train`, else its first
//!    `learn_steps` steps): centre, fit principal components (faer's self-adjoint eigen
//!    decomposition of the covariance) keeping `variance` of the variance, and measure each
//!    metric's reconstruction error on that history (mean and spread).
//! 2. **Score** each later step: per metric, the squared reconstruction error standardised by
//!    its history; the score is their sum, and each metric's share of the positive part is its
//!    contribution, so the event names the metrics that moved.
//! 3. **Threshold** without test labels: the `threshold_quantile` of the history's scores.
//! 4. **Segments**: a step over the threshold opens a segment (`opened`), a new peak inside it
//!    is an `updated` row, and `close_after` steps under the threshold close it (`closed`,
//!    with the segment's end and peak). Segment ids hash (workload, start): a replay yields
//!    the same ids.

mod pca;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f64, list_str, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::schemas::labels;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub use pca::PcaModel;

pub const DETECTOR: &str = "pca-reconstruction";

/// Settings of the anomaly stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Share of the history's variance the kept components explain.
    #[serde(default = "d_variance")]
    pub variance: f64,
    /// Quantile of the history's scores used as the threshold.
    #[serde(default = "d_quantile")]
    pub threshold_quantile: f64,
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
}

fn d_variance() -> f64 {
    0.95
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

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            variance: d_variance(),
            threshold_quantile: d_quantile(),
            learn_steps: d_learn(),
            min_learn_steps: d_min_learn(),
            close_after: d_close(),
            top_metrics: d_top(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    start: i64,
    last_anomalous: i64,
    peak: f64,
    below: usize,
    top: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Workload {
    slots: Slots,
    /// History rows (scaled values, NaN where missing) until the model is fitted.
    history: Vec<Vec<f64>>,
    model: Option<PcaModel>,
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
    top: Vec<Vec<String>>,
    contrib: Vec<Vec<f64>>,
}

impl Rows {
    fn push(
        &mut self,
        time: i64,
        workload: &str,
        event: &'static str,
        seg: &Segment,
        score: f64,
        threshold: f64,
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
        self.top
            .push(seg.top.iter().map(|(m, _)| m.clone()).collect());
        self.contrib.push(seg.top.iter().map(|(_, c)| *c).collect());
    }

    fn finish(self) -> Result<RecordBatch> {
        let n = self.time.len();
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
            Arc::new(StringArray::from(vec![DETECTOR; n])),
            list_str(self.top.into_iter().map(Some)),
            list_f64(self.contrib),
        ];
        Ok(RecordBatch::try_new(Topic::Anomalies.schema(), columns)?)
    }
}

/// Deterministic segment id: a replay of the same data gives the same id.
pub fn segment_id(workload: &str, start: i64) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{workload}\u{1f}{start}").as_bytes());
    format!("{h:016x}")
}

impl Anomaly {
    pub fn new(cfg: AnomalyConfig) -> Result<Self> {
        if !(0.0 < cfg.variance && cfg.variance <= 1.0) {
            return Err(Error::config(
                "stages.anomaly.variance",
                "must be in (0, 1]",
            ));
        }
        if !(0.0 < cfg.threshold_quantile && cfg.threshold_quantile < 1.0) {
            return Err(Error::config(
                "stages.anomaly.threshold_quantile",
                "must be in (0, 1)",
            ));
        }
        Ok(Self {
            cfg,
            workloads: Keyed::default(),
        })
    }

    /// Ends a workload's learning: fits the model on its history, if there is enough.
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
        match PcaModel::fit(&history, cfg.variance, cfg.threshold_quantile) {
            Ok(model) => wk.model = Some(model),
            Err(e) => {
                wk.unscored = true;
                ctx.count("unscored.fit_failed", 1);
                tracing::warn!(workload = name, "detector fit failed: {e}");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        name: &str,
        wk: &mut Workload,
        time: i64,
        rows: &mut Rows,
        ctx: &mut Context,
        score: f64,
        z: &[f64],
    ) {
        let Some(model) = &wk.model else { return };
        let threshold = model.threshold;
        // Contributions only matter for steps that open or update a segment.
        let contrib = if score > threshold {
            PcaModel::contributions(z)
        } else {
            Vec::new()
        };
        let top = |k: usize| -> Vec<(String, f64)> {
            let mut idx: Vec<usize> = (0..contrib.len()).filter(|&i| contrib[i] > 0.0).collect();
            idx.sort_by(|&a, &b| contrib[b].total_cmp(&contrib[a]));
            idx.into_iter()
                .take(k)
                .map(|i| (wk.slots.names[i].clone(), contrib[i]))
                .collect()
        };
        if score > threshold {
            match &mut wk.segment {
                None => {
                    let seg = Segment {
                        start: time,
                        last_anomalous: time,
                        peak: score,
                        below: 0,
                        top: top(self.cfg.top_metrics),
                    };
                    rows.push(time, name, "opened", &seg, score, threshold);
                    ctx.count("segments.opened", 1);
                    wk.segment = Some(seg);
                }
                Some(seg) => {
                    seg.last_anomalous = time;
                    seg.below = 0;
                    if score > seg.peak {
                        seg.peak = score;
                        seg.top = top(self.cfg.top_metrics);
                        rows.push(time, name, "updated", seg, score, threshold);
                    }
                }
            }
        } else if let Some(seg) = &mut wk.segment {
            seg.below += 1;
            if seg.below >= self.cfg.close_after {
                rows.push(time, name, "closed", seg, seg.peak, threshold);
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
            let width = model.mean.len();
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
        let (mut scores, mut z) = (Vec::new(), Vec::new());
        for (id, times, width, values) in pending {
            let name = workloads.names.names[id].clone();
            let wk = &mut workloads.items[id];
            let Some(model) = &wk.model else { continue };
            model.score_block(&values, width, &mut scores, &mut z);
            let d = model.mean.len();
            for (i, &time) in times.iter().enumerate() {
                self.step(
                    &name,
                    wk,
                    time,
                    &mut rows,
                    ctx,
                    scores[i],
                    &z[i * d..(i + 1) * d],
                );
            }
        }
        self.workloads = workloads;
        if !rows.time.is_empty() {
            out.emit(Topic::Anomalies, rows.finish()?)?;
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
