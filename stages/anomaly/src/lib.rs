//! # wfe-anomaly: `metrics.norm` in, `anomalies` out
//!
//! Per workload:
//! 1. **Learn** on the workload's history (steps labelled `split=train`, else its first
//!    `learn_steps` steps): fit each configured detector ([`detector`]): PCA reconstruction
//!    ([`pca`]), the range each metric keeps ([`range`]), an isolation forest ([`iforest`]),
//!    an LSTM autoencoder ([`lstm`], with libtorch: the `torch` feature); a workload with one
//!    metric gets `single_metric_detectors` instead: by default its distance from its usual
//!    value at this time of day ([`seasonal`]) and the range.
//! 2. **Score** each later step: every detector's score on a scale calibrated on history,
//!    weighted and added, then smoothed over time; per-metric contributions say which metrics
//!    moved.
//! 3. **Threshold** without test labels: Peaks-Over-Threshold on the history's smoothed scores
//!    ([`pot`], extreme value theory), or a plain quantile of them; raised while the score's
//!    slow level ([`level`]) is above the history's, so a lasting move becomes the new normal.
//! 4. **Segments** ([`segment`]): a step over the threshold opens a segment (`opened`), a new
//!    peak inside it is an `updated` row, and `close_after` steps under the threshold close it
//!    (`closed`, with the segment's end and peak). The metrics an event names are ranked by their
//!    contribution summed over the segment so far. Segment ids hash (workload, start): a
//!    replay yields the same ids.

pub mod budget;
mod config;
pub mod detector;
pub mod iforest;
pub mod level;
pub mod lstm;
mod pca;
mod pending;
pub mod pot;
pub mod range;
pub mod seasonal;
pub mod segment;
mod snapshot;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f64, list_str, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::schemas::labels;
use wfe_contract::{Collector, Context, Event, Result, Stage, Topic};
use wfe_domain::Ragged;
use wfe_domain::retire::{Sweep, sweep_idle};

use pending::Pending;

