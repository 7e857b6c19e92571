//! # wfe-kafka: stages as services over Kafka
//!
//! The transport that turns each stage into an independent service. Stages know nothing of
//! it: the same [`wfe_contract::Stage`] runs here and in the embedded runner.
//!
//! A tour:
//! - [`config`]: the `[kafka]` job section; every librdkafka property passes through, so the
//!   same binary talks to Apache Kafka, MSK, Redpanda or Confluent.
//! - [`codec`]: the message format (Arrow IPC stream value, workload key, schema/trace
//!   headers) that other teams read with pyarrow and any Kafka client.
//! - [`service`]: one stage as a consumer-group member: per-partition stage state with
//!   snapshots, at-least-once commits (or transactions), dead letters, outage handling.
//! - [`produce`]: the producer every writer shares (queue-full waits, outage-proof flush).
//! - [`replay`]: sources and recordings onto topics, topics into recordings.
//! - [`broker`]: topic creation, metadata and partition reads, retry with backoff.

pub mod broker;
pub mod codec;
pub mod config;
pub mod produce;
pub mod replay;
pub mod service;

pub use config::KafkaConfig;
pub use rdkafka;
pub use service::{ServiceOptions, ServiceReport, StageFactory, run_stage};

/// Helpers for tests that compare topics: rows as text, and a topic read back whole.
pub mod testing {
    use arrow_array::RecordBatch;
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    use rdkafka::Offset;
    use rdkafka::message::Message;
    use wfe_contract::{Result, Topic};

    use crate::KafkaConfig;
    use crate::codec::{self, HeaderMap};

    /// Each row of `batch` as `col=value|col=value...`, for order-free comparisons.
    pub fn row_strings(batch: &RecordBatch) -> Vec<String> {
        let opts = FormatOptions::default().with_null("null");
        let fmts: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
            .collect();
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        (0..batch.num_rows())
            .map(|r| {
                names
                    .iter()
                    .zip(&fmts)
                    .map(|(n, f)| format!("{n}={}", f.value(r)))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    /// The newest snapshot of `stage`'s input partition `p` among `records` of its state topic
    /// (the whole topic, or the latest record of each key: what compaction leaves), read as
    /// the service restores it on assignment.
    pub fn restore_snapshot(
        cfg: &KafkaConfig,
        stage: &str,
        input: Topic,
        p: i32,
        records: &[rdkafka::message::OwnedMessage],
    ) -> Result<Option<crate::service::Snapshot>> {
        let key = crate::service::changelog_key(&cfg.group(stage), &cfg.topic(input), p);
        crate::service::restore_from(stage, &key, records)
    }

    /// What a topic holds now.
    #[derive(Debug, Default)]
    pub struct TopicContents {
        /// Data rows, sorted, as [`row_strings`].
        pub rows: Vec<String>,
        /// Partitions whose last message (progress marks aside) is the end-of-stream marker.
        pub ended: usize,
        pub partitions: i32,
        /// Data messages.
        pub messages: usize,
        /// Progress marks.
        pub progress: usize,
    }

    /// Reads `topic` (a wfe topic) whole and decodes every data message.
    pub fn read_topic(cfg: &KafkaConfig, topic: Topic, partitions: i32) -> Result<TopicContents> {
        let name = cfg.topic(topic);
        let mut out = TopicContents {
            partitions,
            ..Default::default()
        };
        for p in 0..partitions {
            let msgs = crate::broker::read_partition(cfg, &name, p, Offset::Beginning)?;
            let mut ended = false;
            for m in &msgs {
                let h = HeaderMap::from_kafka(m.headers());
                if h.is_progress() {
                    out.progress += 1;
                    continue;
                }
                ended = h.is_end_of_stream();
                if ended {
                    continue;
                }
                out.messages += 1;
                let batch = codec::decode(topic, &h, m.payload())?;
                out.rows.extend(row_strings(&batch));
            }
            out.ended += ended as usize;
        }
        out.rows.sort();
        Ok(out)
    }
}
