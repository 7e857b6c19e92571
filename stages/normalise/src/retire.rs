//! Retiring idle workloads, so a stage that runs for months holds the workloads of its
//! recent past only.
//!
//! Workloads come and go (a pod's name carries a random suffix; a batch job runs once), and
//! every one the stage has seen holds its steps, scaler and names. A workload with no new
//! step for `retire_after_s` is closed as at the end of the input (everything it holds is emitted) and its
//! state dropped. The name tables are then compacted: ids are indices into them and into the
//! workload table, so both are renumbered together, and metric and label ids in the live
//! workloads are rewritten once the tables are mostly names nobody uses any more.
//!
//! Idle in wall-clock time (a replay retires nothing), swept as every stage sweeps
//! ([`wfe_domain::retire`]).

use wfe_contract::{Collector, Context, Result};

use crate::Normalise;
use crate::out::Out;
use crate::slots::SlotIndex;
use crate::workload::Workload;

impl Normalise {
    /// Retires the workloads idle for `retire_after_s`, when a sweep is due (see the module
    /// documentation). Called between batches, when no row refers to an id.
    pub(crate) fn retire_idle(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        let progress = self.state.workloads.iter().map(Workload::newest_ms);
        let Some(idle) = self.state.sweep.idle(self.cfg.retire_after_s, progress) else {
            return Ok(());
        };
        self.state.sweep.forget(&idle);
        let n = idle.iter().filter(|i| **i).count();
        let mut rows = Out::default();
        for wi in (0..idle.len()).filter(|&wi| idle[wi]) {
            self.close_workload(wi, ctx, &mut rows);
            rows.emit_sealed(&mut self.state, out)?;
        }
        rows.emit(&mut self.state, out)?;
        self.drop_workloads(&idle);
        ctx.count("workload.retired", n as u64);
        tracing::info!(
            retired = n,
            live = self.state.workloads.len(),
            "normalise: retired workloads with no new sample for {} s",
            self.cfg.retire_after_s
        );
        Ok(())
    }

    /// Drops the workloads marked in `gone` with their names, and compacts the metric and
    /// label names once fewer than half are still in use.
    fn drop_workloads(&mut self, gone: &[bool]) {
        let st = &mut self.state;
        let mut i = 0;
        st.workloads.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        // Workload ids are positions in both tables; those of the rest shift down alike.
        st.workload_names.retain(|w| !gone[w as usize]);
        let mut metric_used = vec![false; st.metric_names.len()];
        let mut label_used = vec![false; st.label_names.len()];
        for w in &st.workloads {
            mark_used(w, &mut metric_used, &mut label_used);
        }
        if half_unused(&metric_used) {
            let map = st.metric_names.retain(|m| metric_used[m as usize]);
            st.workloads
                .iter_mut()
                .for_each(|w| renumber_metrics(w, &map));
        }
        if half_unused(&label_used) {
            let map = st.label_names.retain(|l| label_used[l as usize]);
            st.workloads
                .iter_mut()
                .for_each(|w| renumber_labels(w, &map));
            self.train_of.clear(); // derived from the label names, rebuilt on use
        }
    }
}

fn half_unused(used: &[bool]) -> bool {
    used.iter().filter(|u| !**u).count() * 2 > used.len()
}

/// Marks the metric and label ids workload `w` refers to.
fn mark_used(w: &Workload, metrics: &mut [bool], labels: &mut [bool]) {
    for &m in &w.metrics {
        metrics[m as usize] = true;
    }
    let early_labels = w.early.iter().filter_map(|e| e.3);
    for &(_, m, _, _) in &w.early {
        metrics[m as usize] = true;
    }
    let step_labels = w.open.iter().filter_map(|s| s.label);
    let held_labels = w.held.labels().iter().filter_map(|l| *l);
    for l in early_labels.chain(step_labels).chain(held_labels) {
        labels[l as usize] = true;
    }
}

/// Rewrites workload `w`'s metric ids by `map` (every one it holds is kept in it).
fn renumber_metrics(w: &mut Workload, map: &[Option<u32>]) {
    let new = |m: u32| map[m as usize].expect("a metric in use is kept");
    w.metrics.iter_mut().for_each(|m| *m = new(*m));
    w.early.iter_mut().for_each(|e| e.1 = new(e.1));
    w.slot_of = SlotIndex::default();
    for (slot, &m) in w.metrics.iter().enumerate() {
        w.slot_of.insert(m, slot as u32, slot);
    }
}

/// Rewrites workload `w`'s label ids by `map`.
fn renumber_labels(w: &mut Workload, map: &[Option<u32>]) {
    let new = |l: Option<u32>| l.and_then(|l| map[l as usize]);
    w.early.iter_mut().for_each(|e| e.3 = new(e.3));
    w.open.iter_mut().for_each(|s| s.label = new(s.label));
    w.held.labels_mut().iter_mut().for_each(|l| *l = new(*l));
}

#[cfg(test)]
mod tests;
