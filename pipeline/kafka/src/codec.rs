//! The message format on every wfe topic, readable with pyarrow and any Kafka client:
//!
//! - **value**: an Arrow IPC stream (schema message, then the batch), content type
//!   [`CONTENT_TYPE`];
//! - **key**: the workload id, so one workload's rows stay ordered in one partition;
//! - **headers**: [`header::SCHEMA`] and [`header::VERSION`] (the topic schema the rows follow),
//!   `content-type`, [`header::STAGE`] (who produced it) and [`header::TRACE`] (carried from the
//!   input that caused it, so a decision can be traced back to its samples).
//!
//! A batch is split per workload, and a workload's rows are halved until each message fits
//! under the configured size, well below the broker's `message.max.bytes`.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_schema::DataType;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use wfe_contract::{Error, Result, Topic};

/// MIME type of the value: an Arrow IPC stream.
pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";

/// Header names.
pub mod header {
    /// The topic schema the rows follow (`metrics.norm`, ...).
    pub const SCHEMA: &str = "wfe.schema";
    /// That schema's version.
    pub const VERSION: &str = "wfe.schema.version";
    /// The value's MIME type.
    pub const CONTENT_TYPE: &str = "content-type";
    /// The stage (or tool: `replay`, `ingest`) that produced the message.
    pub const STAGE: &str = "wfe.stage";
    /// A trace id, carried from input to output.
    pub const TRACE: &str = "wfe.trace-id";
    /// A control message instead of data: [`super::END_OF_STREAM`] or [`super::PROGRESS`].
    pub const CONTROL: &str = "wfe.control";
    /// The sequence number of the `metrics.raw` message (offset, same partition) the rows
    /// descend from; on a progress mark, how far the producer has got
    /// ([`wfe_contract::merge`]).
    pub const SEQ: &str = "wfe.seq";
    /// Present (`1`) when `wfe.seq` is a replay's source batch, the same number on every
    /// partition, rather than an offset of one partition: then a stage's tables can be read
    /// in seq order beside its inputs ([`wfe_contract::Stage::needs_tables`]).
    pub const SOURCE_SEQ: &str = "wfe.seq.source";
    /// On a dead letter: why it could not be used.
    pub const ERROR: &str = "wfe.error";
    /// On a dead letter: where it came from, `topic/partition/offset`.
    pub const ORIGIN: &str = "wfe.origin";
}

/// Control value: the producer has no more data for this partition (the end of a replay). A
/// stage flushes the partition's pending windows and passes the marker on, so a replayed
/// recording gives the same outputs as the embedded run over the same files.
pub const END_OF_STREAM: &str = "end-of-stream";

/// Control value: the producer has sent everything of seq <= the mark's `wfe.seq` on this
/// partition. A stage that reads several topics waits for these before it goes on
/// ([`wfe_contract::merge`]); other readers skip every message with a `wfe.control` header.
pub const PROGRESS: &str = "progress";

/// The headers of one message, as owned strings and bytes (small: a handful per message).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderMap(pub BTreeMap<String, Vec<u8>>);

