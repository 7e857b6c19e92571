//! Fast tests against librdkafka's in-process mock cluster (real Kafka protocol, real
//! transactions): the message format, dead letters and an exactly-once stage service that
//! gives the same rows as the stage run directly. The tests against a real broker process
//! (tansu) are in `pipeline/cli/tests/kafka.rs`.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use rdkafka::mocking::MockCluster;
use wfe_contract::{Context, Source, Stage, Topic, VecCollector};
use wfe_kafka::codec::{self, HeaderMap, header};
use wfe_kafka::produce::Sender;
use wfe_kafka::replay::replay_source;
use wfe_kafka::testing::{read_topic, row_strings};
use wfe_kafka::{KafkaConfig, ServiceOptions, StageFactory, run_stage};
use wfe_normalise::{Normalise, NormaliseConfig};

const PARTITIONS: i32 = 3;

/// The tests that run a stage service take turns: the exactly-once test needs a snapshot
/// large enough to span several chunks, which a service slowed down by others running beside
/// it (less input between two commits) may not write.
static SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(bootstrap: String) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap,
        partitions: PARTITIONS,
        commit_interval_ms: Some(200),
        // The mock cluster answers no CreateTopics: the test creates them.
        create_topics: false,
        ..Default::default()
    }
}

fn source() -> wfe_ingest::FileSource {
    let mut cfg = wfe_ingest::SourceConfig::new(wfe_normalise::testing::shared_data().join("asd"));
    cfg.only = vec!["omi-1".into(), "omi-2".into(), "omi-3".into()];
    wfe_ingest::FileSource::open(&[cfg], true).expect("open shared data")
}

