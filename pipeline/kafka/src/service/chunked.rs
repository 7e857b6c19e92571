//! A snapshot larger than one message, stored so that a compacted topic keeps it whole.
//!
//! Kafka compaction keeps only the newest record of each key. A snapshot split into chunks that
//! all carry one key would keep its last chunk alone; so each chunk has a key of its own
//! (`<base>/<slot>/<i>`), and a manifest under `<base>` names the slot, the chunk count, the
//! length and a digest of the whole. Two slots take turns: a snapshot is written to the slot
//! the durable manifest does *not* name, its manifest after its chunks (one partition, an
//! idempotent producer: in that order), so a crash half-way through a write leaves the
//! previous snapshot whole in the other slot, under the manifest that still names it.
//! Whatever compaction removes is older than the newest record of its key, and the restore
//! reads nothing else: it is the same on a compacted topic and on one that never was.
//!
//! Snapshots written by earlier versions (every chunk under `<base>`, `wfe.snapshot` and
//! `wfe.chunk` headers) are still read, so an upgrade restores them; nothing writes them.

use std::collections::HashMap;

use wfe_contract::{Error, Result};

use crate::codec::HeaderMap;

/// Header of a chunk and a manifest: the snapshot's id (the input offset it was taken at).
const SNAPSHOT: &str = "wfe.snapshot";
/// Header of a chunk: `i/n`.
const CHUNK: &str = "wfe.chunk";
/// Header of a manifest: `slot/n/bytes/digest`.
const MANIFEST: &str = "wfe.manifest";

/// One of the two places a snapshot's chunks take turns in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub(crate) enum Slot {
    A,
    B,
}

impl Slot {
    pub(crate) fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn name(self) -> &'static str {
        self.into()
    }

    fn parse(s: &str) -> Option<Slot> {
        s.parse().ok()
    }
}

/// A record to send to the state topic.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub(crate) key: String,
    pub(crate) headers: HeaderMap,
    pub(crate) value: Vec<u8>,
}

fn digest(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

fn chunk_key(base: &str, slot: Slot, i: usize) -> String {
    format!("{base}/{}/{i}", slot.name())
}

/// The records that store `bytes` as snapshot `id` of `base` in `slot`, in the order they
/// must be sent: the chunks (at most `chunk` bytes each), then the manifest.
pub(crate) fn records(base: &str, id: &str, slot: Slot, bytes: &[u8], chunk: usize) -> Vec<Record> {
    let chunks: Vec<&[u8]> = bytes.chunks(chunk.max(1)).collect();
    let n = chunks.len();
    let mut out: Vec<Record> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut h = HeaderMap::default();
            h.set(SNAPSHOT, id);
            h.set(CHUNK, format!("{i}/{n}"));
            Record {
                key: chunk_key(base, slot, i),
                headers: h,
                value: c.to_vec(),
            }
        })
        .collect();
    let mut h = HeaderMap::default();
    h.set(SNAPSHOT, id);
    h.set(
        MANIFEST,
        format!("{}/{n}/{}/{}", slot.name(), bytes.len(), digest(bytes)),
    );
    out.push(Record {
        key: base.to_string(),
        headers: h,
        value: Vec::new(),
    });
    out
}

/// What a manifest says.
#[derive(Debug, Clone)]
struct Manifest {
    id: String,
    slot: Slot,
    chunks: usize,
    bytes: usize,
    digest: String,
}

fn parse_manifest(id: &str, m: &str) -> Option<Manifest> {
    let mut it = m.split('/');
    let slot = Slot::parse(it.next()?)?;
    let chunks = it.next()?.parse().ok()?;
    let bytes = it.next()?.parse().ok()?;
    let digest = it.next()?.to_string();
    Some(Manifest {
        id: id.to_string(),
        slot,
        chunks,
        bytes,
        digest,
    })
}

/// The newest snapshot of one base key, read from the state topic's records in offset order.
/// Keeps only the newest record of each of the base's keys (what compaction would leave), so
/// its memory is one snapshot per slot whatever the topic's length.
#[derive(Debug)]
pub(crate) struct Restore {
    base: String,
    prefix: String,
    manifest: Option<Manifest>,
    chunks: HashMap<String, (String, Vec<u8>)>,
    /// An earlier version's snapshot: the one being assembled, and the newest complete one.
    legacy_building: Option<(String, Vec<u8>)>,
    legacy: Option<Vec<u8>>,
}

/// A restored snapshot: its bytes, and the slot they are in (`None`: an earlier version's).
pub(crate) type Restored = (Vec<u8>, Option<Slot>);

impl Restore {
    pub(crate) fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            prefix: format!("{base}/"),
            manifest: None,
            chunks: HashMap::new(),
            legacy_building: None,
            legacy: None,
        }
    }

    /// One record of the state topic (records of other keys are passed over).
    pub(crate) fn offer(&mut self, key: Option<&[u8]>, h: &HeaderMap, value: &[u8]) {
        let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        if key == self.base {
            self.offer_base(h, value);
        } else if key.starts_with(&self.prefix)
            && let Some(id) = h.get(SNAPSHOT)
        {
            self.chunks
                .insert(key.to_string(), (id.to_string(), value.to_vec()));
        }
    }

    fn offer_base(&mut self, h: &HeaderMap, value: &[u8]) {
        let Some(id) = h.get(SNAPSHOT) else { return };
        if let Some(m) = h.get(MANIFEST) {
            if let Some(m) = parse_manifest(id, m) {
                self.manifest = Some(m);
                self.legacy = None;
            }
            return;
        }
        // An earlier version's chunk: `i/n` under the base key itself.
        let Some((i, n)) = h.get(CHUNK).and_then(|c| {
            let (i, n) = c.split_once('/')?;
            Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?))
        }) else {
            return;
        };
        if i == 0 {
            self.legacy_building = Some((id.to_string(), Vec::new()));
        }
        match &mut self.legacy_building {
            Some((bid, buf)) if bid == id => {
                buf.extend_from_slice(value);
                if i + 1 == n {
                    self.legacy = self.legacy_building.take().map(|(_, b)| b);
                    self.manifest = None;
                }
            }
            _ => self.legacy_building = None,
        }
    }

    /// The newest snapshot, or none. A manifest whose chunks are not all there with its id
    /// and digest is an error (the state topic lost records it must keep), never an empty
    /// state taken for a fresh start.
    pub(crate) fn finish(mut self, stage: &str) -> Result<Option<Restored>> {
        let Some(m) = self.manifest.take() else {
            return Ok(self.legacy.take().map(|b| (b, None)));
        };
        let mut bytes = Vec::with_capacity(m.bytes);
        for i in 0..m.chunks {
            let key = chunk_key(&self.base, m.slot, i);
            match self.chunks.remove(&key) {
                Some((id, v)) if id == m.id => bytes.extend_from_slice(&v),
                Some((id, _)) => {
                    return Err(lost(stage, &m, format!("{key} holds snapshot {id}")));
                }
                None => return Err(lost(stage, &m, format!("{key} is missing"))),
            }
        }
        if bytes.len() != m.bytes || digest(&bytes) != m.digest {
            return Err(lost(
                stage,
                &m,
                "its chunks do not add up to its digest".into(),
            ));
        }
        Ok(Some((bytes, Some(m.slot))))
    }
}

fn lost(stage: &str, m: &Manifest, why: String) -> Error {
    Error::state(
        stage,
        format!(
            "snapshot {} of the state topic (slot {}, {} chunks) cannot be restored: {why}",
            m.id,
            m.slot.name(),
            m.chunks
        ),
    )
}

#[cfg(test)]
mod tests;
