//! The service's state changelog: each input partition's snapshot (stage state and the next
//! input offset) written to the stage's compacted state topic at every commit, and restored
//! from it on assignment, with the stage's own output read back for stages that recover
//! from it.

use std::collections::BTreeMap;

use rdkafka::Offset;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use super::{Core, Part};
use crate::broker;
use crate::codec::{self, HeaderMap, header};

/// Largest chunk of a snapshot in one message.
const SNAPSHOT_CHUNK: usize = 512 * 1024;
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
        format!("{}/{}/{p}", self.group, self.input_name)
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
        let key = self.snapshot_key(p);
        let chunks: Vec<&[u8]> = bytes.chunks(SNAPSHOT_CHUNK).collect();
        let n = chunks.len().max(1);
        let id = part.next.to_string();
        let topic = self.state_topic.clone();
        let sp = p % self.state_partitions;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut h = HeaderMap::default();
            h.set("wfe.snapshot", &id);
            h.set("wfe.chunk", format!("{i}/{n}"));
            h.set(header::STAGE, &self.name);
            self.send(&topic, Some(sp), Some(key.as_bytes()), chunk, h)?;
        }
        self.ctx.count("snapshot.bytes", bytes.len() as u64);
        Ok(())
    }

    /// A fresh stage for partition `p`, restored from its newest snapshot.
    pub(super) fn load(&mut self, p: i32) -> Result<Part> {
        let mut stage = (self.make)()?;
        let key = self.snapshot_key(p);
        let msgs = broker::read_partition(
            &self.kafka,
            &self.state_topic,
            p % self.state_partitions,
            Offset::Beginning,
        )?;
        let env = newest_snapshot(&msgs, &key)
            .map(|bytes| postcard::from_bytes::<Envelope>(&bytes))
            .transpose()
            .map_err(|e| {
                Error::state(
                    &self.name,
                    format!("snapshot of partition {p} does not decode: {e}"),
                )
            })?;
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
        })
    }
}

/// The newest complete snapshot under `key` among state-topic messages (chunks in order).
fn newest_snapshot(msgs: &[OwnedMessage], key: &str) -> Option<Vec<u8>> {
    let mut newest = None;
    let mut building: Option<(String, Vec<u8>)> = None;
    for m in msgs {
        if m.key() != Some(key.as_bytes()) {
            continue;
        }
        let h = HeaderMap::from_kafka(m.headers());
        let (Some(id), Some(chunk)) = (h.get("wfe.snapshot"), h.get("wfe.chunk")) else {
            continue;
        };
        let Some((i, n)) = chunk
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        else {
            continue;
        };
        if i == 0 {
            building = Some((id.to_string(), Vec::new()));
        }
        match &mut building {
            Some((bid, buf)) if bid == id => {
                buf.extend_from_slice(m.payload().unwrap_or_default());
                if i + 1 == n {
                    newest = building.take().map(|(_, b)| b);
                }
            }
            _ => building = None,
        }
    }
    newest
}
