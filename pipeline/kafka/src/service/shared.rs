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
    /// The token of the stage's snapshot that `log` holds (none: since a restore, none
    /// taken): the next snapshot gives the entries that changed after it.
    pub(super) since: Option<u64>,
    /// A replay's table rows not yet handed to the stage: each goes before the first input
    /// of a later seq (see `table_order`).
    pub(super) tables: Queue,
    /// Its inputs are a replay's (source seqs): its outputs and marks say so too.
    pub(super) source_seq: bool,
    /// A whole-fleet part's live inputs go in arrival order: the seq the last one got (at
    /// least every seq held or passed, so a live message never goes before one already in).
    pub(super) arrivals: Seq,
}

/// One input of a part's merge: a topic (a stage's inputs, in merge rank) and, in a
/// whole-fleet service, one partition of it (topic by topic, partition by partition).
#[derive(Debug, Clone)]
pub(super) struct Input {
    pub(super) topic: Topic,
    /// The topic's broker name.
    pub(super) name: String,
    /// The partition this input reads; none: the part's own.
    pub(super) partition: Option<i32>,
}

impl Input {
    /// The partition of this input that part `p` reads.
    pub(super) fn partition_of(&self, p: i32) -> i32 {
        self.partition.unwrap_or(p)
    }

    /// How a snapshot names this input's position: the topic, and in a whole-fleet service
    /// its partition too (`forecasts/2`; a topic name has no `/`).
    pub(super) fn position_name(&self) -> String {
        match self.partition {
            Some(q) => format!("{}/{q}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A service whose one stage reads every partition of its inputs ([`Stage::whole_fleet`]):
/// its one part is [`WHOLE`], and its outputs go to each row's workload's partition.
pub(super) struct Whole {
    /// Each output topic's partition count.
    pub(super) out_partitions: BTreeMap<Topic, i32>,
}

/// The part key of a whole-fleet service's one stage.
pub(super) const WHOLE: i32 = 0;

/// Everything the message loop and the rebalance callback share.
pub(super) struct Core {
    pub(super) name: String,
    pub(super) make: StageFactory,
    pub(super) kafka: KafkaConfig,
    pub(super) group: String,
    /// The merge's inputs in rank order: the input topics, and in a whole-fleet service
    /// each of their partitions.
    pub(super) inputs: Vec<Input>,
    /// Set when the stage reads every partition into one instance.
    pub(super) whole: Option<Whole>,
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

impl Core {
    /// The merge input a message of `topic`'s partition `p` goes to, and the part that holds it.
    pub(super) fn input_of(&self, topic: &str, p: i32) -> Option<(usize, i32)> {
        let i = self
            .inputs
            .iter()
            .position(|x| x.name == topic && x.partition.is_none_or(|q| q == p))?;
        Some((i, if self.whole.is_some() { WHOLE } else { p }))
    }
}

impl Part {
    /// The first offset of input `i` not yet processed: the oldest held message's, or the
    /// one after the last read.
    pub(super) fn next(&self, i: usize) -> i64 {
        self.merge.front(i).map_or(self.read[i], Held::offset)
    }
}
