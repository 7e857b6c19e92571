//! A stage as a service: consume the stage's input topic in a consumer group, run the stage,
//! produce its outputs, and commit.
//!
//! **One stage instance per input partition.** Producers key messages by workload, so a
//! partition holds whole workloads; each assigned partition gets its own [`Stage`] with its own
//! state, and that state moves with the partition when the group rebalances. Outputs go to the
//! same partition number of each output topic (every wfe topic has the same partition count),
//! so the whole chain keeps a workload in one partition number.
//!
//! **One instance for the whole fleet**, for a stage that plans across workloads of every
//! partition ([`wfe_contract::Stage::whole_fleet`]: contention): the service assigns itself
//! every partition of its inputs (no group balancing), merges them into one stage (see
//! `input`), writes each output row to its workload's partition and keeps one snapshot
//! (`…/all`) with every partition's offsets. It runs as one replica.
//!
//! **At-least-once (default).** Outputs are sent as they are made. Every `commit_interval`
//! the service waits until the broker has acknowledged every output, then writes each changed
//! partition's snapshot (stage state plus the next input offset) to the stage's compacted
//! state topic and reads on; the next commit point's wait for its outputs covers those
//! snapshots too, and only then are the input offsets they hold committed (as in
//! rust-rdkafka's `at_least_once.rs`, pipelined by one commit). Before partitions are revoked
//! and at shutdown the service waits for the snapshots and commits at once. A crash replays
//! from the newest snapshot that was complete; stages are deterministic, so the replay yields
//! the same keyed rows.
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

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::Producer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use wfe_contract::merge;
use wfe_contract::{Context, Control, Error, Health, Result, Topic};

use crate::KafkaConfig;
use crate::broker::{self, kafka_error};
use crate::codec::HeaderMap;
use crate::produce::Sender;

mod changelog;
pub use changelog::{
    Snapshot, compacted, restore_from, snapshot_key as changelog_key, whole_fleet_key,
};
mod chunked;
mod commit;
mod entries;
pub use entries::{MemoryChangelog, Written};
mod input;
mod shared;
use shared::{Core, Input, Whole};
pub use shared::{ServiceReport, StageFactory};
mod table_history;
mod table_order;
mod tables;
use tables::Tables;

/// How often a running service logs its counters.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// How often every partition's stage gets its timer hook (`Stage::on_tick`).
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Progress marks go out when no message came for this long...
const PROGRESS_IDLE: Duration = Duration::from_millis(2);
/// ...and, while messages keep coming, at least this often: a stage that waits for them
/// must not wait for its producer's backlog to drain.
pub(crate) const MARKS_EVERY: Duration = Duration::from_millis(20);
/// How long a starting service waits to read its tables whole.
const TABLE_PATIENCE: Duration = Duration::from_secs(60);
/// How long a transaction commit may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The service keeps nothing across starts (the fleet's API, which reads its inputs from
    /// their beginning in a consumer group of each start's own): no state topic, snapshots
    /// or offset commits, so restarts leave nothing behind to grow or to scan.
    pub ephemeral: bool,
}

/// The consumer's context: commits and drops partitions before they are revoked, and turns
/// librdkafka's statistics into the lag gauge.
struct Ctx {
    core: Arc<Mutex<Core>>,
    stage: String,
}

/// A stage that joins topics partition by partition needs the range assignor (which gives a
/// member the same partition numbers of every topic); a user's other choice is refused.
fn co_partitioning_assignment(kafka: &KafkaConfig, stage: &str) -> Result<()> {
    let key = "partition.assignment.strategy";
    let chosen = kafka
        .consumer_properties
        .get(key)
        .or_else(|| kafka.properties.get(key));
    match chosen {
        Some(s) if s.trim() != "range" => Err(Error::config(
            format!("kafka.consumer_properties.\"{key}\""),
            format!(
                "`{s}`: stage `{stage}` reads several topics and joins them partition by partition, which needs `range`"
            ),
        )),
        _ => Ok(()),
    }
}

