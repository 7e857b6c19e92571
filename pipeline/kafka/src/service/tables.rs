//! Tables every instance reads whole ([`wfe_contract::Stage::tables`]), Kafka Streams'
//! GlobalKTable: a reader outside the consumer group, assigned every partition of each
//! table topic from its beginning. At start it reads to the ends the topics had, for how far
//! each producer has got; then it is polled as the service runs, and every partition's stage
//! gets each new row. A partition assigned later reads the tables' history itself
//! ([`super::table_history`]).
//!
//! In a replay (source seqs, [`crate::codec::header::SOURCE_SEQ`]) each row keeps the seq it
//! was made at, and the reader knows per table partition how far its producer has got (its
//! data and progress marks), so a partition's stage can be handed the rows made before its
//! next input and wait for the rest ([`wfe_contract::Stage::needs_tables`]); a partition keeps
//! those rows in a [`Queue`] until then (the handing over is in `table_order`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use wfe_contract::merge::{END, Seq};
use wfe_contract::{RecordBatch, Result, Topic};

use crate::KafkaConfig;
use crate::broker::{self, kafka_error};
use crate::codec::{self, HeaderMap};

/// Most table messages taken per poll, so a burst of table rows cannot starve the inputs.
const PER_POLL: usize = 1000;

pub(super) struct Tables {
    reader: BaseConsumer,
    topics: Vec<(Topic, String)>,
    /// Per table partition, how far its producer has got in source seqs (every row of seq
    /// <= this is here); `Seq::MIN` until it says.
    done: BTreeMap<(String, i32), Seq>,
}

/// A table row as read: its batch, the source seq it was made at (None outside a replay),
/// and where it was read.
#[derive(Clone)]
pub(super) struct Row {
    pub topic: Topic,
    pub batch: RecordBatch,
    pub seq: Option<Seq>,
    pub at: At,
}

/// Where a table message was read: its topic's broker name, partition and offset.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct At {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Tables {
    /// A reader of every partition of `topics`, caught up to their ends as of now (waiting
    /// at most `patience`: a table that is slow to read is completed while running).
    pub fn open(
        kafka: &KafkaConfig,
        topics: Vec<(Topic, String)>,
        patience: Duration,
    ) -> Result<Self> {
        let reader: BaseConsumer = kafka
            .reader()
            // Where a partition ends is read from its watermarks, once, at the start.
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| kafka_error("table reader", e))?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        let mut done = BTreeMap::new();
        for (_, name) in &topics {
            let n = broker::partition_count(&reader, name, Duration::from_secs(60))?;
            for p in 0..n {
                done.insert((name.clone(), p), Seq::MIN);
                tpl.add_partition_offset(name, p, Offset::Beginning)
                    .map_err(|e| kafka_error("table reader", e))?;
                let (low, high) = broker::retry("watermarks", || {
                    reader.fetch_watermarks(name, p, broker::REQUEST_TIMEOUT)
                })?;
                if high > low {
                    ends.insert((name.clone(), p), high);
                }
            }
        }
        reader
            .assign(&tpl)
            .map_err(|e| kafka_error("table reader", e))?;
        let mut t = Self {
            reader,
            topics,
            done,
        };
        t.catch_up(ends, patience);
        Ok(t)
    }

    /// Reads until every partition has reached the end it had at the start (or `patience`
    /// passed: the rest arrives while the service runs).
    fn catch_up(&mut self, mut ends: BTreeMap<(String, i32), i64>, patience: Duration) {
        let start = Instant::now();
        while !ends.is_empty() && start.elapsed() < patience {
            match self.reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_string(), m.partition());
                    if ends.get(&key).is_some_and(|end| m.offset() + 1 >= *end) {
                        ends.remove(&key);
                    }
                    mark(&mut self.done, &m);
                }
                Some(Err(e)) => tracing::warn!("table reader: {e} (retrying)"),
                None => {}
            }
        }
        tracing::info!(behind = ends.len(), "tables' progress read");
    }

    /// New table rows since the last call, without waiting, and whether any message came
    /// (a progress mark brings no row but may let a waiting stage go on).
    pub fn poll(&mut self) -> (Vec<Row>, bool) {
        let mut out = Vec::new();
        let mut any = false;
        for _ in 0..PER_POLL {
            match self.reader.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    any = true;
                    mark(&mut self.done, &m);
                    out.extend(row_of(&self.topics, &m));
                }
                Some(Err(e)) => {
                    tracing::debug!("table reader: {e}");
                    break;
                }
                None => break,
            }
        }
        (out, any)
    }

    /// The table topics, with their broker names.
    pub fn topics(&self) -> &[(Topic, String)] {
        &self.topics
    }

    /// Every table partition, by topic's broker name and number.
    pub fn partitions(&self) -> impl Iterator<Item = &(String, i32)> {
        self.done.keys()
    }

    /// The source seq through which every table partition but `except` (the one a stage
    /// instance writes itself) has sent all its rows.
    pub fn through(&self, except: i32) -> Seq {
        self.done
            .iter()
            .filter(|((_, p), _)| *p != except)
            .map(|(_, d)| *d)
            .min()
            .unwrap_or(END)
    }
}

