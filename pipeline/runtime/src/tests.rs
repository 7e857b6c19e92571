use std::sync::atomic::AtomicUsize;

use arrow_array::{Float64Array, Int32Array};
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};

use super::*;

fn raw_batch(i: i64) -> RecordBatch {
    RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column(vec![i * 1000, i * 1000]),
            dictionary(vec![0, 0], &["w"]).unwrap(),
            dictionary(vec![0, 1], &["cpu", "mem"]).unwrap(),
            Arc::new(Float64Array::from(vec![i as f64, 1.0])),
            dictionary_opt(vec![None, None], &[]).unwrap(),
        ],
    )
    .unwrap()
}

struct Counting {
    n: i64,
    made: Arc<AtomicUsize>,
}

impl Source for Counting {
    fn describe(&self) -> String {
        "test".into()
    }
    fn next_batch(&mut self, _ctx: &mut Context) -> Result<Option<RecordBatch>> {
        let i = self.made.fetch_add(1, Ordering::SeqCst) as i64;
        Ok((i < self.n).then(|| raw_batch(i)))
    }
}

/// Re-emits raw batches on `metrics.raw` under another name: decisions count batches.
struct Echo {
    slow_first: Option<Arc<AtomicUsize>>,
    seen_at_first: Arc<AtomicUsize>,
    emit_wrong: bool,
    flushed: Arc<AtomicUsize>,
}

impl Stage for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsRaw]
    }
    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Anomalies]
    }
    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        _c: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        if let Some(made) = self.slow_first.take() {
            std::thread::sleep(Duration::from_millis(200));
            self.seen_at_first
                .store(made.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        if self.emit_wrong {
            return out.emit(Topic::Anomalies, batch);
        }
        Ok(())
    }
    fn flush(&mut self, _c: &mut Context, _o: &mut dyn Collector) -> Result<()> {
        self.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn echo() -> Echo {
    Echo {
        slow_first: None,
        seen_at_first: Arc::new(AtomicUsize::new(0)),
        emit_wrong: false,
        flushed: Arc::new(AtomicUsize::new(0)),
    }
}

#[test]
fn runs_to_the_end_writes_every_format_and_flushes_once() {
    let dir = tempfile::tempdir().unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let stage = echo();
    let flushed = stage.flushed.clone();
    let outputs: Vec<Output> = [SinkFormat::Parquet, SinkFormat::Ipc, SinkFormat::Jsonl]
        .into_iter()
        .map(|f| Output {
            topic: Topic::MetricsRaw,
            format: f,
            path: dir.path().join(format!("raw.{}", f.extension())),
            roll: None,
        })
        .collect();
    let report = run_embedded(
        Box::new(Counting { n: 50, made }),
        vec![Box::new(stage)],
        outputs.clone(),
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(report.rows[&Topic::MetricsRaw], 100);
    assert_eq!(report.stages[0].rows_in, 100);
    assert_eq!(flushed.load(Ordering::SeqCst), 1);
    // Parquet reads back with the topic schema's metadata.
    let f = std::fs::File::open(&outputs[0].path).unwrap();
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    assert_eq!(
        r.schema().metadata()[wfe_contract::schemas::META_NAME],
        "metrics.raw"
    );
    let n: usize = r.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 100);
    let s = arrow_ipc::reader::StreamReader::try_new(
        std::fs::File::open(&outputs[1].path).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(s.map(|b| b.unwrap().num_rows()).sum::<usize>(), 100);
    let text = std::fs::read_to_string(&outputs[2].path).unwrap();
    assert_eq!(text.lines().count(), 100);
    assert!(
        text.lines().next().unwrap().contains("\"workload\":\"w\""),
        "{text}"
    );
}

#[test]
fn a_full_mailbox_holds_the_source_back() {
    let made = Arc::new(AtomicUsize::new(0));
    let mut stage = echo();
    stage.slow_first = Some(made.clone());
    let seen = stage.seen_at_first.clone();
    let opts = RunOptions {
        mailbox: 2,
        ..Default::default()
    };
    run_embedded(
        Box::new(Counting {
            n: 100,
            made: made.clone(),
        }),
        vec![Box::new(stage)],
        vec![],
        opts,
    )
    .unwrap();
    // While the stage held its first batch: 2 queued + 1 blocked in send + 1 in hand.
    let at_first = seen.load(Ordering::SeqCst);
    assert!(
        at_first <= 5,
        "source ran {at_first} batches ahead of a blocked stage"
    );
    assert_eq!(made.load(Ordering::SeqCst), 101);
}

#[test]
fn a_wrong_schema_stops_the_run_naming_both_schemas() {
    let mut stage = echo();
    stage.emit_wrong = true;
    let made = Arc::new(AtomicUsize::new(0));
    let err = run_embedded(
        Box::new(Counting {
            n: 1000,
            made: made.clone(),
        }),
        vec![Box::new(stage)],
        vec![],
        RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("anomalies v1") && err.contains("metrics.raw v1"),
        "{err}"
    );
    assert!(
        made.load(Ordering::SeqCst) < 1000,
        "the source stops after an error"
    );
}

#[test]
fn a_topic_without_producer_is_a_config_error() {
    struct Orphan;
    impl Stage for Orphan {
        fn name(&self) -> &'static str {
            "orphan"
        }
        fn inputs(&self) -> Vec<Topic> {
            vec![Topic::Forecasts]
        }
        fn outputs(&self) -> Vec<Topic> {
            vec![]
        }
        fn process_batch(
            &mut self,
            _: Topic,
            _: RecordBatch,
            _: &mut Context,
            _: &mut dyn Collector,
        ) -> Result<()> {
            Ok(())
        }
    }
    let made = Arc::new(AtomicUsize::new(0));
    let err = run_embedded(
        Box::new(Counting { n: 1, made }),
        vec![Box::new(Orphan)],
        vec![],
        RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("stages.orphan") && err.contains("forecasts"),
        "{err}"
    );
    let _ = Int32Array::from(vec![1]);
}

#[test]
fn a_speed_factor_paces_the_replay_by_event_time() {
    // 5 batches one second of event time apart, replayed at 20x: at least 4 / 20 = 0.2 s.
    let made = Arc::new(AtomicUsize::new(0));
    let opts = RunOptions {
        speed: Some(20.0),
        ..Default::default()
    };
    let t = Instant::now();
    let report = run_embedded(
        Box::new(Counting { n: 5, made }),
        vec![Box::new(echo())],
        vec![],
        opts,
    )
    .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(report.rows[&Topic::MetricsRaw], 10);
}

/// Panics at the `at`-th batch (an index out of bounds, as a stage bug would).
struct Panicking {
    at: usize,
    seen: usize,
}

impl Stage for Panicking {
    fn name(&self) -> &'static str {
        "panicky"
    }
    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsRaw]
    }
    fn outputs(&self) -> Vec<Topic> {
        vec![]
    }
    fn process_batch(
        &mut self,
        _t: Topic,
        _b: RecordBatch,
        _c: &mut Context,
        _o: &mut dyn Collector,
    ) -> Result<()> {
        self.seen += 1;
        let slots = [0u8; 2];
        let i = self.seen.saturating_sub(self.at) + 2;
        if self.seen >= self.at {
            let _ = slots[i];
        }
        Ok(())
    }
}

