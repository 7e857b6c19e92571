//! A workload's slot of each metric: where the metric's cell sits in the workload's steps.
//!
//! Metric ids are the stage's, shared by the whole fleet. A dense table indexed by the id
//! is the fastest lookup (the hot path does one per sample), but sized by the largest id it
//! costs every workload as much as the fleet has metrics: 20,000 workloads that each bring a
//! metric of their own cost 20,000² entries. So the dense table covers only the span of ids
//! the workload uses, from its smallest, and only while that span stays within a few times
//! its number of metrics; ids outside it go to a map. Memory is proportional to the
//! workload's own metrics whatever the fleet's.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Marks an id without a slot in the dense table.
const NONE: u32 = u32::MAX;
/// The dense span may be this many times the slots (plus [`SLACK`]) before ids go sparse.
const SPREAD: usize = 4;
const SLACK: usize = 64;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SlotIndex {
    base: u32,
    dense: Vec<u32>,
    sparse: HashMap<u32, u32>,
}

impl SlotIndex {
    /// The slot of metric `m`, if the workload has it.
    #[inline]
    pub fn get(&self, m: u32) -> Option<u32> {
        match m
            .checked_sub(self.base)
            .and_then(|i| self.dense.get(i as usize))
        {
            Some(&s) if s != NONE => Some(s),
            Some(_) => None,
            None if self.sparse.is_empty() => None,
            None => self.sparse.get(&m).copied(),
        }
    }

    /// Gives metric `m` slot `slot` (the workload's `slots`-th metric).
    pub fn insert(&mut self, m: u32, slot: u32, slots: usize) {
        let budget = SPREAD * (slots + 1) + SLACK;
        if self.dense.is_empty() && self.sparse.is_empty() {
            self.base = m;
        }
        if m < self.base {
            let grow = (self.base - m) as usize;
            if self.dense.len() + grow <= budget {
                let mut d = vec![NONE; grow];
                d.extend_from_slice(&self.dense);
                self.dense = d;
                self.base = m;
            } else {
                self.sparse.insert(m, slot);
                return;
            }
        }
        let i = (m - self.base) as usize;
        if i < self.dense.len() {
            self.dense[i] = slot;
        } else if i < budget {
            self.dense.resize(i + 1, NONE);
            self.dense[i] = slot;
        } else {
            self.sparse.insert(m, slot);
        }
    }

    /// Entries held (dense and sparse), for the memory bound's test.
    #[cfg(test)]
    pub fn footprint(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_own_metrics_find_their_slots() {
        let mut s = SlotIndex::default();
        for (slot, m) in [5u32, 3, 7, 100_000, 4, 0].into_iter().enumerate() {
            assert_eq!(s.get(m), None);
            s.insert(m, slot as u32, slot);
        }
        for (slot, m) in [5u32, 3, 7, 100_000, 4, 0].into_iter().enumerate() {
            assert_eq!(s.get(m), Some(slot as u32), "metric {m}");
        }
        assert_eq!(s.get(6), None);
        assert_eq!(s.get(99_999), None);
        assert!(s.footprint() < 100, "{}", s.footprint());
    }

    #[test]
    fn a_fleet_of_workloads_with_a_metric_each_costs_linear_memory() {
        // Workload w's one metric has id w: a dense table by id would hold w entries.
        let total: usize = (0..20_000u32)
            .map(|w| {
                let mut s = SlotIndex::default();
                s.insert(w, 0, 0);
                assert_eq!(s.get(w), Some(0));
                s.footprint()
            })
            .sum();
        assert_eq!(total, 20_000);
    }
}