impl HeaderMap {
    pub fn from_kafka<H: Headers>(headers: Option<&H>) -> Self {
        let mut map = BTreeMap::new();
        if let Some(h) = headers {
            for header in h.iter() {
                map.insert(
                    header.key.to_string(),
                    header.value.unwrap_or_default().to_vec(),
                );
            }
        }
        Self(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn set(&mut self, key: &str, value: impl AsRef<[u8]>) {
        self.0.insert(key.to_string(), value.as_ref().to_vec());
    }

    pub fn to_kafka(&self) -> OwnedHeaders {
        let mut out = OwnedHeaders::new_with_capacity(self.0.len());
        for (k, v) in &self.0 {
            out = out.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        out
    }

    /// Whether this is the end-of-stream control message.
    pub fn is_end_of_stream(&self) -> bool {
        self.get(header::CONTROL) == Some(END_OF_STREAM)
    }

    /// Whether this is a control message (no data: end-of-stream or progress).
    pub fn is_control(&self) -> bool {
        self.get(header::CONTROL).is_some()
    }

    /// Whether this is a progress mark.
    pub fn is_progress(&self) -> bool {
        self.get(header::CONTROL) == Some(PROGRESS)
    }

    /// The `wfe.seq` header, when present and a number.
    pub fn seq(&self) -> Option<i64> {
        self.get(header::SEQ).and_then(|s| s.parse().ok())
    }

    /// Whether `wfe.seq` is a replay's source batch (see [`header::SOURCE_SEQ`]).
    pub fn is_source_seq(&self) -> bool {
        self.0.contains_key(header::SOURCE_SEQ)
    }

    /// These headers, saying that `wfe.seq` is a replay's source batch.
    pub fn with_source_seq(mut self) -> Self {
        self.set(header::SOURCE_SEQ, "1");
        self
    }

    /// The headers of a progress mark: `stage` has sent everything of seq <= `seq`.
    pub fn progress(stage: &str, seq: i64) -> Self {
        let mut h = Self::default();
        h.set(header::CONTROL, PROGRESS);
        h.set(header::STAGE, stage);
        h.set(header::SEQ, seq.to_string());
        h
    }

    /// The data headers of a message on `topic`, produced by `stage`.
    pub fn data(topic: Topic, stage: &str, trace: &str) -> Self {
        let mut h = Self::default();
        h.set(header::SCHEMA, topic.name());
        h.set(header::VERSION, topic.version().to_string());
        h.set(header::CONTENT_TYPE, CONTENT_TYPE);
        h.set(header::STAGE, stage);
        h.set(header::TRACE, trace);
        h
    }

    /// The headers of an end-of-stream marker.
    pub fn end_of_stream(stage: &str) -> Self {
        let mut h = Self::default();
        h.set(header::CONTROL, END_OF_STREAM);
        h.set(header::STAGE, stage);
        h
    }
}

/// Encodes one batch as an Arrow IPC stream, its buffers LZ4_FRAME-compressed (Arrow's body
/// compression; pyarrow, Arrow Java and Go read it as they read any stream). A broker keeps
/// and serves what it is given: the load test's broker held 3 x fewer bytes of `metrics.norm`
/// and 5 x fewer of `decisions` (timestamps, dictionary indices, repeated JSON and reasons
/// compress; the Kafka batch's own compression is undone by a broker that stores records).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4 + 1024);
    {
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))?;
        let mut w = StreamWriter::try_new_with_options(&mut buf, &batch.schema(), options)?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf)
}

/// Decodes a message value into one batch and checks it against `topic`'s schema. The error
/// says what is wrong; the caller puts the message on the dead-letter topic with it.
pub fn decode(topic: Topic, headers: &HeaderMap, value: Option<&[u8]>) -> Result<RecordBatch> {
    let bad = |m: String| Error::bad_input(format!("message on `{}`", topic.name()), m);
    match headers.get(header::SCHEMA) {
        Some(s) if s == topic.name() => {}
        Some(s) => {
            return Err(bad(format!(
                "header {} is `{s}`, expected `{}`",
                header::SCHEMA,
                topic.name()
            )));
        }
        None => return Err(bad(format!("no {} header", header::SCHEMA))),
    }
    match headers.get(header::VERSION).map(str::parse::<u32>) {
        Some(Ok(v)) if v >= 1 && v <= topic.version() => {}
        Some(Ok(v)) => {
            return Err(bad(format!(
                "schema version {v} is unknown here (this build knows 1..={})",
                topic.version()
            )));
        }
        _ => {
            return Err(bad(format!(
                "missing or non-numeric {} header",
                header::VERSION
            )));
        }
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && ct != CONTENT_TYPE
    {
        return Err(bad(format!(
            "content type `{ct}`, expected `{CONTENT_TYPE}`"
        )));
    }
    let value = value.ok_or_else(|| bad("empty value".into()))?;
    // Every length inside the stream is checked against the payload first: arrow-ipc would
    // allocate whatever a hostile `bodyLength` declares. A panic left in the decoder is
    // contained and dead-lettered like any other undecodable message.
    let what = format!("message on `{}`", topic.name());
    wfe_contract::ipc::check_stream(&mut std::io::Cursor::new(value), value.len() as u64, &what)?;
    let (schema, batches) = wfe_contract::panic::contain(&what, || {
        let reader = StreamReader::try_new(value, None)
            .map_err(|e| bad(format!("not an Arrow IPC stream: {e}")))?;
        let schema = reader.schema();
        let mut batches = Vec::new();
        for b in reader {
            batches.push(b.map_err(|e| bad(format!("Arrow IPC stream does not decode: {e}")))?);
        }
        Ok((schema, batches))
    })?;
    let mut batches = batches;
    wfe_schemas::check(topic, &schema)?;
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema)),
        1 => Ok(batches.pop().expect("one batch")),
        _ => Ok(arrow_select::concat::concat_batches(&schema, &batches)?),
    }
}

