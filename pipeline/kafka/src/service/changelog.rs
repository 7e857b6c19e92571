//! The service's state changelog: at every commit, each changed input partition's snapshot
//! goes to the stage's compacted state topic: the stage's state entries that changed
//! ([`entries`]: one per workload and map, one shared), then a manifest ([`chunked`]) with the
//! next input offsets, the merge's progress and the epoch the entries complete. On assignment
//! the newest snapshot is restored, with the stage's own output read back for stages that
//! recover from it. A whole-fleet service has one snapshot (`…/all`), whose input positions
//! name each topic's partition (`forecasts/2`).

use std::collections::BTreeMap;

use rdkafka::Offset;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use serde::{Deserialize, Serialize};
use wfe_contract::state::Split;
use wfe_contract::{Error, Result};

use wfe_contract::merge::{END, Merge, Seq};

use super::chunked::{self, Restore, Slot};
use super::entries::{self, EntryRestore, Plan};
use super::shared::{Core, Part};
use super::table_history;
use crate::broker;
use crate::codec::{self, HeaderMap, header};

/// Largest chunk of a snapshot in one message (half of `kafka.max_message_bytes` when that is
/// smaller, so that a chunk and its headers always fit a message).
const SNAPSHOT_CHUNK: usize = 512 * 1024;

fn chunk_bytes(max_message_bytes: usize) -> usize {
    (max_message_bytes / 2).clamp(512, SNAPSHOT_CHUNK)
}

/// The key a partition's snapshot is restored by (its manifest's; chunks have keys below it).
pub fn snapshot_key(group: &str, input_topic: &str, p: i32) -> String {
    format!("{group}/{input_topic}/{p}")
}

/// The key a whole-fleet service's one snapshot is restored by
/// ([`wfe_contract::Stage::whole_fleet`]: one part over every partition), apart from any
/// partition's.
pub fn whole_fleet_key(group: &str, input_topic: &str) -> String {
    format!("{group}/{input_topic}/all")
}

/// What a snapshot restores: the next input offset and the stage's state.
pub type Snapshot = (i64, Option<Split>);

/// The newest snapshot under `key` among a state topic's records (in offset order: the whole
/// topic, or what compaction left of it).
pub fn restore_from<'a>(
    stage: &str,
    key: &str,
    records: impl IntoIterator<Item = &'a OwnedMessage>,
) -> Result<Option<Snapshot>> {
    let mut found = Found::new(key);
    for m in records {
        found.offer(m.key(), &HeaderMap::from_kafka(m.headers()), m.payload());
    }
    Ok(found
        .finish(stage)?
        .ok()
        .map(|(env, split, _)| (env.head.next_offset, split)))
}

/// A snapshot being read from the state topic: its manifest and its entries.
struct Found {
    manifest: Restore,
    entries: EntryRestore,
}

/// A restored snapshot: its envelope, the stage's state, and what the changelog holds of its
/// entries (none for a state written whole).
type FoundSnapshot = (Envelope, Option<Split>, Option<entries::Changelog>);

impl Found {
    fn new(key: &str) -> Self {
        Self {
            manifest: Restore::new(key),
            entries: EntryRestore::new(key),
        }
    }

    fn offer(&mut self, key: Option<&[u8]>, h: &HeaderMap, value: Option<&[u8]>) {
        self.manifest.offer(key, h, value.unwrap_or_default());
        self.entries.offer(key, h, value);
    }

    /// The snapshot, with the slot of its manifest in its envelope; or, if there is none, the
    /// entries' restore (what it found is stale).
    fn finish(self, stage: &str) -> Result<std::result::Result<FoundSnapshot, EntryRestore>> {
        let Some((bytes, slot)) = self.manifest.finish(stage)? else {
            return Ok(Err(self.entries));
        };
        let mut env = decode(stage, &bytes)?;
        env.slot = slot;
        Ok(Ok(match (&env.entries, env.head.state.take()) {
            (Some(e), _) => {
                let r = self.entries.finish(stage, e.epoch, e.count, e.digest)?;
                (env, Some(r.split), Some(r.log))
            }
            (None, whole) => (env, whole.map(Split::whole), None),
        }))
    }
}

/// What a compacted topic keeps of `records` (one partition, in offset order): the newest
/// record of each key, in offset order (records without a key are kept as they are).
pub fn compacted(records: &[OwnedMessage]) -> Vec<&OwnedMessage> {
    let mut newest: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for (i, m) in records.iter().enumerate() {
        if let Some(k) = m.key() {
            newest.insert(k, i);
        }
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, m)| m.key().is_none_or(|k| newest[k] == *i))
        .map(|(_, m)| m)
        .collect()
}

