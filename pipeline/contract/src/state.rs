//! Encoding of stage snapshots. One compact binary format for every stage (postcard over
//! serde), chosen over JSON because states hold NaN markers that JSON cannot carry.
//!
//! A stage's state comes in two forms: whole ([`encode`], one value: what tests and older
//! changelogs hold) and [`Split`] into entries, one per workload and map plus one for what
//! the workloads share. A service's changelog keeps each entry under a key of its own and
//! writes, at a commit, only the entries whose bytes changed: its cost follows what changed,
//! not the size of the fleet, and compaction keeps one record per workload.
//!
//! A stage that knows which workloads changed since its last snapshot ([`Changes`]) puts
//! each workload's entries under it as their owner ([`Split::put_for`]), gives only the
//! changed workloads' and names the others as *kept* ([`Split::keep`],
//! [`Stage::snapshot_changes`](crate::Stage::snapshot_changes)): then a commit does not even
//! encode what did not change, and its CPU follows what changed too.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, Stage};

mod changes;
pub use changes::Changes;

/// Encodes a stage's state.
pub fn encode<T: Serialize>(stage: &str, state: &T) -> Result<Option<Vec<u8>>> {
    postcard::to_stdvec(state)
        .map(Some)
        .map_err(|e| Error::state(stage, format!("cannot encode: {e}")))
}

/// Decodes a state made by [`encode`] for the same stage.
pub fn decode<T: DeserializeOwned>(stage: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::state(stage, format!("snapshot does not decode: {e}")))
}

/// Restores `stage` from its state in either form: whole (a stage that keeps its state in one
/// piece, or a changelog written before states were split) or split.
pub fn restore(stage: &mut dyn Stage, state: Split) -> Result<()> {
    match state.as_whole() {
        Some(whole) => stage.restore(whole),
        None => stage.restore_split(state),
    }
}

/// The entry of a state given whole ([`Split::whole`]).
const WHOLE: &str = "whole";
/// The entry of what a stage's workloads share.
const SHARED: &str = "shared";

/// A stage's state as entries: `shared`, and `<map>/<name>` per item of a per-workload map
/// (the item's position in its map goes with it, so a restored map has the same order and
/// the stage emits what it would have emitted without the restart).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    entries: BTreeMap<String, Vec<u8>>,
    /// Per entry put for an owner (a workload: [`Split::put_for`]), the owner.
    owner_of: BTreeMap<String, String>,
    /// Owners whose entries are all part of the state and unchanged since the snapshot the
    /// split was taken against, so not encoded again (a split of changes; none in a whole
    /// split). Owners, not entries: a fleet has a few dozen entries per workload, and a split
    /// that named each kept one cost more than the entries it spared.
    kept: HashSet<String>,
    /// The owner of the entries being put, inside [`Split::put_for`].
    owner: Option<String>,
}

impl Split {
    pub fn new() -> Self {
        Self::default()
    }

    /// A state that is not split: one entry.
    pub fn whole(bytes: Vec<u8>) -> Self {
        let mut s = Self::new();
        s.insert(WHOLE.into(), bytes);
        s
    }

