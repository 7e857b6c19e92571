//! Reading `metrics.norm` step by step.
//!
//! Normalise emits one row per (workload, step, metric), time-major: all metrics of a
//! workload's step are adjacent. Fingerprint, anomaly and forecast all want the step as a
//! vector, so this walks a batch in runs of equal (workload, event_time) without copying.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};

use crate::Result;
use crate::columns::{DictStrings, bools, f64s, timestamps};

mod keys;
pub use keys::{KeyCache, KeyMap};

/// A `metrics.norm` batch, ready to be walked by step.
pub struct NormBatch<'a> {
    pub workload: DictStrings<'a>,
    pub metric: DictStrings<'a>,
    pub labels: DictStrings<'a>,
    pub time: &'a [i64],
    pub value: &'a Float64Array,
    pub raw_value: &'a Float64Array,
    pub filled: &'a BooleanArray,
    pub missing: &'a BooleanArray,
    pub step_ms: &'a [i64],
    /// Whether any row of the batch is missing or filled (most batches have none, and then
    /// [`NormBatch::dense`] skips the per-row flag checks).
    flagged: bool,
}

/// One workload's step: rows `rows` of the batch.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    pub workload_key: i32,
    pub workload: &'a str,
    pub time: i64,
    pub step_ms: i64,
    pub label: Option<&'a str>,
    pub rows: Range<usize>,
}

impl<'a> NormBatch<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            workload: DictStrings::new(batch, "workload")?,
            metric: DictStrings::new(batch, "metric")?,
            labels: DictStrings::new(batch, "labels")?,
            time: timestamps(batch, "event_time")?.values(),
            value: f64s(batch, "value")?,
            raw_value: f64s(batch, "raw_value")?,
            filled: bools(batch, "filled")?,
            missing: bools(batch, "missing")?,
            step_ms: crate::columns::i64s(batch, "step_ms")?.values(),
            flagged: bools(batch, "missing")?.true_count() > 0
                || bools(batch, "filled")?.true_count() > 0,
        })
    }

    /// The metric names of this batch, indexed by dictionary key.
    pub fn metric_dict(&self) -> &'a StringArray {
        self.metric.dictionary()
    }

    /// Scaled value of a row; `None` when missing.
    pub fn value(&self, row: usize) -> Option<f64> {
        self.value.is_valid(row).then(|| self.value.value(row))
    }

    /// Unscaled value of a row; `None` when missing.
    pub fn raw(&self, row: usize) -> Option<f64> {
        self.raw_value
            .is_valid(row)
            .then(|| self.raw_value.value(row))
    }

    /// The steps of the batch, in order.
    pub fn steps(&self) -> impl Iterator<Item = Step<'a>> + '_ {
        let keys = self.workload.keys();
        let n = self.time.len();
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= n {
                return None;
            }
            let (w, t) = (keys[start], self.time[start]);
            let mut end = start + 1;
            while end < n && keys[end] == w && self.time[end] == t {
                end += 1;
            }
            let step = Step {
                workload_key: w,
                workload: self.workload.get(start).unwrap_or(""),
                time: t,
                step_ms: self.step_ms[start],
                label: self.labels.get(start),
                rows: start..end,
            };
            start = end;
            Some(step)
        })
    }
}

/// A workload's metrics in the order they first appeared: a metric's slot is its index in
/// the dense vectors that [`NormBatch::dense`] fills.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Slots {
    pub names: Vec<String>,
    /// The newest step time walked for this workload: a step delivered again (an
    /// at-least-once replay after a crash) is skipped instead of being counted twice.
    #[serde(default)]
    pub last_step: Option<i64>,
    #[serde(skip)]
    index: std::collections::HashMap<String, u32>,
    /// Which numbering the slots are in: a new one for every `Slots` made, cloned, read back
    /// or renumbered by [`Slots::retain`] (added names keep it: they change no slot).
    #[serde(skip)]
    numbering: Numbering,
    /// The names as one string array, while they are these (see [`Slots::array`]).
    #[serde(skip)]
    array: Option<(Numbering, usize, ArrayRef)>,
}

