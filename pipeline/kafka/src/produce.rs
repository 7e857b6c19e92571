//! The one producer wrapper every wfe writer uses (stage services, replay, ingest): keyed or
//! partitioned sends that wait while the local queue is full, and a flush that waits out a
//! broker outage and then fails if anything was refused for good.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use wfe_contract::{Error, Result};

use crate::KafkaConfig;
use crate::broker::{self, kafka_error};
use crate::codec::HeaderMap;

/// Counts delivery failures reported by the producer's background thread.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    /// Messages refused for good since the producer started.
    pub fn failed_count(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| format!("{}/{}: {e}", m.topic(), m.partition()));
        }
    }
}

/// A producer that sends keyed or partitioned messages and waits out a broker outage.
pub struct Sender {
    pub(crate) producer: ThreadedProducer<Deliveries>,
    name: String,
}

impl Sender {
    /// An idempotent producer for `name` (a stage or tool, for logs).
    pub fn new(cfg: &KafkaConfig, name: &str) -> Result<Self> {
        Self::create(cfg, name, None)
    }

    /// As [`Sender::new`], transactional when `transactional_id` is given.
    pub fn create(cfg: &KafkaConfig, name: &str, transactional_id: Option<&str>) -> Result<Self> {
        let producer = cfg
            .producer(transactional_id)
            .create_with_context(Deliveries::default())
            .map_err(|e| kafka_error("producer", e))?;
        Ok(Self {
            producer,
            name: name.to_string(),
        })
    }

    /// Queues one message (to `partition`, or by key); waits while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        h: &HeaderMap,
        timestamp: Option<i64>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(h.to_kafka());
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(t) = timestamp {
            record = record.timestamp(t);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(kafka_error(format!("produce to `{topic}`"), e)),
            }
        }
    }

    /// Waits until everything sent is acknowledged (a broker outage is waited out, with a log
    /// line every 5 s); fails if anything was refused for good.
    pub fn flush(&self) -> Result<()> {
        let start = Instant::now();
        while let Err(e) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(
                "{}: waiting {:.0?} for the broker to acknowledge {} messages ({e})",
                self.name,
                start.elapsed(),
                self.producer.in_flight_count()
            );
        }
        let d = self.producer.context();
        let failed = d.failed_count();
        if failed > 0 {
            let first = d
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(Error::External {
                service: "kafka".into(),
                message: format!(
                    "{}: {failed} messages were not delivered (first: {}); nothing was committed after them, a restart redoes them",
                    self.name,
                    first.unwrap_or_default()
                ),
                retryable: false,
            });
        }
        Ok(())
    }

    /// Sends a replay's end-of-stream marker to every partition of `topic`. It says that the
    /// stream's seqs were source batches ([`crate::codec::header::SOURCE_SEQ`]): a stage
    /// partition restored after the last data message learns it from the marker, and its
    /// flush's rows keep their turn in the tables of other instances (rows without it are
    /// handed over at once, as a live stream's are).
    pub fn end_of_stream(&self, topic: &str, partitions: i32) -> Result<()> {
        let h = HeaderMap::end_of_stream(&self.name).with_source_seq();
        for p in 0..partitions {
            self.send(topic, Some(p), None, None, &h, None)?;
        }
        self.flush()
    }

    /// Sends a replay's progress mark (everything of seq <= `seq` is out, seqs being its source
    /// batches) to partitions `partitions` of `topic`.
    pub fn progress(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
        seq: i64,
    ) -> Result<()> {
        let h = HeaderMap::progress(&self.name, seq).with_source_seq();
        for p in partitions {
            self.send(topic, Some(p), None, None, &h, None)?;
        }
        Ok(())
    }

    /// Messages in `topic` so far, all partitions together (the sum of their high watermarks).
    pub fn messages_in(&self, topic: &str, partitions: i32) -> Result<i64> {
        let mut n = 0;
        for p in 0..partitions {
            let (_, high) = broker::retry("watermarks", || {
                self.producer
                    .client()
                    .fetch_watermarks(topic, p, broker::REQUEST_TIMEOUT)
            })?;
            n += high.max(0);
        }
        Ok(n)
    }

    pub fn partitions(&self, topic: &str) -> Result<i32> {
        let md = broker::retry("metadata", || {
            self.producer
                .client()
                .fetch_metadata(Some(topic), broker::REQUEST_TIMEOUT)
        })?;
        match md.topics().first() {
            Some(t) if !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
            _ => Err(Error::config("topic", format!("`{topic}` does not exist"))),
        }
    }
}
