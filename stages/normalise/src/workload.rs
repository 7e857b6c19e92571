//! A workload's state in the stage: its metric slots, the steps open for late samples, the
//! history held while its scaler learns, and the scalers.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::held::Held;
use crate::slots::SlotIndex;

/// Accumulates one metric's samples within one step.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Acc {
    pub(crate) sum: f64,
    pub(crate) n: u32,
    pub(crate) last_ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OpenStep {
    pub(crate) time: i64,
    pub(crate) label: Option<u32>,
    pub(crate) acc: Vec<Acc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Scaler {
    pub(crate) lo: f64,
    pub(crate) hi: f64,
}

impl Scaler {
    /// Offset and range to scale by; a constant or unseen metric keeps its raw offset from 0.
    pub(crate) fn lo_range(&self) -> (f64, f64) {
        let lo = if self.lo.is_finite() { self.lo } else { 0.0 };
        let range = if self.hi > self.lo && self.lo.is_finite() {
            self.hi - self.lo
        } else {
            1.0
        };
        (lo, range)
    }
}

/// One sample of a workload: (ts, metric id, value, label id).
pub(crate) type Sample = (i64, u32, f64, Option<u32>);

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct Workload {
    /// Global metric id of each slot.
    pub(crate) metrics: Vec<u32>,
    /// Slot of each global metric id the workload has.
    pub(crate) slot_of: SlotIndex,
    pub(crate) step_ms: Option<i64>,
    /// Timestamps seen before the step is known (to infer it).
    pub(crate) first_ts: Vec<i64>,
    /// Samples held until the step is known.
    pub(crate) early: Vec<Sample>,
    pub(crate) open: VecDeque<OpenStep>,
    /// Last emitted step time, and per slot the last observed value and steps since.
    pub(crate) emitted_until: Option<i64>,
    pub(crate) last: Vec<Option<(f64, u32)>>,
    pub(crate) learning: bool,
    pub(crate) learned_steps: usize,
    pub(crate) held: Held,
    pub(crate) scalers: Vec<Scaler>,
    /// Accumulator vectors of closed steps, reused for new ones.
    #[serde(skip)]
    pub(crate) spare: Vec<Vec<Acc>>,
}

impl Workload {
    /// The time of its newest step (open, emitted, or waiting for the step to be known), in
    /// ms: while it does not move on for `retire_after_s`, the workload is idle.
    pub(crate) fn newest_ms(&self) -> Option<i64> {
        let open = self.open.back().map(|s| s.time);
        let early = self.early.iter().map(|e| e.0).max();
        open.or(self.emitted_until).max(early)
    }

    /// Zeroed accumulators for a new step: a closed step's, or new ones.
    pub(crate) fn fresh_acc(&mut self, nslots: usize) -> Vec<Acc> {
        let mut acc = self.spare.pop().unwrap_or_default();
        if acc.len() < nslots {
            acc.resize(nslots, Acc::default());
        }
        acc
    }
}
