//! What of the tables a partition needs when it is assigned: their history since where its
//! restored state stands.
//!
//! The reader of the tables ([`super::tables`]) hands every partition's stage each new row as
//! it comes. A partition assigned later (a service restarted, a rebalance, the broker back
//! after a restart) restores its stage from a snapshot taken at seq `s`, and from then on its
//! stage must see each table as the embedded run's stage saw it at every input: per key, the
//! newest row made before that input. The newest row of each key is not that: while the
//! partition was away another one went on, and a key's rows made after `s` replaced the one
//! its next inputs must see, and each other in turn: a fingerprint partition restored in a
//! replay would size its new workloads from what their neighbours became later.
//!
//! So the partition reads the tables' history from their beginning: per key the newest row
//! made before `s + 1` and every row made since, each queued for its turn (Kafka Streams'
//! versioned stores, kept by the topic itself). "Newest before" is by seq, not by offset: a
//! producer restored from an older snapshot (after a broker restart, every one) makes its
//! rows since that snapshot again, so a key's rows of low seqs can follow its rows of higher
//! ones; the last read of them would turn a neighbour back to what it was a few batches
//! before, and a new workload restored then was sized from it. Outside a replay (no seqs)
//! only the newest row of a key counts. A table topic is compacted: real Kafka keeps the
//! rows of its active segment and those younger than `min.compaction.lag.ms` whole, which is
//! what a partition away for longer than that can no longer see.

use std::collections::BTreeMap;

use rdkafka::Offset;
use rdkafka::message::Message;
use wfe_contract::merge::Seq;
use wfe_contract::{Result, Topic};

use super::tables::{Row, Tables, row_of};
use crate::{KafkaConfig, broker};

/// Every row of the tables' history a partition's stage restored at `from` needs, read from
/// the beginning of each table partition to its end as of now.
pub(super) fn read(tables: &Tables, kafka: &KafkaConfig, from: Seq) -> Result<History> {
    let mut history = History::new(from);
    for (name, p) in tables.partitions() {
        broker::scan_partition(kafka, name, *p, Offset::Beginning, |m| {
            history.read_to(name, *p, m.offset() + 1);
            if let Some(row) = row_of(tables.topics(), m) {
                history.offer(m.key().unwrap_or_default().to_vec(), row);
            }
        })?;
    }
    Ok(history)
}

/// The rows of the tables a partition restored at `from` needs, per key.
pub(super) struct History {
    from: Seq,
    keys: BTreeMap<(Topic, Vec<u8>), Versions>,
    /// Per table partition, the offset after the last message read.
    ends: BTreeMap<(String, i32), i64>,
}

/// One key's rows: the newest made before `from`, and every one made since, in order.
#[derive(Default)]
struct Versions {
    before: Option<Row>,
    since: Vec<Row>,
}

impl History {
    pub(super) fn new(from: Seq) -> Self {
        Self {
            from,
            keys: BTreeMap::new(),
            ends: BTreeMap::new(),
        }
    }

    /// The history of a table partition has been read up to `end` (exclusive).
    pub(super) fn read_to(&mut self, topic: &str, partition: i32, end: i64) {
        self.ends.insert((topic.to_string(), partition), end);
    }

    /// A row of `key`, in its partition's order. A key's rows come from one producer in seq
    /// order, but a producer restored from an older snapshot makes its rows since that
    /// snapshot again, after the first ones: the row a restored partition starts from is the
    /// one of the highest seq before `from` (the later of equals), not the last one read.
    pub(super) fn offer(&mut self, key: Vec<u8>, row: Row) {
        let v = self.keys.entry((row.topic, key)).or_default();
        match row.seq {
            Some(s) if s >= self.from => v.since.push(row),
            Some(s) => {
                if v.before.as_ref().and_then(|b| b.seq).is_none_or(|b| b <= s) {
                    v.before = Some(row);
                }
            }
            None => {
                v.before = Some(row);
                v.since.clear();
            }
        }
    }

    /// The rows to queue, key by key, each key's in order; and how far each table partition
    /// was read.
    pub(super) fn into_rows(self) -> (Vec<Row>, BTreeMap<(String, i32), i64>) {
        let rows = (self.keys.into_values())
            .flat_map(|v| v.before.into_iter().chain(v.since))
            .collect();
        (rows, self.ends)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch};

    use super::super::tables::At;
    use super::*;