/// Notes how far a table message's partition has got.
fn mark(done: &mut BTreeMap<(String, i32), Seq>, m: &rdkafka::message::BorrowedMessage<'_>) {
    let h = HeaderMap::from_kafka(m.headers());
    let source = h.seq().filter(|_| h.is_source_seq());
    let reached = if h.is_end_of_stream() {
        Some(END)
    } else if h.is_progress() {
        source
    } else {
        // A data message of seq s: its producer has sent everything before s.
        source.map(|s| s.saturating_sub(1))
    };
    if let (Some(r), Some(d)) = (
        reached,
        done.get_mut(&(m.topic().to_string(), m.partition())),
    ) {
        // After an end of stream, data of a second replay starts the count again.
        *d = if *d == END && r != END {
            r
        } else {
            (*d).max(r)
        };
    }
}

/// The row a table message holds: none for control messages and undecodable ones (counted
/// and logged).
pub(super) fn row_of(
    topics: &[(Topic, String)],
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Option<Row> {
    let (topic, _) = topics.iter().find(|(_, n)| n == m.topic())?;
    let topic = *topic;
    let h = HeaderMap::from_kafka(m.headers());
    if h.is_control() {
        return None;
    }
    match codec::decode(topic, &h, m.payload()) {
        Ok(batch) => Some(Row {
            topic,
            batch,
            seq: h.seq().filter(|_| h.is_source_seq()),
            at: At {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            },
        }),
        Err(e) => {
            metrics::counter!("wfe_table_rows_rejected_total", "topic" => topic.to_string())
                .increment(1);
            tracing::warn!("table {}/{}@{}: {e}", m.topic(), m.partition(), m.offset());
            None
        }
    }
}

/// A partition's table rows waiting for their turn, by (seq, arrival), bounded in bytes.
#[derive(Default)]
pub(super) struct Queue {
    rows: BTreeMap<(Seq, u64), Row>,
    bytes: usize,
    arrivals: u64,
    /// Per table partition, the offset its history was read to when the partition was
    /// assigned ([`super::table_history`]): the reader's rows before it are queued already.
    pub(super) scanned: BTreeMap<(String, i32), i64>,
}

impl Queue {
    /// Whether the partition's history read held this row already.
    pub(super) fn read_already(&self, at: &At) -> bool {
        (self.scanned.get(&(at.topic.clone(), at.partition))).is_some_and(|end| at.offset < *end)
    }

    /// Queues a row made at `seq`; returns the oldest rows past `bound` bytes, which go to
    /// the stage now rather than hold more memory.
    pub(super) fn push(&mut self, seq: Seq, row: Row, bound: usize) -> Vec<Row> {
        self.arrivals += 1;
        self.bytes += row.batch.get_array_memory_size();
        self.rows.insert((seq, self.arrivals), row);
        let mut early = Vec::new();
        while self.bytes > bound {
            let Some((_, row)) = self.rows.pop_first() else {
                break;
            };
            self.bytes -= row.batch.get_array_memory_size();
            early.push(row);
        }
        early
    }

    /// The rows of a seq below `seq` (None: all of them), oldest first, taken out.
    pub(super) fn before(&mut self, seq: Option<Seq>) -> Vec<Row> {
        let mut out = Vec::new();
        while let Some(entry) = self.rows.first_entry() {
            if seq.is_some_and(|s| entry.key().0 >= s) {
                break;
            }
            let row = entry.remove();
            self.bytes -= row.batch.get_array_memory_size();
            out.push(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use wfe_contract::Topic;

    use super::*;

    fn row(v: i64) -> Row {
        let batch =
            RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![v])) as ArrayRef)])
                .unwrap();
        Row {
            topic: Topic::Profiles,
            batch,
            seq: Some(v),
            at: At {
                topic: "profiles".into(),
                partition: 0,
                offset: v,
            },
        }
    }

    fn values(rows: &[Row]) -> Vec<i64> {
        rows.iter()
            .map(|r| {
                let c = r.batch.column(0).as_any().downcast_ref::<Int64Array>();
                c.unwrap().value(0)
            })
            .collect()
    }

    #[test]
    fn rows_go_before_the_first_input_of_a_later_seq_in_seq_order() {
        let mut q = Queue::default();
        // Arrivals out of seq order (three producers), one seq twice.
        for s in [5, 3, 4, 3] {
            assert!(q.push(s, row(s), usize::MAX).is_empty());
        }
        assert!(values(&q.before(Some(3))).is_empty(), "nothing below 3");
        assert_eq!(values(&q.before(Some(5))), [3, 3, 4]);
        assert_eq!(values(&q.before(None)), [5]);
        assert_eq!(q.bytes, 0);
    }

    #[test]
    fn past_the_bound_the_oldest_rows_go_early() {
        let mut q = Queue::default();
        let one = row(0).batch.get_array_memory_size();
        assert!(q.push(7, row(7), 2 * one).is_empty());
        assert!(q.push(9, row(9), 2 * one).is_empty());
        assert_eq!(values(&q.push(8, row(8), 2 * one)), [7]);
        assert!(q.bytes <= 2 * one);
        assert_eq!(values(&q.before(None)), [8, 9]);
    }
}