/// A snapshot as written now, or as earlier versions wrote it: without `entries` (the state
/// whole in `head.state`), and before the multi-topic merge without `inputs` either (postcard
/// reads a struct's fields in order, so each older form is the newer one cut short).
fn decode(stage: &str, bytes: &[u8]) -> Result<Envelope> {
    postcard::from_bytes::<Envelope>(bytes)
        .or_else(|_| {
            postcard::from_bytes::<(Head, Vec<InputPosition>)>(bytes).map(|(head, inputs)| {
                Envelope {
                    head,
                    inputs,
                    entries: None,
                    slot: None,
                }
            })
        })
        .or_else(|_| {
            postcard::from_bytes::<Head>(bytes).map(|head| Envelope {
                head,
                inputs: Vec::new(),
                entries: None,
                slot: None,
            })
        })
        .map_err(|e| Error::state(stage, format!("snapshot does not decode: {e}")))
}

/// The newest state of one input partition, as written to the state topic.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    head: Head,
    /// Where each input topic stands (all of them, the first included).
    inputs: Vec<InputPosition>,
    /// The state entries this snapshot completes (none: the state is whole in `head`).
    entries: Option<EntriesHead>,
    /// The slot its manifest is in (not written: known from where it was read).
    #[serde(skip)]
    slot: Option<Slot>,
}

/// What a snapshot says of its state entries.
#[derive(Debug, Serialize, Deserialize)]
struct EntriesHead {
    epoch: u64,
    /// Live entries, and the XOR of their hashes: a restore that finds other ones fails.
    count: u64,
    digest: u64,
}

/// Where one input topic of the partition stands in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct InputPosition {
    topic: String,
    /// The first offset not reflected in the state.
    next_offset: i64,
    /// Its producer had sent everything of seq <= this ([`wfe_contract::merge`]).
    done: i64,
}

/// A snapshot's fields from before the multi-topic merge, which it still begins with.
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    stage: String,
    topic: String,
    partition: i32,
    /// The first offset of the first input topic not reflected in `state`.
    next_offset: i64,
    /// The state whole, as written before it was split into entries (now `None`).
    state: Option<Vec<u8>>,
    /// For stages that recover from their own output: where each output partition ended
    /// when the snapshot was taken.
    outputs_end: Vec<(String, i64)>,
}

impl Core {
    /// The key part `p`'s snapshot is written under: a whole-fleet service's one part is
    /// `…/all`, apart from any partition's.
    fn snapshot_key(&self, p: i32) -> String {
        let first = &self.inputs[0].name;
        match self.whole {
            Some(_) => whole_fleet_key(&self.group, first),
            None => snapshot_key(&self.group, first, p),
        }
    }

