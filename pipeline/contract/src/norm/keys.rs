//! Each workload's metric slots by key of a batch's metric dictionary.
//!
//! Only the metrics a workload's own rows carry get a slot of its: a batch that holds other
//! workloads with other metrics (the embedded run's, which sees the whole fleet) must not widen
//! its metric set, else its set would depend on who shares its batches, and a fleet of services
//! (one partition's workloads per batch) would see another.
//!
//! The maps are kept across batches while they carry the same dictionary: a wide fleet's batch
//! holds a step or two of each of thousands of workloads, and resolving every workload's names
//! again in every batch (a hash and a compare per metric) was what grew fingerprint's, anomaly's
//! and forecast's time per value from 1,000 to 10,000 workloads most after the models' own work
//! (issue 21). A map is ranged over the keys its workload uses: a fleet whose workloads each
//! bring their own metrics has a dictionary of all of them, and a map over all of it per
//! workload would be quadratic in the fleet.

use arrow_array::{Array, StringArray};

use super::{NormBatch, Slots, Step, same_strings};

/// Per workload index, the map of its metric keys to its slots, for the batches' dictionary.
#[derive(Debug, Default)]
pub struct KeyCache {
    /// The dictionary the maps are for, and a count of the dictionaries seen: a map of another
    /// count is of another dictionary.
    dict: Option<StringArray>,
    generation: u64,
    maps: Vec<KeyMap>,
}

/// One workload's metric slots for keys `lo..lo + slots.len()` of a dictionary.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyMap {
    generation: u64,
    /// The numbering of the workload's slots the map was made in ([`Slots::retain`] renumbers,
    /// and a workload moved to this index has slots of another numbering).
    numbering: u64,
    lo: u32,
    slots: Vec<u32>,
}

impl KeyMap {
    /// A key without a slot in this map.
    pub const UNMAPPED: u32 = u32::MAX;

    /// The slot of dictionary key `key` ([`KeyMap::UNMAPPED`]: none).
    #[inline]
    pub fn slot(&self, key: u32) -> u32 {
        key.checked_sub(self.lo)
            .and_then(|i| self.slots.get(i as usize))
            .copied()
            .unwrap_or(Self::UNMAPPED)
    }

    fn set(&mut self, key: u32, slot: u32) {
        if self.slots.is_empty() {
            self.lo = key;
        } else if key < self.lo {
            let grow = (self.lo - key) as usize;
            self.slots
                .splice(0..0, std::iter::repeat_n(Self::UNMAPPED, grow));
            self.lo = key;
        }
        let i = (key - self.lo) as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, Self::UNMAPPED);
        }
        self.slots[i] = slot;
    }
}

impl KeyCache {
    /// Starts a batch whose metric dictionary is `dict`: the maps stay if it holds the same
    /// names in the same order as the last one (one comparison per batch, none where the
    /// batches share the dictionary's buffers).
    pub fn start(&mut self, dict: &StringArray) {
        if !self.dict.as_ref().is_some_and(|d| same_strings(d, dict)) {
            self.dict = Some(dict.clone());
            self.generation += 1;
        }
    }

    /// The map of workload `id` (whose slots are `slots`), with the metrics of `step`'s rows
    /// mapped (slots made for those it has not had before). Starts the batch of `nb` if none was.
    pub fn get(
        &mut self,
        nb: &NormBatch<'_>,
        step: &Step<'_>,
        id: usize,
        slots: &mut Slots,
    ) -> &KeyMap {
        let dict = nb.metric_dict();
        if self.dict.is_none() {
            self.start(dict);
        }
        if self.maps.len() <= id {
            self.maps.resize_with(id + 1, KeyMap::default);
        }
        let map = &mut self.maps[id];
        if map.generation != self.generation || map.numbering != slots.numbering.0 {
            *map = KeyMap {
                generation: self.generation,
                numbering: slots.numbering.0,
                ..KeyMap::default()
            };
        }
        let keys = nb.metric.keys();
        for r in step.rows.clone() {
            let k = keys[r];
            if k < 0 || nb.metric.is_null(r) || (k as usize) >= dict.len() {
                continue;
            }
            if map.slot(k as u32) == KeyMap::UNMAPPED {
                map.set(k as u32, slots.slot(dict.value(k as usize)));
            }
        }
        map
    }