    /// The entries as a changelog restored them (their owners are not written).
    pub fn from_entries(entries: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            entries,
            ..Self::default()
        }
    }

    /// Puts what `f` puts as entries of `owner` (a workload), which [`Split::keep`] can keep
    /// whole in a later split.
    pub fn put_for<R>(
        &mut self,
        owner: &str,
        f: impl FnOnce(&mut Split) -> Result<R>,
    ) -> Result<R> {
        self.owner = Some(owner.to_string());
        let r = f(self);
        self.owner = None;
        r
    }

    /// Every entry put for an owner, with its owner.
    pub fn owners(&self) -> &BTreeMap<String, String> {
        &self.owner_of
    }

    /// The owners whose entries are kept unchanged (see [`Split::keep`]).
    pub fn kept(&self) -> &HashSet<String> {
        &self.kept
    }

    /// Names every entry of `owner` as part of the state and unchanged since the snapshot
    /// this split is taken against: a changelog keeps the versions it has.
    pub fn keep(&mut self, owner: &str) {
        self.kept.insert(owner.to_string());
    }

    /// The whole state from the whole split `earlier` and this split of the changes since:
    /// this split's entries, and `earlier`'s of the owners it keeps. What a changelog holds
    /// after writing it (tests compare it with a whole split of the same state).
    pub fn merged_onto(&self, stage: &str, earlier: &Split) -> Result<Split> {
        let mut by_owner: HashMap<&str, Vec<&String>> = HashMap::new();
        for (key, owner) in &earlier.owner_of {
            by_owner.entry(owner).or_default().push(key);
        }
        let mut merged = self.clone();
        merged.kept.clear();
        for owner in &self.kept {
            let keys = by_owner.get(owner.as_str()).ok_or_else(|| {
                Error::state(
                    stage,
                    format!("`{owner}` is kept but has no entries written"),
                )
            })?;
            for &key in keys {
                let bytes = earlier.entries.get(key).cloned().unwrap_or_default();
                merged.entries.insert(key.clone(), bytes);
                merged.owner_of.insert(key.clone(), owner.clone());
            }
        }
        Ok(merged)
    }

    fn insert(&mut self, key: String, bytes: Vec<u8>) {
        if let Some(owner) = &self.owner {
            self.owner_of.insert(key.clone(), owner.clone());
        }
        self.entries.insert(key, bytes);
    }

    pub fn entries(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.entries
    }

    /// The entries (kept ones are not among them: see [`Split::merged_onto`]).
    pub fn into_entries(self) -> BTreeMap<String, Vec<u8>> {
        self.entries
    }

    /// Bytes of every entry together.
    pub fn bytes(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    /// The state given whole, if it was.
    pub fn as_whole(&self) -> Option<&[u8]> {
        self.entries.get(WHOLE).map(Vec::as_slice)
    }

    /// Sets what the workloads share.
    pub fn put_shared<S: Serialize>(&mut self, stage: &str, shared: &S) -> Result<()> {
        let bytes = encoded(stage, shared)?;
        self.insert(SHARED.into(), bytes);
        Ok(())
    }

    /// Adds every item of a per-workload map `map` (a short name without `/`), in order: an
    /// item's position is part of its entry (a map whose order the stage's output depends on).
    pub fn put_items<'a, T: Serialize + 'a>(
        &mut self,
        stage: &str,
        map: &str,
        items: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Result<()> {
        for (i, (name, item)) in items.into_iter().enumerate() {
            self.put(stage, map, name, i as u64, item)?;
        }
        Ok(())
    }

    /// Adds every item of a map whose order means nothing (a hash map): every item at the
    /// same position, so that an entry changes only when its item does, not when the map's
    /// iteration order moves. [`Split::items`] gives them back in name order.
    pub fn put_unordered<'a, T: Serialize + 'a>(
        &mut self,
        stage: &str,
        map: &str,
        items: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Result<()> {
        for (name, item) in items {
            self.put(stage, map, name, 0, item)?;
        }
        Ok(())
    }

    /// Adds the item of `name` in `map` at position `i` of its map (what [`Split::put_items`]
    /// does for every item): for a stage that writes the items that changed, at their places.
    pub fn put<T: Serialize>(
        &mut self,
        stage: &str,
        map: &str,
        name: &str,
        i: u64,
        item: &T,
    ) -> Result<()> {
        let bytes = encoded(stage, &(i, item))?;
        self.insert(format!("{map}/{name}"), bytes);
        Ok(())
    }

    /// What the workloads share; an error if the state has no such entry.
    pub fn shared<S: DeserializeOwned>(&self, stage: &str) -> Result<S> {
        let bytes = self
            .entries
            .get(SHARED)
            .ok_or_else(|| Error::state(stage, "the state has no shared entry"))?;
        decode(stage, bytes)
    }

    /// The items of `map`, in the order they were added.
    pub fn items<T: DeserializeOwned>(&self, stage: &str, map: &str) -> Result<Vec<(String, T)>> {
        let prefix = format!("{map}/");
        let mut items: Vec<(u64, String, T)> = Vec::new();
        for (key, bytes) in self.entries.range(prefix.clone()..) {
            let Some(name) = key.strip_prefix(&prefix) else {
                break;
            };
            let (i, item): (u64, T) = decode(stage, bytes)
                .map_err(|e| Error::state(stage, format!("entry `{key}`: {e}")))?;
            items.push((i, name.to_string(), item));
        }
        items.sort_by_key(|(i, _, _)| *i);
        Ok(items.into_iter().map(|(_, n, t)| (n, t)).collect())
    }
}

/// A stage's state that has both forms: what [`state_hooks!`](crate::state_hooks) needs to
/// write a stage's four snapshot hooks (whole and split, each way) from one field.
pub trait StageState: Serialize + DeserializeOwned {
    /// The state as entries (see [`Split`]).
    fn split(&self, stage: &str) -> Result<Split>;
    /// The state from its entries.
    fn from_split(stage: &str, split: Split) -> Result<Self>;
}

/// The per-workload map of most stages: one entry per workload under `w`, in the map's order.
impl<T: Serialize + DeserializeOwned + Default> StageState for crate::norm::Keyed<T> {
    fn split(&self, stage: &str) -> Result<Split> {
        let mut split = Split::new();
        split.put_items(stage, "w", self.iter())?;
        Ok(split)
    }

    fn from_split(stage: &str, split: Split) -> Result<Self> {
        Ok(Self::from_items(split.items(stage, "w")?))
    }
}

/// A map by workload whose order means nothing: one entry per workload under `w`.
impl<T: Serialize + DeserializeOwned> StageState for std::collections::HashMap<String, T> {
    fn split(&self, stage: &str) -> Result<Split> {
        let mut split = Split::new();
        split.put_unordered(stage, "w", self.iter().map(|(w, t)| (w.as_str(), t)))?;
        Ok(split)
    }

    fn from_split(stage: &str, split: Split) -> Result<Self> {
        Ok(split.items(stage, "w")?.into_iter().collect())
    }
}

/// The four snapshot hooks of a [`Stage`](crate::Stage) whose whole state is the field
/// `$field` (a [`StageState`]), written inside its `impl Stage` block. A stage whose restore
/// does more (rebuilds an index, a cache) writes its hooks itself.
#[macro_export]
macro_rules! state_hooks {
    ($field:ident) => {
        fn snapshot(&self) -> $crate::Result<Option<Vec<u8>>> {
            $crate::state::encode(self.name(), &self.$field)
        }

        fn restore(&mut self, state: &[u8]) -> $crate::Result<()> {
            self.$field = $crate::state::decode(self.name(), state)?;
            Ok(())
        }

        fn snapshot_split(&self) -> $crate::Result<Option<$crate::state::Split>> {
            $crate::state::StageState::split(&self.$field, self.name()).map(Some)
        }

        fn restore_split(&mut self, state: $crate::state::Split) -> $crate::Result<()> {
            self.$field = $crate::state::StageState::from_split(self.name(), state)?;
            Ok(())
        }
    };
}

/// A stage's changes since the snapshot of `token`, checked: laid over `whole` (its whole
/// split at that token) they must give its whole split now, entries and owners; an error
/// names the entries that differ. `whole` and `token` move on to now. For the tests of a
/// stage's change marks ([`Changes`]).
pub fn checked_changes(
    stage: &dyn Stage,
    whole: &mut Split,
    token: &mut Option<u64>,
) -> Result<Split> {
    let name = stage.name();
    let none = || Error::state(name, "the stage keeps no state");
    let (changes, next) = stage.snapshot_changes(*token)?.ok_or_else(none)?;
    let now = stage.snapshot_split()?.ok_or_else(none)?;
    let merged = changes.merged_onto(name, whole)?;
    let mut apart: Vec<&String> = (merged.entries.keys().chain(now.entries.keys()))
        .filter(|k| merged.entries.get(*k) != now.entries.get(*k))
        .collect();
    apart.sort();
    apart.dedup();
    if !apart.is_empty() || merged.owner_of != now.owner_of {
        return Err(Error::state(
            name,
            format!("the changes and the whole state differ at {apart:?} (or in owners)"),
        ));
    }
    (*whole, *token) = (now, Some(next));
    Ok(changes)
}

fn encoded<T: Serialize>(stage: &str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::state(stage, format!("cannot encode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_in_the_order_they_were_put_whatever_their_names() {
        let mut s = Split::new();
        s.put_shared("t", &(7u32, "x".to_string())).unwrap();
        let items = [("zeta", 1.5f64), ("alpha", f64::NAN), ("m/x", -2.0)];
        s.put_items("t", "w", items.iter().map(|(n, v)| (*n, v)))
            .unwrap();
        s.put_items("t", "v", [("alpha", &9u8)]).unwrap();
        let back = Split::from_entries(s.clone().into_entries());
        assert_eq!(back.shared::<(u32, String)>("t").unwrap(), (7, "x".into()));
        let w: Vec<(String, f64)> = back.items("t", "w").unwrap();
        let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "m/x"]);
        assert!(w[1].1.is_nan());
        assert_eq!(back.items::<u8>("t", "v").unwrap(), [("alpha".into(), 9)]);
        assert!(back.as_whole().is_none());
    }

    #[test]
    fn an_unordered_item_is_the_same_entry_wherever_its_map_holds_it() {
        let (mut a, mut b) = (Split::new(), Split::new());
        a.put_unordered("t", "w", [("x", &1u8), ("y", &2u8)])
            .unwrap();
        b.put_unordered("t", "w", [("y", &2u8), ("x", &1u8)])
            .unwrap();
        assert_eq!(a, b);
        let back: Vec<(String, u8)> = a.items("t", "w").unwrap();
        assert_eq!(back, [("x".into(), 1), ("y".into(), 2)]);
    }

    #[test]
    fn a_damaged_entry_is_an_error_naming_it() {
        let mut s = Split::new();
        s.put_items("t", "w", [("a", &1u64)]).unwrap();
        let mut e = s.into_entries();
        e.insert("w/b".into(), vec![0xff; 3]);
        let err = Split::from_entries(e)
            .items::<u64>("t", "w")
            .unwrap_err()
            .to_string();
        assert!(err.contains("w/b"), "{err}");
        assert!(Split::new().shared::<u8>("t").is_err());
    }
}