/// A whole-fleet stage ([`wfe_contract::Stage::whole_fleet`]) runs as one instance over
/// every partition: one that reads tables (which hand rows to a partition's instance) or
/// reads its own output back on restart (per partition) is not supported.
fn whole_fleet_supported(stage: &dyn wfe_contract::Stage) -> Result<()> {
    let why = if !stage.tables().is_empty() {
        "reads tables"
    } else if stage.recovers_from_output() {
        "recovers from its own output"
    } else {
        return Ok(());
    };
    Err(Error::config(
        "stage",
        format!(
            "`{}` sees the whole fleet in one instance and {why}: a whole-fleet service does not support that",
            stage.name()
        ),
    ))
}

/// A whole-fleet service's merge inputs: each input topic's `partitions` in turn, in the
/// topics' rank.
fn whole_inputs(inputs: &[Input], partitions: i32) -> Vec<Input> {
    inputs
        .iter()
        .flat_map(|x| {
            (0..partitions).map(|q| Input {
                partition: Some(q),
                ..x.clone()
            })
        })
        .collect()
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
            tracing::info!(stage = %core.name, partitions = ?partition_numbers(tpl), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = ?partition_numbers(tpl), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The partition numbers in a list (each once: a stage that reads several topics gets the
/// same numbers of each).
fn partition_numbers(tpl: &TopicPartitionList) -> Vec<i32> {
    let set: std::collections::BTreeSet<i32> =
        tpl.elements().iter().map(|e| e.partition()).collect();
    set.into_iter().collect()
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
    let kafka = opts.kafka.clone();
    kafka.validate()?;
    let inputs: Vec<(Topic, String)> = merge::ranked(probe.inputs())
        .into_iter()
        .map(|t| (t, kafka.topic(t)))
        .collect();
    if inputs.is_empty() {
        return Err(Error::config(
            "stage",
            format!("`{name}` has no input topic"),
        ));
    }
    let whole = probe.whole_fleet();
    if whole {
        whole_fleet_supported(probe.as_ref())?;
    } else if inputs.len() > 1 {
        co_partitioning_assignment(&kafka, &name)?;
    }
    if opts.ephemeral && opts.exactly_once {
        return Err(Error::config(
            "exactly_once",
            format!("`{name}` keeps no state across starts: it has no transaction to commit"),
        ));
    }
    let table_topics: Vec<(Topic, String)> = probe
        .tables()
        .into_iter()
        .map(|t| (t, kafka.topic(t)))
        .collect();
    let outputs: Vec<(Topic, String)> = probe
        .outputs()
        .into_iter()
        .map(|t| (t, kafka.topic(t)))
        .collect();
    drop(probe);
    let dlq = kafka.dead_letter_topic(&name);
    let state_topic = kafka.state_topic(&name);
    let mut topics = vec![(dlq.clone(), false)];
    if !opts.ephemeral {
        topics.push((state_topic.clone(), true));
    }
    topics.extend(inputs.iter().map(|(_, n)| (n.clone(), false)));
    // A table (one row per key matters) is compacted; a stream is not.
    topics.extend(
        outputs
            .iter()
            .chain(&table_topics)
            .map(|(t, n)| (n.clone(), t.is_table())),
    );
    // A stage may read a table it also writes (fingerprint: profiles); a topic is created once.
    topics.sort();
    topics.dedup();
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
        inputs: inputs
            .iter()
            .map(|(topic, name)| Input {
                topic: *topic,
                name: name.clone(),
                partition: None,
            })
            .collect(),
        whole: None,
        outputs,
        dlq,
        state_topic: state_topic.clone(),
        state_partitions: 1,
        out,
        exactly_once: opts.exactly_once,
        ephemeral: opts.ephemeral,
        in_txn: false,
        unsettled: None,
        parts: BTreeMap::new(),
        tables: None,
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
        let first = &inputs[0].1;
        let n_in = broker::partition_count(&consumer, first, patience)?;
        for (_, other) in &inputs[1..] {
            let n = broker::partition_count(&consumer, other, patience)?;
            if n != n_in {
                return Err(Error::config(
                    "kafka.partitions",
                    format!(
                        "`{other}` has {n} partitions and `{first}` {n_in}: a stage that reads both joins them partition by partition, so they need the same count"
                    ),
                ));
            }
        }
        let mut c = lock(&core);
        if !opts.ephemeral {
            c.state_partitions = broker::partition_count(&consumer, &state_topic, patience)?;
        }
        let mut out_partitions = BTreeMap::new();
        for (t, out) in &c.outputs {
            let n_out = broker::partition_count(&consumer, out, patience)?;
            if n_out < n_in {
                return Err(Error::config(
                    "kafka.partitions",
                    format!(
                        "`{out}` has {n_out} partitions, fewer than its input `{first}` ({n_in}): a stage writes to the partition its input came from"
                    ),
                ));
            }
            out_partitions.insert(*t, n_out);
        }
        if whole {
            c.inputs = whole_inputs(&c.inputs, n_in);
            c.whole = Some(Whole { out_partitions });
        }
    }
    if !table_topics.is_empty() {
        let kafka = kafka.clone();
        let tables =
            tokio::task::block_in_place(|| Tables::open(&kafka, table_topics, TABLE_PATIENCE))?;
        lock(&core).tables = Some(tables);
    }
    let names: Vec<&str> = inputs.iter().map(|(_, n)| n.as_str()).collect();
    if whole {
        // Every partition to the one instance, without the group's balancing (which would
        // share them out between replicas); offsets are still committed for the group.
        let mut all = TopicPartitionList::new();
        for x in &lock(&core).inputs {
            let q = x.partition_of(0);
            all.add_partition_offset(&x.name, q, rdkafka::Offset::Stored)
                .map_err(|e| kafka_error("assign", e))?;
        }
        consumer
            .assign(&all)
            .map_err(|e| kafka_error("assign", e))?;
        tracing::info!(
            partitions = all.count(),
            "whole fleet: every input partition assigned"
        );
    } else {
        consumer
            .subscribe(&names)
            .map_err(|e| kafka_error("subscribe", e))?;
    }
    tracing::info!(stage = %name, group = %group, inputs = ?names, exactly_once = opts.exactly_once, "stage service started");
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
    if whole {
        consumer
            .unassign()
            .map_err(|e| kafka_error("unassign", e))?;
    } else {
        consumer.unsubscribe();
    }
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
    let interval = {
        let c = lock(core);
        c.kafka.commit_interval(c.exactly_once)
    };
    let mut last_commit = Instant::now();
    let mut last_recv_error: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut last_tick = Instant::now();
    // Messages handled since progress marks were last sent.
    let mut unmarked = 0usize;
    let mut last_marks = Instant::now();
    tokio::pin!(stop);
    loop {
        health.beat();
        let mut wait = interval
            .saturating_sub(last_commit.elapsed())
            .min(TICK_EVERY.saturating_sub(last_tick.elapsed()))
            .max(Duration::from_millis(1));
        if unmarked > 0 {
            // Progress goes out as soon as the input runs dry.
            wait = wait.min(PROGRESS_IDLE);
        }
        if unmarked > 0 && last_marks.elapsed() >= MARKS_EVERY {
            lock(core).send_progress()?;
            (unmarked, last_marks) = (0, Instant::now());
        }
        tokio::select! {
            _ = &mut stop => break,
            r = tokio::time::timeout(wait, consumer.recv()) => match r {
                Ok(Ok(msg)) => {
                    lock(core).handle(&msg)?;
                    unmarked += 1;
                }
                Ok(Err(e)) => {
                    // librdkafka reconnects by itself; say so once in a while, not per poll.
                    if last_recv_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(stage = %name, "consumer: {e} (retrying)");
                        last_recv_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {
                    if unmarked > 0 {
                        lock(core).send_progress()?;
                        (unmarked, last_marks) = (0, Instant::now());
                    }
                }
            }
        }
        if lock(core).poll_tables()? {
            unmarked += 1;
        }
        if last_tick.elapsed() >= TICK_EVERY {
            lock(core).tick()?;
            last_tick = Instant::now();
        }
        if last_commit.elapsed() >= interval {
            lock(core).commit_periodic(consumer)?;
            last_commit = Instant::now();
        }
        if last_progress.elapsed() >= LOG_EVERY {
            let c = lock(core);
            let r = &c.report;
            tracing::info!(stage = %name, messages_in = r.messages_in, messages_out = r.messages_out, dead_letters = r.dead_letters, commits = r.commits, partitions = ?c.parts.keys().collect::<Vec<_>>(), "progress");
            last_progress = Instant::now();
        }
    }
    Ok(())
}

impl Core {
    /// Queues one message (inside the open transaction in exactly-once mode); a value of
    /// `None` is a tombstone.
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        h: HeaderMap,
    ) -> Result<()> {
        self.begin_txn()?;
        self.out.send(topic, partition, key, value, &h, None)
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
}