/// `metrics.norm` rows of the normalise stage run directly over the same source.
fn direct_rows() -> Vec<String> {
    let mut src = source();
    let mut ctx = Context::new("normalise");
    let mut stage = Normalise::new(NormaliseConfig::default()).unwrap();
    let mut out = VecCollector::new();
    while let Some(b) = src.next_batch(&mut ctx).unwrap() {
        stage
            .process_batch(Topic::MetricsRaw, b, &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    let mut rows: Vec<String> = out
        .of(Topic::MetricsNorm)
        .iter()
        .flat_map(row_strings)
        .collect();
    rows.sort();
    rows
}

/// Ten kinds of bad message, each `n` times.
fn send_malformed(sender: &Sender, topic: &str, n: usize) -> usize {
    let good = {
        let mut src = source();
        let mut ctx = Context::new("t");
        src.next_batch(&mut ctx).unwrap().unwrap()
    };
    let wrong_columns = RecordBatch::try_new(
        Topic::Actions.schema(),
        Topic::Actions
            .schema()
            .fields()
            .iter()
            .map(|f| arrow_array::new_null_array(f.data_type(), 0))
            .collect(),
    )
    .unwrap();
    let ipc = codec::encode(&good).unwrap();
    let raw = HeaderMap::data(Topic::MetricsRaw, "test", "t");
    let mut cases: Vec<(HeaderMap, Vec<u8>)> = vec![
        (raw.clone(), b"not arrow at all".to_vec()),
        (raw.clone(), ipc[..ipc.len() / 2].to_vec()),
        (raw.clone(), Vec::new()),
        (raw.clone(), codec::encode(&wrong_columns).unwrap()),
    ];
    let mut h = raw.clone();
    h.set(header::VERSION, "99");
    cases.push((h, ipc.clone()));
    let mut h = raw.clone();
    h.set(header::SCHEMA, "forecasts");
    cases.push((h, ipc.clone()));
    let mut h = raw.clone();
    h.set(header::CONTENT_TYPE, "application/json");
    cases.push((h, b"{\"value\": 1}".to_vec()));
    let mut h = raw.clone();
    h.0.remove(header::SCHEMA);
    cases.push((h, ipc.clone()));
    let mut h = raw.clone();
    h.set(header::VERSION, "one");
    cases.push((h, ipc.clone()));
    cases.push((HeaderMap::default(), ipc));
    let mut sent = 0;
    for i in 0..n {
        for (h, v) in &cases {
            let key = format!("bad-{i}");
            sender
                .send(topic, None, Some(key.as_bytes()), Some(v), h, None)
                .unwrap();
            sent += 1;
        }
    }
    sender.flush().unwrap();
    sent
}

fn wait_for_end(cfg: &KafkaConfig, topic: Topic) -> wfe_kafka::testing::TopicContents {
    let start = Instant::now();
    loop {
        let c = read_topic(cfg, topic, PARTITIONS).unwrap();
        if c.ended == PARTITIONS as usize {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} never ended: {c:?}",
            topic.name()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Reads the normalise service's state topic, keeps the newest record of each key (what Kafka's
/// compaction keeps), and restores each partition's snapshot from that view into a stage.
fn compacted_state_restores(cfg: &KafkaConfig) {
    let topic = cfg.state_topic("normalise");
    let (mut multi_chunk, mut restored, mut dropped) = (0, 0, 0);
    for p in 0..PARTITIONS {
        let log =
            wfe_kafka::broker::read_partition(cfg, &topic, p, rdkafka::Offset::Beginning).unwrap();
        multi_chunk += log
            .iter()
            .filter(|m| {
                let h = HeaderMap::from_kafka(rdkafka::message::Message::headers(*m));
                // A snapshot manifest, or a state entry, in several messages.
                h.get("wfe.chunk").is_some_and(|c| !c.ends_with("/1"))
                    || h.get("wfe.entry").is_some_and(|e| {
                        e.rsplit_once('/')
                            .is_some_and(|(_, n)| n.parse::<usize>().unwrap_or(0) > 1)
                    })
            })
            .count();
        let compacted: Vec<_> = wfe_kafka::service::compacted(&log)
            .into_iter()
            .cloned()
            .collect();
        // A partition committed once has nothing to compact; the test needs one that has.
        dropped += log.len() - compacted.len();
        for q in 0..PARTITIONS {
            let from_log =
                wfe_kafka::testing::restore_snapshot(cfg, "normalise", Topic::MetricsRaw, q, &log)
                    .unwrap();
            let from_compacted = wfe_kafka::testing::restore_snapshot(
                cfg,
                "normalise",
                Topic::MetricsRaw,
                q,
                &compacted,
            )
            .unwrap();
            assert_eq!(
                from_log, from_compacted,
                "input partition {q} in state partition {p}"
            );
            if let Some((next, state)) = from_compacted {
                assert!(next > 0, "input partition {q}: a snapshot before any input");
                let mut stage = Normalise::new(NormaliseConfig::default()).unwrap();
                wfe_contract::state::restore(&mut stage, state.expect("normalise keeps state"))
                    .unwrap();
                restored += 1;
            }
        }
    }
    assert_eq!(restored, PARTITIONS, "every input partition has a snapshot");
    assert!(
        dropped > 0,
        "compaction dropped nothing: the test proves nothing"
    );
    assert!(
        multi_chunk > 0,
        "no snapshot spanned several chunks: the test proves nothing"
    );
}

fn field<'a>(row: &'a str, name: &str) -> &'a str {
    row.split('|')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
}

fn normalise_factory() -> StageFactory {
    Box::new(|| Ok(Box::new(Normalise::new(NormaliseConfig::default())?) as Box<dyn Stage>))
}

/// The partition wfe picks for a workload ([`codec::partition_of`], used where it writes a
/// message per partition) is where librdkafka (`murmur2_random`, as wfe configures it) puts a message
/// keyed by that workload: both kinds of producer keep a workload in one partition.
#[test]
fn wfe_picks_the_partition_librdkafka_gives_a_workloads_key() {
    let mock = MockCluster::new(1).unwrap();
    let cfg = config(mock.bootstrap_servers());
    let topic = "keyed";
    mock.create_topic(topic, 12, 1).unwrap();
    let sender = Sender::new(&cfg, "t").unwrap();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("omi-{}-f{i:05}", i % 12))
        .collect();
    let h = HeaderMap::data(Topic::MetricsRaw, "t", "x");
    for k in &keys {
        sender
            .send(topic, None, Some(k.as_bytes()), Some(b"v"), &h, None)
            .unwrap();
    }
    sender.flush().unwrap();
    let mut seen = 0;
    for p in 0..12 {
        for m in
            wfe_kafka::broker::read_partition(&cfg, topic, p, rdkafka::Offset::Beginning).unwrap()
        {
            let key = std::str::from_utf8(rdkafka::Message::key(&m).unwrap()).unwrap();
            assert_eq!(codec::partition_of(key.as_bytes(), 12), p, "{key}");
            seen += 1;
        }
    }
    assert_eq!(seen, keys.len());
}

/// A fleet's batch goes out as a message per partition (each keyed by its workload only where
/// it holds one), every row in the partition of its workload, in the batch's order.
#[test]
fn a_batch_is_encoded_as_a_message_per_partition() {
    let mut b = wfe_ingest::RawBuilder::with_capacity(300);
    for t in 0..3 {
        for w in 0..100 {
            let (wk, mk) = (b.workload_key(&format!("w{w}")), b.metric_key("m00"));
            b.push(1_700_000_000_000 + t * 300_000, wk, mk, w as f64, None);
        }
    }
    let batch = b.finish().unwrap();
    let msgs = codec::encode_partitioned(&batch, 3, 1 << 20).unwrap();
    assert_eq!(msgs.iter().map(|m| m.0).collect::<Vec<_>>(), [0, 1, 2]);
    let h = HeaderMap::data(Topic::MetricsRaw, "t", "x");
    let mut rows = Vec::new();
    for (p, key, value) in &msgs {
        assert_eq!(*key, None, "a message of many workloads has no key");
        let back = codec::decode(Topic::MetricsRaw, &h, Some(value)).unwrap();
        for r in row_strings(&back) {
            let w = r
                .split("workload=")
                .nth(1)
                .unwrap()
                .split('|')
                .next()
                .unwrap();
            assert_eq!(codec::partition_of(w.as_bytes(), 3), *p, "{r}");
            rows.push(r);
        }
    }
    let mut expected = row_strings(&batch);
    expected.sort();
    rows.sort();
    assert_eq!(rows, expected);
    // One workload: keyed by it; over the size limit: several messages, same partition.
    let one = batch.slice(0, 1);
    let m = codec::encode_partitioned(&one, 3, 1 << 20).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].1.as_deref(), Some("w0"));
    let small = codec::encode_partitioned(&batch, 1, 4096).unwrap();
    assert!(small.len() > 1 && small.iter().all(|m| m.0 == 0 && m.2.len() <= 4096));
    // A row that cannot fit is named by its own workload, not its partition.
    let err = codec::encode_partitioned(&batch, 1, 64)
        .unwrap_err()
        .to_string();
    assert!(err.contains("workload `w0`"), "{err}");
}

