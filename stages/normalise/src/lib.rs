//! # wfe-normalise: `metrics.raw` in, `metrics.norm` out
//!
//! What it does to each workload's samples, in order:
//! 1. **Rejects** NaN, infinite and null values (counted as `rejected.nan`, with workload,
//!    metric and time in the log), values beyond ±[`MAX_ABS_VALUE`] (`rejected.out_of_range`:
//!    their differences would overflow the scaler), and times before `earliest_s` or more than
//!    `max_future_s` ahead of the wall clock (`rejected.time`), before any arithmetic on them.
//! 2. **Aligns** each sample to the workload's fixed step (configured, or inferred as the
//!    median gap between its first four distinct timestamps). Samples of one metric in one step are
//!    averaged; an exact repeat of a timestamp is a duplicate and dropped (`dropped.duplicate`).
//! 3. **Waits** `lateness_steps` steps before emitting a step, so out-of-order samples within
//!    that bound (counted back from the workload's newest step) still land in their step;
//!    later ones are counted (`rejected.late`) and never open steps back to their time.
//! 4. **Fills** a gap by carrying the last value for up to `fill_steps` steps (`filled` flag),
//!    and emits the rest of a longer gap as missing (`missing` flag, null value). The rule is
//!    causal: no step waits for the future beyond the lateness bound.
//! 5. **Scales** each metric with min-max parameters learned from the workload's history: the
//!    steps labelled `split=train` when the data carries that label, else its first
//!    `learn_steps` steps. History steps are held until the scaler is fitted, then emitted
//!    scaled like the rest. The parameters are part of the stage state.
//!
//! 6. **Retires** a workload with no new sample for `retire_after_s` of wall-clock time
//!    (`retire.rs`; a replay retires nothing): what it holds is emitted and its state and
//!    names dropped, so pod churn cannot grow the state.
//!
//! Output is time-major: all metrics of one workload's step are adjacent rows, which is what
//! [`wfe_contract::norm::NormBatch`] walks.

use arrow_array::{Array, RecordBatch};
use wfe_contract::columns::{DictStrings, f64s, timestamps};
use wfe_contract::norm::DictMemo;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

mod checks;
mod config;
mod held;
mod out;
mod release;
mod retire;
mod slots;
mod snapshot;
mod workload;
use checks::{infer_step, unusable};
use config::MAX_STEP_S;
pub use config::{MAX_ABS_VALUE, MAX_EARLY_SAMPLES, NormaliseConfig};
pub use out::MAX_BATCH_ROWS;
use out::Out;
use snapshot::State;
use workload::{Acc, OpenStep, Sample, Workload};

/// The normalise stage.
pub struct Normalise {
    cfg: NormaliseConfig,
    state: State,
    /// Reused buffer for the cells of the step being closed.
    cells: Vec<(f64, bool, bool)>,
    /// `split=train` of each label id (derived from `state.label_names`).
    train_of: Vec<Option<bool>>,
    /// The last batches' workload, metric and label keys, resolved (not in the snapshot).
    memos: [DictMemo; 3],
}

impl Normalise {
    pub fn new(cfg: NormaliseConfig) -> Result<Self> {
        if cfg.fill_steps > cfg.max_gap_steps {
            return Err(Error::config(
                "stages.normalise.fill_steps",
                "must not exceed max_gap_steps",
            ));
        }
        if cfg.step_s == Some(0) {
            return Err(Error::config("stages.normalise.step_s", "must be positive"));
        }
        if cfg.step_s.is_some_and(|s| s > MAX_STEP_S) {
            return Err(Error::config(
                "stages.normalise.step_s",
                format!("must be at most {MAX_STEP_S} (a year)"),
            ));
        }
        Ok(Self {
            cfg,
            state: State::default(),
            cells: Vec::new(),
            train_of: Vec::new(),
            memos: Default::default(),
        })
    }