    pub(super) fn write_snapshot(&mut self, p: i32) -> Result<()> {
        let part = &self.parts[&p];
        let mut outputs_end = Vec::new();
        if part.stage.recovers_from_output() && !self.exactly_once {
            for (_, topic) in &self.outputs {
                let (_, high) = broker::retry("watermarks", || {
                    self.out
                        .producer
                        .client()
                        .fetch_watermarks(topic, p, broker::REQUEST_TIMEOUT)
                })?;
                outputs_end.push((topic.clone(), high));
            }
        }
        let inputs = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| InputPosition {
                topic: input.position_name(),
                next_offset: part.next(i),
                // Through what the stage has seen of it: a message held unprocessed is read
                // again after a restore, and the restored stage's tables start from here.
                done: part.merge.through_input(i),
            })
            .collect();
        let (base, chunk) = (
            self.snapshot_key(p),
            chunk_bytes(self.kafka.max_message_bytes),
        );
        let part = self
            .parts
            .get_mut(&p)
            .ok_or_else(|| Error::state(&self.name, format!("partition {p} is not assigned")))?;
        let plan = plan_entries(&self.name, part, &base, chunk)?;
        let epoch = part.log.epoch;
        let part = &*part;
        let env = Envelope {
            head: Head {
                stage: self.name.clone(),
                topic: self.inputs[0].name.clone(),
                partition: p,
                next_offset: part.next(0),
                state: None,
                outputs_end,
            },
            inputs,
            entries: plan.as_ref().map(|plan| EntriesHead {
                epoch,
                count: plan.count,
                digest: plan.digest,
            }),
            slot: None,
        };
        let bytes = postcard::to_stdvec(&env)
            .map_err(|e| Error::state(&self.name, format!("encode snapshot: {e}")))?;
        // The slot the durable manifest does not name (see `chunked`); it becomes the durable
        // one once the commit that carries it has been acknowledged.
        let slot = part.durable.map_or(Slot::A, Slot::other);
        let id = (0..self.inputs.len())
            .map(|i| part.next(i).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let manifest = chunked::records(&base, &id, slot, &bytes, chunk)
            .into_iter()
            .map(|r| entries::Write {
                key: r.key,
                headers: r.headers,
                value: Some(r.value),
            });
        let (changed, removed) = plan.as_ref().map_or((0, 0), |p| (p.changed, p.removed));
        let (before, after) = plan.map_or((Vec::new(), Vec::new()), |p| (p.before, p.after));
        let mut written = 0;
        for w in before.into_iter().chain(manifest).chain(after) {
            let mut h = w.headers;
            h.set(header::STAGE, &self.name);
            written += w.value.as_ref().map_or(0, Vec::len);
            let (topic, sp) = (self.state_topic.clone(), p % self.state_partitions);
            self.send(
                &topic,
                Some(sp),
                Some(w.key.as_bytes()),
                w.value.as_deref(),
                h,
            )?;
        }
        if let Some(part) = self.parts.get_mut(&p) {
            part.pending = Some(slot);
        }
        self.ctx.count("snapshot.bytes", written as u64);
        self.ctx.count("snapshot.entries_written", changed as u64);
        self.ctx.count("snapshot.entries_removed", removed as u64);
        Ok(())
    }

    /// A fresh stage for partition `p`, restored from its newest snapshot.
    pub(super) fn load(&mut self, p: i32) -> Result<Part> {
        let mut stage = (self.make)()?;
        // The snapshot is keyed by the first input in rank; one written when the stage read
        // fewer topics (an older service, or a setting that adds an input) is keyed by
        // another of them, and is restored when there is none under the first.
        let mut found: Vec<Found> = match self.whole {
            Some(_) => vec![Found::new(&self.snapshot_key(p))],
            None => self
                .inputs
                .iter()
                .map(|x| Found::new(&snapshot_key(&self.group, &x.name, p)))
                .collect(),
        };
        // An ephemeral service has no state topic: it starts every partition afresh.
        if !self.ephemeral {
            broker::scan_partition(
                &self.kafka,
                &self.state_topic,
                p % self.state_partitions,
                Offset::Beginning,
                |m| {
                    let h = HeaderMap::from_kafka(m.headers());
                    for f in &mut found {
                        f.offer(m.key(), &h, m.payload());
                    }
                },
            )?;
        }
        let mut found = found.into_iter();
        let own = found
            .next()
            .ok_or_else(|| Error::config("stage", format!("`{}` reads no topic", self.name)))?;
        let mut restored = None;
        let mut log = None;
        // The first input's key, then (when it has no snapshot) the others'.
        match own.finish(&self.name)? {
            Ok(snapshot) => restored = Some(snapshot),
            Err(entries) => {
                log = Some(entries.abandon());
                for f in found {
                    if let Ok(snapshot) = f.finish(&self.name)? {
                        restored = Some(snapshot);
                        break;
                    }
                }
            }
        }
        let own_key = log.is_none();
        let mut env = None;
        if let Some((e, split, entries)) = restored {
            if let Some(split) = split {
                wfe_contract::state::restore(stage.as_mut(), split)?;
            }
            if own_key {
                log = entries;
            }
            env = Some(e);
        }
        // A snapshot found under another key names none of the first's slots, and its
        // entries are all written again under the first.
        let log = log.unwrap_or_default();
        let durable = env.as_ref().and_then(|e| e.slot).filter(|_| own_key);
        let mut read = vec![-1; self.inputs.len()];
        let mut merge = Merge::new(self.inputs.len());
        let mut from: BTreeMap<String, Offset> = self
            .outputs
            .iter()
            .map(|(_, t)| (t.clone(), Offset::Beginning))
            .collect();
        let mut arrivals = Seq::MIN;
        if let Some(env) = env {
            let head = env.head;
            let first = self.inputs.iter().position(|x| x.name == head.topic);
            read[first.unwrap_or(0)] = head.next_offset;
            for pos in env.inputs {
                if let Some(i) = self
                    .inputs
                    .iter()
                    .position(|x| x.position_name() == pos.topic)
                {
                    read[i] = pos.next_offset;
                    merge.progress(i, pos.done);
                    if pos.done != END {
                        arrivals = arrivals.max(pos.done);
                    }
                }
            }
            for (t, end) in head.outputs_end {
                from.insert(t, Offset::Offset(end));
            }
            tracing::info!(stage = %self.name, partition = p, next_offsets = ?read, "restored snapshot");
        }
        if stage.recovers_from_output() && !self.exactly_once {
            for (topic, name) in self.outputs.clone() {
                let mut n = 0;
                for m in broker::read_partition(&self.kafka, &name, p, from[&name])? {
                    let h = HeaderMap::from_kafka(m.headers());
                    if h.is_control() || h.get(header::STAGE) != Some(self.name.as_str()) {
                        continue;
                    }
                    let batch = codec::decode(topic, &h, m.payload())?;
                    n += batch.num_rows();
                    stage.recover(topic, batch, &mut self.ctx)?;
                }
                if n > 0 {
                    tracing::info!(stage = %self.name, partition = p, rows = n, "recovered from own output written after the snapshot");
                }
            }
        }
        let sent = merge.through();
        let mut part = Part {
            stage,
            read,
            merge,
            held_bytes: 0,
            sent,
            ending: false,
            dirty: false,
            durable,
            pending: None,
            log,
            since: None,
            tables: Default::default(),
            source_seq: false,
            arrivals,
        };
        // The tables as the restored stage must see them from its next input on (see
        // `table_history`): a replay's rows wait for their seq's turn.
        if let Some(tables) = &self.tables {
            let from = part.merge.through().saturating_add(1);
            let (rows, scanned) = table_history::read(tables, &self.kafka, from)?.into_rows();
            tracing::debug!(stage = %self.name, partition = p, rows = rows.len(), from, "tables' history handed to the partition's stage");
            part.tables.scanned = scanned;
            for row in rows {
                self.table_row(&mut part, row);
            }
        }
        part.stage.on_start(&mut self.ctx)?;
        Ok(part)
    }
}

