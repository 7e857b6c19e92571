//! # wfe-contract: what a stage is
//!
//! The only runtime crate a stage depends on. It holds no transport: the same stage runs in
//! the embedded runner (bounded in-memory channels) and as a Kafka service, and is unit-tested
//! with nothing but a [`VecCollector`].
//!
//! A tour:
//! - [`Stage`]: an actor that owns its state and turns input batches into output batches
//!   through [`Stage::process_batch`], with defaulted lifecycle hooks (start, timer tick, flush
//!   on shutdown, snapshot and restore, whole or [`state::Split`] per workload).
//! - [`Source`]: the start of the chain (ingest): yields `metrics.raw` batches until exhausted.
//! - [`Collector`]: where a stage puts its output; every emitted batch is checked against the
//!   declared schema of its topic ([`wfe_schemas::check`]), so a stage that drifts from the
//!   contract fails at its own edge with both schemas named.
//! - [`Context`]: counters and typed events that both log and count ([`Event`]), exported
//!   through the `metrics` facade; and the run-time settings ([`control`]) an operator changes
//!   through the API.
//! - [`panic::contain`]: a panic in a stage or a reader becomes an [`Error::Panicked`] at the
//!   actor's boundary, so runners report it (exit status 1, a dead letter) instead of losing it.
//! - [`ipc`]: Arrow IPC from outside (Kafka payloads, files) checked before arrow-ipc decodes
//!   it, so a hostile length cannot abort the process.
//! - [`id::stable_id`]: the one hash behind every id a replay must give again.
//! - [`columns`]: typed, erroring accessors for reading batches.
//! - [`merge`]: the order a stage that reads several topics sees them in (by sequence
//!   number and input), the same in the embedded runner and over Kafka.
//! - [`state`]: a stage's snapshot, whole or split per workload, and [`state_hooks!`] that
//!   writes a stage's snapshot hooks from its state field.
//! - [`health`], [`control`]: what a runner reports to probes, and the settings an operator
//!   changes while it runs.
//!
//! What the stages share about workloads (resource maps, anomaly spans, window features,
//! retirement, the seeded generator) is not the contract: it lives in `wfe-domain`.

pub mod columns;
pub mod control;
pub mod error;
mod events;
pub mod health;
pub mod id;
pub mod ipc;
pub mod merge;
pub mod norm;
pub mod panic;
pub mod raw;
pub mod state;

pub use arrow_array::RecordBatch;
pub use control::Control;
pub use error::{Error, Result};
pub use events::{Context, Event};
pub use health::Health;
pub use wfe_schemas::{self as schemas, Topic};

/// A pipeline stage: an actor that owns its state.
///
/// The runner delivers batches one at a time from a bounded mailbox, so a stage never needs a
/// lock; it must not block on I/O inside `process_batch` (a stage that calls a service does so
/// through a client it owns, with its own timeouts).
pub trait Stage: Send {
    /// The stage's name, as used in config, logs and metrics.
    fn name(&self) -> &'static str;

    /// Topics this stage consumes.
    fn inputs(&self) -> Vec<Topic>;

    /// Topics this stage emits.
    fn outputs(&self) -> Vec<Topic>;

    /// Called once before the first batch.
    fn on_start(&mut self, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }

    /// Handles one input batch of `topic` (already checked against the topic's schema).
    fn process_batch(
        &mut self,
        topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()>;

    /// Tables every instance of the stage reads whole, whatever partitions it owns (Kafka
    /// Streams' GlobalKTable): over Kafka each instance reads every partition of these
    /// topics and hands their rows to [`Stage::process_table`]. Embedded, one instance sees
    /// the whole fleet already, so the embedded runner delivers nothing here.
    fn tables(&self) -> Vec<Topic> {
        Vec::new()
    }

    /// Rows of a table from [`Stage::tables`], as other instances wrote them: the newest row
    /// of a key replaces what the stage knew of it. In a replay (sequence numbers that are the
    /// source's batches) a row made at seq `s` reaches the stage before its input of seq
    /// `s + 1`, and never before its input of seq `s`; otherwise in no order relative to the
    /// inputs. Possibly more than once.
    fn process_table(
        &mut self,
        _topic: Topic,
        _batch: RecordBatch,
        _ctx: &mut Context,
    ) -> Result<()> {
        Ok(())
    }

    /// Whether handling this input batch must wait until the tables hold every row the
    /// other instances made from the inputs before it (in a replay; the service waits at
    /// most `kafka.merge_wait_ms`). For a stage whose output for this batch depends on the
    /// tables: what makes a fleet of services decide what one process decides. Default: no.
    fn needs_tables(&self, _topic: Topic, _batch: &RecordBatch) -> bool {
        false
    }

    /// Called on a wall-clock timer when the runner has one configured (e.g. to close
    /// windows when input stops arriving in a live deployment).
    fn on_tick(&mut self, _ctx: &mut Context, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// Called once when all inputs are exhausted or on shutdown: emit what is pending.
    fn flush(&mut self, _ctx: &mut Context, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// The stage's state, so that a restarted stage continues where it stopped. `None` for a
    /// stateless stage.
    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// The state split into entries (one per workload and map, one for what the workloads
    /// share), so that a service's changelog writes at each commit only the entries that
    /// changed. Default: the whole [`Stage::snapshot`] as one entry.
    fn snapshot_split(&self) -> Result<Option<state::Split>> {
        Ok(self.snapshot()?.map(state::Split::whole))
    }

    /// The state split into entries, for a changelog that holds the split of the snapshot
    /// whose token is `since`: the entries that changed after it, the others named as kept
    /// ([`state::Split::keep`]); and this snapshot's token. `None`: every entry (a changelog
    /// just restored, or new). Default: every entry ([`Stage::snapshot_split`]); a stage
    /// that tracks its changes ([`state::Changes`]) encodes only what changed.
    fn snapshot_changes(&self, since: Option<u64>) -> Result<Option<(state::Split, u64)>> {
        let _ = since;
        Ok(self.snapshot_split()?.map(|s| (s, 0)))
    }

    /// Restores a state produced by [`Stage::snapshot_split`] of the same stage, split into
    /// entries (a state given whole goes to [`Stage::restore`]: [`state::restore`] routes).
    fn restore_split(&mut self, _state: state::Split) -> Result<()> {
        Err(Error::state(
            self.name(),
            "the state is split into entries this stage does not read",
        ))
    }

    /// Whether one instance must see every workload: a stage whose output for one workload
    /// depends on workloads of any partition (contention plans moves between hosts that
    /// workloads of every partition share). Embedded, one instance sees the fleet already;
    /// over Kafka such a stage runs as one service that reads every partition of its inputs
    /// into one instance (run one replica of it). Default: no, one instance per partition.
    fn whole_fleet(&self) -> bool {
        false
    }

    /// Whether the stage must learn from its own past output when it restarts: true for a
    /// stage with effects outside the pipeline (actuate), so that output written after its
    /// last snapshot is not acted on twice. The Kafka runner then feeds that output to
    /// [`Stage::recover`] after [`Stage::restore`].
    fn recovers_from_output(&self) -> bool {
        false
    }

    /// One batch of this stage's own output, written after the snapshot it was restored from.
    fn recover(&mut self, _topic: Topic, _batch: RecordBatch, _ctx: &mut Context) -> Result<()> {
        Ok(())
    }

    /// Restores a state produced by [`Stage::snapshot`] of the same stage.
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Err(Error::state(
            self.name(),
            "this stage keeps no state to restore",
        ))
    }
}

/// The start of the chain: yields `metrics.raw` batches in event-time order per workload.
pub trait Source: Send {
    /// What is being read, for logs and progress.
    fn describe(&self) -> String;

    /// The next batch, or `None` when the source is exhausted. Bad records are counted and
    /// reported through `ctx` and skipped, unless the source is strict, when they are errors.
    fn next_batch(&mut self, ctx: &mut Context) -> Result<Option<RecordBatch>>;

    /// Work done and total, in the source's unit (e.g. files), for a progress bar.
    fn progress(&self) -> (u64, Option<u64>) {
        (0, None)
    }
}

/// Receives a stage's output batches.
pub trait Collector {
    /// Emits `batch` on `topic`. Fails if the batch does not have the topic's schema.
    fn emit(&mut self, topic: Topic, batch: RecordBatch) -> Result<()>;
}

/// A collector that keeps batches in memory: for tests and for the runner's per-call buffer.
#[derive(Default)]
pub struct VecCollector {
    pub batches: Vec<(Topic, RecordBatch)>,
}

impl VecCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// All batches of one topic.
    pub fn of(&self, topic: Topic) -> Vec<RecordBatch> {
        self.batches
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Total rows of one topic.
    pub fn rows(&self, topic: Topic) -> usize {
        self.batches
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, b)| b.num_rows())
            .sum()
    }

    /// Takes the collected batches out, leaving it empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (Topic, RecordBatch)> {
        self.batches.drain(..)
    }
}

impl Collector for VecCollector {
    fn emit(&mut self, topic: Topic, batch: RecordBatch) -> Result<()> {
        wfe_schemas::check(topic, &batch.schema())?;
        if batch.num_rows() > 0 {
            self.batches.push((topic, batch));
        }
        Ok(())
    }
}
