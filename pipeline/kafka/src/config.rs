//! The `[kafka]` section of the job config: where the broker is, how clients talk to it (any
//! librdkafka property passes through, so the same binary runs against Apache Kafka, MSK,
//! Redpanda or Confluent Cloud), and how wfe lays out its topics.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;
use wfe_contract::{Error, Result, Topic};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port` list of brokers (librdkafka's `bootstrap.servers`).
    #[serde(default = "d_bootstrap")]
    pub bootstrap_servers: String,
    /// Any librdkafka property, for producers and consumers alike: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, `session.timeout.ms`, ...
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for consumers only (`session.timeout.ms`, `fetch.max.bytes`, ...).
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for producers only (`linger.ms`, `compression.type`, ...).
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
    /// Prefix of every topic name wfe uses (e.g. `prod.` gives `prod.metrics.raw`).
    #[serde(default)]
    pub topic_prefix: String,
    /// Partitions of the topics wfe creates. Every wfe topic has the same count: a stage writes
    /// its outputs to the partition its input came from, so a workload stays in one partition
    /// number along the whole chain.
    #[serde(default = "d_partitions")]
    pub partitions: i32,
    /// Replication factor of the topics wfe creates.
    #[serde(default = "d_replication")]
    pub replication_factor: i32,
    /// Create missing topics at start (off where topics are managed elsewhere).
    #[serde(default = "d_true")]
    pub create_topics: bool,
    /// Consumer groups are `<group_prefix>.<stage>`.
    #[serde(default = "d_group_prefix")]
    pub group_prefix: String,
    /// How often a stage commits: outputs flushed, state snapshot written, offsets committed.
    /// Shorter means less replayed after a crash, longer means less overhead. Unset: 10 s for
    /// an at-least-once stage (each commit stops reading until the broker has acknowledged
    /// the outputs, then writes every changed workload's state: at 1,000 workloads, 10 s
    /// against 2 s took the Kafka load test from 45-49k to 57-59k values/s; Kafka Streams'
    /// default is 30 s), 1 s for an `exactly_once` stage (its outputs become visible to
    /// `read_committed` readers only at a commit: Kafka Streams uses 100 ms there).
    #[serde(default)]
    pub commit_interval_ms: Option<u64>,
    /// Largest message value wfe produces; bigger batches are split (keep below the broker's
    /// `message.max.bytes`, 1 MB by default).
    #[serde(default = "d_max_bytes")]
    pub max_message_bytes: usize,
    /// A stage that reads several topics (forecast, tier-select) takes them in source order,
    /// holding a message until the other topics' producers have passed it. After this long
    /// without that (a producer stopped or gone), the oldest held message goes on anyway and
    /// `merge.forced` counts it: decisions may then differ from a run where all kept up.
    /// Also how long, in a replay, an input that needs the stage's tables (fingerprint: a new
    /// workload's first windows) waits for the other instances' rows (`tables.forced`).
    #[serde(default = "d_merge_wait_ms")]
    pub merge_wait_ms: u64,
    /// Most message bytes one input partition (a whole-fleet stage's service: all of them
    /// together) holds back that way; past it the oldest goes
    /// on (and `merge.forced` counts it). Also the most bytes of a replay's table rows a
    /// partition keeps for their turn (past it the oldest go to the stage early).
    #[serde(default = "d_merge_bytes")]
    pub merge_buffer_bytes: usize,
    /// Stages that run with Kafka transactions (exactly-once: outputs, state and input offsets
    /// commit together). Needs a broker with transaction support.
    #[serde(default)]
    pub exactly_once: Vec<String>,
}

fn d_bootstrap() -> String {
    "127.0.0.1:9092".into()
}
fn d_partitions() -> i32 {
    4
}
fn d_replication() -> i32 {
    1
}
fn d_true() -> bool {
    true
}
fn d_group_prefix() -> String {
    "wfe".into()
}
/// The commit intervals when `commit_interval_ms` is unset (at-least-once, exactly-once).
const COMMIT_MS: u64 = 10_000;
const COMMIT_MS_EXACTLY_ONCE: u64 = 1_000;
fn d_max_bytes() -> usize {
    900_000
}
fn d_merge_wait_ms() -> u64 {
    60_000
}
fn d_merge_bytes() -> usize {
    256 << 20
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: d_bootstrap(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            topic_prefix: String::new(),
            partitions: d_partitions(),
            replication_factor: d_replication(),
            create_topics: true,
            group_prefix: d_group_prefix(),
            commit_interval_ms: None,
            max_message_bytes: d_max_bytes(),
            merge_wait_ms: d_merge_wait_ms(),
            merge_buffer_bytes: d_merge_bytes(),
            exactly_once: Vec::new(),
        }
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config("kafka.bootstrap_servers", "empty"));
        }
        if self.partitions < 1 {
            return Err(Error::config("kafka.partitions", "must be at least 1"));
        }
        if self.max_message_bytes < 1024 {
            return Err(Error::config(
                "kafka.max_message_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    /// The broker name of a wfe topic.
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }

    /// The dead-letter topic of a stage.
    pub fn dead_letter_topic(&self, stage: &str) -> String {
        format!("{}wfe.dead-letters.{stage}", self.topic_prefix)
    }

    /// The snapshot topic of a stage (compacted: only the newest snapshot per key matters).
    pub fn state_topic(&self, stage: &str) -> String {
        format!("{}wfe.state.{stage}", self.topic_prefix)
    }

    pub fn group(&self, stage: &str) -> String {
        format!("{}.{stage}", self.group_prefix)
    }

    pub fn merge_wait(&self) -> Duration {
        Duration::from_millis(self.merge_wait_ms)
    }

    /// How often a stage commits: the setting, or by default by how it commits.
    pub fn commit_interval(&self, exactly_once: bool) -> Duration {
        let default = if exactly_once {
            COMMIT_MS_EXACTLY_ONCE
        } else {
            COMMIT_MS
        };
        Duration::from_millis(self.commit_interval_ms.unwrap_or(default))
    }

    /// Settings shared by every client, user properties last so they win.
    pub fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A producer: idempotent (no duplicates from retries, order kept per partition), and
    /// waiting out a broker outage instead of failing messages (`message.timeout.ms` 0).
    pub fn producer(&self, transactional_id: Option<&str>) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true");
        c.set("acks", "all");
        c.set("linger.ms", "5");
        c.set("compression.type", "lz4");
        // One produce request in flight per broker connection. An idempotent producer may have
        // five in flight per partition, and with five out and more queued its broker thread
        // spins until the broker answers (librdkafka 2.12): over a slow broker (the load test
        // at 1,000 workloads over tansu) most of each service's CPU. Order and idempotence are
        // kept; batches grow while a request is out (`linger.ms` still caps the wait when the
        // broker is quick).
        c.set("max.in.flight.requests.per.connection", "1");
        // Kafka's Java partitioner, so a workload lands where a Java or Go producer puts it.
        c.set("partitioner", "murmur2_random");
        match transactional_id {
            Some(id) => {
                c.set("transactional.id", id);
            }
            None => {
                c.set("message.timeout.ms", "0");
            }
        }
        for (k, v) in self.base().config_map() {
            c.set(k, v);
        }
        for (k, v) in &self.producer_properties {
            c.set(k, v);
        }
        c
    }

    /// A group consumer that stores nothing by itself: offsets are committed by the stage
    /// service after the outputs they caused were acknowledged.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("group.id", group);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("auto.offset.reset", "earliest");
        c.set("isolation.level", "read_committed");
        c.set("enable.partition.eof", "false");
        // Range gives each member the same partition numbers of every topic (of equal
        // partition counts): what a stage that joins topics partition by partition needs.
        c.set("partition.assignment.strategy", "range");
        // A fetch with nothing new waits at most 100 ms at the broker (librdkafka's default is
        // 500). Every stage is a hop, and a stage that merges topics waits for its other
        // inputs' progress marks, one more fetch: in the load test at a paced replay the
        // sample-to-decision p50 of a warm pipeline fell from 1.4 s to 0.55 s. A broker that
        // answers as soon as data arrives (Kafka) pays a few idle fetches a second for it.
        c.set("fetch.wait.max.ms", "100");
        for (k, v) in self.base().config_map() {
            c.set(k, v);
        }
        for (k, v) in &self.consumer_properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer without a group, for reading partitions directly (snapshots, recordings).
    pub fn reader(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("group.id", "wfe-reader");
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("isolation.level", "read_committed");
        c.set("enable.partition.eof", "true");
        for (k, v) in self.base().config_map() {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_interval_follows_how_a_stage_commits_unless_set() {
        let unset = KafkaConfig::default();
        assert_eq!(unset.commit_interval(false), Duration::from_secs(10));
        assert_eq!(unset.commit_interval(true), Duration::from_secs(1));
        let set = KafkaConfig {
            commit_interval_ms: Some(500),
            ..Default::default()
        };
        assert_eq!(set.commit_interval(false), Duration::from_millis(500));
        assert_eq!(set.commit_interval(true), Duration::from_millis(500));
    }
}
