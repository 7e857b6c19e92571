//! Getting data onto topics and off them: the ingest service and `wfe replay` (a [`Source`],
//! such as the shared SMD/ASD files, onto `metrics.raw`), `wfe record` (a topic into an Arrow
//! IPC or Parquet file, one row per message with its key, partition, offset, timestamp and
//! headers) and `wfe replay --in` (such a file back onto a topic, at its recorded pace or
//! faster).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{BinaryBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rdkafka::Offset;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Message, OwnedMessage};
use wfe_contract::{Context, Error, Result, Source, Topic};

use crate::KafkaConfig;
use crate::broker::{self, kafka_error};
use crate::codec::{self, HeaderMap, header};
use crate::produce::Sender;

/// What a replay or record did.
#[derive(Debug, Default, Clone)]
pub struct TransferReport {
    pub messages: u64,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Waits out the difference between event time and wall time at a replay speed.
struct Pacer {
    speed: Option<f64>,
    start: Instant,
    first: Option<i64>,
}

impl Pacer {
    fn new(speed: Option<f64>) -> Self {
        Self {
            speed,
            start: Instant::now(),
            first: None,
        }
    }

    fn wait_for(&mut self, event_ms: i64) {
        let Some(speed) = self.speed else { return };
        let first = *self.first.get_or_insert(event_ms);
        let due = Duration::from_secs_f64(((event_ms - first).max(0) as f64 / 1000.0) / speed);
        if let Some(left) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(left);
        }
    }
}

/// Produces every batch of `source` onto `topic` (keyed by workload), then the end-of-stream
/// marker on every partition unless `end_of_stream` is false.
///
/// Every message of one source batch carries the same seq (`wfe.seq`), though the batch is
/// split by workload and size: stages downstream then see the batch as the embedded run does
/// ([`wfe_contract::merge`]). Seqs start above any seq or offset already in the topic (the
/// number of messages it holds), so a second replay onto a topic follows the first; a paced
/// replay, whose next batch may be minutes away, marks each batch's end on every partition.
pub async fn replay_source(
    cfg: &KafkaConfig,
    source: &mut dyn Source,
    topic: Topic,
    speed: Option<f64>,
    end_of_stream: bool,
    name: &str,
) -> Result<TransferReport> {
    let topic_name = cfg.topic(topic);
    broker::ensure_topics(cfg, &[(topic_name.clone(), false)]).await?;
    let sender = Sender::new(cfg, name)?;
    let partitions = sender.partitions(&topic_name)?;
    let mut ctx = Context::new(name);
    let mut report = TransferReport::default();
    let mut pacer = Pacer::new(speed);
    let start = Instant::now();
    let mut n = 0u64;
    let mut seq = sender.messages_in(&topic_name, partitions)?;
    // Every partition hears how far the replay has got, also one that no workload of the
    // source hashes to: a stage that waits for the whole fleet's tables (`needs_tables`)
    // learns that such a partition has nothing before a seq instead of waiting it out. A
    // data message says so of the seqs before it; a partition that a batch passed over gets
    // a mark (at full speed at most every 20 ms: marks are messages the broker stores too).
    sender.progress(&topic_name, 0..partitions, seq - 1)?;
    let mut marked = Instant::now();
    while let Some(batch) = source.next_batch(&mut ctx)? {
        if let Ok(t) = wfe_contract::columns::timestamps(&batch, "event_time")
            && !t.is_empty()
        {
            pacer.wait_for(t.value(0));
        }
        report.rows += batch.num_rows() as u64;
        let mut quiet: BTreeSet<i32> = (0..partitions).collect();
        for (p, key, value) in codec::encode_partitioned(&batch, partitions, cfg.max_message_bytes)?
        {
            quiet.remove(&p);
            let mut h =
                HeaderMap::data(topic, name, &codec::trace_id(name, 0, n as i64)).with_source_seq();
            h.set(header::SEQ, seq.to_string());
            n += 1;
            report.bytes += value.len() as u64;
            sender.send(
                &topic_name,
                Some(p),
                key.as_deref().map(str::as_bytes),
                Some(&value),
                &h,
                None,
            )?;
        }
        // Paced, every partition at every batch's end (the next may be minutes away); at full
        // speed, the partitions this batch passed over.
        if speed.is_some() {
            sender.progress(&topic_name, 0..partitions, seq)?;
        } else if !quiet.is_empty() && marked.elapsed() >= crate::service::MARKS_EVERY {
            sender.progress(&topic_name, quiet, seq)?;
            marked = Instant::now();
        }
        seq += 1;
    }
    if end_of_stream {
        sender.flush()?;
    } else {
        // The last batch is complete: say so, since no next batch will.
        sender.progress(&topic_name, 0..partitions, seq - 1)?;
        sender.flush()?;
    }
    if end_of_stream {
        sender.end_of_stream(&topic_name, partitions)?;
    }
    report.messages = n;
    report.seconds = start.elapsed().as_secs_f64();
    let rejected = ctx.rejected_total();
    if rejected > 0 {
        tracing::warn!(
            "{name}: {rejected} source rows rejected ({:?})",
            ctx.counters()
        );
    }
    Ok(report)
}

