//! A stage as a service: consume the stage's input topic in a consumer group, run the stage,
//! produce its outputs, and commit.
//!
//! **One stage instance per input partition.** Producers key messages by workload, so a
//! partition holds whole workloads; each assigned partition gets its own [`Stage`] with its own
//! state, and that state moves with the partition when the group rebalances. Outputs go to the
//! same partition number of each output topic (every wfe topic has the same partition count),
//! so the whole chain keeps a workload in one partition number.
//!
//! **At-least-once (default).** Outputs are sent as they are made. Every `commit_interval`
//! (and before partitions are revoked, and at shutdown) the service waits until the broker has
//! acknowledged every output, then writes each changed partition's snapshot (stage state plus
//! the next input offset) to the stage's compacted state topic, waits for that too, and only
//! then commits the input offsets (as in rust-rdkafka's `at_least_once.rs`). A crash replays
//! from the last commit; stages are deterministic, so the replay yields the same keyed rows.
//! On assignment the partition's newest snapshot is restored, and input below its offset is
//! skipped, so a snapshot written just before a lost commit is not applied twice.
//!
//! **No double actuation.** A stage with effects outside the pipeline (actuate) also reads
//! back, on assignment, its own output written after its snapshot, and learns from it what it
//! already did ([`Stage::recover`]); a replayed decision then produces no second action.
//!
//! **Exactly-once (per stage option).** Outputs, snapshots and input offsets go in one Kafka
//! transaction (`send_offsets_to_transaction`); readers use `read_committed`.
//!
//! **Bad messages** (undecodable Arrow, unknown schema or version, wrong columns, a batch the
//! stage rejects) go to the stage's dead-letter topic, unchanged, with the error and origin in
//! headers; a counter rises and the stage goes on. **A broker that is away** is waited out: the
//! producer keeps messages until they are delivered, and commits are retried with backoff.
//!
//! **Observability.** Rows in and out, batch latency, errors by kind, dead letters, commits
//! (the `metrics` facade, as in the embedded runner) and each assigned partition's consumer lag
//! (`wfe_consumer_lag_messages{stage,partition}`, from librdkafka's statistics every 5 s).
//! [`ServiceOptions::health`] is ready once subscribed and live while the loop beats.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use wfe_contract::{Context, Control, Error, Health, Result, Stage, Topic, VecCollector};

use crate::KafkaConfig;
use crate::broker::{self, kafka_error};
use crate::codec::{self, Encoded, HeaderMap, encode_outputs, header};
use crate::produce::Sender;

mod changelog;
pub use changelog::{Snapshot, compacted, restore_from, snapshot_key as changelog_key};
mod chunked;
use chunked::Slot;

/// How often a running service logs its counters.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How often every partition's stage gets its timer hook (`Stage::on_tick`).
const TICK_EVERY: Duration = Duration::from_secs(1);
/// How long a transaction commit may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a fresh instance of the stage (one per assigned partition).
pub type StageFactory = Box<dyn Fn() -> Result<Box<dyn Stage>> + Send + Sync>;

/// What a stage service needs.
pub struct ServiceOptions {
    pub kafka: KafkaConfig,
    /// Kafka transactions for this stage.
    pub exactly_once: bool,
    /// Distinguishes instances of one stage (the transactional id); default: host and pid.
    pub instance: String,
    /// Ready once subscribed; live while the consumer loop beats (`/ready`, `/health`).
    pub health: Arc<Health>,
    /// Run-time settings the stage registers (changed through the HTTP API).
    pub control: Arc<Control>,
}

/// Counters of a service run, printed at shutdown.
#[derive(Debug, Default, Clone)]
pub struct ServiceReport {
    pub messages_in: u64,
    pub messages_out: u64,
    pub dead_letters: u64,
    pub commits: u64,
    pub counters: BTreeMap<String, u64>,
}

struct Part {
    stage: Box<dyn Stage>,
    /// The first input offset this instance has not processed.
    next: i64,
    dirty: bool,
    /// The slot of the state topic that the acknowledged manifest names (none yet: none).
    durable: Option<Slot>,
    /// The slot of the snapshot written for the commit under way.
    pending: Option<Slot>,
}