    /// The event times accepted now, in milliseconds: from `earliest_s` to `max_future_s`
    /// past the wall clock. Both ends fit an i64 with room, so step arithmetic on an accepted
    /// time cannot overflow.
    fn time_bounds(&self) -> (i64, i64) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let earliest = self.cfg.earliest_s.clamp(0, i64::MAX / 4000) * 1000;
        let ahead = (self.cfg.max_future_s.min(i64::MAX as u64 / 4000) as i64) * 1000;
        (earliest, now_ms.saturating_add(ahead))
    }

    fn ingest_batch(
        &mut self,
        batch: &RecordBatch,
        ctx: &mut Context,
        out: &mut Out,
        emit: &mut dyn Collector,
    ) -> Result<()> {
        let time = timestamps(batch, "event_time")?.values();
        let wl = DictStrings::new(batch, "workload")?;
        let met = DictStrings::new(batch, "metric")?;
        let lab = DictStrings::new(batch, "labels")?;
        let vals = f64s(batch, "value")?;
        // This batch's dictionary keys as the stage's ids: resolved once per dictionary, not
        // per row, and not again while batches carry the same dictionary.
        let st = &mut self.state;
        let memos = &mut self.memos;
        memos[0].start(wl.dictionary(), &st.workload_names);
        memos[1].start(met.dictionary(), &st.metric_names);
        memos[2].start(lab.dictionary(), &st.label_names);
        let [wm, mm, lm] = memos;
        let wl_ids = wm.slots(&mut st.workload_names).to_vec();
        let met_ids = mm.slots(&mut st.metric_names).to_vec();
        let lab_ids = lm.slots(&mut st.label_names).to_vec();
        let (wkeys, mkeys, lkeys) = (wl.keys(), met.keys(), lab.keys());
        let nulls = vals.nulls().cloned();
        let values = vals.values();
        let (earliest, latest) = self.time_bounds();
        // Workloads with samples in this batch, in first-seen order, and a mark per workload id
        // (a `contains` on the list was quadratic in a batch of thousands of workloads).
        let (mut touched, mut marked): (Vec<u32>, Vec<bool>) = (Vec::new(), Vec::new());
        let mut run: Option<(u32, i64, usize)> = None;
        let n = batch.num_rows();
        let mut skip_until = 0;
        for row in 0..n {
            if row < skip_until {
                continue;
            }
            let w = wl_ids[wkeys[row] as usize];
            let m = met_ids[mkeys[row] as usize];
            let v = values[row];
            let null = nulls.as_ref().is_some_and(|n| n.is_null(row));
            if let Some((kind, msg)) = unusable(null, v, time[row], earliest, latest) {
                let loc = format!(
                    "{} {} at {}",
                    wl.get(row).unwrap_or(""),
                    met.get(row).unwrap_or(""),
                    time[row]
                );
                ctx.event(Event::Rejected {
                    kind,
                    location: &loc,
                    message: msg,
                    count: 1,
                });
                continue;
            }
            // Samples of one workload and timestamp come in runs (a wide row's metrics): the
            // step they go to is found once per run, not once per sample.
            if let Some((rw, rts, idx)) = run
                && rw == w
                && rts == time[row]
            {
                let known = self.state.workloads[w as usize].slot_of.get(m);
                let slot = match known {
                    Some(s) => s as usize,
                    None => self.slot(w as usize, m),
                };
                // The common case, a first sample for this metric in this step, inline.
                if let Some(acc) = self.state.workloads[w as usize].open[idx].acc.get_mut(slot)
                    && acc.n == 0
                {
                    *acc = Acc {
                        sum: v,
                        n: 1,
                        last_ts: rts,
                    };
                    continue;
                }
                self.accumulate(w as usize, idx, slot, rts, v, ctx);
                continue;
            }
            let label = (!lab.is_null(row)).then(|| lab_ids[lkeys[row] as usize]);
            while self.state.workloads.len() <= w as usize {
                self.state.workloads.push(Workload {
                    learning: true,
                    ..Default::default()
                });
            }
            if touched.last() != Some(&w) {
                mark_touched(&mut touched, &mut marked, w);
            }
            run = self
                .add_sample(w, (time[row], m, v, label), ctx, out)
                .map(|idx| (w, time[row], idx));
            // A workload that just finished learning released its history: full chunks go
            // out now, not after the batch (a fleet that finishes learning in one batch held
            // every workload's learning days at once: 780 MB of a 1.16 GB heap peak at 10,000
            // workloads).
            if !out.sealed.is_empty() {
                out.emit_sealed(&mut self.state, emit)?;
            }
            // The rest of the run in a tight loop with the step borrowed once; anything
            // unusual (a bad value, a new metric, a repeat) stops it and takes the path above.
            if let Some((rw, rts, idx)) = run {
                let wk = &mut self.state.workloads[rw as usize];
                let (slot_of, open) = (&wk.slot_of, &mut wk.open[idx]);
                let mut r = row + 1;
                while r < n && wkeys[r] == wkeys[row] && time[r] == rts {
                    let v = values[r];
                    if !v.is_finite()
                        || v.abs() > MAX_ABS_VALUE
                        || nulls.as_ref().is_some_and(|b| b.is_null(r))
                    {
                        break;
                    }
                    let Some(slot) = slot_of.get(met_ids[mkeys[r] as usize]) else {
                        break;
                    };
                    match open.acc.get_mut(slot as usize) {
                        Some(acc) if acc.n == 0 => {
                            *acc = Acc {
                                sum: v,
                                n: 1,
                                last_ts: rts,
                            }
                        }
                        _ => break,
                    }
                    r += 1;
                }
                skip_until = r;
            }
        }
        for w in touched {
            self.emit_ready(w as usize, out, false);
            // A workload whose scaler was just fitted releases its whole history: full chunks
            // go out now, so a batch never holds the fleet's history at once.
            out.emit_sealed(&mut self.state, emit)?;
        }
        Ok(())
    }

    fn add_sample(
        &mut self,
        w: u32,
        sample: Sample,
        ctx: &mut Context,
        out: &mut Out,
    ) -> Option<usize> {
        let ts = sample.0;
        let wi = w as usize;
        if self.state.workloads[wi].step_ms.is_none() {
            let cfg_step = self.cfg.step_s.map(|s| s as i64 * 1000);
            let wk = &mut self.state.workloads[wi];
            if wk.early.len() >= MAX_EARLY_SAMPLES {
                self.reject(
                    ctx,
                    (wi, ts),
                    "no_step",
                    "too many samples before the workload's step is known (fewer than four distinct timestamps)",
                );
                return None;
            }
            wk.early.push(sample);
            if !wk.first_ts.contains(&ts) {
                wk.first_ts.push(ts);
            }
            let step = cfg_step.or_else(|| infer_step(&wk.first_ts));
            if let Some(step) = step {
                wk.step_ms = Some(step);
                self.place_early(wi, ctx, out);
            }
            return None;
        }
        self.place(wi, sample, ctx, out)
    }

    /// Places the samples workload `wi` held until its step was known, in time order (so a
    /// first sample that arrived late still finds its step open).
    fn place_early(&mut self, wi: usize, ctx: &mut Context, out: &mut Out) {
        let mut early = std::mem::take(&mut self.state.workloads[wi].early);
        early.sort_by_key(|e| e.0);
        for sample in early {
            let _ = self.place(wi, sample, ctx, out);
        }
    }

    /// A sample of workload `wi` at `ts` left out: logged and counted under `kind`.
    fn reject(&self, ctx: &mut Context, (wi, ts): (usize, i64), kind: &'static str, message: &str) {
        let loc = format!("{} at {ts}", self.state.workload_names.names[wi]);
        ctx.reject(kind, &loc, message);
    }

    fn place(
        &mut self,
        wi: usize,
        (ts, m, v, label): Sample,
        ctx: &mut Context,
        out: &mut Out,
    ) -> Option<usize> {
        let step = self.state.workloads[wi].step_ms.unwrap_or(1000);
        let t = ts.div_euclid(step) * step;
        let slot = self.slot(wi, m);
        let wk = &mut self.state.workloads[wi];
        if wk.emitted_until.is_some_and(|e| t <= e) {
            self.reject(
                ctx,
                (wi, ts),
                "late",
                "sample older than the lateness bound",
            );
            return None;
        }
        let newest = wk.open.back().map(|s| s.time);
        if let Some(newest) = newest
            && t < newest
            && (newest - t) / step > self.cfg.lateness_steps as i64
        {
            // Later than the bound: rejected here, so no step is ever opened back to a time
            // far behind the workload's newest one (a timestamp of 0 after valid rows).
            let loc = format!("{} at {ts}", self.state.workload_names.names[wi]);
            let msg = format!(
                "{} steps behind the workload's newest step, beyond lateness_steps = {}",
                (newest - t) / step,
                self.cfg.lateness_steps
            );
            ctx.reject("late", &loc, &msg);
            return None;
        }
        if let Some(newest) = newest
            && t > newest
            && (t - newest) / step > self.cfg.max_gap_steps as i64
        {
            // A very long gap: emit what is open, then restart the series at `t`.
            ctx.count("gap.restart", 1);
            self.emit_ready(wi, out, true);
            let wk = &mut self.state.workloads[wi];
            wk.emitted_until = None;
            wk.last.iter_mut().for_each(|l| *l = None);
        }
        let wk = &mut self.state.workloads[wi];
        let nslots = wk.metrics.len();
        match wk.open.front().map(|s| s.time) {
            None => {
                let acc = wk.fresh_acc(nslots);
                wk.open.push_back(OpenStep {
                    time: t,
                    label,
                    acc,
                })
            }
            Some(oldest) if t < oldest => {
                // Before the oldest open step, after the last emitted one and within the
                // lateness bound (checked above): open the few steps back to it.
                let mut time = oldest - step;
                while time >= t {
                    let acc = wk.fresh_acc(nslots);
                    wk.open.push_front(OpenStep {
                        time,
                        label: None,
                        acc,
                    });
                    time -= step;
                }
            }
            _ => {}
        }
        while wk.open.back().is_some_and(|s| s.time < t) {
            let time = wk.open.back().map(|s| s.time + step).unwrap_or(t);
            let acc = wk.fresh_acc(nslots);
            wk.open.push_back(OpenStep {
                time,
                label: None,
                acc,
            });
        }
        if wk.open.len() > self.cfg.lateness_steps + 1 {
            // New steps were opened: close the ones no late sample can reach any more, before
            // indexing, so the index stays valid for the rest of this timestamp's samples.
            self.emit_ready(wi, out, false);
        }
        let wk = &mut self.state.workloads[wi];
        let idx = ((t - wk.open.front().map(|s| s.time).unwrap_or(t)) / step) as usize;
        if wk.open[idx].label.is_none() {
            wk.open[idx].label = label;
        }
        self.accumulate(wi, idx, slot, ts, v, ctx);
        Some(idx)
    }

    /// Adds a sample to open step `idx` of workload `wi`.
    fn accumulate(
        &mut self,
        wi: usize,
        idx: usize,
        slot: usize,
        ts: i64,
        v: f64,
        ctx: &mut Context,
    ) {
        let open = &mut self.state.workloads[wi].open[idx];
        if open.acc.len() <= slot {
            open.acc.resize(slot + 1, Acc::default());
        }
        let acc = &mut open.acc[slot];
        if acc.n > 0 && acc.last_ts == ts {
            ctx.event(Event::Dropped {
                kind: "duplicate",
                count: 1,
            });
            return;
        }
        acc.sum += v;
        acc.n += 1;
        acc.last_ts = ts;
        if acc.n > 1 {
            ctx.count("resampled", 1);
        }
    }

    /// Emits everything workload `wi` holds, as at the end of the input: samples waiting
    /// for a step (placed with the smallest gap seen as the step, or 1 s), open steps, and
    /// the history held while the scaler learns.
    fn close_workload(&mut self, wi: usize, ctx: &mut Context, rows: &mut Out) {
        let wk = &mut self.state.workloads[wi];
        if wk.step_ms.is_none() && !wk.early.is_empty() {
            let mut ts = wk.first_ts.clone();
            ts.sort_unstable();
            let step = ts
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|d| *d > 0)
                .min()
                .unwrap_or(1000);
            wk.step_ms = Some(step);
            ctx.count("step.guessed", 1);
            self.place_early(wi, ctx, rows);
        }
        self.emit_ready(wi, rows, true);
        if self.state.workloads[wi].learning {
            self.finish_learning(wi, rows);
        }
    }

    fn slot(&mut self, wi: usize, m: u32) -> usize {
        let wk = &mut self.state.workloads[wi];
        if let Some(s) = wk.slot_of.get(m) {
            return s as usize;
        }
        let slot = wk.metrics.len();
        wk.slot_of.insert(m, slot as u32, slot);
        wk.metrics.push(m);
        wk.last.push(None);
        slot
    }
}

impl Stage for Normalise {
    fn name(&self) -> &'static str {
        "normalise"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsRaw]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsNorm]
    }

    fn process_batch(
        &mut self,
        _topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let mut rows = Out::with_capacity(batch.num_rows());
        self.ingest_batch(&batch, ctx, &mut rows, out)?;
        rows.emit(&mut self.state, out)?;
        self.retire_idle(ctx, out)
    }

    fn flush(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        let mut rows = Out::default();
        for wi in 0..self.state.workloads.len() {
            self.close_workload(wi, ctx, &mut rows);
            rows.emit_sealed(&mut self.state, out)?;
        }
        rows.emit(&mut self.state, out)
    }

    wfe_contract::state_hooks!(state);
}

/// Adds `w` to the batch's touched workloads unless it is there already.
fn mark_touched(touched: &mut Vec<u32>, marked: &mut Vec<bool>, w: u32) {
    let i = w as usize;
    if marked.len() <= i {
        marked.resize(i + 1, false);
    }
    if !marked[i] {
        marked[i] = true;
        touched.push(w);
    }
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
