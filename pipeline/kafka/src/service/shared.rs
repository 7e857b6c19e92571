//! What a service's message loop and its rebalance callback share: the service's [`Core`],
//! each assigned partition's [`Part`] (its stage, merge and changelog bookkeeping) and the
//! input messages a partition holds until their turn. The behaviour lives beside it: input
//! handling in `input`, snapshots and restore in `changelog`, commits in the parent.

use std::collections::BTreeMap;
use std::time::Instant;

use wfe_contract::merge::{Merge, Seq};
use wfe_contract::{Context, RecordBatch, Result, Stage, Topic};

use super::chunked::Slot;
use super::entries;
use super::tables::{Queue, Tables};
use crate::KafkaConfig;
use crate::codec::HeaderMap;
use crate::produce::Sender;

/// Builds a fresh instance of the stage (one per assigned partition).
pub type StageFactory = Box<dyn Fn() -> Result<Box<dyn Stage>> + Send + Sync>;

/// Counters of a service run, printed at shutdown.
#[derive(Debug, Default, Clone)]
pub struct ServiceReport {
    pub messages_in: u64,
    pub messages_out: u64,
    pub dead_letters: u64,
    pub commits: u64,
    pub counters: BTreeMap<String, u64>,
}

pub(super) struct Part {
    pub(super) stage: Box<dyn Stage>,
    /// Per input (in rank order): the offset after the last message read (-1: none yet).
    pub(super) read: Vec<i64>,
    /// The inputs' messages held until their turn.
    pub(super) merge: Merge<Held>,
    /// Bytes of the messages held.
    pub(super) held_bytes: usize,
    /// The progress last sent on the outputs.
    pub(super) sent: Seq,
    /// An input ended: flush once every input has.
    pub(super) ending: bool,
    pub(super) dirty: bool,
    /// The slot of the state topic that the acknowledged manifest names (none yet: none).
    pub(super) durable: Option<Slot>,
    /// The slot of the snapshot written for the commit under way.
    pub(super) pending: Option<Slot>,
    /// What the changelog holds of the stage's state entries.
    pub(super) log: entries::Changelog,
    /// A replay's table rows not yet handed to the stage: each goes before the first input
    /// of a later seq (see `table_order`).
    pub(super) tables: Queue,
    /// Its inputs are a replay's (source seqs): its outputs and marks say so too.
    pub(super) source_seq: bool,
}

/// Everything the message loop and the rebalance callback share.
pub(super) struct Core {
    pub(super) name: String,
    pub(super) make: StageFactory,
    pub(super) kafka: KafkaConfig,
    pub(super) group: String,
    /// The input topics in merge rank, with their broker names.
    pub(super) inputs: Vec<(Topic, String)>,
    pub(super) outputs: Vec<(Topic, String)>,
    pub(super) dlq: String,
    pub(super) state_topic: String,
    pub(super) state_partitions: i32,
    pub(super) out: Sender,
    pub(super) exactly_once: bool,
    /// Keeps no state across starts (`ServiceOptions::ephemeral`).
    pub(super) ephemeral: bool,
    pub(super) in_txn: bool,
    /// The last commit point's snapshots, sent but not yet known to be acknowledged.
    pub(super) unsettled: Option<Unsettled>,
    pub(super) parts: BTreeMap<i32, Part>,
    /// Tables every partition's stage reads whole (none: the stage reads none).
    pub(super) tables: Option<Tables>,
    pub(super) ctx: Context,
    pub(super) report: ServiceReport,
}

/// A commit point whose snapshots are sent: the input offsets they hold and the partitions
/// whose pending slot becomes durable once they are acknowledged.
pub(super) struct Unsettled {
    pub(super) offsets: rdkafka::TopicPartitionList,
    pub(super) parts: Vec<i32>,
}

/// An input message held until its turn.
pub(super) struct Held {
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) headers: HeaderMap,
    pub(super) since: Instant,
    /// The payload decoded, when the stage was asked about it before its turn.
    pub(super) decoded: Option<RecordBatch>,
}

impl Held {
    pub(super) fn bytes(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len) + self.key.as_ref().map_or(0, Vec::len)
    }

    pub(super) fn offset(&self) -> i64 {
        self.offset
    }
}

impl Part {
    /// The first offset of input `i` not yet processed: the oldest held message's, or the
    /// one after the last read.
    pub(super) fn next(&self, i: usize) -> i64 {
        self.merge.front(i).map_or(self.read[i], Held::offset)
    }
}