    /// Keeps the maps of the workloads `keep` says, in order (as [`super::Keyed::retire`] keeps
    /// its items).
    pub(super) fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let mut i = 0;
        self.maps.retain(|_| {
            i += 1;
            keep(i - 1)
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray,
    };

    use super::*;
    use crate::columns::dictionary;
    use crate::norm::{HasSlots, Keyed};

    #[derive(Default, Clone)]
    struct Wk {
        slots: Slots,
        seen: Vec<Vec<f64>>,
    }

    impl HasSlots for Wk {
        fn slots_mut(&mut self) -> &mut Slots {
            &mut self.slots
        }
    }

    /// A `metrics.norm` batch: per row (workload, metric, time, value); the dictionaries' names
    /// in the order given.
    fn batch(workloads: &[&str], metrics: &[&str], rows: &[(i32, i32, i64, f64)]) -> RecordBatch {
        let n = rows.len();
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "workload",
                dictionary(rows.iter().map(|r| r.0).collect(), workloads).unwrap(),
            ),
            (
                "metric",
                dictionary(rows.iter().map(|r| r.1).collect(), metrics).unwrap(),
            ),
            ("labels", dictionary(vec![0; n], &[""]).unwrap()),
            (
                "event_time",
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ),
            (
                "value",
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ),
            (
                "raw_value",
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ),
            ("filled", Arc::new(BooleanArray::from(vec![false; n]))),
            ("missing", Arc::new(BooleanArray::from(vec![false; n]))),
            ("step_ms", Arc::new(Int64Array::from(vec![60_000; n]))),
        ];
        RecordBatch::try_from_iter(cols).unwrap()
    }

    fn walk(keyed: &mut Keyed<Wk>, b: &RecordBatch) {
        let nb = NormBatch::new(b).unwrap();
        nb.for_each_dense(keyed, |d| {
            d.state.seen.push(d.scaled.to_vec());
            Ok(())
        })
        .unwrap();
    }

    /// The maps kept from one batch serve the next only while it carries the same names in the
    /// same order: a dictionary in another order maps each key anew.
    #[test]
    fn a_dictionary_in_another_order_is_mapped_anew() {
        let mut keyed = Keyed::<Wk>::default();
        walk(
            &mut keyed,
            &batch(&["w"], &["a", "b"], &[(0, 0, 1, 1.0), (0, 1, 1, 2.0)]),
        );
        // The same names, another buffer: the maps stay.
        walk(
            &mut keyed,
            &batch(&["w"], &["a", "b"], &[(0, 0, 2, 1.5), (0, 1, 2, 2.5)]),
        );
        walk(
            &mut keyed,
            &batch(&["w"], &["b", "a"], &[(0, 0, 3, 20.0), (0, 1, 3, 10.0)]),
        );
        let w = &keyed.items[0];
        assert_eq!(w.slots.names, ["a", "b"]);
        assert_eq!(w.seen, [vec![1.0, 2.0], vec![1.5, 2.5], vec![10.0, 20.0]]);
    }

    /// A workload that moves to another index (one before it retired) does not inherit the map
    /// of the one that was there: its slots are of another numbering.
    #[test]
    fn a_workload_moved_by_a_retirement_keeps_its_own_slots() {
        let mut keyed = Keyed::<Wk>::default();
        let names = ["x", "y"];
        // w0 saw x then y; w1 y then x: the same keys, other slots.
        walk(
            &mut keyed,
            &batch(&["w0", "w1"], &names, &[(0, 0, 1, 1.0), (1, 1, 1, 7.0)]),
        );
        walk(
            &mut keyed,
            &batch(&["w0", "w1"], &names, &[(0, 1, 2, 2.0), (1, 0, 2, 8.0)]),
        );
        assert_eq!(keyed.items[1].slots.names, ["y", "x"]);
        keyed.retire(&[true, false]);
        walk(
            &mut keyed,
            &batch(&["w1"], &names, &[(0, 0, 3, 5.0), (0, 1, 3, 6.0)]),
        );
        let w1 = &keyed.items[0];
        assert_eq!(w1.seen.last().unwrap(), &vec![6.0, 5.0]);
    }

    /// A map holds the range of keys its workload uses, not the whole dictionary, and a key
    /// below its range widens it.
    #[test]
    fn a_map_spans_only_its_workloads_keys() {
        let mut m = KeyMap::default();
        m.set(5_000, 0);
        m.set(5_002, 1);
        m.set(4_999, 2);
        assert_eq!(m.slots.len(), 4);
        assert_eq!(
            (m.slot(4_999), m.slot(5_000), m.slot(5_001), m.slot(5_002)),
            (2, 0, KeyMap::UNMAPPED, 1)
        );
        assert_eq!(m.slot(0), KeyMap::UNMAPPED);
        assert_eq!(m.slot(u32::MAX), KeyMap::UNMAPPED);
    }
}