/// Identifies one numbering of a [`Slots`]: what a [`DictMemo`] checks before it trusts the
/// slots it remembers. Never equal between two `Slots` values, so a copy that goes its own way
/// cannot lend its slots to the other.
#[derive(Debug, PartialEq, Eq)]
pub struct Numbering(u64);

impl Numbering {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for Numbering {
    fn default() -> Self {
        Self::fresh()
    }
}

impl Clone for Numbering {
    fn clone(&self) -> Self {
        Self::fresh()
    }
}

impl Slots {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The slot of `name`, if it has one.
    pub fn find(&self, name: &str) -> Option<u32> {
        if self.index.len() == self.names.len() {
            self.index.get(name).copied()
        } else {
            self.names.iter().position(|n| n == name).map(|i| i as u32)
        }
    }

    /// The slot of `name`, adding it if new.
    pub fn slot(&mut self, name: &str) -> u32 {
        if self.index.len() != self.names.len() {
            // Rebuilt after a restore (the index is not serialised).
            self.index = self
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect();
        }
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }

    /// Keeps the names whose slot `keep` says, in order, and returns each old slot's new
    /// one (`None`: dropped). Whoever holds slots renumbers them with it.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) -> Vec<Option<u32>> {
        let mut map = Vec::with_capacity(self.names.len());
        let mut kept = Vec::new();
        for (i, name) in std::mem::take(&mut self.names).into_iter().enumerate() {
            if keep(i as u32) {
                map.push(Some(kept.len() as u32));
                kept.push(name);
            } else {
                map.push(None);
            }
        }
        self.names = kept;
        self.index = Default::default(); // rebuilt on the next lookup
        self.numbering = Numbering::fresh();
        map
    }