#[test]
fn a_panicking_stage_fails_the_run_and_health_naming_it() {
    let made = Arc::new(AtomicUsize::new(0));
    let opts = RunOptions::default();
    let health = opts.health.clone();
    let err = run_embedded(
        Box::new(Counting {
            n: 1000,
            made: made.clone(),
        }),
        vec![Box::new(Panicking { at: 3, seen: 0 }), Box::new(echo())],
        vec![],
        opts,
    )
    .unwrap_err();
    assert_eq!(err.kind(), "panic");
    let text = err.to_string();
    assert!(text.contains("stage panicky panicked"), "{text}");
    assert!(text.contains("index out of bounds"), "{text}");
    assert!(health.live().is_err(), "/health must fail after a panic");
    assert!(made.load(Ordering::SeqCst) < 1000, "the source stops");
}

struct PanickingSource;

impl Source for PanickingSource {
    fn describe(&self) -> String {
        "panics".into()
    }
    fn next_batch(&mut self, _ctx: &mut Context) -> Result<Option<RecordBatch>> {
        panic!("reader bug")
    }
}

#[test]
fn a_panicking_source_fails_the_run() {
    let err = run_embedded(
        Box::new(PanickingSource),
        vec![Box::new(echo())],
        vec![],
        RunOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "ingest panicked: reader bug");
}

