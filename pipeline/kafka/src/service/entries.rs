//! A stage's state in its changelog one entry per key ([`wfe_contract::state::Split`]: one per
//! workload and map, one for what the workloads share), written at a commit only when the
//! entry's bytes changed: the cost of a commit follows what changed, not the fleet's size, and
//! a compacted topic keeps one live record per entry (more only for an entry over one message).
//!
//! **Keys.** Part `i` of entry `k` in slot `s` is `<base>/e/<s>/<i>/<k>`; each part carries
//! header `wfe.entry: <epoch>/<parts>`. The epoch counts the partition's snapshots; the
//! snapshot's manifest ([`super::chunked`]) names the epoch it completes, with the number of
//! live entries and a digest of them.
//!
//! **Crash safety, as in `chunked`.** An entry is written to the slot its newest durable
//! version is *not* in, so a crash half-way through a commit leaves that version whole; a
//! restore takes, per entry, the newest complete version whose epoch is not above the
//! manifest's. A removed entry gets a marker of no parts in its other slot (a crash before the
//! manifest leaves the entry as it was), then, after the manifest, tombstones for every key it
//! had: compaction then forgets it altogether.
//!
//! **Integrity.** A restore whose live entries do not add up to the manifest's count and digest
//! is an error (the topic lost records it must keep), never a smaller state taken for whole.

use std::collections::{BTreeMap, HashMap};

use wfe_contract::state::Split;
use wfe_contract::{Error, Result};

use super::chunked::Slot;
use crate::codec::HeaderMap;

mod owners;
use owners::Owners;

/// Header of every part: `<epoch>/<parts>` (0 parts: removed).
const ENTRY: &str = "wfe.entry";

/// What the changelog last wrote of one entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mark {
    /// Of the key and bytes ([`entry_hash`]).
    hash: u64,
    /// The slot its newest version is in.
    slot: Slot,
    /// The most parts ever written in each slot (A, B): what a removal must tombstone.
    parts: [usize; 2],
}

/// A record to send: `None` is a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) headers: HeaderMap,
    pub(crate) value: Option<Vec<u8>>,
}

/// The records of one commit's entries: `before` the manifest, tombstones `after` it, and
/// what the manifest says of the live entries.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) before: Vec<Write>,
    pub(crate) after: Vec<Write>,
    pub(crate) count: u64,
    pub(crate) digest: u64,
    /// Entries written (changed or new) and removed.
    pub(crate) changed: usize,
    pub(crate) removed: usize,
}

