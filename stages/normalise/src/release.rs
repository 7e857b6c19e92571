//! Steps leave: a step no late sample can reach any more is closed, gaps up to `fill_steps`
//! filled, values scaled by the scaler learned on the training split (held back until it is
//! fitted), and written as `metrics.norm` rows.

use wfe_contract::schemas::labels;

use crate::Normalise;
use crate::held::DoneStep;
use crate::out::{MAX_BATCH_ROWS, Out};
use crate::workload::{Acc, Scaler};

impl Normalise {
    /// Closes the steps that no late sample can reach any more (all of them when `all`).
    pub(crate) fn emit_ready(&mut self, wi: usize, out: &mut Out, all: bool) {
        let keep = if all { 0 } else { self.cfg.lateness_steps + 1 };
        let fill = self.cfg.fill_steps as u32;
        while self.state.workloads[wi].open.len() > keep {
            let wk = &mut self.state.workloads[wi];
            let Some(step) = wk.open.pop_front() else {
                break;
            };
            wk.emitted_until = Some(step.time);
            let mut cells = std::mem::take(&mut self.cells);
            cells.clear();
            for slot in 0..wk.metrics.len() {
                let acc = step.acc.get(slot).copied().unwrap_or_default();
                let cell = if acc.n > 0 {
                    let v = acc.sum / acc.n as f64;
                    wk.last[slot] = Some((v, 0));
                    (v, false, false)
                } else {
                    match &mut wk.last[slot] {
                        Some((v, since)) if *since < fill => {
                            *since += 1;
                            (*v, true, false)
                        }
                        Some((_, since)) => {
                            *since += 1;
                            (f64::NAN, false, true)
                        }
                        // Never observed yet in this workload: missing.
                        None => (f64::NAN, false, true),
                    }
                };
                cells.push(cell);
            }
            // The step's accumulators are reused for the next step opened.
            let mut acc = step.acc;
            acc.iter_mut().for_each(|a| *a = Acc::default());
            wk.spare.push(acc);
            let done = DoneStep {
                time: step.time,
                label: step.label,
                cells,
            };
            if self.state.workloads[wi].learning {
                let split = done.label.and_then(|l| self.is_train(l));
                let wk = &mut self.state.workloads[wi];
                let ends = match split {
                    Some(is_train) => !is_train,
                    None => wk.learned_steps >= self.cfg.learn_steps,
                };
                if ends {
                    self.finish_learning(wi, out);
                    self.write_step(wi, &done, out);
                    self.cells = done.cells;
                } else {
                    if split.is_none() && wk.held.len() == 0 {
                        let steps = self.cfg.learn_steps.saturating_sub(wk.learned_steps);
                        wk.held.reserve_exact(steps, done.cells.len());
                    }
                    wk.learned_steps += 1;
                    wk.held.push(done.time, done.label, &done.cells);
                    self.cells = done.cells;
                }
            } else {
                self.write_step(wi, &done, out);
                self.cells = done.cells;
            }
        }
    }

    /// Whether a label set says `split=train` (`None`: no split label), cached per label id.
    pub(crate) fn is_train(&mut self, label: u32) -> Option<bool> {
        let names = &self.state.label_names.names;
        while self.train_of.len() < names.len() {
            let s = &names[self.train_of.len()];
            self.train_of
                .push(labels::get(s, "split").map(|v| v == "train"));
        }
        self.train_of.get(label as usize).copied().flatten()
    }

    /// Fits the scaler on the held history and emits it.
    pub(crate) fn finish_learning(&mut self, wi: usize, out: &mut Out) {
        let wk = &mut self.state.workloads[wi];
        wk.learning = false;
        let n = wk.metrics.len();
        let mut lo = vec![f64::INFINITY; n];
        let mut hi = vec![f64::NEG_INFINITY; n];
        for (slot, v) in wk.held.present() {
            lo[slot] = lo[slot].min(v);
            hi[slot] = hi[slot].max(v);
        }
        wk.scalers = lo
            .into_iter()
            .zip(hi)
            .map(|(lo, hi)| Scaler { lo, hi })
            .collect();
        let held = std::mem::take(&mut wk.held);
        let mut cells = Vec::new();
        for i in 0..held.len() {
            let step = held.step(i, cells);
            self.write_step(wi, &step, out);
            cells = step.cells;
        }
    }

    pub(crate) fn write_step(&mut self, wi: usize, step: &DoneStep, out: &mut Out) {
        if out.time.len() >= MAX_BATCH_ROWS {
            let mut full = std::mem::replace(out, Out::with_capacity(MAX_BATCH_ROWS));
            out.sealed = std::mem::take(&mut full.sealed);
            out.sealed.push(full);
        }
        let wk = &mut self.state.workloads[wi];
        let n = step.cells.len();
        while wk.scalers.len() < n {
            // A metric first seen after learning: learn from its first value on.
            let v = step.cells[wk.scalers.len()].0;
            wk.scalers.push(Scaler { lo: v, hi: v });
        }
        let clip = self.cfg.clip;
        // Columns that are the same for every metric of the step.
        out.time.extend(std::iter::repeat_n(step.time, n));
        out.workload.extend(std::iter::repeat_n(wi as i32, n));
        out.step_ms
            .extend(std::iter::repeat_n(wk.step_ms.unwrap_or(0), n));
        out.label
            .extend(std::iter::repeat_n(step.label.map(|l| l as i32), n));
        out.metric.extend(wk.metrics[..n].iter().map(|&m| m as i32));
        for (&(v, filled, missing), s) in step.cells.iter().zip(&wk.scalers) {
            let (lo, range) = s.lo_range();
            out.value.push(if missing {
                f64::NAN
            } else {
                ((v - lo) / range).clamp(-clip, 1.0 + clip)
            });
            out.raw.push(if missing { f64::NAN } else { v });
            out.filled.push(filled);
            out.missing.push(missing);
            out.any_missing |= missing;
        }
    }
}