/// A message per workload carries the names its own rows use, not the whole batch's
/// dictionary: a batch of 1,000 workloads (a fleet's step) made messages of every name each,
/// about 1,000 times the bytes of their values.
#[test]
fn a_workloads_message_carries_only_its_own_dictionary_values() {
    let mut b = wfe_ingest::RawBuilder::with_capacity(2000);
    for t in 0..2 {
        for w in 0..1000 {
            let (wk, mk) = (
                b.workload_key(&format!("workload-with-a-long-name-{w:04}")),
                b.metric_key("m00"),
            );
            b.push(1_700_000_000_000 + t * 300_000, wk, mk, 0.5, None);
        }
    }
    let batch = b.finish().unwrap();
    let msgs = codec::encode_keyed(&batch, 1 << 20).unwrap();
    assert_eq!(msgs.len(), 1000);
    let h = HeaderMap::data(Topic::MetricsRaw, "t", "x");
    for (key, value) in &msgs {
        // An IPC stream of two rows: schema, three dictionaries and the batch (36,808 bytes
        // with the whole dictionary).
        assert!(value.len() < 4096, "{key}: {} bytes", value.len());
        let back = codec::decode(Topic::MetricsRaw, &h, Some(value)).unwrap();
        assert_eq!(back.num_rows(), 2);
        assert!(
            row_strings(&back)
                .iter()
                .all(|r| r.contains(&format!("workload={key}|")))
        );
    }
}