#[test]
fn a_sink_never_leaves_a_torn_output() {
    let dir = tempfile::tempdir().unwrap();
    for format in [SinkFormat::Parquet, SinkFormat::Ipc, SinkFormat::Jsonl] {
        let path = dir.path().join(format!("raw.{}", format.extension()));
        // A finished output from an earlier run.
        let mut first = sink::open(format, path.clone(), Topic::MetricsRaw.schema()).unwrap();
        first.write(&raw_batch(1)).unwrap();
        first.close().unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(!sink::partial_path(&path).exists());
        // A run killed mid-write (dropped, never closed): the earlier output is untouched.
        let mut killed = sink::open(format, path.clone(), Topic::MetricsRaw.schema()).unwrap();
        for i in 0..50 {
            killed.write(&raw_batch(i)).unwrap();
        }
        drop(killed);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{format:?}");
        // The next run that finishes replaces it whole.
        let mut next = sink::open(format, path.clone(), Topic::MetricsRaw.schema()).unwrap();
        next.write(&raw_batch(7)).unwrap();
        next.write(&raw_batch(8)).unwrap();
        next.close().unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), before, "{format:?}");
        assert!(!sink::partial_path(&path).exists());
    }
    let pq = dir.path().join("raw.parquet");
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(r.map(|b| b.unwrap().num_rows()).sum::<usize>(), 4);
}

/// One row of `topic` with every column `v` (cast from an integer; lists hold one item).
fn one_row(topic: Topic, v: i64) -> RecordBatch {
    let schema = topic.schema();
    let ints: arrow_array::ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![v]));
    let columns = schema
        .fields()
        .iter()
        .map(|f| arrow_cast::cast(&ints, f.data_type()).unwrap())
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn row_value(batch: &RecordBatch) -> i64 {
    // Every column holds the value; the first one is a timestamp in every topic.
    let c = arrow_cast::cast(batch.column(0), &arrow_schema::DataType::Int64).unwrap();
    c.as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Turns each batch of `from` into one row of `to` (every `every`th only), sleeping a
/// varying while first, so that threads race.
struct Relay {
    name: &'static str,
    from: Topic,
    to: Topic,
    every: i64,
    sleep_us: u64,
}

impl Stage for Relay {
    fn name(&self) -> &'static str {
        self.name
    }
    fn inputs(&self) -> Vec<Topic> {
        vec![self.from]
    }
    fn outputs(&self) -> Vec<Topic> {
        vec![self.to]
    }
    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        _c: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let v = row_value(&batch)
            / if self.from == Topic::MetricsRaw {
                1000
            } else {
                1
            };
        std::thread::sleep(Duration::from_micros(self.sleep_us * (v % 7) as u64));
        if v % self.every == 0 {
            out.emit(self.to, one_row(self.to, v))?;
        }
        Ok(())
    }
}

/// Records what it sees, in order.
struct Join(Arc<Mutex<Vec<(Topic, i64)>>>);

impl Stage for Join {
    fn name(&self) -> &'static str {
        "join"
    }
    fn inputs(&self) -> Vec<Topic> {
        // Declared derived-first: the runner ranks inputs by the pipeline's order anyway.
        vec![Topic::Forecasts, Topic::Fingerprints, Topic::MetricsNorm]
    }
    fn outputs(&self) -> Vec<Topic> {
        vec![]
    }
    fn process_batch(
        &mut self,
        t: Topic,
        batch: RecordBatch,
        _c: &mut Context,
        _o: &mut dyn Collector,
    ) -> Result<()> {
        self.0.lock().unwrap().push((t, row_value(&batch)));
        Ok(())
    }
}

#[test]
fn a_stage_with_several_inputs_sees_them_in_source_order_whatever_the_timing() {
    let n = 60;
    let mut want = Vec::new();
    for i in 0..n {
        want.push((Topic::MetricsNorm, i));
        if i % 2 == 0 {
            want.push((Topic::Fingerprints, i));
        }
        if i % 3 == 0 {
            want.push((Topic::Forecasts, i));
        }
    }
    // Which of the two derived stages is slow changes how their outputs interleave.
    for (slow_fp, slow_fc) in [(300, 0), (0, 300), (150, 200)] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let relay = |name, from, to, every, sleep_us| -> Box<dyn Stage> {
            Box::new(Relay {
                name,
                from,
                to,
                every,
                sleep_us,
            })
        };
        let stages = vec![
            relay("norm", Topic::MetricsRaw, Topic::MetricsNorm, 1, 0),
            relay("fp", Topic::MetricsNorm, Topic::Fingerprints, 2, slow_fp),
            relay("fc", Topic::MetricsNorm, Topic::Forecasts, 3, slow_fc),
            Box::new(Join(seen.clone())),
        ];
        let made = Arc::new(AtomicUsize::new(0));
        run_embedded(
            Box::new(Counting { n, made }),
            stages,
            vec![],
            RunOptions::default(),
        )
        .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            want,
            "slow: fp {slow_fp} µs, fc {slow_fc} µs"
        );
    }
}