fn entry_hash(key: &str, value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(value, xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

fn slot_index(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

fn part_key(base: &str, slot: Slot, i: usize, entry: &str) -> String {
    let s = if slot == Slot::A { "a" } else { "b" };
    format!("{base}/e/{s}/{i}/{entry}")
}

fn part(key: String, epoch: u64, parts: usize, value: Vec<u8>) -> Write {
    let mut headers = HeaderMap::default();
    headers.set(ENTRY, format!("{epoch}/{parts}"));
    Write {
        key,
        headers,
        value: Some(value),
    }
}

/// What the changelog of one partition holds of its state entries.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Changelog {
    /// Per live entry, what was last written of it.
    pub(crate) marks: HashMap<String, Mark>,
    /// Keys of records that no snapshot may take: written by a commit that never completed
    /// (their epoch is above every manifest's), or left of a removed entry. The next commit
    /// tombstones them before its manifest: a later manifest's epoch is above theirs, and it
    /// would take them for current.
    pub(crate) stale: Vec<String>,
    /// The epoch of the last snapshot written, or the highest one seen in the changelog.
    pub(crate) epoch: u64,
    /// Which entries belong to which workload ([`owners`]).
    pub(crate) owners: Owners,
}

impl Changelog {
    /// The records of the next snapshot (its epoch is `self.epoch` after the call), which
    /// brings the changelog to `split` (parts of at most `chunk` bytes). The entries of an
    /// owner the split keeps stay as written; others it does not give are removed. A kept
    /// owner this changelog holds no entries of (the stage's changes were taken against
    /// another snapshot) is an error, before anything changes: the caller asks for the whole
    /// split.
    pub(crate) fn plan(
        &mut self,
        base: &str,
        split: &Split,
        chunk: usize,
    ) -> std::result::Result<Plan, String> {
        self.owners.check(split)?;
        self.epoch += 1;
        let epoch = self.epoch;
        let mut plan = Plan::default();
        plan.before.extend(self.stale.drain(..).map(|key| Write {
            key,
            headers: HeaderMap::default(),
            value: None,
        }));
        let marks = &mut self.marks;
        for (key, value) in split.entries() {
            let hash = entry_hash(key, value);
            let old = marks.get(key).copied();
            if old.is_some_and(|m| m.hash == hash) {
                continue;
            }
            let slot = old.map_or(Slot::A, |m| m.slot.other());
            let pieces: Vec<&[u8]> = if value.is_empty() {
                vec![&[]]
            } else {
                value.chunks(chunk.max(1)).collect()
            };
            let n = pieces.len();
            for (i, piece) in pieces.into_iter().enumerate() {
                plan.before
                    .push(part(part_key(base, slot, i, key), epoch, n, piece.to_vec()));
            }
            let mut parts = old.map_or([0, 0], |m| m.parts);
            parts[slot_index(slot)] = parts[slot_index(slot)].max(n);
            marks.insert(key.clone(), Mark { hash, slot, parts });
            plan.changed += 1;
        }
        let gone = self.owners.update(split, marks.keys());
        for key in gone {
            let Some(m) = marks.remove(&key) else {
                continue;
            };
            let slot = m.slot.other();
            plan.before
                .push(part(part_key(base, slot, 0, &key), epoch, 0, Vec::new()));
            // The live version's keys before the marker's: a crash between them must not
            // leave the version without the marker that hides it.
            for s in [m.slot, slot] {
                let n = m.parts[slot_index(s)].max(usize::from(s == slot));
                for i in 0..n {
                    plan.after.push(Write {
                        key: part_key(base, s, i, &key),
                        headers: HeaderMap::default(),
                        value: None,
                    });
                }
            }
            plan.removed += 1;
        }
        plan.count = marks.len() as u64;
        plan.digest = marks.values().fold(0, |d, m| d ^ m.hash);
        Ok(plan)
    }
}

/// One part as the restore keeps it: epoch, parts of its entry, bytes.
type Part = (u64, usize, Vec<u8>);

/// The entries of one base key, read from the state topic's records in offset order. Keeps
/// the newest record of each key (what compaction leaves), so a restore from the whole topic
/// and from its compacted view are the same.
#[derive(Debug)]
pub(crate) struct EntryRestore {
    base: String,
    prefix: String,
    newest: HashMap<String, Part>,
    /// The highest epoch seen: the next snapshot's must be above it, so a version written
    /// by a commit that never completed can never pass for a newer one.
    max_epoch: u64,
}

/// What a restore gives: the entries, and what the changelog holds of them.
pub(crate) struct Restored {
    pub(crate) split: Split,
    pub(crate) log: Changelog,
}

impl EntryRestore {
    pub(crate) fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            prefix: format!("{base}/e/"),
            newest: HashMap::new(),
            max_epoch: 0,
        }
    }

    /// The changelog of a key with no snapshot to restore: every record under it is stale.
    pub(crate) fn abandon(self) -> Changelog {
        let prefix = self.prefix;
        Changelog {
            marks: HashMap::new(),
            stale: self
                .newest
                .into_keys()
                .map(|k| format!("{prefix}{k}"))
                .collect(),
            epoch: self.max_epoch,
            owners: Owners::default(),
        }
    }

    /// One record of the state topic (`value` `None`: a tombstone); other keys are passed over.
    pub(crate) fn offer(&mut self, key: Option<&[u8]>, h: &HeaderMap, value: Option<&[u8]>) {
        let Some(rest) = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix(&self.prefix))
        else {
            return;
        };
        let Some(value) = value else {
            self.newest.remove(rest);
            return;
        };
        let Some((epoch, parts)) = h.get(ENTRY).and_then(|e| {
            let (e, n) = e.split_once('/')?;
            Some((e.parse::<u64>().ok()?, n.parse::<usize>().ok()?))
        }) else {
            return;
        };
        self.max_epoch = self.max_epoch.max(epoch);
        self.newest
            .insert(rest.to_string(), (epoch, parts, value.to_vec()));
    }

    /// The entries of the snapshot at `epoch`, checked against its manifest's `count` and
    /// `digest`.
    pub(crate) fn finish(
        mut self,
        stage: &str,
        epoch: u64,
        count: u64,
        digest: u64,
    ) -> Result<Restored> {
        // Per entry and slot: the epoch and parts of its first part, and the most parts seen.
        let mut heads: BTreeMap<String, [Option<(u64, usize)>; 2]> = BTreeMap::new();
        let mut seen: HashMap<String, [usize; 2]> = HashMap::new();
        for (rest, (e, n, _)) in &self.newest {
            let Some((slot, i, key)) = parse_rest(rest) else {
                continue;
            };
            let s = slot_index(slot);
            let most = &mut seen.entry(key.to_string()).or_default()[s];
            *most = (*most).max(i + 1);
            if i == 0 {
                heads.entry(key.to_string()).or_default()[s] = Some((*e, *n));
            }
        }
        let mut entries = BTreeMap::new();
        let mut marks = HashMap::new();
        // Stale keys with their epoch: tombstoned oldest first, so that a removed entry's
        // marker goes after the version it hides.
        let mut stale: Vec<(u64, String)> = self
            .newest
            .iter()
            .filter(|(_, (e, _, _))| *e > epoch)
            .map(|(rest, (e, _, _))| (*e, format!("{}{rest}", self.prefix)))
            .collect();
        for (key, slots) in heads {
            let newest = [Slot::A, Slot::B]
                .into_iter()
                .filter_map(|s| slots[slot_index(s)].map(|(e, n)| (e, n, s)))
                .filter(|(e, _, _)| *e <= epoch)
                .max_by_key(|(e, _, _)| *e);
            let Some((e, n, slot)) = newest else { continue };
            if n == 0 {
                // Removed, and its tombstones never written: the next commit writes them.
                let most = seen.get(&key).copied().unwrap_or_default();
                for s in [Slot::A, Slot::B] {
                    for i in 0..most[slot_index(s)] {
                        let k = part_key(&self.base, s, i, &key);
                        let rest = &k[self.prefix.len()..];
                        let e = self.newest.get(rest).map_or(0, |p| p.0);
                        stale.push((e, k));
                    }
                }
                continue;
            }
            let mut bytes = Vec::new();
            for i in 0..n {
                match self
                    .newest
                    .remove(&format!("{}{i}/{key}", slot_prefix(slot)))
                {
                    Some((pe, _, v)) if pe == e => bytes.extend_from_slice(&v),
                    _ => {
                        return Err(lost(
                            stage,
                            epoch,
                            format!("part {i} of entry `{key}` (epoch {e}) is missing"),
                        ));
                    }
                }
            }
            let hash = entry_hash(&key, &bytes);
            let parts = seen.get(&key).copied().unwrap_or([n, n]);
            marks.insert(key.clone(), Mark { hash, slot, parts });
            entries.insert(key, bytes);
        }
        let found = marks.values().fold(0, |d, m: &Mark| d ^ m.hash);
        if marks.len() as u64 != count || found != digest {
            return Err(lost(
                stage,
                epoch,
                format!(
                    "{} entries restored where its manifest names {count}, or their digest differs",
                    marks.len()
                ),
            ));
        }
        stale.sort();
        stale.dedup();
        let stale = stale.into_iter().map(|(_, k)| k).collect();
        Ok(Restored {
            split: Split::from_entries(entries),
            log: Changelog {
                marks,
                stale,
                epoch: self.max_epoch.max(epoch),
                owners: Owners::default(),
            },
        })
    }
}