    fn row(seq: Option<Seq>, offset: i64) -> Row {
        let v = Arc::new(Int64Array::from(vec![offset])) as ArrayRef;
        Row {
            topic: Topic::Profiles,
            batch: RecordBatch::try_from_iter([("v", v)]).unwrap(),
            seq,
            at: At {
                topic: "profiles".into(),
                partition: 0,
                offset,
            },
        }
    }

    fn offsets(rows: &[Row]) -> Vec<i64> {
        rows.iter().map(|r| r.at.offset).collect()
    }

    /// Restored at seq 10: of key a, the newest row before 10 and both after; of key b, made
    /// only before, the newest; the newest alone of a key outside a replay.
    #[test]
    fn a_key_keeps_its_newest_row_before_the_restore_and_every_one_after() {
        let mut h = History::new(10);
        for (key, seq, offset) in [
            ("a", Some(3), 0),
            ("b", Some(4), 1),
            ("a", Some(9), 2),
            ("b", Some(8), 3),
            ("a", Some(10), 4),
            ("c", None, 5),
            ("a", Some(14), 6),
            ("c", None, 7),
        ] {
            h.offer(key.as_bytes().to_vec(), row(seq, offset));
            h.read_to("profiles", 0, offset + 1);
        }
        let (rows, ends) = h.into_rows();
        assert_eq!(offsets(&rows), [2, 4, 6, 3, 7]);
        assert_eq!(ends[&("profiles".to_string(), 0)], 8);
    }

    /// The producer of key a made rows of seqs 6, 9, 10, 12, then was restored from a
    /// snapshot at seq 5 and is making them again: a partition restored at seq 10 starts from
    /// a's row of seq 9 (the first making's while the second is at seq 7; the later of the two
    /// once both are read), never from the seq 7 read last, and gets every row of seq 10 and
    /// later.
    #[test]
    fn rows_made_again_by_a_restored_producer_do_not_turn_the_key_back() {
        let first = [(6, 0), (9, 1), (10, 2), (12, 3)];
        let again = [(6, 4), (7, 5), (9, 6), (10, 7)];
        for upto in [2, 4] {
            let mut h = History::new(10);
            for (seq, offset) in first.iter().chain(&again[..upto]) {
                h.offer(b"a".to_vec(), row(Some(*seq), *offset));
            }
            let (rows, _) = h.into_rows();
            let want: &[i64] = if upto == 2 { &[1, 2, 3] } else { &[6, 2, 3, 7] };
            assert_eq!(offsets(&rows), want, "second making read to {upto} rows");
        }
    }

    /// Over librdkafka's mock cluster: rows of two keys on two partitions with seqs, read
    /// back for a partition restored at seq 10, with how far each partition was read.
    #[test]
    fn the_history_is_read_from_the_table_topic_itself() {
        use std::time::Duration;

        use crate::KafkaConfig;
        use crate::codec::{self, HeaderMap, header};
        use crate::produce::Sender;

        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        let kafka = KafkaConfig {
            bootstrap_servers: mock.bootstrap_servers(),
            ..Default::default()
        };
        let name = "profiles";
        mock.create_topic(name, 2, 1).unwrap();
        let sender = Sender::new(&kafka, "test").unwrap();
        let value = codec::encode(&RecordBatch::new_empty(Topic::Profiles.schema())).unwrap();
        let sent = [
            ("a", 0, 4),
            ("b", 1, 5),
            ("a", 0, 8),
            ("a", 0, 11),
            ("b", 1, 12),
        ];
        for (key, p, seq) in sent {
            let mut h = HeaderMap::data(Topic::Profiles, "fingerprint", "t").with_source_seq();
            h.set(header::SEQ, seq.to_string());
            let key = Some(key.as_bytes());
            sender
                .send(name, Some(p), key, Some(&value), &h, None)
                .unwrap();
        }
        sender.progress(name, 0..2, 12).unwrap();
        sender.flush().unwrap();
        let topics = vec![(Topic::Profiles, name.to_string())];
        let tables = Tables::open(&kafka, topics, Duration::from_secs(30)).unwrap();
        assert_eq!(tables.through(-1), 12);
        let (rows, ends) = read(&tables, &kafka, 10).unwrap().into_rows();
        let seqs: Vec<Option<Seq>> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [Some(8), Some(11), Some(5), Some(12)]);
        // Three rows and a progress mark on partition 0, two and a mark on 1.
        assert_eq!(ends[&(name.to_string(), 0)], 4);
        assert_eq!(ends[&(name.to_string(), 1)], 3);
    }
}
