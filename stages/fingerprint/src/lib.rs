//! # wfe-fingerprint: `metrics.norm` in, `fingerprints` out
//!
//! A fingerprint is a vector that says how a workload behaves over a window of steps. This
//! first method, `window-stats`, takes per metric the mean, standard deviation, minimum,
//! maximum and trend (last minus first observed value) of the scaled values over the last
//! `window` steps, every `hop` steps. Metrics keep the order in which the workload first
//! reported them, so workloads with the same metric set have comparable vectors.
//!
//! A workload is `cold_start` until it has `learning_steps` observed steps: its fingerprint is
//! already emitted (a person can see what is known) but marked, so that tier selection
//! borrows its neighbours' history instead of trusting its own.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f32, list_str, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub const METHOD: &str = "window-stats";
pub const MODEL_VERSION: &str = "1";
/// Statistics per metric, in vector order.
pub const STATS: [&str; 5] = ["mean", "std", "min", "max", "trend"];

/// Settings of the fingerprint stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// Steps per window.
    #[serde(default = "d_window")]
    pub window: usize,
    /// Steps between fingerprints (equal to `window`: tumbling windows).
    #[serde(default = "d_window")]
    pub hop: usize,
    /// Observed steps before a workload is no longer `cold_start`.
    #[serde(default = "d_window")]
    pub learning_steps: usize,
}

fn d_window() -> usize {
    60
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            window: 60,
            hop: 60,
            learning_steps: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Workload {
    slots: Slots,
    /// Last `window` steps: (time, scaled values by slot, NaN where missing, observed count).
    window: VecDeque<(i64, Vec<f64>, usize)>,
    since_emit: usize,
    observed_steps: usize,
}

impl HasSlots for Workload {
    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}

/// The fingerprint stage.
pub struct Fingerprint {
    cfg: FingerprintConfig,
    workloads: Keyed<Workload>,
}

#[derive(Default)]
struct Rows {
    start: Vec<i64>,
    end: Vec<i64>,
    workload: Vec<String>,
    vector: Vec<Vec<f32>>,
    n: Vec<i64>,
    cold: Vec<bool>,
}

impl Fingerprint {
    pub fn new(cfg: FingerprintConfig) -> Result<Self> {
        if cfg.window < 2 || cfg.hop == 0 {
            return Err(Error::config(
                "stages.fingerprint.window",
                "window must be at least 2 and hop at least 1",
            ));
        }
        Ok(Self {
            cfg,
            workloads: Keyed::default(),
        })
    }

    fn finish(rows: Rows) -> Result<RecordBatch> {
        let n = rows.start.len();
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(rows.start),
            timestamp_column(rows.end),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(vec![METHOD; n])),
            Arc::new(StringArray::from(vec![MODEL_VERSION; n])),
            list_f32(rows.vector),
            Arc::new(Int64Array::from(rows.n)),
            Arc::new(BooleanArray::from(rows.cold)),
            list_str(std::iter::repeat_n(None, n)),
            list_f32_nulls(n),
        ];
        Ok(RecordBatch::try_new(Topic::Fingerprints.schema(), columns)?)
    }
}

/// Appends a fingerprint of the workload's current window.
fn emit(cfg: &FingerprintConfig, name: &str, wk: &Workload, rows: &mut Rows) {
    let (Some(first), Some(last)) = (wk.window.front(), wk.window.back()) else {
        return;
    };
    rows.start.push(first.0);
    rows.end.push(last.0);
    rows.workload.push(name.to_string());
    rows.vector.push(window_stats(&wk.window, wk.slots.len()));
    rows.n
        .push(wk.window.iter().map(|s| (s.2 > 0) as i64).sum());
    rows.cold.push(wk.observed_steps < cfg.learning_steps);
}

fn list_f32_nulls(n: usize) -> ArrayRef {
    Arc::new(arrow_array::ListArray::from_iter_primitive::<
        arrow_array::types::Float32Type,
        _,
        _,
    >(std::iter::repeat_n(None::<Vec<Option<f32>>>, n)))
}

/// The `window-stats` vector: for each slot, [`STATS`] over the observed values.
pub fn window_stats(window: &VecDeque<(i64, Vec<f64>, usize)>, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(width * STATS.len());
    for slot in 0..width {
        let vals = window
            .iter()
            .filter_map(|s| s.1.get(slot).copied().filter(|v| !v.is_nan()));
        let (mut n, mut sum, mut sq, mut lo, mut hi) =
            (0usize, 0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        let (mut first, mut last) = (None, 0.0);
        for v in vals {
            n += 1;
            sum += v;
            sq += v * v;
            lo = lo.min(v);
            hi = hi.max(v);
            first.get_or_insert(v);
            last = v;
        }
        if n == 0 {
            out.extend([0.0; 5]);
            continue;
        }
        let mean = sum / n as f64;
        let var = (sq / n as f64 - mean * mean).max(0.0);
        out.extend([mean, var.sqrt(), lo, hi, last - first.unwrap_or(last)].map(|v| v as f32));
    }
    out
}

impl Stage for Fingerprint {
    fn name(&self) -> &'static str {
        "fingerprint"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsNorm]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Fingerprints]
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
        let cfg = &self.cfg;
        let replayed = nb.for_each_dense(&mut self.workloads, |d| {
            let wk = d.state;
            // Reuse the oldest step's buffer for the newest.
            let mut values = match wk.window.len() == cfg.window {
                true => wk.window.pop_front().map(|(_, v, _)| v).unwrap_or_default(),
                false => Vec::new(),
            };
            values.clear();
            values.extend_from_slice(d.scaled);
            wk.window.push_back((d.step.time, values, d.observed));
            wk.observed_steps += usize::from(d.observed > 0);
            wk.since_emit += 1;
            if wk.since_emit >= cfg.hop && wk.window.len() == cfg.window {
                wk.since_emit = 0;
                emit(cfg, d.step.workload, wk, &mut rows);
            }
            Ok(())
        })?;
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        if !rows.start.is_empty() {
            out.emit(Topic::Fingerprints, Self::finish(rows)?)?;
        }
        Ok(())
    }

    fn flush(&mut self, _ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        // The steps since the last fingerprint are not lost: one more over the latest window.
        let mut rows = Rows::default();
        let mut names: Vec<(&str, &Workload)> = self.workloads.iter().collect();
        names.sort_by_key(|(n, _)| *n);
        for (name, wk) in names {
            if wk.since_emit > 0 && wk.window.len() >= 2 {
                emit(&self.cfg, name, wk, &mut rows);
            }
        }
        if !rows.start.is_empty() {
            out.emit(Topic::Fingerprints, Self::finish(rows)?)?;
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