fn slot_prefix(slot: Slot) -> &'static str {
    if slot == Slot::A { "a/" } else { "b/" }
}

/// `<slot>/<i>/<entry>` of a part's key.
fn parse_rest(rest: &str) -> Option<(Slot, usize, &str)> {
    let (s, rest) = rest.split_once('/')?;
    let slot = match s {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    let (i, key) = rest.split_once('/')?;
    Some((slot, i.parse().ok()?, key))
}

fn lost(stage: &str, epoch: u64, why: String) -> Error {
    Error::state(
        stage,
        format!("the state entries of snapshot epoch {epoch} cannot be restored: {why}"),
    )
}

#[cfg(test)]
mod tests;

/// One partition's changelog of state entries kept in memory, written and restored by the code
/// a service runs, the broker aside: what `wfe bench --state` measures.
#[derive(Debug, Default)]
pub struct MemoryChangelog {
    log: Changelog,
    records: Vec<Write>,
    /// The last manifest's epoch, entry count and digest.
    manifest: Option<(u64, u64, u64)>,
}

/// What one commit wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Records (entry parts, markers and tombstones; the small manifest not counted).
    pub records: usize,
    /// Their value bytes.
    pub bytes: usize,
    /// Entries written because they changed.
    pub entries: usize,
}

impl MemoryChangelog {
    /// A commit of the stage's state `split` (parts of at most `chunk` bytes).
    pub fn commit(&mut self, split: &Split, chunk: usize) -> Result<Written> {
        let plan = (self.log.plan("bench", split, chunk)).map_err(|e| Error::state("bench", e))?;
        self.manifest = Some((self.log.epoch, plan.count, plan.digest));
        let records: Vec<Write> = plan.before.into_iter().chain(plan.after).collect();
        let written = Written {
            records: records.len(),
            bytes: records
                .iter()
                .map(|w| w.value.as_ref().map_or(0, Vec::len))
                .sum(),
            entries: plan.changed,
        };
        self.records.extend(records);
        Ok(written)
    }

    /// The state of the last commit, restored from what compaction leaves of the changelog.
    pub fn restore(&self, stage: &str) -> Result<Split> {
        let Some((epoch, count, digest)) = self.manifest else {
            return Ok(Split::new());
        };
        let mut r = EntryRestore::new("bench");
        for w in &self.records {
            r.offer(Some(w.key.as_bytes()), &w.headers, w.value.as_deref());
        }
        Ok(r.finish(stage, epoch, count, digest)?.split)
    }
}
