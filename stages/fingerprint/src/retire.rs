//! Retiring idle workloads (`retire_after_s`, as every stage retires them:
//! [`wfe_domain::retire`]). Besides the workload table, three things refer to workloads:
//! the count of known workloads per metric set, the windows held until a basis is fitted (by
//! index), and the published view neighbours are searched in.
//! Other instances know them through `profiles`: a retired workload's row there has no
//! features, which readers take as its removal.

use wfe_contract::{Context, RecordBatch, Result};
use wfe_domain::retire::sweep_idle;

use crate::Fingerprint;

impl Fingerprint {
    /// After a batch: retires the workloads idle for `retire_after_s` when a sweep is due;
    /// returns their `profiles` rows that say so.
    pub(crate) fn retire_idle(&mut self, ctx: &mut Context) -> Result<Option<RecordBatch>> {
        let after = self.cfg.retire_after_s;
        let st = &mut self.state;
        let Some(r) = sweep_idle(&mut st.workloads, &mut self.sweep, after) else {
            return Ok(None);
        };
        // The places of the workloads after a retired one moved.
        self.changes.mark_all();
        for (name, w) in &r.gone {
            if w.counted_known
                && let Some(k) = st.known.get_mut(&w.signature)
            {
                *k = k.saturating_sub(1);
            }
            self.fleet.remove(name);
        }
        let held = st.held.len();
        st.held.retain_mut(|h| match r.map[h.workload] {
            Some(i) => {
                h.workload = i;
                true
            }
            None => false,
        });
        ctx.count("held.retired", (held - st.held.len()) as u64);
        ctx.count("workload.retired", r.gone.len() as u64);
        Self::retired_rows(&r.gone)
    }
}