pub use budget::Budget;
pub use config::{AnomalyConfig, DetectorKind, ThresholdMethod};
pub use detector::{Ensemble, Scratch};
pub use level::Level;
pub use pca::PcaModel;
pub use seasonal::Clock;
pub use segment::{Change, Segment};
pub use wfe_domain::stats::quantile;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Workload {
    slots: Slots,
    /// History rows (scaled values, NaN where missing) until the model is fitted, flat: a
    /// vector per step was most of a learning fleet's memory (snapshots keep the list form).
    history: Ragged<f64>,
    model: Option<Ensemble>,
    /// Smoothed score of the last scored step.
    smoothed: Option<f64>,
    /// Set when learning ended without enough history: the workload is not scored.
    unscored: bool,
    segment: Option<Segment>,
    /// The score's slow level, which raises the threshold after a lasting move. Kept in
    /// entries of its own (`level/<workload>`), so that states written before it restore.
    #[serde(skip)]
    level: Level,
    /// The alerts opened in the trailing day, for the alert budget (with the level).
    #[serde(skip)]
    budget: Budget,
    /// The step of the workload's newest row (ms), which places its history in time for the
    /// fit; kept while learning in entries of its own (`step/<workload>`, see `snapshot.rs`).
    #[serde(skip)]
    step_ms: i64,
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
    /// A batch's steps to score and the scoring's buffers, kept from batch to batch so that a
    /// wide fleet's few steps per workload cost no allocations (not state).
    pending: Pending,
    scratch: Scratch,
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
            pending: Pending::default(),
            scratch: Scratch::default(),
        })
    }

    /// Ends a workload's learning: fits the detectors on its history, if there is enough. The
    /// history's rows are consecutive steps (normalise emits every step, missing values as
    /// NaN) whose last is at `end_ms`.
    fn fit(cfg: &AnomalyConfig, name: &str, wk: &mut Workload, end_ms: i64, ctx: &mut Context) {
        // The detectors fit on rows; they are made for this one workload's fit only.
        let history = std::mem::take(&mut wk.history).to_vecs();
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
        let clock = Clock {
            end_ms,
            step_ms: wk.step_ms,
        };
        match Ensemble::fit_scored(&history, Some(clock), cfg) {
            Ok((model, held_out)) => {
                wk.model = Some(model);
                wk.level = Level::new(&held_out);
            }
            Err(e) => {
                wk.unscored = true;
                ctx.count("unscored.fit_failed", 1);
                tracing::warn!(workload = name, "detector fit failed: {e}");
            }
        }
    }

    /// One scored step: smooths, follows the level, then opens, updates or closes the
    /// workload's segment.
    #[allow(clippy::too_many_arguments)]
    fn step(
        cfg: &AnomalyConfig,
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
        wk.level.observe(time, score, cfg.level_window_h);
        let threshold = model.threshold + wk.level.raise();
        let close_after = cfg.close_after;
        let Some((change, closed)) = segment::advance(
            &mut wk.segment,
            time,
            score,
            threshold,
            close_after,
            contrib,
        ) else {
            return;
        };
        let (names, k) = (&wk.slots.names, cfg.top_metrics);
        let detector = model.name();
        match (change, closed) {
            (Change::Closed, Some(mut seg)) => {
                seg.rank(names, k);
                rows.push(time, name, "closed", &seg, seg.peak, threshold, &detector);
            }
            (change, _) => {
                let Some(seg) = wk.segment.as_mut() else {
                    return;
                };
                seg.rank(names, k);
                let event = if change == Change::Opened {
                    ctx.count("segments.opened", 1);
                    "opened"
                } else {
                    "updated"
                };
                rows.push(time, name, event, seg, score, threshold, &detector);
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
        // Steps to score, grouped per workload and scored as one block each.
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        let cfg = &self.cfg;
        let replayed = nb.for_each_dense(&mut workloads, |d| {
            let wk = d.state;
            wk.step_ms = d.step.step_ms;
            if wk.model.is_none() && !wk.unscored {
                let split = d.step.label.and_then(|l| labels::get(l, "split"));
                let learning = match split {
                    Some(s) => s == "train",
                    None => wk.history.len() < cfg.learn_steps,
                };
                if learning {
                    if split.is_none() && wk.history.is_empty() {
                        // It will hold `learn_steps` rows: room for them, not doubling's
                        // (within the bounds `reserve_exact` keeps to).
                        wk.history.reserve_exact(cfg.learn_steps, d.scaled.len());
                    }
                    wk.history.push(d.scaled);
                    return Ok(());
                }
                let end_ms = d.step.time - d.step.step_ms;
                Self::fit(cfg, d.step.workload, wk, end_ms, ctx);
            }
            let Some(model) = &wk.model else {
                return Ok(());
            };
            pending.push(d.id, d.step.time, model.width, d.scaled);
            Ok(())
        })?;
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        pending.group();
        let scratch = &mut self.scratch;
        for block in pending.blocks() {
            let (times, values) = pending.steps_of(block);
            let name = &workloads.names.names[block.id];
            let wk = &mut workloads.items[block.id];
            let Some(model) = &mut wk.model else { continue };
            model.score_block_with(values, block.width, times, scratch);
            let d = model.width;
            let (scores, contrib) = (&scratch.scores, &scratch.contrib);
            for (i, &time) in times.iter().enumerate() {
                Self::step(
                    &self.cfg,
                    name,
                    wk,
                    time,
                    &mut rows,
                    ctx,
                    scores[i],
                    &contrib[i * d..(i + 1) * d],
                );
            }
        }
        self.pending = pending;
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
        // segments stay open: the input stopped, the anomaly did not end. One restored from a
        // state written before steps were kept does not know its step: it is fitted at its
        // next step, on the same history.
        for (name, wk) in self.workloads.iter_mut() {
            let end_ms = wk.slots.last_step;
            if let Some(end_ms) = end_ms.filter(|_| wk.step_ms > 0)
                && wk.model.is_none()
                && !wk.unscored
                && !wk.history.is_empty()
            {
                Self::fit(&self.cfg, name, wk, end_ms, ctx);
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        snapshot::encode(self.name(), &self.workloads)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.workloads = snapshot::decode(self.name(), state)?;
        Ok(())
    }

    fn snapshot_split(&self) -> Result<Option<wfe_contract::state::Split>> {
        snapshot::split(self.name(), &self.workloads).map(Some)
    }

    fn restore_split(&mut self, state: wfe_contract::state::Split) -> Result<()> {
        self.workloads = snapshot::from_split(self.name(), state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