/// The rows of `batch` grouped by workload, in order of first appearance (rows keep their
/// order within a workload). Each part's dictionaries hold only the values its rows use: a
/// row selection keeps the whole dictionary, and a message per workload cut from a batch of
/// a thousand workloads (or from a Parquet reader's batch, whose dictionary may hold a value
/// per row) would otherwise carry every name of the batch, thousands of times the values.
pub fn split_by_workload(batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
    let names = workload_strings(batch)?;
    let mut order: Vec<String> = Vec::new();
    let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for r in 0..names.len() {
        let w = if names.is_null(r) { "" } else { names.value(r) };
        let e = rows.entry(w).or_default();
        if e.is_empty() {
            order.push(w.to_string());
        }
        e.push(r as u32);
    }
    if order.len() == 1 {
        return Ok(vec![(order.pop().expect("one"), compact(batch)?)]);
    }
    let mut out = Vec::with_capacity(order.len());
    for w in order {
        let idx = UInt32Array::from(rows.remove(w.as_str()).unwrap_or_default());
        out.push((
            w,
            compact(&arrow_select::take::take_record_batch(batch, &idx)?)?,
        ));
    }
    Ok(out)
}

/// The `workload` column as strings.
fn workload_strings(batch: &RecordBatch) -> Result<StringArray> {
    let col = batch
        .column_by_name("workload")
        .ok_or_else(|| Error::bad_input("batch", "no `workload` column to key messages by"))?;
    let names = if col.data_type() == &DataType::Utf8 {
        col.clone()
    } else {
        arrow_cast::cast(col, &DataType::Utf8)?
    };
    names
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::bad_input("batch", "`workload` is not a string column"))
}