/// The records that bring the partition's changelog to the stage's state: the entries
/// changed since the snapshot the changelog holds ([`wfe_contract::Stage::snapshot_changes`]), before
/// the manifest that completes them. Should the changes not fit the changelog (a stage
/// whose tokens went astray), the whole state instead: a commit never loses an entry.
fn plan_entries(name: &str, part: &mut Part, base: &str, chunk: usize) -> Result<Option<Plan>> {
    let Some((split, token)) = part.stage.snapshot_changes(part.since)? else {
        return Ok(None);
    };
    let plan = match part.log.plan(base, &split, chunk) {
        Ok(plan) => plan,
        Err(why) => {
            tracing::warn!(stage = %name, %why, "state changes refused by the changelog; writing the whole state");
            let whole = part.stage.snapshot_split()?.unwrap_or_default();
            part.log
                .plan(base, &whole, chunk)
                .map_err(|e| Error::state(name, e))?
        }
    };
    part.since = Some(token);
    Ok(Some(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot as the version before state entries wrote it: the state whole in its
    /// manifest, no entries. An upgraded service restores it (as a whole state), and knows
    /// nothing yet of entries, so its first commit writes them all.
    #[test]
    fn a_snapshot_written_whole_by_the_previous_version_still_restores() {
        let base = "g/metrics.norm/0";
        let head = Head {
            stage: "forecast".into(),
            topic: "metrics.norm".into(),
            partition: 0,
            next_offset: 42,
            state: Some(vec![7, 8, 9]),
            outputs_end: Vec::new(),
        };
        let inputs = vec![InputPosition {
            topic: "metrics.norm".into(),
            next_offset: 42,
            done: 3,
        }];
        let bytes = postcard::to_stdvec(&(&head, &inputs)).unwrap();
        let mut found = Found::new(base);
        for r in chunked::records(base, "42", Slot::B, &bytes, 1024) {
            found.offer(Some(r.key.as_bytes()), &r.headers, Some(&r.value));
        }
        let Ok((env, split, log)) = found.finish("forecast").unwrap() else {
            panic!("no snapshot found");
        };
        assert_eq!(env.head.next_offset, 42);
        assert_eq!(env.inputs.len(), 1);
        assert_eq!(env.slot, Some(Slot::B));
        assert_eq!(split.unwrap().as_whole(), Some(&[7u8, 8, 9][..]));
        assert!(log.is_none());
    }
}