/// Everything the message loop and the rebalance callback share.
struct Core {
    name: String,
    make: StageFactory,
    kafka: KafkaConfig,
    group: String,
    input: Topic,
    input_name: String,
    outputs: Vec<(Topic, String)>,
    dlq: String,
    state_topic: String,
    state_partitions: i32,
    out: Sender,
    exactly_once: bool,
    in_txn: bool,
    parts: BTreeMap<i32, Part>,
    ctx: Context,
    report: ServiceReport,
}

/// The consumer's context: commits and drops partitions before they are revoked, and turns
/// librdkafka's statistics into the lag gauge.
struct Ctx {
    core: Arc<Mutex<Core>>,
    stage: String,
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (p, part) in &topic.partitions {
                // Partition -1 is librdkafka's internal one; a lag of -1 means not known yet
                // (nothing fetched), and only partitions this member consumes have one.
                if *p < 0 || part.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!("wfe_consumer_lag_messages", "stage" => self.stage.clone(), "partition" => p.to_string())
                    .set(part.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut core = lock(&self.core);
            // Commit what was done while the partitions are still ours, so the next owner
            // starts exactly there.
            if let Err(e) = core.commit(consumer) {
                tracing::error!(stage = %core.name, "commit before revocation failed: {e}; the next owner replays from the previous commit");
            }
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            for p in revoked {
                core.parts.remove(&p);
            }
            tracing::info!(stage = %core.name, partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn lock(core: &Arc<Mutex<Core>>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one stage as a service until `stop` resolves; then commits and leaves the group.
pub async fn run_stage(
    make: StageFactory,
    opts: ServiceOptions,
    stop: impl Future<Output = ()>,
) -> Result<ServiceReport> {
    let probe = make()?;
    let name = probe.name().to_string();
    let inputs = probe.inputs();
    let [input] = inputs[..] else {
        return Err(Error::config(
            "stage",
            format!(
                "`{name}` has {} inputs; a service consumes exactly one",
                inputs.len()
            ),
        ));
    };
    let kafka = opts.kafka.clone();
    kafka.validate()?;
    let input_name = kafka.topic(input);
    let outputs: Vec<(Topic, String)> = probe
        .outputs()
        .into_iter()
        .map(|t| (t, kafka.topic(t)))
        .collect();
    drop(probe);
    let dlq = kafka.dead_letter_topic(&name);
    let state_topic = kafka.state_topic(&name);
    let mut topics = vec![
        (input_name.clone(), false),
        (dlq.clone(), false),
        (state_topic.clone(), true),
    ];
    topics.extend(outputs.iter().map(|(_, n)| (n.clone(), false)));
    broker::ensure_topics(&kafka, &topics).await?;

    let txn_id = format!("{}-{name}-{}", kafka.group_prefix, opts.instance);
    let out = Sender::create(&kafka, &name, opts.exactly_once.then_some(txn_id.as_str()))?;
    let producer = &out.producer;
    if opts.exactly_once {
        broker::retry("init transactions", || {
            producer.init_transactions(TXN_TIMEOUT)
        })?;
    }
    let group = kafka.group(&name);
    let core = Arc::new(Mutex::new(Core {
        name: name.clone(),
        make,
        kafka: kafka.clone(),
        group: group.clone(),
        input,
        input_name: input_name.clone(),
        outputs,
        dlq,
        state_topic: state_topic.clone(),
        state_partitions: 1,
        out,
        exactly_once: opts.exactly_once,
        in_txn: false,
        parts: BTreeMap::new(),
        ctx: Context::with_control(name.clone(), opts.control.clone()),
        report: ServiceReport::default(),
    }));
    let consumer: StreamConsumer<Ctx> = kafka
        .consumer(&group)
        .set("statistics.interval.ms", "5000")
        .create_with_context(Ctx {
            core: core.clone(),
            stage: name.clone(),
        })
        .map_err(|e| kafka_error("consumer", e))?;
    {
        let patience = Duration::from_secs(60);
        let n_in = broker::partition_count(&consumer, &input_name, patience)?;
        let mut c = lock(&core);
        c.state_partitions = broker::partition_count(&consumer, &state_topic, patience)?;
        for (_, out) in &c.outputs {
            let n_out = broker::partition_count(&consumer, out, patience)?;
            if n_out < n_in {
                return Err(Error::config(
                    "kafka.partitions",
                    format!(
                        "`{out}` has {n_out} partitions, fewer than its input `{input_name}` ({n_in}): a stage writes to the partition its input came from"
                    ),
                ));
            }
        }
    }
    consumer
        .subscribe(&[&input_name])
        .map_err(|e| kafka_error("subscribe", e))?;
    tracing::info!(stage = %name, group = %group, input = %input_name, exactly_once = opts.exactly_once, "stage service started");
    let health = opts.health.clone();
    health.beat();
    health.set_ready(true);
    let result = serve(&name, &consumer, &core, &health, stop).await;
    health.set_ready(false);
    if let Err(e) = &result {
        health.fail(&e.to_string());
        metrics::counter!("wfe_stage_errors_total", "stage" => name.clone(), "kind" => e.kind())
            .increment(1);
        return Err(result.unwrap_err());
    }
    tracing::info!(stage = %name, "stopping: committing and leaving the group");
    lock(&core).commit(&consumer)?;
    consumer.unsubscribe();
    let c = lock(&core);
    let mut report = c.report.clone();
    report.counters = c.ctx.counters().clone();
    Ok(report)
}

/// The consumer loop: messages, ticks, commits and progress logs until `stop` resolves.
async fn serve(
    name: &str,
    consumer: &StreamConsumer<Ctx>,
    core: &Arc<Mutex<Core>>,
    health: &Health,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let interval = lock(core).kafka.commit_interval();
    let mut last_commit = Instant::now();
    let mut last_recv_error: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut last_tick = Instant::now();
    tokio::pin!(stop);
    loop {
        health.beat();
        let wait = interval
            .saturating_sub(last_commit.elapsed())
            .min(TICK_EVERY.saturating_sub(last_tick.elapsed()))
            .max(Duration::from_millis(1));
        tokio::select! {
            _ = &mut stop => break,
            r = tokio::time::timeout(wait, consumer.recv()) => match r {
                Ok(Ok(msg)) => lock(core).handle(&msg)?,
                Ok(Err(e)) => {
                    // librdkafka reconnects by itself; say so once in a while, not per poll.
                    if last_recv_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(stage = %name, "consumer: {e} (retrying)");
                        last_recv_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
        if last_tick.elapsed() >= TICK_EVERY {
            lock(core).tick()?;
            last_tick = Instant::now();
        }
        if last_commit.elapsed() >= interval {
            lock(core).commit(consumer)?;
            last_commit = Instant::now();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            let c = lock(core);
            let r = &c.report;
            tracing::info!(stage = %name, messages_in = r.messages_in, messages_out = r.messages_out, dead_letters = r.dead_letters, commits = r.commits, partitions = ?c.parts.keys().collect::<Vec<_>>(), "progress");
            last_progress = Instant::now();
        }
    }
    Ok(())
}

impl Core {
    /// Handles one input message.
    fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<()> {
        let p = msg.partition();
        let offset = msg.offset();
        self.report.messages_in += 1;
        metrics::counter!("wfe_kafka_messages_in_total", "stage" => self.name.clone()).increment(1);
        let mut part = match self.parts.remove(&p) {
            Some(part) => part,
            None => self.load(p)?,
        };
        let r = self.handle_in(&mut part, msg);
        self.parts.insert(p, part);
        r.map(|_| ()).inspect_err(
            |e| tracing::error!(stage = %self.name, "{}/{p}@{offset}: {e}", self.input_name),
        )
    }

    fn handle_in(&mut self, part: &mut Part, msg: &BorrowedMessage<'_>) -> Result<()> {
        let (p, offset) = (msg.partition(), msg.offset());
        if offset < part.next {
            self.ctx.count("dropped.already_in_snapshot", 1);
            return Ok(());
        }
        let headers = HeaderMap::from_kafka(msg.headers());
        let trace = headers
            .get(header::TRACE)
            .map(str::to_string)
            .unwrap_or_else(|| codec::trace_id(&self.input_name, p, offset));
        let mut out = VecCollector::new();
        let at = format!("stage {}", self.name);
        if headers.is_end_of_stream() {
            let flushed =
                wfe_contract::panic::contain(&at, || part.stage.flush(&mut self.ctx, &mut out))
                    .and_then(|_| encode_outputs(out, self.kafka.max_message_bytes));
            match flushed {
                Ok(encoded) => self.produce_encoded(encoded, p, &trace)?,
                // A flush that panics or makes an unsendable row is dead-lettered with the
                // marker; the marker still travels on, so downstream partitions finish.
                Err(e) if !e.is_retryable() => self.dead_letter(msg, headers.clone(), &e)?,
                Err(e) => return Err(e),
            }
            for (_, topic) in self.outputs.clone() {
                self.send(
                    &topic,
                    Some(p),
                    None,
                    &[],
                    HeaderMap::end_of_stream(&self.name),
                )?;
            }
            self.ctx.count("end_of_stream", 1);
        } else {
            let t = Instant::now();
            let result = codec::decode(self.input, &headers, msg.payload()).and_then(|batch| {
                metrics::counter!("wfe_rows_in_total", "stage" => self.name.clone(), "topic" => self.input.to_string())
                    .increment(batch.num_rows() as u64);
                wfe_contract::panic::contain(&at, || {
                    part.stage
                        .process_batch(self.input, batch, &mut self.ctx, &mut out)
                })
            });
            metrics::histogram!("wfe_batch_seconds", "stage" => self.name.clone())
                .record(t.elapsed().as_secs_f64());
            // Outputs are encoded before any is sent: an output row over the message limit
            // dead-letters the input that made it (replayable once the limit is raised)
            // instead of ending the service, which would fail again on the same input.
            match result.and_then(|_| encode_outputs(out, self.kafka.max_message_bytes)) {
                Ok(encoded) => self.produce_encoded(encoded, p, &trace)?,
                Err(e) if !e.is_retryable() => self.dead_letter(msg, headers, &e)?,
                Err(e) => return Err(e),
            }
        }
        part.next = offset + 1;
        part.dirty = true;
        Ok(())
    }

    /// The timer hook of every partition's stage (the actuator reads its notice queue):
    /// what it emits goes to that partition's outputs, committed with the next commit.
    fn tick(&mut self) -> Result<()> {
        let parts: Vec<i32> = self.parts.keys().copied().collect();
        for p in parts {
            let Some(mut part) = self.parts.remove(&p) else {
                continue;
            };
            let mut out = VecCollector::new();
            let at = format!("stage {}", self.name);
            let r =
                wfe_contract::panic::contain(&at, || part.stage.on_tick(&mut self.ctx, &mut out));
            part.dirty |= !out.batches.is_empty();
            self.parts.insert(p, part);
            let trace = format!("{}-tick-{p}", self.name);
            match r.and_then(|_| self.produce_outputs(out, p, &trace)) {
                Ok(()) => {}
                // A tick has no input message to dead-letter: a bug or an unsendable row is
                // logged and counted, and the partition goes on (ending the service would
                // only meet the same tick again after the restart).
                Err(e) if !e.is_retryable() => {
                    tracing::error!(stage = %self.name, partition = p, "tick failed: {e}");
                    metrics::counter!("wfe_stage_errors_total", "stage" => self.name.clone(), "kind" => e.kind())
                        .increment(1);
                    self.ctx.count("tick_failed", 1);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn produce_outputs(&mut self, out: VecCollector, p: i32, trace: &str) -> Result<()> {
        let encoded = encode_outputs(out, self.kafka.max_message_bytes)?;
        self.produce_encoded(encoded, p, trace)
    }

    fn produce_encoded(&mut self, encoded: Vec<Encoded>, p: i32, trace: &str) -> Result<()> {
        for (topic, rows, messages) in encoded {
            metrics::counter!("wfe_rows_out_total", "stage" => self.name.clone(), "topic" => topic.to_string())
                .increment(rows);
            let name = self.kafka.topic(topic);
            for (key, value) in messages {
                let h = HeaderMap::data(topic, &self.name, trace);
                self.send(&name, Some(p), Some(key.as_bytes()), &value, h)?;
                self.report.messages_out += 1;
            }
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        mut h: HeaderMap,
        e: &Error,
    ) -> Result<()> {
        let origin = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        self.ctx.event(wfe_contract::Event::Rejected {
            kind: "dead_letter",
            location: &origin,
            message: &e.to_string(),
            count: 1,
        });
        h.set(header::ERROR, e.to_string());
        h.set(header::ORIGIN, &origin);
        h.set(header::STAGE, &self.name);
        let dlq = self.dlq.clone();
        self.send(&dlq, None, msg.key(), msg.payload().unwrap_or_default(), h)?;
        self.report.dead_letters += 1;
        metrics::counter!("wfe_dead_letters_total", "stage" => self.name.clone()).increment(1);
        metrics::counter!("wfe_stage_errors_total", "stage" => self.name.clone(), "kind" => e.kind())
            .increment(1);
        Ok(())
    }

    /// Queues one message (inside the open transaction in exactly-once mode).
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        h: HeaderMap,
    ) -> Result<()> {
        self.begin_txn()?;
        self.out.send(topic, partition, key, Some(value), &h, None)
    }

    fn begin_txn(&mut self) -> Result<()> {
        if self.exactly_once && !self.in_txn {
            self.out
                .producer
                .begin_transaction()
                .map_err(|e| kafka_error("begin transaction", e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// The commit point: outputs acknowledged, snapshots written, input offsets committed.
    fn commit<C: Consumer<Ctx>>(&mut self, consumer: &C) -> Result<()> {
        let dirty: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(k, _)| *k)
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        if !self.exactly_once {
            self.out.flush()?;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &dirty {
            self.write_snapshot(p)?;
            let next = self.parts[&p].next;
            tpl.add_partition_offset(&self.input_name, p, Offset::Offset(next))
                .map_err(|e| kafka_error("offsets", e))?;
        }
        if self.exactly_once {
            let meta = consumer
                .group_metadata()
                .ok_or_else(|| Error::state(&self.name, "no consumer group metadata"))?;
            let r = self
                .out
                .producer
                .send_offsets_to_transaction(&tpl, &meta, TXN_TIMEOUT)
                .and_then(|_| self.out.producer.commit_transaction(TXN_TIMEOUT));
            self.in_txn = false;
            if let Err(e) = r {
                let _ = self.out.producer.abort_transaction(TXN_TIMEOUT);
                return Err(kafka_error(
                    "commit transaction (aborted; a restart redoes it)",
                    e,
                ));
            }
        } else {
            self.out.flush()?;
            // The snapshots just written already hold these offsets (input below a snapshot's
            // offset is skipped), so a commit that fails now (coordinator away, group
            // rebalancing) loses nothing: say so and try again at the next commit point.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                self.ctx.count("commit.deferred", 1);
                tracing::warn!(stage = %self.name, "offset commit deferred: {e}; the snapshots hold the position");
                return Ok(());
            }
        }
        for p in dirty {
            if let Some(part) = self.parts.get_mut(&p) {
                part.dirty = false;
                // Acknowledged (flushed, or committed with the transaction): durable now.
                if let Some(slot) = part.pending.take() {
                    part.durable = Some(slot);
                }
            }
        }
        self.report.commits += 1;
        metrics::counter!("wfe_commits_total", "stage" => self.name.clone()).increment(1);
        Ok(())
    }
}