/// `batch` with every dictionary column holding only the values its keys use.
fn compact(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for c in batch.columns() {
        columns.push(match c.as_any_dictionary_opt() {
            Some(d) => arrow_select::dictionary::garbage_collect_any_dictionary(d)?,
            _ => c.clone(),
        });
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The partition wfe's producers give a message with this key (`partitioner =
/// murmur2_random`, Kafka's Java partitioner): murmur2 of the key, its sign bit cleared,
/// modulo the partition count. Producers that pick partitions themselves
/// ([`encode_partitioned`]) use it, so a workload lands where a keyed message of wfe, or of a
/// Java or Go producer, puts it.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, which librdkafka's
/// `murmur2_random` reproduces): seed 0x9747b28c, little-endian 4-byte blocks.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// One message of [`encode_partitioned`]: partition, key (the workload, where the message
/// holds one only) and value.
pub type PartitionMessage = (i32, Option<String>, Vec<u8>);

/// Encodes `batch` for a topic of `partitions` partitions: the rows of each partition's
/// workloads in one message (in their order in the batch), halved until each value is at most
/// `max_bytes`. A message per partition instead of one per workload: a fleet's step of 1,000
/// workloads is a few messages, not 1,000, and a broker's cost goes by messages. A message
/// that holds one workload is keyed by it; one of several has no key (its rows name them).
pub fn encode_partitioned(
    batch: &RecordBatch,
    partitions: i32,
    max_bytes: usize,
) -> Result<Vec<PartitionMessage>> {
    let names = workload_strings(batch)?;
    let mut rows: BTreeMap<i32, (Vec<u32>, Option<String>, bool)> = BTreeMap::new();
    let mut of: BTreeMap<&str, i32> = BTreeMap::new();
    for r in 0..names.len() {
        let w = if names.is_null(r) { "" } else { names.value(r) };
        let p = *of
            .entry(w)
            .or_insert_with(|| partition_of(w.as_bytes(), partitions));
        let e = rows
            .entry(p)
            .or_insert_with(|| (Vec::new(), Some(w.to_string()), true));
        if e.2 && e.1.as_deref() != Some(w) {
            e.2 = false;
        }
        e.0.push(r as u32);
    }
    let mut out = Vec::new();
    for (p, (idx, first, one)) in rows {
        let part = if idx.len() == batch.num_rows() {
            compact(batch)?
        } else {
            compact(&arrow_select::take::take_record_batch(
                batch,
                &UInt32Array::from(idx),
            )?)?
        };
        let key = if one { first } else { None };
        let label = key.clone().unwrap_or_else(|| format!("partition {p}"));
        let mut msgs = Vec::new();
        encode_fitting(&label, part, max_bytes, &mut msgs)?;
        out.extend(msgs.into_iter().map(|(_, v)| (p, key.clone(), v)));
    }
    Ok(out)
}

/// Encodes `batch` as messages `(key, value)`: one per workload, halved until each value is at
/// most `max_bytes` (a single row larger than that is an error naming the workload). For
/// tables, whose compaction keeps one message per key.
pub fn encode_keyed(batch: &RecordBatch, max_bytes: usize) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (key, part) in split_by_workload(batch)? {
        encode_fitting(&key, part, max_bytes, &mut out)?;
    }
    Ok(out)
}

fn encode_fitting(
    key: &str,
    batch: RecordBatch,
    max_bytes: usize,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let bytes = encode(&batch)?;
    if bytes.len() <= max_bytes {
        out.push((key.to_string(), bytes));
        return Ok(());
    }
    let n = batch.num_rows();
    if n <= 1 {
        // The row's own workload (a message of a partition is labelled by its partition).
        let workload = workload_strings(&batch)
            .ok()
            .filter(|w| w.len() == 1 && w.is_valid(0))
            .map_or_else(|| key.to_string(), |w| w.value(0).to_string());
        return Err(Error::bad_input(
            format!("workload `{workload}`"),
            format!(
                "one row encodes to {} bytes, over the message limit of {max_bytes}",
                bytes.len()
            ),
        ));
    }
    let mid = split_point(&batch);
    encode_fitting(key, batch.slice(0, mid), max_bytes, out)?;
    encode_fitting(key, batch.slice(mid, n - mid), max_bytes, out)
}

/// Where to cut a batch in two: near the middle, but between two `event_time` values, so the
/// rows of one step (all metrics of a workload at one time) stay in one message, as stages
/// that read a step as a vector expect.
fn split_point(batch: &RecordBatch) -> usize {
    let n = batch.num_rows();
    let half = n / 2;
    let Some(time) = batch.column_by_name("event_time").and_then(|c| {
        c.as_any()
            .downcast_ref::<arrow_array::TimestampMillisecondArray>()
    }) else {
        return half;
    };
    let t = time.values();
    let after = (half..n).find(|&i| t[i] != t[i - 1]);
    let before = (1..half).rev().find(|&i| t[i] != t[i - 1]);
    match (before, after) {
        (Some(b), Some(a)) => {
            if half - b <= a - half {
                b
            } else {
                a
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => half.max(1),
    }
}

/// A deterministic trace id for a message that came without one (from its origin).
pub fn trace_id(topic: &str, partition: i32, offset: i64) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("{topic}/{partition}/{offset}").as_bytes())
    )
}

/// One output topic's batch as messages: (topic, rows, [(key, value)]).
pub(crate) type Encoded = (Topic, u64, Vec<(Option<i32>, Option<String>, Vec<u8>)>);

/// Encodes every output batch into messages of at most `max_bytes`, or says which row cannot.
/// A service's output batch holds the workloads of its input partition, so a stream's batch
/// is one message (or a few, by size), for that partition (`None`); a table's is a message
/// per workload (its key is what compaction keeps). With `partitions` (a whole-fleet stage's
/// outputs, by topic: their partition counts) each message goes to its workloads' partition.
pub(crate) fn encode_outputs(
    out: wfe_contract::VecCollector,
    max_bytes: usize,
    partitions: Option<&BTreeMap<Topic, i32>>,
) -> Result<Vec<Encoded>> {
    out.batches
        .into_iter()
        .map(|(topic, batch)| {
            let n = partitions.and_then(|m| m.get(&topic).copied());
            let messages = if topic.is_table() {
                encode_keyed(&batch, max_bytes).map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (n.map(|n| partition_of(k.as_bytes(), n)), Some(k), v))
                        .collect::<Vec<_>>()
                })
            } else {
                encode_partitioned(&batch, n.unwrap_or(1), max_bytes).map(|m| {
                    m.into_iter()
                        .map(|(p, k, v)| (n.map(|_| p), k, v))
                        .collect()
                })
            };
            let messages = messages.map_err(|e| match e {
                Error::BadInput { location, message } => Error::bad_input(
                    format!("output on `{topic}`, {location}"),
                    format!("{message} (kafka.max_message_bytes)"),
                ),
                other => other,
            })?;
            Ok((topic, batch.num_rows() as u64, messages))
        })
        .collect()
}