#[test]
fn codec_round_trips_and_splits_by_workload_under_the_size_limit() {
    let mut src = source();
    let mut ctx = Context::new("t");
    let batch = src.next_batch(&mut ctx).unwrap().unwrap();
    let msgs = codec::encode_keyed(&batch, 8 * 1024).unwrap();
    assert!(
        msgs.len() > 3,
        "a 1024-row chunk of three workloads needs several 8 KiB messages"
    );
    let h = HeaderMap::data(Topic::MetricsRaw, "t", "x");
    let mut rows = Vec::new();
    for (key, value) in &msgs {
        assert!(value.len() <= 8 * 1024);
        let b = codec::decode(Topic::MetricsRaw, &h, Some(value)).unwrap();
        for r in row_strings(&b) {
            assert!(
                r.contains(&format!("workload={key}|")),
                "{r} under key {key}"
            );
            rows.push(r);
        }
    }
    // A message never cuts a step: each (workload, time) is in one message only.
    let mut seen = std::collections::BTreeMap::new();
    for (i, (_, value)) in msgs.iter().enumerate() {
        let b = codec::decode(Topic::MetricsRaw, &h, Some(value)).unwrap();
        for r in row_strings(&b) {
            let step = format!("{}|{}", field(&r, "event_time"), field(&r, "workload"));
            assert_eq!(
                *seen.entry(step.clone()).or_insert(i),
                i,
                "step {step} split across messages"
            );
        }
    }
    let mut expected = row_strings(&batch);
    expected.sort();
    rows.sort();
    assert_eq!(rows, expected);
    let err = codec::decode(Topic::MetricsNorm, &h, Some(&msgs[0].1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("`metrics.raw`, expected `metrics.norm`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_service_matches_the_stage_and_dead_letters_bad_messages() {
    let _turn = SERVICES.lock().await;
    let mock = MockCluster::new(1).unwrap();
    let mut cfg = config(mock.bootstrap_servers());
    // Small messages: snapshots span several chunks (half a message each), as a large state
    // does with the default limit.
    cfg.max_message_bytes = 16 * 1024;
    // Commits close together: one lands while a workload is still learning and holds its
    // history (runs over a chunk), however fast the service gets through that stretch.
    cfg.commit_interval_ms = Some(10);
    for t in [
        cfg.topic(Topic::MetricsRaw),
        cfg.topic(Topic::MetricsNorm),
        cfg.dead_letter_topic("normalise"),
        cfg.state_topic("normalise"),
    ] {
        mock.create_topic(&t, PARTITIONS, 1).unwrap();
    }
    let sender = Sender::new(&cfg, "test").unwrap();
    let raw = cfg.topic(Topic::MetricsRaw);
    let bad = send_malformed(&sender, &raw, 10);
    let mut src = source();
    let replayed = replay_source(&cfg, &mut src, Topic::MetricsRaw, None, false, "test")
        .await
        .unwrap();
    let bad = bad + send_malformed(&sender, &raw, 10);
    sender.end_of_stream(&raw, PARTITIONS).unwrap();
    assert!(
        replayed.messages >= 36 && replayed.rows > 700_000,
        "{replayed:?}"
    );

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServiceOptions {
        kafka: cfg.clone(),
        exactly_once: true,
        instance: "t".into(),
        health: Default::default(),
        control: Default::default(),
        ephemeral: false,
    };
    let service = tokio::spawn(run_stage(normalise_factory(), opts, async {
        let _ = rx.await;
    }));
    let c2 = cfg.clone();
    let norm = tokio::task::spawn_blocking(move || wait_for_end(&c2, Topic::MetricsNorm))
        .await
        .unwrap();
    tx.send(()).unwrap();
    let report = service.await.unwrap().unwrap();
    assert_eq!(report.dead_letters as usize, bad, "{report:?}");
    assert!(report.commits > 0);
    let expected = direct_rows();
    assert_eq!(norm.rows.len(), expected.len());
    assert!(
        norm.rows == expected,
        "rows differ from the stage run directly"
    );

    // Every partition's state restores from what compaction would leave of the state topic
    // (the newest record of each key), the same as from the whole topic.
    let c2 = cfg.clone();
    tokio::task::spawn_blocking(move || compacted_state_restores(&c2))
        .await
        .unwrap();

    // Record metrics.norm (both file formats) and replay each onto a fresh topic: the same
    // messages, keys, headers and partitions.
    for ext in ["arrow", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("norm.{ext}"));
        let (c, f) = (cfg.clone(), file.clone());
        let rec = tokio::task::spawn_blocking(move || {
            wfe_kafka::replay::record(&c, &c.topic(Topic::MetricsNorm), &f)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            rec.messages as usize,
            norm.messages + norm.progress + PARTITIONS as usize,
            "data, progress marks and end markers"
        );
        let copy = format!("copy-{ext}");
        mock.create_topic(&copy, PARTITIONS, 1).unwrap();
        let (topic, batches) = wfe_kafka::replay::read_recording(&file).unwrap();
        assert_eq!(topic.as_deref(), Some("metrics.norm"));
        let (c, t) = (cfg.clone(), copy.clone());
        let sent = tokio::task::spawn_blocking(move || {
            wfe_kafka::replay::replay_recording(&c, &batches, &t, None)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(sent.messages, rec.messages);
        let c = cfg.clone();
        let again = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            let mut ended = 0;
            for p in 0..PARTITIONS {
                let msgs =
                    wfe_kafka::broker::read_partition(&c, &copy, p, rdkafka::Offset::Beginning)
                        .unwrap();
                for m in &msgs {
                    let h = HeaderMap::from_kafka(rdkafka::message::Message::headers(m));
                    if h.is_end_of_stream() {
                        ended += 1;
                        continue;
                    }
                    if h.is_control() {
                        continue;
                    }
                    let key = rdkafka::message::Message::key(m)
                        .map(|k| String::from_utf8_lossy(k).to_string());
                    let b = codec::decode(
                        Topic::MetricsNorm,
                        &h,
                        rdkafka::message::Message::payload(m),
                    )
                    .unwrap();
                    for r in row_strings(&b) {
                        // A message of one workload is keyed by it; every row is in its
                        // workload's partition.
                        if let Some(k) = key.as_deref() {
                            assert_eq!(k, field(&r, "workload"), "key kept");
                        }
                        let w = field(&r, "workload");
                        assert_eq!(codec::partition_of(w.as_bytes(), PARTITIONS), p, "{r}");
                        rows.push(r);
                    }
                }
            }
            rows.sort();
            (rows, ended)
        })
        .await
        .unwrap();
        assert_eq!(
            again.1, PARTITIONS as usize,
            "end markers replayed to their partitions"
        );
        assert!(
            again.0 == norm.rows,
            "{ext} recording replays the same rows"
        );
    }

    let c3 = cfg.clone();
    let dlq = tokio::task::spawn_blocking(move || {
        let name = c3.dead_letter_topic("normalise");
        (0..PARTITIONS)
            .flat_map(|p| {
                wfe_kafka::broker::read_partition(&c3, &name, p, rdkafka::Offset::Beginning)
                    .unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(dlq.len(), bad);
    for m in &dlq {
        let h = HeaderMap::from_kafka(rdkafka::message::Message::headers(m));
        let err = h.get(header::ERROR).unwrap_or_default();
        assert!(
            err.contains("metrics.raw"),
            "error header names the topic: {err}"
        );
        assert!(h.get(header::ORIGIN).is_some_and(|o| o.starts_with(&raw)));
    }
}

/// Normalise with a twist: `poisoned`, a batch holding the workload `poison` panics (as a bug
/// on unforeseen input would); `whole`, it is a whole-fleet stage (one instance over every
/// partition).
struct Twisted {
    inner: Normalise,
    poisoned: bool,
    whole: bool,
}

impl Twisted {
    fn factory(poisoned: bool, whole: bool) -> StageFactory {
        Box::new(move || {
            let inner = Normalise::new(NormaliseConfig::default())?;
            Ok(Box::new(Twisted {
                inner,
                poisoned,
                whole,
            }) as Box<dyn Stage>)
        })
    }
}

impl Stage for Twisted {
    fn name(&self) -> &'static str {
        "normalise"
    }
    fn inputs(&self) -> Vec<Topic> {
        self.inner.inputs()
    }
    fn outputs(&self) -> Vec<Topic> {
        self.inner.outputs()
    }
    fn whole_fleet(&self) -> bool {
        self.whole
    }
    fn process_batch(
        &mut self,
        topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn wfe_contract::Collector,
    ) -> wfe_contract::Result<()> {
        let w = wfe_contract::columns::DictStrings::new(&batch, "workload")?;
        if self.poisoned && (0..batch.num_rows()).any(|r| w.get(r) == Some("poison")) {
            let empty: Vec<u8> = Vec::new();
            let _ = empty[batch.num_rows()];
        }
        self.inner.process_batch(topic, batch, ctx, out)
    }
    fn flush(
        &mut self,
        ctx: &mut Context,
        out: &mut dyn wfe_contract::Collector,
    ) -> wfe_contract::Result<()> {
        self.inner.flush(ctx, out)
    }
    fn snapshot_split(&self) -> wfe_contract::Result<Option<wfe_contract::state::Split>> {
        self.inner.snapshot_split()
    }
    fn snapshot_changes(
        &self,
        since: Option<u64>,
    ) -> wfe_contract::Result<Option<(wfe_contract::state::Split, u64)>> {
        self.inner.snapshot_changes(since)
    }
    fn restore_split(&mut self, state: wfe_contract::state::Split) -> wfe_contract::Result<()> {
        self.inner.restore_split(state)
    }
    fn restore(&mut self, state: &[u8]) -> wfe_contract::Result<()> {
        self.inner.restore(state)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stage_dead_letters_the_message_and_the_partition_goes_on() {
    let _turn = SERVICES.lock().await;
    let mock = MockCluster::new(1).unwrap();
    let cfg = config(mock.bootstrap_servers());
    for t in [
        cfg.topic(Topic::MetricsRaw),
        cfg.topic(Topic::MetricsNorm),
        cfg.dead_letter_topic("normalise"),
        cfg.state_topic("normalise"),
    ] {
        mock.create_topic(&t, PARTITIONS, 1).unwrap();
    }
    let sender = Sender::new(&cfg, "test").unwrap();
    let raw = cfg.topic(Topic::MetricsRaw);
    // One poison message per partition, before the real data.
    let poison = {
        use arrow_array::Float64Array;
        use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
        RecordBatch::try_new(
            Topic::MetricsRaw.schema(),
            vec![
                timestamp_column(vec![1_000]),
                dictionary(vec![0], &["poison"]).unwrap(),
                dictionary(vec![0], &["cpu"]).unwrap(),
                std::sync::Arc::new(Float64Array::from(vec![1.0])),
                dictionary_opt(vec![None], &[]).unwrap(),
            ],
        )
        .unwrap()
    };
    let h = HeaderMap::data(Topic::MetricsRaw, "test", "t");
    for p in 0..PARTITIONS {
        sender
            .send(
                &raw,
                Some(p),
                Some(b"poison"),
                Some(&codec::encode(&poison).unwrap()),
                &h,
                None,
            )
            .unwrap();
    }
    sender.flush().unwrap();
    let mut src = source();
    replay_source(&cfg, &mut src, Topic::MetricsRaw, None, false, "test")
        .await
        .unwrap();
    sender.end_of_stream(&raw, PARTITIONS).unwrap();

    let (norm, report) = serve_to_the_end(&cfg, "t", Twisted::factory(true, false)).await;
    assert_eq!(report.dead_letters, PARTITIONS as u64, "{report:?}");
    assert!(
        norm.rows == direct_rows(),
        "every other row made it through"
    );
    let c3 = cfg.clone();
    let dlq = tokio::task::spawn_blocking(move || {
        let name = c3.dead_letter_topic("normalise");
        (0..PARTITIONS)
            .flat_map(|p| {
                wfe_kafka::broker::read_partition(&c3, &name, p, rdkafka::Offset::Beginning)
                    .unwrap()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(dlq.len(), PARTITIONS as usize);
    for m in &dlq {
        let h = HeaderMap::from_kafka(rdkafka::message::Message::headers(m));
        let err = h.get(header::ERROR).unwrap_or_default();
        assert!(
            err.contains("stage normalise panicked") && err.contains("index out of bounds"),
            "{err}"
        );
    }
}

/// The group's committed offsets of `topic` have reached each partition's end.
fn wait_committed(cfg: &KafkaConfig, group: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = cfg.consumer(group).create().unwrap();
    let start = Instant::now();
    loop {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
        let behind = (0..PARTITIONS).filter(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, *p, Duration::from_secs(5))
                .unwrap();
            let at = got.find_partition(topic, *p).map(|e| e.offset());
            at != Some(rdkafka::Offset::Offset(high))
        });
        if behind.count() == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{group} never committed the end of {topic}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A mock cluster for tests that start normalise services one after another in one group:
/// metrics.raw, metrics.norm, the dead-letter topic and (`with_state`) the state topic, and a
/// 6 s session, so a second member need not wait out the first's (librdkafka's default 45 s).
fn restart_cluster(
    with_state: bool,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    KafkaConfig,
) {
    let mock = MockCluster::new(1).unwrap();
    let mut cfg = config(mock.bootstrap_servers());
    cfg.consumer_properties
        .insert("session.timeout.ms".into(), "6000".into());
    let mut topics = vec![
        cfg.topic(Topic::MetricsRaw),
        cfg.topic(Topic::MetricsNorm),
        cfg.dead_letter_topic("normalise"),
    ];
    if with_state {
        topics.push(cfg.state_topic("normalise"));
    }
    for t in topics {
        mock.create_topic(&t, PARTITIONS, 1).unwrap();
    }
    (mock, cfg)
}

/// A normalise service (at-least-once) running until the returned sender says stop.
fn serve_normalise(
    cfg: &KafkaConfig,
    instance: &str,
    ephemeral: bool,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<wfe_contract::Result<wfe_kafka::ServiceReport>>,
) {
    serve(cfg, instance, ephemeral, normalise_factory())
}

/// A service of the stage `make` builds (at-least-once) running until the returned sender
/// says stop.
fn serve(
    cfg: &KafkaConfig,
    instance: &str,
    ephemeral: bool,
    make: StageFactory,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<wfe_contract::Result<wfe_kafka::ServiceReport>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServiceOptions {
        kafka: cfg.clone(),
        exactly_once: false,
        instance: instance.into(),
        health: Default::default(),
        control: Default::default(),
        ephemeral,
    };
    let task = tokio::spawn(run_stage(make, opts, async {
        let _ = rx.await;
    }));
    (tx, task)
}

/// Serves the stage `make` builds until every partition of `metrics.norm` has ended, then
/// stops it: what the topic holds and the service's report.
async fn serve_to_the_end(
    cfg: &KafkaConfig,
    instance: &str,
    make: StageFactory,
) -> (wfe_kafka::testing::TopicContents, wfe_kafka::ServiceReport) {
    let (tx, service) = serve(cfg, instance, false, make);
    let c = cfg.clone();
    let norm = tokio::task::spawn_blocking(move || wait_for_end(&c, Topic::MetricsNorm))
        .await
        .unwrap();
    tx.send(()).unwrap();
    (norm, service.await.unwrap().unwrap())
}

/// A partition restored after the last data message of a replay (the service was away, the
/// broker restarted) sees nothing but the end-of-stream marker: its flush's rows and its own
/// marker still say that their seqs are the replay's, so other instances' tables queue them
/// for their turn (at the end) instead of handing them over at once, ahead of every batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_restored_at_the_end_of_a_replay_flushes_in_the_replays_seqs() {
    let _turn = SERVICES.lock().await;
    let (_mock, cfg) = restart_cluster(true);
    let raw = cfg.topic(Topic::MetricsRaw);
    let mut src = source();
    replay_source(&cfg, &mut src, Topic::MetricsRaw, None, false, "test")
        .await
        .unwrap();
    // The first service reads every data message and commits; then it is gone.
    let (stop, first) = serve_normalise(&cfg, "a", false);
    let (c, r) = (cfg.clone(), raw.clone());
    tokio::task::spawn_blocking(move || wait_committed(&c, &c.group("normalise"), &r))
        .await
        .unwrap();
    stop.send(()).unwrap();
    first.await.unwrap().unwrap();
    // The replay ends; a second service restores every partition at that end.
    Sender::new(&cfg, "test")
        .unwrap()
        .end_of_stream(&raw, PARTITIONS)
        .unwrap();
    let (stop, second) = serve_normalise(&cfg, "b", false);
    let c = cfg.clone();
    tokio::task::spawn_blocking(move || wait_for_end(&c, Topic::MetricsNorm))
        .await
        .unwrap();
    stop.send(()).unwrap();
    second.await.unwrap().unwrap();

    let c = cfg.clone();
    let (flushed, markers) = tokio::task::spawn_blocking(move || {
        let norm = c.topic(Topic::MetricsNorm);
        let (mut flushed, mut markers) = (Vec::new(), Vec::new());
        for p in 0..PARTITIONS {
            for m in
                wfe_kafka::broker::read_partition(&c, &norm, p, rdkafka::Offset::Beginning).unwrap()
            {
                let h = HeaderMap::from_kafka(rdkafka::message::Message::headers(&m));
                if h.is_end_of_stream() {
                    markers.push(h.is_source_seq());
                } else if !h.is_control() && h.seq() == Some(wfe_contract::merge::END) {
                    flushed.push(h.is_source_seq());
                }
            }
        }
        (flushed, markers)
    })
    .await
    .unwrap();
    assert!(!flushed.is_empty(), "the flush made rows");
    assert_eq!(markers.len(), PARTITIONS as usize);
    assert!(
        flushed.iter().chain(&markers).all(|s| *s),
        "flushed rows {flushed:?} and end markers {markers:?} keep the replay's seqs"
    );
}

/// An ephemeral service (the fleet's API) needs no state topic and commits nothing: a second
/// start in the same group reads every input message again, and the group holds no offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_service_keeps_nothing_and_a_restart_reads_from_the_beginning() {
    let _turn = SERVICES.lock().await;
    // No state topic: the mock cluster creates none, and the service must not need one.
    let (_mock, cfg) = restart_cluster(false);
    let raw = cfg.topic(Topic::MetricsRaw);
    let mut src = source();
    replay_source(&cfg, &mut src, Topic::MetricsRaw, None, true, "test")
        .await
        .unwrap();
    let mut ends = Vec::new();
    for instance in ["a", "b"] {
        let (tx, task) = serve_normalise(&cfg, instance, true);
        // The first start's rows, or (the second) twice as many: each ends every partition.
        let want = ends
            .first()
            .map_or(1, |f: &wfe_kafka::testing::TopicContents| 2 * f.rows.len());
        let c = cfg.clone();
        let norm = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            loop {
                let got = read_topic(&c, Topic::MetricsNorm, PARTITIONS).unwrap();
                if got.ended == PARTITIONS as usize && got.rows.len() >= want {
                    return got;
                }
                let (rows, ended) = (got.rows.len(), got.ended);
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{rows} rows of {want}, {ended} partitions ended"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        })
        .await
        .unwrap();
        tx.send(()).unwrap();
        let report = task.await.unwrap().unwrap();
        assert_eq!(report.commits, 0, "{report:?}");
        ends.push(norm);
    }
    // The second start made every row again: it read metrics.raw from its beginning.
    let (first, second) = (&ends[0], &ends[1]);
    assert!(!first.rows.is_empty());
    assert_eq!(second.rows.len(), 2 * first.rows.len());
    let c = cfg.clone();
    let committed = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let reader: BaseConsumer = c.consumer(&c.group("normalise")).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&raw, p);
        }
        let got = reader
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        got.elements()
            .iter()
            .map(|e| e.offset())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(
        committed.iter().all(|o| *o == rdkafka::Offset::Invalid),
        "no offsets committed: {committed:?}"
    );
}

/// An ephemeral service has no transaction to commit: asking for both is a config error,
/// said before any broker is reached.
#[tokio::test]
async fn an_ephemeral_service_refuses_exactly_once() {
    let opts = ServiceOptions {
        kafka: config("127.0.0.1:1".into()),
        exactly_once: true,
        instance: "a".into(),
        health: Default::default(),
        control: Default::default(),
        ephemeral: true,
    };
    let err = run_stage(normalise_factory(), opts, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exactly_once"), "{err}");
    assert!(!err.is_retryable());
}

/// A whole-fleet stage's service reads every partition into one instance, in a replay
/// (source seqs, merged across partitions) and live (messages without seqs, in arrival
/// order): it makes the rows the stage makes directly, writes each to its workload's
/// partition, ends every output partition, keeps one snapshot (`…/all`) and commits every
/// input partition's offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_fleet_service_reads_every_partition_into_one_stage() {
    let _turn = SERVICES.lock().await;
    for replay in [true, false] {
        let (_mock, cfg) = restart_cluster(true);
        let raw = cfg.topic(Topic::MetricsRaw);
        let mut src = source();
        if replay {
            replay_source(&cfg, &mut src, Topic::MetricsRaw, None, true, "test")
                .await
                .unwrap();
        } else {
            // As a producer outside the pipeline writes: no seqs.
            let sender = Sender::new(&cfg, "test").unwrap();
            let mut ctx = Context::new("test");
            while let Some(b) = src.next_batch(&mut ctx).unwrap() {
                for (p, key, value) in codec::encode_partitioned(&b, PARTITIONS, 1 << 20).unwrap() {
                    let h = HeaderMap::data(Topic::MetricsRaw, "test", "t");
                    let key = key.as_deref().map(str::as_bytes);
                    sender
                        .send(&raw, Some(p), key, Some(&value), &h, None)
                        .unwrap();
                }
            }
            sender.flush().unwrap();
            sender.end_of_stream(&raw, PARTITIONS).unwrap();
        }
        let whole = Twisted::factory(false, true);
        let (norm, report) = serve_to_the_end(&cfg, "whole", whole).await;
        assert!(norm.rows == direct_rows(), "replay {replay}: rows differ");
        assert_eq!(report.dead_letters, 0, "{report:?}");
        let c = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let name = c.topic(Topic::MetricsNorm);
            for p in 0..PARTITIONS {
                for m in wfe_kafka::broker::read_partition(&c, &name, p, rdkafka::Offset::Beginning)
                    .unwrap()
                {
                    let h = HeaderMap::from_kafka(rdkafka::message::Message::headers(&m));
                    if h.is_control() {
                        continue;
                    }
                    let payload = rdkafka::message::Message::payload(&m);
                    let batch = codec::decode(Topic::MetricsNorm, &h, payload).unwrap();
                    for row in row_strings(&batch) {
                        let w = field(&row, "workload");
                        assert_eq!(codec::partition_of(w.as_bytes(), PARTITIONS), p, "{row}");
                    }
                }
            }
            let state = c.state_topic("normalise");
            let keys: Vec<String> =
                wfe_kafka::broker::read_partition(&c, &state, 0, rdkafka::Offset::Beginning)
                    .unwrap()
                    .iter()
                    .filter_map(|m| rdkafka::message::Message::key(m))
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
            assert!(
                keys.iter().any(|k| k.ends_with("/all")),
                "no whole-fleet snapshot among {keys:?}"
            );
            wait_committed(&c, &c.group("normalise"), &c.topic(Topic::MetricsRaw));
        })
        .await
        .unwrap();
    }
}