    /// The names as string slices, indexed by slot.
    pub fn refs(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The names as one string array (an output dictionary's values), built again only when
    /// names were added or renumbered: consecutive batches then share one dictionary, which
    /// is cheaper to build and lets readers' [`DictMemo`]s see it is the same.
    pub fn array(&mut self) -> ArrayRef {
        let n = self.names.len();
        match &self.array {
            Some((numbering, len, a)) if *numbering == self.numbering && *len == n => Arc::clone(a),
            _ => {
                let a: ArrayRef = Arc::new(StringArray::from_iter_values(&self.names));
                let numbering = Numbering(self.numbering.0);
                self.array = Some((numbering, n, Arc::clone(&a)));
                a
            }
        }
    }
}

/// A batch dictionary's keys resolved to slots, kept across batches while they carry the same
/// dictionary (the same buffers, or the same names in the same order) and the slots' numbering
/// stands. A wide fleet's batch holds a few steps of each of thousands of workloads: resolving
/// every name of every batch by hash cost more than the steps themselves (issue 21).
#[derive(Debug, Default)]
pub struct DictMemo {
    dict: Option<StringArray>,
    numbering: u64,
    /// Per key: its slot, or [`DictMemo::UNKNOWN`].
    ids: Vec<u32>,
}

impl DictMemo {
    /// A key not resolved yet.
    const UNKNOWN: u32 = u32::MAX;

    /// Starts a batch whose dictionary is `dict`, its keys to be resolved through `slots`:
    /// what is remembered stays if both are the ones it was remembered for.
    pub fn start(&mut self, dict: &StringArray, slots: &Slots) {
        let same = self.numbering == slots.numbering.0
            && self.dict.as_ref().is_some_and(|d| same_strings(d, dict));
        if !same {
            self.dict = Some(dict.clone());
            self.numbering = slots.numbering.0;
            self.ids.clear();
            self.ids.resize(dict.len(), Self::UNKNOWN);
        }
    }

    /// The slot of key `k` of the batch started (adding its name to `slots` if new; a key
    /// past the dictionary, or a null name, is the empty name).
    #[inline]
    pub fn slot(&mut self, k: usize, slots: &mut Slots) -> u32 {
        match self.ids.get(k) {
            Some(&i) if i != Self::UNKNOWN => i,
            _ => self.resolve(k, slots),
        }
    }

    fn resolve(&mut self, k: usize, slots: &mut Slots) -> u32 {
        let name = self
            .dict
            .as_ref()
            .filter(|d| k < d.len() && d.is_valid(k))
            .map_or("", |d| d.value(k));
        let i = slots.slot(name);
        if self.numbering != slots.numbering.0 {
            return i; // not started for these slots: nothing to remember
        }
        if let Some(id) = self.ids.get_mut(k) {
            *id = i;
        }
        i
    }

    /// Every key's slot, in key order.
    pub fn slots(&mut self, slots: &mut Slots) -> &[u32] {
        for k in 0..self.ids.len() {
            self.slot(k, slots);
        }
        &self.ids
    }
}

/// Whether two string arrays hold the same strings: the same buffers at once, else by value.
fn same_strings(a: &StringArray, b: &StringArray) -> bool {
    if a.len() != b.len() || a.null_count() != b.null_count() {
        return false;
    }
    let shared = a.offsets().inner().inner().as_ptr() == b.offsets().inner().inner().as_ptr()
        && a.values().as_ptr() == b.values().as_ptr()
        && a.offsets().len() == b.offsets().len()
        && a.nulls() == b.nulls();
    shared || a == b
}

impl NormBatch<'_> {
    /// Fills `scaled` and `raw` (resized to `width`) with the step's values by slot; NaN where
    /// a metric is missing or absent. Returns how many values were observed (not filled).
    pub fn dense(
        &self,
        step: &Step<'_>,
        key_to_slot: &KeyMap,
        width: usize,
        scaled: &mut Vec<f64>,
        raw: &mut Vec<f64>,
    ) -> usize {
        scaled.clear();
        scaled.resize(width, f64::NAN);
        raw.clear();
        raw.resize(width, f64::NAN);
        let keys = self.metric.keys();
        let (vals, raws) = (self.value.values(), self.raw_value.values());
        if !self.flagged {
            for r in step.rows.clone() {
                let slot = key_to_slot.slot(keys[r] as u32) as usize;
                if slot < width {
                    scaled[slot] = vals[r];
                    raw[slot] = raws[r];
                }
            }
            return step.rows.len();
        }
        let mut observed = 0;
        for r in step.rows.clone() {
            if self.missing.value(r) {
                continue;
            }
            let slot = key_to_slot.slot(keys[r] as u32) as usize;
            if slot < width {
                scaled[slot] = vals[r];
                raw[slot] = raws[r];
                observed += usize::from(!self.filled.value(r));
            }
        }
        observed
    }
}

/// Per-workload state of a stage, found by name once per batch and by index per step
/// (hashing a workload name on every step of a fleet costs more than the step's own work).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Keyed<T> {
    /// Workload names; a name's slot is its item's index.
    pub names: Slots,
    pub items: Vec<T>,
    /// The last batches' workload keys, resolved (a cache: not in snapshots).
    #[serde(skip)]
    memo: DictMemo,
    /// Each workload's metric keys, resolved (a cache: not in snapshots).
    #[serde(skip)]
    keys: KeyCache,
}

impl<T: Clone> Clone for Keyed<T> {
    fn clone(&self) -> Self {
        // The memo stays behind: the copy's names are in a numbering of their own.
        Self {
            names: self.names.clone(),
            items: self.items.clone(),
            memo: DictMemo::default(),
            keys: KeyCache::default(),
        }
    }
}

impl<T> Default for Keyed<T> {
    fn default() -> Self {
        Self {
            names: Slots::default(),
            items: Vec::new(),
            memo: DictMemo::default(),
            keys: KeyCache::default(),
        }
    }
}

impl<T> Keyed<T> {
    /// A map of `items` in their order (as [`crate::state::Split::items`] gives them back).
    pub fn from_items(items: Vec<(String, T)>) -> Self {
        let mut keyed = Self::default();
        for (name, item) in items {
            keyed.names.slot(&name);
            keyed.items.push(item);
        }
        keyed
    }
}

impl<T: Default> Keyed<T> {
    /// The index of `name`, adding a default item if new.
    pub fn id(&mut self, name: &str) -> usize {
        let i = self.names.slot(name) as usize;
        if i == self.items.len() {
            self.items.push(T::default());
        }
        i
    }