/// Columns of a recording: one row per message.
pub fn recording_schema(topic: &str) -> SchemaRef {
    let meta: std::collections::HashMap<String, String> =
        [("wfe.recording.topic".to_string(), topic.to_string())].into();
    Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("timestamp_ms", DataType::Int64, true),
            Field::new("key", DataType::Binary, true),
            Field::new("headers", DataType::Utf8, false),
            Field::new("value", DataType::Binary, true),
        ],
        meta,
    ))
}

/// Reads `topic` from the beginning to the end it has now (all partitions) into `out`:
/// Parquet when the name ends in `.parquet`, else an Arrow IPC file.
pub fn record(cfg: &KafkaConfig, topic: &str, out: &Path) -> Result<TransferReport> {
    let start = Instant::now();
    let probe: BaseConsumer = cfg
        .reader()
        .create()
        .map_err(|e| kafka_error("reader", e))?;
    let partitions = broker::partition_count(&probe, topic, Duration::from_secs(30))?;
    let schema = recording_schema(topic);
    let mut writer = RecordingWriter::create(out, schema.clone())?;
    let mut report = TransferReport::default();
    for p in 0..partitions {
        let msgs = broker::read_partition(cfg, topic, p, Offset::Beginning)?;
        for chunk in msgs.chunks(4096) {
            let batch = messages_to_batch(&schema, chunk)?;
            report.messages += chunk.len() as u64;
            report.bytes += chunk
                .iter()
                .map(|m| m.payload().map_or(0, |v| v.len() as u64))
                .sum::<u64>();
            writer.write(&batch)?;
        }
    }
    writer.finish()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn messages_to_batch(schema: &SchemaRef, msgs: &[OwnedMessage]) -> Result<RecordBatch> {
    let mut part = Int32Builder::new();
    let mut off = Int64Builder::new();
    let mut ts = Int64Builder::new();
    let mut key = BinaryBuilder::new();
    let mut hdr = StringBuilder::new();
    let mut val = BinaryBuilder::new();
    for m in msgs {
        part.append_value(m.partition());
        off.append_value(m.offset());
        ts.append_option(m.timestamp().to_millis());
        key.append_option(m.key());
        val.append_option(m.payload());
        let h = HeaderMap::from_kafka(m.headers());
        // Header values are text in wfe; bytes that are not UTF-8 are kept as hex.
        let obj: BTreeMap<&str, String> =
            h.0.iter()
                .map(|(k, v)| match std::str::from_utf8(v) {
                    Ok(s) => (k.as_str(), s.to_string()),
                    Err(_) => (
                        k.as_str(),
                        format!(
                            "hex:{}",
                            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
                        ),
                    ),
                })
                .collect();
        hdr.append_value(serde_json::to_string(&obj).unwrap_or_default());
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(part.finish()),
        Arc::new(off.finish()),
        Arc::new(ts.finish()),
        Arc::new(key.finish()),
        Arc::new(hdr.finish()),
        Arc::new(val.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

enum RecordingWriter {
    Ipc(arrow_ipc::writer::FileWriter<File>),
    Parquet(parquet::arrow::ArrowWriter<File>),
}

impl RecordingWriter {
    fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(if path.extension().is_some_and(|e| e == "parquet") {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .build();
            Self::Parquet(
                parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))
                    .map_err(|e| Error::bad_input(path.display().to_string(), e.to_string()))?,
            )
        } else {
            Self::Ipc(arrow_ipc::writer::FileWriter::try_new(file, &schema)?)
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Self::Ipc(w) => Ok(w.write(batch)?),
            Self::Parquet(w) => w
                .write(batch)
                .map_err(|e| Error::bad_input("recording", e.to_string())),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Self::Ipc(mut w) => Ok(w.finish()?),
            Self::Parquet(w) => w
                .close()
                .map(|_| ())
                .map_err(|e| Error::bad_input("recording", e.to_string())),
        }
    }
}

/// Reads a recording (either format) into batches, and the topic it was recorded from.
pub fn read_recording(path: &Path) -> Result<(Option<String>, Vec<RecordBatch>)> {
    let mut file = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let bad = |m: String| Error::bad_input(path.display().to_string(), m);
    let (schema, batches): (SchemaRef, Vec<RecordBatch>) =
        if path.extension().is_some_and(|e| e == "parquet") {
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| bad(e.to_string()))?;
            let schema = b.schema().clone();
            let r = b.build().map_err(|e| bad(e.to_string()))?;
            (schema, r.collect::<std::result::Result<_, _>>()?)
        } else {
            // A recording from elsewhere: every length checked before arrow-ipc trusts it.
            let len = file
                .metadata()
                .map_err(|e| Error::io(path.display().to_string(), e))?
                .len();
            wfe_contract::ipc::check_file(&mut file, len, &path.display().to_string())?;
            let r = arrow_ipc::reader::FileReader::try_new(file, None)
                .map_err(|e| bad(format!("not an Arrow IPC file: {e}")))?;
            let schema = r.schema();
            (schema, r.collect::<std::result::Result<_, _>>()?)
        };
    for f in recording_schema("").fields() {
        match schema.field_with_name(f.name()) {
            Ok(found) if found.data_type() == f.data_type() => {}
            _ => {
                return Err(bad(format!(
                    "not a wfe recording: column `{}` ({}) missing",
                    f.name(),
                    f.data_type()
                )));
            }
        }
    }
    Ok((
        schema.metadata().get("wfe.recording.topic").cloned(),
        batches,
    ))
}

/// Produces a recording onto `topic`: each message with its key and headers, to its recorded
/// partition (or by key when the topic has fewer partitions), paced by the recorded
/// timestamps at `speed` (`None`: as fast as possible).
pub fn replay_recording(
    cfg: &KafkaConfig,
    batches: &[RecordBatch],
    topic: &str,
    speed: Option<f64>,
) -> Result<TransferReport> {
    let start = Instant::now();
    let sender = Sender::new(cfg, "replay")?;
    let partitions = sender.partitions(topic)?;
    // Replay in recorded time order (partitions were recorded one after another).
    let mut rows: Vec<(i64, usize, usize)> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let ts = column::<Int64Array>(batch, "timestamp_ms")?;
        for r in 0..batch.num_rows() {
            rows.push((if ts.is_null(r) { 0 } else { ts.value(r) }, b, r));
        }
    }
    rows.sort_by_key(|(t, _, _)| *t);
    let mut pacer = Pacer::new(speed);
    let mut report = TransferReport::default();
    for (t, b, r) in rows {
        let batch = &batches[b];
        let part = column::<Int32Array>(batch, "partition")?.value(r);
        let key = column::<BinaryArray>(batch, "key")?;
        let val = column::<BinaryArray>(batch, "value")?;
        let hdr = column::<StringArray>(batch, "headers")?;
        let map: BTreeMap<String, String> = serde_json::from_str(hdr.value(r)).map_err(|e| {
            Error::bad_input(
                format!("recording row {r}"),
                format!("headers are not a JSON object: {e}"),
            )
        })?;
        let h = HeaderMap(map.into_iter().map(|(k, v)| (k, unhex(v))).collect());
        let key = (!key.is_null(r)).then(|| key.value(r));
        let value = (!val.is_null(r)).then(|| val.value(r));
        let partition = (part >= 0 && part < partitions).then_some(part);
        pacer.wait_for(t);
        report.bytes += value.map_or(0, |v| v.len() as u64);
        sender.send(topic, partition, key, value, &h, None)?;
        report.messages += 1;
    }
    sender.flush()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            Error::bad_input(
                "recording",
                format!("column `{name}` missing or of the wrong type"),
            )
        })
}

/// The inverse of the `hex:` form [`record`] gives header values that are not UTF-8.
fn unhex(v: String) -> Vec<u8> {
    if let Some(hex) = v.strip_prefix("hex:") {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect();
        if let Some(b) = bytes {
            return b;
        }
    }
    v.into_bytes()
}
