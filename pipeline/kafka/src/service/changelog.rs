//! The service's state changelog: each input partition's snapshot (stage state and the next
//! input offset) written to the stage's compacted state topic at every commit, in chunks that
//! compaction keeps whole ([`chunked`]), and restored from it on assignment, with the stage's
//! own output read back for stages that recover from it.

use std::collections::BTreeMap;

use rdkafka::Offset;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use super::chunked::{self, Restore, Slot};
use super::{Core, Part};
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

/// What a snapshot restores: the next input offset and the stage's state.
pub type Snapshot = (i64, Option<Vec<u8>>);

/// The newest snapshot under `key` among a state topic's records (in offset order: the whole
/// topic, or what compaction left of it).
pub fn restore_from<'a>(
    stage: &str,
    key: &str,
    records: impl IntoIterator<Item = &'a OwnedMessage>,
) -> Result<Option<Snapshot>> {
    let mut restore = Restore::new(key);
    for m in records {
        restore.offer(
            m.key(),
            &HeaderMap::from_kafka(m.headers()),
            m.payload().unwrap_or_default(),
        );
    }
    restore
        .finish(stage)?
        .map(|(bytes, _)| decode(stage, &bytes).map(|e| (e.next_offset, e.state)))
        .transpose()
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

fn decode(stage: &str, bytes: &[u8]) -> Result<Envelope> {
    postcard::from_bytes::<Envelope>(bytes)
        .map_err(|e| Error::state(stage, format!("snapshot does not decode: {e}")))
}

/// The newest state of one input partition, as written to the state topic.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    stage: String,
    topic: String,
    partition: i32,
    /// The first input offset not reflected in `state`.
    next_offset: i64,
    state: Option<Vec<u8>>,
    /// For stages that recover from their own output: where each output partition ended
    /// when the snapshot was taken.
    outputs_end: Vec<(String, i64)>,
}

impl Core {
    fn snapshot_key(&self, p: i32) -> String {
        snapshot_key(&self.group, &self.input_name, p)
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
        let env = Envelope {
            stage: self.name.clone(),
            topic: self.input_name.clone(),
            partition: p,
            next_offset: part.next,
            state: part.stage.snapshot()?,
            outputs_end,
        };
        let bytes = postcard::to_stdvec(&env)
            .map_err(|e| Error::state(&self.name, format!("encode snapshot: {e}")))?;
        // The slot the durable manifest does not name (see `chunked`); it becomes the durable
        // one once the commit that carries it has been acknowledged.
        let slot = part.durable.map_or(Slot::A, Slot::other);
        let id = part.next.to_string();
        let chunk = chunk_bytes(self.kafka.max_message_bytes);
        let records = chunked::records(&self.snapshot_key(p), &id, slot, &bytes, chunk);
        let topic = self.state_topic.clone();
        let sp = p % self.state_partitions;
        for r in records {
            let mut h = r.headers;
            h.set(header::STAGE, &self.name);
            self.send(&topic, Some(sp), Some(r.key.as_bytes()), &r.value, h)?;
        }
        if let Some(part) = self.parts.get_mut(&p) {
            part.pending = Some(slot);
        }
        self.ctx.count("snapshot.bytes", bytes.len() as u64);
        Ok(())
    }

    /// A fresh stage for partition `p`, restored from its newest snapshot.
    pub(super) fn load(&mut self, p: i32) -> Result<Part> {
        let mut stage = (self.make)()?;
        let mut restore = Restore::new(&self.snapshot_key(p));
        broker::scan_partition(
            &self.kafka,
            &self.state_topic,
            p % self.state_partitions,
            Offset::Beginning,
            |m| {
                restore.offer(
                    m.key(),
                    &HeaderMap::from_kafka(m.headers()),
                    m.payload().unwrap_or_default(),
                )
            },
        )?;
        let restored = restore.finish(&self.name)?;
        let durable = restored.as_ref().and_then(|(_, slot)| *slot);
        let env = restored
            .map(|(bytes, _)| decode(&self.name, &bytes))
            .transpose()?;
        let mut next = -1;
        let mut from: BTreeMap<String, Offset> = self
            .outputs
            .iter()
            .map(|(_, t)| (t.clone(), Offset::Beginning))
            .collect();
        if let Some(env) = env {
            if let Some(state) = &env.state {
                stage.restore(state)?;
            }
            next = env.next_offset;
            for (t, end) in env.outputs_end {
                from.insert(t, Offset::Offset(end));
            }
            tracing::info!(stage = %self.name, partition = p, next_offset = next, "restored snapshot");
        }
        if stage.recovers_from_output() && !self.exactly_once {
            for (topic, name) in self.outputs.clone() {
                let mut n = 0;
                for m in broker::read_partition(&self.kafka, &name, p, from[&name])? {
                    let h = HeaderMap::from_kafka(m.headers());
                    if h.is_end_of_stream() || h.get(header::STAGE) != Some(self.name.as_str()) {
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
        stage.on_start(&mut self.ctx)?;
        Ok(Part {
            stage,
            next,
            dirty: false,
            durable,
            pending: None,
        })
    }
}