    /// Starts a batch whose workload dictionary is `dict` (see [`Keyed::id_for`]).
    pub fn start_batch(&mut self, dict: &StringArray) {
        self.memo.start(dict, &self.names);
    }

    /// The index of a step's workload (adding a default item if new), through the keys of the
    /// batch started: a name is looked up once while batches carry the same dictionary.
    pub fn id_for(&mut self, step: &Step<'_>) -> usize {
        let k = step.workload_key.max(0) as usize;
        let i = self.memo.slot(k, &mut self.names) as usize;
        if i == self.items.len() {
            self.items.push(T::default());
        }
        i
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.names.names.iter().map(String::as_str).zip(&self.items)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut T)> {
        self.names
            .names
            .iter()
            .map(String::as_str)
            .zip(self.items.iter_mut())
    }
}

/// Per-workload state that keeps a workload's metric slots.
pub trait HasSlots {
    fn slots_mut(&mut self) -> &mut Slots;
}

/// One step as the consumers of `metrics.norm` see it: the workload's state, the step, and
/// its values by slot (NaN where missing), scaled and raw.
pub struct DenseStep<'s, 'b, T> {
    pub id: usize,
    pub state: &'s mut T,
    pub step: &'s Step<'b>,
    pub scaled: &'s [f64],
    pub raw: &'s [f64],
    /// Values observed in this step (not filled, not missing).
    pub observed: usize,
}

impl<'b> NormBatch<'b> {
    /// Calls `f` for every step of the batch with its workload's state (created on first sight)
    /// and dense vectors: the walk that fingerprint, anomaly and forecast share. Steps not
    /// newer than the workload's last walked step are replays and skipped; returns how many.
    pub fn for_each_dense<T: HasSlots + Default>(
        &self,
        workloads: &mut Keyed<T>,
        mut f: impl FnMut(DenseStep<'_, 'b, T>) -> Result<()>,
    ) -> Result<u64> {
        let mut replayed = 0;
        let (mut scaled, mut raw) = (Vec::new(), Vec::new());
        workloads.start_batch(self.workload.dictionary());
        workloads.keys.start(self.metric_dict());
        for step in self.steps() {
            let id = workloads.id_for(&step);
            let state = &mut workloads.items[id];
            let slots = state.slots_mut();
            if slots.last_step.is_some_and(|t| step.time <= t) {
                replayed += 1;
                continue;
            }
            slots.last_step = Some(step.time);
            let map = workloads.keys.get(self, &step, id, slots);
            let observed = self.dense(&step, map, slots.len(), &mut scaled, &mut raw);
            f(DenseStep {
                id,
                state,
                step: &step,
                scaled: &scaled,
                raw: &raw,
                observed,
            })?;
        }
        Ok(replayed)
    }
}

/// What [`Keyed::retire`] dropped.
pub struct Retired<T> {
    /// Each former index's new one (`None`: retired).
    pub map: Vec<Option<usize>>,
    /// The retired workloads' names and states.
    pub gone: Vec<(String, T)>,
}

impl<T> Keyed<T> {
    /// Drops the workloads marked in `gone`, with their names; the rest keep their order.
    pub fn retire(&mut self, gone: &[bool]) -> Retired<T> {
        let is_gone = |i: usize| gone.get(i).copied().unwrap_or(false);
        let names: Vec<String> = (self.names.names.iter().enumerate())
            .filter(|(i, _)| is_gone(*i))
            .map(|(_, n)| n.clone())
            .collect();
        let map = self.names.retain(|i| !is_gone(i as usize));
        self.keys.retain(|i| !is_gone(i));
        let mut items = Vec::new();
        let mut kept = Vec::with_capacity(self.items.len());
        for (i, item) in std::mem::take(&mut self.items).into_iter().enumerate() {
            if is_gone(i) {
                items.push(item);
            } else {
                kept.push(item);
            }
        }
        self.items = kept;
        Retired {
            map: map.into_iter().map(|m| m.map(|i| i as usize)).collect(),
            gone: names.into_iter().zip(items).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
