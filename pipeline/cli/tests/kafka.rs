//! The stage services against a real Kafka-protocol broker process (tansu, installed by
//! `make tools` into `.tools/bin`; each test starts its own on a free port with SQLite
//! storage in a temporary folder, so it survives a restart). Every test runs the seven stages
//! as separate `wfe` processes over the broker and compares with `wfe run` (embedded) on the
//! same input (`tests/kafka/job.toml`: three ASD servers and one SMD machine).
//!
//! The tests run one at a time: each starts a broker and seven processes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::{STAGES, free_port};

use wfe_contract::Topic;
use wfe_kafka::KafkaConfig;
use wfe_kafka::codec::{self, HeaderMap, header};
use wfe_kafka::produce::Sender;
use wfe_kafka::testing::{TopicContents, read_topic, row_strings};

const PARTITIONS: i32 = 3;
/// The consumers' `session.timeout.ms` in `tests/kafka/job.toml`.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data_dir() -> PathBuf {
    std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"))
}

fn tansu() -> PathBuf {
    let bin = std::env::var_os("WFE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/bin/tansu"));
    assert!(
        bin.exists(),
        "no tansu broker at {}: run `make tools` (or set WFE_TANSU)",
        bin.display()
    );
    bin
}

/// A tansu broker process on loopback, with its data in `dir`.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    starts: u32,
}

impl Broker {
    fn start(dir: &Path) -> Self {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            starts: 0,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log =
            std::fs::File::create(self.dir.join(format!("tansu-{}.log", self.starts))).unwrap();
        self.starts += 1;
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // tansu reads the SQLite URL's path relative to its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `wfe` process with its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The log so far, without terminal colour codes.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // ESC [ ... letter
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Env {
    dir: tempfile::TempDir,
    job: PathBuf,
    /// The tansu process, or `None` when the test hosts a mock cluster.
    broker: Option<Broker>,
    bootstrap: String,
    cfg: KafkaConfig,
    procs: Vec<Proc>,
    /// Decisions and actions of `wfe run` over the same job.
    expected: &'static Expected,
}

/// A failed test prints what each topic holds and the end of each service's log after its
/// panic message (so a log's tail never hides why it failed); with `WFE_KEEP_FAILED=1` it
/// also leaves its directory (the logs whole, tansu's database) for a look after the run.
impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.report();
        if std::env::var_os("WFE_KEEP_FAILED").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept {}", self.dir.path().display());
        }
    }
}

impl Env {
    /// Seven stages over a tansu broker of their own.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path());
        let bootstrap = broker.bootstrap();
        Self::with(dir, Some(broker), bootstrap, "")
    }

    /// Seven stages over a broker at `bootstrap` that creates no topics (the mock cluster).
    fn over(bootstrap: String) -> Self {
        Self::with(
            tempfile::tempdir().unwrap(),
            None,
            bootstrap,
            "create_topics = false\n",
        )
    }

    fn with(
        dir: tempfile::TempDir,
        broker: Option<Broker>,
        bootstrap: String,
        kafka_extra: &str,
    ) -> Self {
        let job = dir.path().join("job.toml");
        let mut text =
            std::fs::read_to_string(root().join("pipeline/cli/tests/kafka/job.toml")).unwrap();
        if broker.is_none() {
            // The mock cluster keeps about 5 MB per partition: the ASD servers only.
            let smd = text
                .find("[[sources]]\npath = \"../shared/data/smd\"")
                .expect("smd source in job.toml");
            let end = text[smd..].find("\n\n").map_or(text.len(), |e| smd + e + 2);
            text.replace_range(smd..end, "");
        }
        let text = text
            .replace("../shared/data", &data_dir().display().to_string())
            .replace("[kafka]\n", &format!("[kafka]\n{kafka_extra}"));
        std::fs::write(&job, &text).unwrap();
        let expected = embedded_run(&text.replace(&format!("[kafka]\n{kafka_extra}"), "[kafka]\n"));
        Self::assemble(dir, job, broker, bootstrap, expected)
    }

    /// Services over a broker of their own with the job at `job`, compared with nothing.
    fn bare(dir: tempfile::TempDir, broker: Broker, job: PathBuf) -> Self {
        let bootstrap = broker.bootstrap();
        let nothing = Box::leak(Box::new((Vec::new(), Vec::new(), Vec::new())));
        Self::assemble(dir, job, Some(broker), bootstrap, nothing)
    }

    fn assemble(
        dir: tempfile::TempDir,
        job: PathBuf,
        broker: Option<Broker>,
        bootstrap: String,
        expected: &'static Expected,
    ) -> Self {
        let cfg = KafkaConfig {
            bootstrap_servers: bootstrap.clone(),
            partitions: PARTITIONS,
            ..Default::default()
        };
        Env {
            dir,
            job,
            broker,
            bootstrap,
            cfg,
            procs: Vec::new(),
            expected,
        }
    }

    fn wfe(&self, args: &[&str], log_name: &str) -> Proc {
        let log = self.dir.path().join(format!("{log_name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wfe"))
            .args(args)
            .args([
                "--config",
                self.job.to_str().unwrap(),
                "--bootstrap",
                &self.bootstrap,
            ])
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    /// Starts a stage service; returns its index in `procs`.
    fn stage(&mut self, name: &str, instance: &str) -> usize {
        let p = self.wfe(
            &[
                "stage",
                name,
                "--instance",
                instance,
                "--http",
                "127.0.0.1:0",
            ],
            &format!("{name}-{instance}"),
        );
        self.procs.push(p);
        self.procs.len() - 1
    }

    /// The services' log lines that say a held message went on out of order (the merge's or
    /// the tables' wait ran out), each with its log's name.
    fn forced_releases(&self) -> Vec<String> {
        const SAID: [&str; 2] = [
            "released the oldest held messages out of order",
            "went on without their rows",
        ];
        let mut found = Vec::new();
        for p in &self.procs {
            let name = p.log.file_stem().unwrap_or_default().to_string_lossy();
            for line in p
                .log()
                .lines()
                .filter(|l| SAID.iter().any(|s| l.contains(s)))
            {
                found.push(format!(
                    "{name}: {}",
                    line.chars().take(200).collect::<String>()
                ));
            }
        }
        found
    }

    /// Runs a `wfe` command to the end; panics with its log if it fails.
    fn run(&self, args: &[&str], log_name: &str) -> String {
        let mut p = self.wfe(args, log_name);
        let status = p.child.wait().unwrap();
        let log = p.log();
        assert!(status.success(), "wfe {args:?} failed:\n{log}");
        log
    }

    /// The address process `i` serves /metrics on (from its log).
    fn http_addr(&self, i: usize) -> String {
        let log = self.procs[i].log();
        log.lines()
            .find_map(|l| l.split("http: serving on http://").nth(1))
            .and_then(|s| s.split('/').next())
            .unwrap_or_else(|| panic!("no http address in:\n{log}"))
            .to_string()
    }

    /// Waits until process `i` has been assigned partitions.
    fn wait_assigned(&self, i: usize) {
        let start = Instant::now();
        while !self.procs[i].log().contains("partitions assigned") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no partitions for:\n{}",
                self.procs[i].log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The partitions process `i` was given last, as logged (`[0, 1, 2]`).
    fn last_assignment(&self, i: usize) -> String {
        let log = self.procs[i].log();
        let line = log
            .lines()
            .rfind(|l| l.contains("partitions assigned"))
            .unwrap_or_default();
        line.split("partitions=")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Once `actions` has ended: every decision of the embedded run arrived (at least once,
    /// none changed), and every action exactly once.
    fn assert_same_as_embedded(&self) {
        let actions = self.wait_ended(Topic::Actions, Duration::from_secs(300));
        let decisions = read_topic(&self.cfg, Topic::Decisions, PARTITIONS).unwrap();
        assert_decisions_match(&decisions, &self.expected.0);
        assert_actions_once(&actions, &self.expected.1);
    }

    /// Prints what each topic holds and the end of each log (on a failure: see `Drop`).
    fn report(&self) {
        for t in Topic::ALL {
            if let Ok(c) = read_topic(&self.cfg, t, PARTITIONS) {
                eprintln!(
                    "{}: {} messages, {} rows ({} distinct), {} partitions ended",
                    t.name(),
                    c.messages,
                    c.rows.len(),
                    distinct(&c.rows).len(),
                    c.ended
                );
            }
        }
        for p in &self.procs {
            eprintln!("--- {}\n{}", p.log.display(), tail(&p.log(), 15));
        }
    }

    /// Waits until every partition of `topic` ends with the end-of-stream marker.
    fn wait_ended(&self, topic: Topic, limit: Duration) -> TopicContents {
        let start = Instant::now();
        loop {
            if let Ok(c) = read_topic(&self.cfg, topic, PARTITIONS)
                && c.ended == PARTITIONS as usize
            {
                return c;
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = self
                    .procs
                    .iter()
                    .map(|p| format!("--- {}\n{}", p.log.display(), tail(&p.log(), 30)))
                    .collect();
                panic!(
                    "`{}` did not end within {limit:?}\n{}",
                    topic.name(),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the embedded run made: its decisions, actions and recommendations (rows, sorted).
type Expected = (Vec<String>, Vec<String>, Vec<String>);

/// The embedded run of a job (its text, data paths filled in), computed once per job.
fn embedded_run(job_text: &str) -> &'static Expected {
    type Run = &'static Expected;
    static RUNS: Mutex<Vec<(String, Run)>> = Mutex::new(Vec::new());
    let mut runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = runs.iter().find(|(t, _)| t == job_text) {
        return r;
    }
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, job_text).unwrap();
    run_embedded(&job, dir.path());
    let rows = |t: &str| arrows_rows(&dir.path().join(format!("{t}.arrows")));
    let r: &'static Expected = Box::leak(Box::new((
        rows("decisions"),
        rows("actions"),
        rows("recommendations"),
    )));
    runs.push((job_text.to_string(), r));
    r
}

/// `wfe run` of the job at `job`, its outputs in `out`.
fn run_embedded(job: &Path, out: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["run", "--config", job.to_str().unwrap(), "--out"])
        .arg(out)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The rows of an Arrow IPC stream file, as strings, sorted.
fn arrows_rows(path: &Path) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap();
    let mut rows: Vec<String> = arrow_ipc::reader::StreamReader::try_new(f, None)
        .unwrap()
        .flat_map(|b| row_strings(&b.unwrap()))
        .collect();
    rows.sort();
    rows
}

/// Distinct rows (at-least-once may deliver a row twice; its content is the same).
fn distinct(rows: &[String]) -> Vec<String> {
    rows.iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn field<'a>(row: &'a str, name: &str) -> &'a str {
    row.split('|')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
}

/// Panics with counts and a few differing rows (shortened) when `got` is not `want`.
fn assert_same_rows(what: &str, got: &[String], want: &[String]) {
    if got == want {
        return;
    }
    let short = |r: &&String| r.chars().take(3000).collect::<String>();
    let want_set: BTreeSet<&String> = want.iter().collect();
    let got_set: BTreeSet<&String> = got.iter().collect();
    let extra: Vec<String> = got
        .iter()
        .filter(|r| !want_set.contains(r))
        .take(3)
        .map(|r| short(&r))
        .collect();
    let lost: Vec<String> = want
        .iter()
        .filter(|r| !got_set.contains(r))
        .take(3)
        .map(|r| short(&r))
        .collect();
    let first_diff = match (
        got.iter().find(|r| !want_set.contains(r)),
        want.iter().find(|r| !got_set.contains(r)),
    ) {
        (Some(a), Some(b)) => {
            let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
            let from = a[..at].rfind('|').unwrap_or(0);
            format!(
                "first difference: over Kafka `{}` / embedded `{}`",
                &a[from..(at + 60).min(a.len())],
                &b[from..(at + 60).min(b.len())]
            )
        }
        _ => String::new(),
    };
    panic!(
        "{first_diff}\n{what}: {} rows over Kafka ({} distinct), {} embedded\nonly over Kafka: {extra:#?}\nonly embedded: {lost:#?}",
        got.len(),
        got_set.len(),
        want.len()
    );
}

/// Actions are effects: each action id at most once, and the same set as embedded.
fn assert_actions_once(actions: &TopicContents, expected: &[String]) {
    let ids: Vec<&str> = actions.rows.iter().map(|r| field(r, "action_id")).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an action was taken twice");
    assert_same_rows("actions", &actions.rows, expected);
}

/// At-least-once may deliver a decision twice, never lose or change one: every field of
/// every decision, cold-start sizing included, is the embedded run's.
fn assert_decisions_match(decisions: &TopicContents, expected: &[String]) {
    assert!(!expected.is_empty());
    assert_same_rows("decisions (distinct)", &distinct(&decisions.rows), expected);
}

#[test]
fn seven_services_give_the_embedded_decisions_and_dead_letter_malformed_messages() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut env = Env::new();
    for s in STAGES {
        env.stage(s, "a");
    }
    // The fleet's API, UI and KEDA scaler: a service of its own over the stages' topics.
    let api = env.wfe(
        &[
            "stage",
            "api",
            "--instance",
            "a",
            "--http",
            "127.0.0.1:0",
            "--keda",
            "127.0.0.1:0",
        ],
        "api",
    );
    env.procs.push(api);
    // 1,000 malformed messages mixed into metrics.raw: half before the data, half after.
    let sender = Sender::new(&env.cfg, "test").unwrap();
    let raw = env.cfg.topic(Topic::MetricsRaw);
    wfe_kafka::broker::ensure_topics_blocking(&env.cfg, &[(raw.clone(), false)]);
    let bad = send_malformed(&sender, &raw, 50);
    env.run(&["replay", "--no-end-of-stream"], "replay");
    let bad = bad + send_malformed(&sender, &raw, 50);
    assert_eq!(bad, 1000);
    sender.end_of_stream(&raw, PARTITIONS).unwrap();

    let actions = env.wait_ended(Topic::Actions, Duration::from_secs(300));
    let decisions = read_topic(&env.cfg, Topic::Decisions, PARTITIONS).unwrap();
    // A clean run delivers every decision exactly once, cold-start ones included (new
    // servers sized from the neighbours the fleet's `profiles` table gave them).
    assert_same_rows("decisions", &decisions.rows, &env.expected.0);
    assert!(
        decisions.rows.iter().any(|r| r.contains("cold start: ")
            && r.contains("sized from its nearest fingerprints omi-")),
        "no cold-start decision borrowed from a neighbour"
    );
    assert_actions_once(&actions, &env.expected.1);
    // The forecast service's container sizes are the embedded run's.
    let recommendations = read_topic(&env.cfg, Topic::Recommendations, PARTITIONS).unwrap();
    assert!(!env.expected.2.is_empty());
    assert_same_rows("recommendations", &recommendations.rows, &env.expected.2);
    assert_api_service_has_read_everything(&mut env, STAGES.len(), &decisions, &actions);

    let dlq = env.cfg.dead_letter_topic("normalise");
    let letters: usize = (0..PARTITIONS)
        .map(|p| {
            wfe_kafka::broker::read_partition(
                &env.cfg,
                &dlq,
                p,
                wfe_kafka::rdkafka::Offset::Beginning,
            )
            .unwrap()
            .len()
        })
        .sum();
    assert_eq!(
        letters, 1000,
        "every malformed message is in the dead-letter topic"
    );
    // Every service's /metrics: rows in and out, batch latency, commits, the lag of its
    // input partitions; /health and /ready answer; normalise counts the dead letters as errors.
    for (i, stage) in STAGES.iter().enumerate() {
        let addr = env.http_addr(i);
        let (status, text) = common::http("GET", &addr, "/metrics", &[], "");
        assert_eq!(status, 200, "{stage}");
        let s = [("stage", *stage)];
        for name in [
            "wfe_rows_in_total",
            "wfe_rows_out_total",
            "wfe_batch_seconds_count",
            "wfe_kafka_messages_in_total",
            "wfe_commits_total",
        ] {
            let v = common::sample(&text, name, &s).unwrap_or(0.0);
            assert!(v > 0.0, "{stage}: {name} = {v}\n{text}");
        }
        let lag = common::sample(&text, "wfe_consumer_lag_messages", &s);
        assert!(
            lag.is_some_and(|l| l >= 0.0),
            "{stage}: no lag gauge\n{text}"
        );
        assert_eq!(
            common::http("GET", &addr, "/health", &[], "").0,
            200,
            "{stage}"
        );
        assert_eq!(
            common::http("GET", &addr, "/ready", &[], "").0,
            200,
            "{stage}"
        );
        let errors = common::sample(&text, "wfe_stage_errors_total", &s);
        let letters = common::sample(&text, "wfe_dead_letters_total", &s);
        if *stage == "normalise" {
            assert_eq!(letters, Some(1000.0), "{text}");
            assert_eq!(errors, Some(1000.0), "{text}");
        } else {
            assert_eq!((letters, errors), (None, None), "{stage}: {text}");
        }
    }

    // The stage kept running through them: it is still alive now.
    assert!(
        env.procs[0].child.try_wait().unwrap().is_none(),
        "normalise died:\n{}",
        env.procs[0].log()
    );

    // Every stage's state survives compaction: restored from the newest record of each key
    // (what real Kafka leaves of a compacted topic; tansu keeps everything), every input
    // partition gets the snapshot the whole topic gives, and it loads into a fresh stage.
    assert_state_survives_compaction(&env);

    // Other teams read wfe's topics with pyarrow and confluent-kafka alone.
    if let Some(py) = std::env::var_os("WFE_PYTHON") {
        for topic in ["anomalies", "forecasts"] {
            let out = Command::new(&py)
                .arg(root().join("schemas/examples/read_topic.py"))
                .args(["--bootstrap", &env.bootstrap, "--topic", topic])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let n = read_topic(&env.cfg, Topic::from_name(topic).unwrap(), PARTITIONS)
                .unwrap()
                .rows
                .len();
            assert!(n > 0);
            assert!(
                text.contains(&format!("{n} rows")),
                "python read {topic}: {text}"
            );
        }
    } else {
        panic!("set WFE_PYTHON to a Python with pyarrow and confluent-kafka (make test does)");
    }
}

/// `wfe stage api` (process `i`): it folds every row of the topics it reads, from every
/// partition, into the API the embedded run serves: each workload of the job, its newest
/// decision that of the `decisions` topic, the UI's page, and its KEDA scaler's values those
/// of the `forecasts` topic. Killed and started again, it reads them all again.
fn assert_api_service_has_read_everything(
    env: &mut Env,
    i: usize,
    decisions: &TopicContents,
    actions: &TopicContents,
) {
    let addr = env.http_addr(i);
    let forecasts = read_topic(&env.cfg, Topic::Forecasts, PARTITIONS).unwrap();
    let want = [
        ("decisions", decisions.rows.len()),
        ("actions", actions.rows.len()),
        ("forecasts", forecasts.rows.len()),
    ];
    let list = api_rows(env, i, &want);
    let names: BTreeSet<&str> = (list["workloads"].as_array().unwrap().iter())
        .filter_map(|w| w["workload"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["machine-1-6", "omi-1", "omi-2", "omi-3"]),
        "{list}"
    );
    for w in list["workloads"].as_array().unwrap() {
        let name = w["workload"].as_str().unwrap();
        let newest = (decisions.rows.iter())
            .filter(|r| field(r, "workload") == name)
            .max_by_key(|r| field(r, "decided_at").to_string())
            .unwrap();
        assert_eq!(
            w["decision"]["decision_id"].as_str(),
            Some(field(newest, "decision_id")),
            "{name}: {w}"
        );
    }
    let (status, page) = common::http("GET", &addr, "/", &[], "");
    assert_eq!((status, page.contains("/api/v1/workloads")), (200, true));

    // Its KEDA scaler, called by the independent client of the Kubernetes test, which checks
    // each value against the topics' rows in Parquet.
    let log = env.procs[i].log();
    let keda = (log.lines())
        .find_map(|l| l.split("keda: serving on ").nth(1))
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no keda address in:\n{log}"));
    let out = env.dir.path().join("recorded");
    std::fs::create_dir_all(&out).unwrap();
    for t in [Topic::Forecasts, Topic::MetricsNorm] {
        topic_to_parquet(&env.cfg, t, &out.join(format!("{}.parquet", t.name())));
    }
    let py = std::env::var_os("WFE_PYTHON").expect("WFE_PYTHON (make test sets it)");
    let client = Command::new(py)
        .arg(root().join("pipeline/cli/tests/py/keda_client.py"))
        .arg(&keda)
        .arg(root().join("pipeline/kube/proto/externalscaler.proto"))
        .arg(&out)
        .args(["machine-1-6", "32.0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success() && text.contains("all checks passed"),
        "the KEDA client against the API service:\n{text}{}",
        String::from_utf8_lossy(&client.stderr)
    );

    env.procs[i].kill9();
    let again = env.wfe(
        &["stage", "api", "--instance", "b", "--http", "127.0.0.1:0"],
        "api-b",
    );
    env.procs.push(again);
    let again = api_rows(env, env.procs.len() - 1, &want);
    assert_eq!(again["rows"], list["rows"], "the restarted API read less");
    // It keeps nothing across starts, so it left no state topic to grow with each restart.
    let state = env.cfg.state_topic("api");
    let reader: wfe_kafka::rdkafka::consumer::BaseConsumer = env.cfg.reader().create().unwrap();
    let meta = wfe_kafka::rdkafka::consumer::Consumer::fetch_metadata(
        &reader,
        Some(&state),
        Duration::from_secs(10),
    )
    .unwrap();
    let parts: usize = meta.topics().iter().map(|t| t.partitions().len()).sum();
    assert_eq!(parts, 0, "{state} exists");
}

/// The API list of process `i` once it has folded `want` rows of each topic named (at most
/// two minutes).
fn api_rows(env: &Env, i: usize, want: &[(&str, usize)]) -> serde_json::Value {
    let start = Instant::now();
    while !env.procs[i].log().contains("http: serving on") {
        assert!(start.elapsed() < Duration::from_secs(60), "no address");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = env.http_addr(i);
    loop {
        let (status, body) = common::http("GET", &addr, "/api/v1/workloads", &[], "");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rows = |t: &str| list["rows"][t].as_u64().unwrap_or(0) as usize;
        if want.iter().all(|(t, n)| rows(t) == *n) {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the API service has not read every row ({want:?}): {}\n{}",
            list["rows"],
            env.procs[i].log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The rows of topic `t` in a Parquet file, as an embedded run's `[outputs]` would hold them.
fn topic_to_parquet(cfg: &KafkaConfig, t: Topic, path: &Path) {
    let name = cfg.topic(t);
    let mut writer = None;
    for p in 0..PARTITIONS {
        use wfe_kafka::rdkafka::Message;
        let messages =
            wfe_kafka::broker::read_partition(cfg, &name, p, wfe_kafka::rdkafka::Offset::Beginning)
                .unwrap();
        for m in &messages {
            let h = HeaderMap::from_kafka(m.headers());
            if h.is_control() {
                continue;
            }
            let batch = codec::decode(t, &h, m.payload()).unwrap();
            let w = writer.get_or_insert_with(|| {
                let file = std::fs::File::create(path).unwrap();
                parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap()
            });
            w.write(&batch).unwrap();
        }
    }
    writer.expect("rows in the topic").close().unwrap();
}

/// `wfe state` over every stage: exit 0 (every partition's compacted view restores the same
/// snapshot as the whole state topic, and it loads), a snapshot for every stage and input
/// partition, and compaction dropping records somewhere (else the check proves nothing).
fn assert_state_survives_compaction(env: &Env) {
    let out = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["state", "--config", env.job.to_str().unwrap()])
        .args(["--bootstrap", &env.bootstrap])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), STAGES.len() * PARTITIONS as usize, "{text}");
    let mut dropped = 0;
    for r in &rows {
        assert!(
            r[2].parse::<i64>().is_ok_and(|n| n > 0),
            "no snapshot: {r:?}\n{text}"
        );
        assert_eq!(r[5], "yes", "{text}");
        let (log, view) = r[4].split_once(" / ").unwrap();
        dropped += log.parse::<usize>().unwrap() - view.parse::<usize>().unwrap();
    }
    assert!(dropped > 0, "compaction would drop nothing:\n{text}");
    eprintln!("{text}");
}

#[test]
fn kill_9_mid_replay_and_instances_leaving_lose_nothing_and_never_act_twice() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut env = Env::new();
    for s in STAGES {
        env.stage(s, "a");
    }
    let forecast_b = env.stage("forecast", "b");
    // Both instances hold partitions before the data arrives, and not the same ones.
    env.wait_assigned(forecast_b);
    std::thread::sleep(Duration::from_secs(2));
    let split = env.last_assignment(forecast_b);
    assert!(
        !split.is_empty() && split != "[0, 1, 2]",
        "two instances did not split the partitions: {split}"
    );
    let mut replay = env.wfe(&["replay"], "replay");
    std::thread::sleep(Duration::from_secs(4));
    // Mid-stream: kill -9 normalise and the actuator, then restart both (the actuator must
    // not act again on what it did before dying); the second forecast instance stops for good
    // (SIGTERM: it commits and leaves), and the first takes its partitions over. (A member
    // that dies without leaving a group of several is the mock-cluster test below: tansu 0.6
    // hands its partitions to nobody until it comes back.)
    env.procs[0].kill9();
    env.procs[5].kill9();
    let pid = env.procs[forecast_b].child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_secs(1));
    env.stage("normalise", "a2");
    env.stage("actuate", "a2");
    assert!(replay.child.wait().unwrap().success(), "{}", replay.log());

    env.assert_same_as_embedded();
    let stopped = env.procs[forecast_b].child.wait().unwrap();
    assert!(
        stopped.success(),
        "SIGTERM is a clean stop:\n{}",
        env.procs[forecast_b].log()
    );
    assert_eq!(
        env.last_assignment(3),
        "[0, 1, 2]",
        "the first forecast never took the second's partitions over"
    );
}

#[test]
fn a_partition_read_waits_out_a_broker_restart() {
    // A stage restoring its snapshot (or an actuator reading back its own output) reads a
    // partition to its end; a broker killed and restarted half-way must delay the read, not
    // end the service (the chaos run lost its only normalise instance that way).
    use wfe_kafka::rdkafka::message::Message;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let mut cfg = KafkaConfig {
        bootstrap_servers: broker.bootstrap(),
        partitions: 1,
        ..Default::default()
    };
    // Little prefetch, so the reader is still fetching when the broker goes.
    cfg.properties
        .insert("queued.max.messages.kbytes".into(), "1".into());
    cfg.properties
        .insert("fetch.message.max.bytes".into(), "4096".into());
    wfe_kafka::broker::ensure_topics_blocking(&cfg, &[("t".to_string(), false)]);
    let sender = Sender::new(&cfg, "test").unwrap();
    for i in 0..300 {
        let key = format!("k{i}");
        let value = vec![b'x'; 1000];
        sender
            .send(
                "t",
                Some(0),
                Some(key.as_bytes()),
                Some(&value),
                &HeaderMap::default(),
                None,
            )
            .unwrap();
    }
    sender.flush().unwrap();
    drop(sender);
    // Twice: the broker away when the read starts (its errors queue up while the read
    // waits), and going away mid-read (20 ms a message, down for 3 s from the 20th on).
    for pause_at in [0, 20] {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        if pause_at == 0 {
            broker.kill();
        }
        let reader = {
            let (cfg, read) = (cfg.clone(), read.clone());
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering::SeqCst;
                let from = wfe_kafka::rdkafka::Offset::Beginning;
                wfe_kafka::broker::scan_partition(&cfg, "t", 0, from, |m| {
                    assert_eq!(m.offset(), read.load(SeqCst));
                    read.fetch_add(1, SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                })
            })
        };
        while read.load(std::sync::atomic::Ordering::SeqCst) < pause_at {
            std::thread::sleep(Duration::from_millis(2));
        }
        broker.kill();
        std::thread::sleep(Duration::from_secs(3));
        let during = read.load(std::sync::atomic::Ordering::SeqCst);
        broker.spawn();
        let r = reader.join().unwrap();
        assert!(r.is_ok(), "broker away from message {pause_at} on: {r:?}");
        assert!(
            during < 300,
            "the read was over before the broker came back ({during})"
        );
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 300);
    }
}

#[test]
fn broker_restart_mid_stream_recovers_by_itself_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut env = Env::new();
    for s in STAGES {
        env.stage(s, "a");
    }
    std::thread::sleep(Duration::from_secs(2));
    // The seventh service: ingest, the job's sources onto metrics.raw.
    let mut replay = env.wfe(&["stage", "ingest"], "ingest");
    std::thread::sleep(Duration::from_secs(4));
    let broker = env.broker.as_mut().unwrap();
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.spawn();
    assert!(replay.child.wait().unwrap().success(), "{}", replay.log());
    let actions = env.wait_ended(Topic::Actions, Duration::from_secs(300));
    let decisions = read_topic(&env.cfg, Topic::Decisions, PARTITIONS).unwrap();
    assert_decisions_match(&decisions, &env.expected.0);
    assert_actions_once(&actions, &env.expected.1);
    for p in &mut env.procs {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "a stage died:\n{}",
            p.log()
        );
    }
}

#[test]
fn an_instance_killed_in_a_group_of_two_is_taken_over_on_a_mock_cluster() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mock = wfe_kafka::rdkafka::mocking::MockCluster::new(1).unwrap();
    let mut env = Env::over(mock.bootstrap_servers());
    let mut topics: Vec<String> = Topic::ALL.iter().map(|t| env.cfg.topic(*t)).collect();
    for s in STAGES {
        topics.push(env.cfg.dead_letter_topic(s));
        topics.push(env.cfg.state_topic(s));
    }
    for t in &topics {
        mock.create_topic(t, PARTITIONS, 1).unwrap();
    }
    for s in STAGES {
        env.stage(s, "a");
    }
    let b = env.stage("normalise", "b");
    env.wait_assigned(b);
    std::thread::sleep(Duration::from_secs(2));
    // About 15 s of replay (45 days of 5-minute samples at 300,000x): the kill lands mid-stream.
    let mut replay = env.wfe(&["replay", "--speed", "300000x"], "replay");
    std::thread::sleep(Duration::from_secs(5));
    env.procs[b].kill9();
    assert!(replay.child.wait().unwrap().success(), "{}", replay.log());
    env.assert_same_as_embedded();
    assert_eq!(
        env.last_assignment(0),
        "[0, 1, 2]",
        "the survivor never took the partitions over"
    );
}

/// Five kinds of bad message a misconfigured producer sends (JSON, another topic's rows, a
/// wrong schema header, a newer schema version, no headers at all), `2 n` times each: keyed and
/// without a key. (wfe-kafka's mock tests cover the other kinds: truncated, empty, ...)
fn send_malformed(sender: &Sender, topic: &str, n: usize) -> usize {
    let raw = HeaderMap::data(Topic::MetricsRaw, "test", "t");
    let wrong = HeaderMap::data(Topic::Forecasts, "test", "t");
    let mut newer = raw.clone();
    newer.set(header::VERSION, "7");
    let actions = codec::encode(&arrow_array::RecordBatch::new_empty(
        Topic::Actions.schema(),
    ))
    .unwrap();
    let cases: Vec<(HeaderMap, Vec<u8>)> = vec![
        (raw.clone(), b"{\"cpu\": 0.5}".to_vec()),
        (raw.clone(), actions.clone()),
        (wrong, actions.clone()),
        (newer, actions),
        (HeaderMap::default(), b"\x00\x01garbage".to_vec()),
    ];
    let mut sent = 0;
    for i in 0..n {
        for (h, v) in &cases {
            sender
                .send(
                    topic,
                    None,
                    Some(format!("bad-{i}").as_bytes()),
                    Some(v),
                    h,
                    None,
                )
                .unwrap();
            sent += 1;
        }
    }
    for _ in 0..n {
        for (h, v) in &cases {
            sender.send(topic, None, None, Some(v), h, None).unwrap();
            sent += 1;
        }
    }
    sender.flush().unwrap();
    sent
}

/// A number from the environment, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Chaos: while the job streams through the six services, a random stage is killed with
/// SIGKILL every `WFE_CHAOS_EVERY_MS` and restarted at once, `WFE_CHAOS_KILLS` times, and
/// (with `WFE_CHAOS_BROKER=1`) the broker is killed and restarted once half-way. Afterwards the decisions equal the embedded
/// run's, no action id appears twice, and the dead-letter topics hold the injected malformed
/// messages and nothing else. `make test` runs a few kills; `make chaos` runs 60.
#[test]
fn chaos_random_kill_9s_and_a_broker_kill_lose_nothing_and_never_act_twice() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let kills: usize = env_or("WFE_CHAOS_KILLS", 4);
    // tansu 0.6 can keep a dead member in its group when the member died while another one
    // joined (real Kafka evicts it after the session timeout): the newcomer then gets only
    // part of the partitions, and the rest have no consumer until the next rebalance. A
    // `make chaos` run saw fingerprint's partitions 0 and 1 unread for 100 s that way, and
    // tier-select, past its merge wait, took its inputs out of order (decisions differed).
    // So a killed stage's replacement joins only once the dead member's session is over;
    // kills stay `every` apart.
    let every = Duration::from_millis(env_or("WFE_CHAOS_EVERY_MS", 7000));
    let rejoin = SESSION_TIMEOUT + Duration::from_secs(1);
    let seed: u64 = env_or("WFE_CHAOS_SEED", 7);
    // The broker kill is `make chaos`'s (WFE_CHAOS_BROKER=1); `make test` restarts the broker
    // in `broker_restart_mid_stream_...`. (Its failures once put down to tansu losing rows
    // were a flush's rows without the replay's seqs, handed to other instances' tables
    // ahead of their turn: see `Sender::end_of_stream`.)
    let kill_broker = env_or("WFE_CHAOS_BROKER", 0) == 1;
    let mut env = Env::new();
    let mut slot: Vec<usize> = STAGES.iter().map(|s| env.stage(s, "c0")).collect();
    std::thread::sleep(Duration::from_secs(2));
    let sender = Sender::new(&env.cfg, "test").unwrap();
    let raw = env.cfg.topic(Topic::MetricsRaw);
    wfe_kafka::broker::ensure_topics_blocking(&env.cfg, &[(raw.clone(), false)]);
    let mut bad = send_malformed(&sender, &raw, 5);
    // The job's 45 days of event time, spread over the chaos (and a little more).
    let chaos_s = (kills as f64 * every.as_secs_f64()).max(4.0);
    let speed = format!("{:.0}x", 45.0 * 86_400.0 / (1.2 * chaos_s));
    let mut replay = env.wfe(
        &["replay", "--no-end-of-stream", "--speed", &speed],
        "replay",
    );
    let mut rng = wfe_domain::stats::SplitMix(seed);
    let mut killed: Vec<&str> = Vec::new();
    let mut broker_kills = 0;
    for k in 0..kills {
        std::thread::sleep(every.saturating_sub(rejoin));
        if kill_broker
            && k == kills / 2
            && let Some(broker) = env.broker.as_mut()
        {
            broker.kill();
            std::thread::sleep(Duration::from_millis(1500));
            broker.spawn();
            broker_kills += 1;
        }
        let i = rng.below(STAGES.len());
        env.procs[slot[i]].kill9();
        std::thread::sleep(rejoin);
        slot[i] = env.stage(STAGES[i], &format!("c{}", k + 1));
        killed.push(STAGES[i]);
    }
    assert!(replay.child.wait().unwrap().success(), "{}", replay.log());
    bad += send_malformed(&sender, &raw, 5);
    sender.end_of_stream(&raw, PARTITIONS).unwrap();

    let actions = env.wait_ended(Topic::Actions, Duration::from_secs(600));
    let decisions = read_topic(&env.cfg, Topic::Decisions, PARTITIONS).unwrap();
    let ids: Vec<&str> = actions.rows.iter().map(|r| field(r, "action_id")).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    let got = distinct(&decisions.rows);
    let got_set: BTreeSet<&String> = got.iter().collect();
    let lost = env
        .expected
        .0
        .iter()
        .filter(|r| !got_set.contains(r))
        .count();
    let letters: Vec<(String, usize)> = STAGES
        .iter()
        .map(|s| {
            let topic = env.cfg.dead_letter_topic(s);
            let n = (0..PARTITIONS)
                .map(|p| {
                    wfe_kafka::broker::read_partition(
                        &env.cfg,
                        &topic,
                        p,
                        wfe_kafka::rdkafka::Offset::Beginning,
                    )
                    .map(|m| m.len())
                    .unwrap_or(0)
                })
                .sum();
            (s.to_string(), n)
        })
        .collect();
    eprintln!(
        "chaos (seed {seed}, replay at {speed}): {kills} kill -9s ({}), {broker_kills} broker kill(s)\n\
         | kills | broker kills | decisions (distinct / embedded) | decisions lost | duplicate actions | dead letters (injected) |\n\
         |---:|---:|---:|---:|---:|---|\n\
         | {kills} | {broker_kills} | {} / {} | {lost} | {} | {:?} ({bad}) |",
        killed.join(", "),
        got.len(),
        env.expected.0.len(),
        ids.len() - unique.len(),
        letters,
    );
    // Past `merge_wait_ms`, a stage takes its inputs out of order by design, and its
    // decisions may differ from the embedded run's: said first, as the cause.
    let forced = env.forced_releases();
    assert!(
        forced.is_empty(),
        "inputs taken out of order (an input stalled over the merge wait): {forced:?}"
    );
    assert_decisions_match(&decisions, &env.expected.0);
    assert_actions_once(&actions, &env.expected.1);
    for (stage, n) in &letters {
        let want = if stage == "normalise" { bad } else { 0 };
        assert_eq!(*n, want, "dead letters of {stage}");
    }
}

/// The first `steps` rows of an ASD server as a `csv-wide` file (`timestamp,m00..`), its
/// time stamps moved by `shift_steps` steps: a workload made from real data, without the
/// train/test split (so normalise learns its scaler from the first `learn_steps`).
fn wide_copy(entity: &str, steps: usize, shift_steps: i64, out: &Path) {
    use std::io::{BufRead, Write};
    let f = std::fs::File::open(data_dir().join(format!("asd/{entity}.csv.gz"))).unwrap();
    let lines = std::io::BufReader::new(flate2::read::GzDecoder::new(f)).lines();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for (i, line) in lines.take(steps + 1).enumerate() {
        let line = line.unwrap();
        let cols: Vec<&str> = line.split(',').collect();
        // timestamp, split, label, m00, ...: drop split and label.
        let ts = if i == 0 {
            cols[0].to_string()
        } else {
            (cols[0].parse::<i64>().unwrap() + shift_steps * 300).to_string()
        };
        writeln!(w, "{ts},{}", cols[3..].join(",")).unwrap();
    }
}

/// Which partition of `topic` holds each workload's rows.
fn partitions_of(cfg: &KafkaConfig, topic: Topic) -> std::collections::BTreeMap<String, i32> {
    let mut at = std::collections::BTreeMap::new();
    for p in 0..PARTITIONS {
        for m in wfe_kafka::broker::read_partition(
            cfg,
            &cfg.topic(topic),
            p,
            wfe_kafka::rdkafka::Offset::Beginning,
        )
        .unwrap()
        {
            if let Some(k) = wfe_kafka::rdkafka::message::Message::key(&m) {
                at.insert(String::from_utf8_lossy(k).to_string(), p);
            }
        }
    }
    at
}

#[test]
fn a_new_workload_is_sized_from_neighbours_in_other_partitions() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    // Nine servers known to the fleet, then a tenth that appears later. It asks for eight
    // neighbours: more than any one partition holds, so some must come from the others.
    let (fleet, late) = (dir.path().join("fleet"), dir.path().join("late"));
    std::fs::create_dir_all(&fleet).unwrap();
    std::fs::create_dir_all(&late).unwrap();
    for i in 1..=9 {
        wide_copy(
            &format!("omi-{i}"),
            400,
            0,
            &fleet.join(format!("omi-{i}.csv")),
        );
    }
    wide_copy("omi-10", 200, 400, &late.join("omi-new.csv"));
    let job = |sources: &Path| {
        format!(
            "[[sources]]\npath = \"{}\"\nformat = \"csv-wide\"\n\n[run]\nprogress = false\n\n\
             [stages.normalise]\nlearn_steps = 50\n\n\
             [stages.fingerprint]\nwindow = 30\nhop = 30\nlearning_steps = 30\nneighbours = 8\n\n\
             [kafka]\npartitions = {PARTITIONS}\ncommit_interval_ms = 500\n",
            sources.display()
        )
    };
    let job_path = dir.path().join("job.toml");
    std::fs::write(&job_path, job(&fleet)).unwrap();
    let late_job = dir.path().join("late.toml");
    std::fs::write(&late_job, job(&late)).unwrap();
    let mut env = Env::bare(dir, broker, job_path);
    for s in ["normalise", "fingerprint"] {
        env.stage(s, "a");
    }
    env.run(&["replay", "--no-end-of-stream"], "replay-fleet");
    // The fleet's profiles are in the table, past their learning period.
    let start = Instant::now();
    loop {
        let profiles = read_topic(&env.cfg, Topic::Profiles, PARTITIONS).unwrap();
        let known: BTreeSet<&str> = profiles
            .rows
            .iter()
            .filter(|r| field(r, "observed_steps").parse::<usize>().unwrap_or(0) > 30)
            .map(|r| field(r, "workload"))
            .collect();
        if known.len() == 9 {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!("profiles of {known:?} only");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = env.dir.path().join("replay-late.log");
    let status = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["replay", "--config", late_job.to_str().unwrap()])
        .args(["--bootstrap", &env.bootstrap])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let fps = env.wait_ended(Topic::Fingerprints, Duration::from_secs(120));
    // Where each workload lives: its `profiles` rows (one per workload and window; a
    // partition's fingerprint rows wait for its own basis, which a small partition may not
    // have fitted yet).
    let home = partitions_of(&env.cfg, Topic::Profiles);
    let cold: Vec<&String> = fps
        .rows
        .iter()
        .filter(|r| field(r, "workload") == "omi-new" && field(r, "cold_start") == "true")
        .collect();
    assert!(!cold.is_empty(), "no cold rows of the new workload");
    for r in &cold {
        // Neighbours and an allocation borrowed from them...
        assert_ne!(field(r, "neighbours"), "null", "{r}");
        assert_ne!(field(r, "allocation"), "null", "{r}");
    }
    // ...found across the fleet: some live in partitions other than the new workload's.
    let mine = home["omi-new"];
    let elsewhere: BTreeSet<String> = cold
        .iter()
        .flat_map(|r| {
            field(r, "neighbours")
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|n| home.get(n).is_some_and(|p| *p != mine))
        .collect();
    let all_home: BTreeSet<i32> = home.values().copied().collect();
    assert!(
        all_home.len() > 1,
        "the fleet sits in one partition: {home:?}"
    );
    assert!(
        !elsewhere.is_empty(),
        "every neighbour of omi-new (partition {mine}) is in its own partition: {cold:?}\n{home:?}"
    );
}

#[test]
fn a_joined_topic_whose_producer_is_gone_delays_a_stage_but_never_stalls_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    // The test job with a one-second bound on the merge; no anomaly service runs, so the
    // forecast service's `anomalies` input never says how far it has got.
    let text = std::fs::read_to_string(root().join("pipeline/cli/tests/kafka/job.toml"))
        .unwrap()
        .replace("../shared/data", &data_dir().display().to_string())
        .replace("[kafka]\n", "[kafka]\nmerge_wait_ms = 1000\n");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, text).unwrap();
    let mut env = Env::bare(dir, broker, job);
    for s in ["normalise", "forecast"] {
        env.stage(s, "a");
    }
    env.run(&["replay"], "replay");
    let start = Instant::now();
    loop {
        let forecasts = read_topic(&env.cfg, Topic::Forecasts, PARTITIONS).unwrap();
        if forecasts.rows.len() > 100 {
            break;
        }
        if start.elapsed() > Duration::from_secs(180) {
            panic!(
                "forecast held its input: {} forecasts",
                forecasts.rows.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // It went on by releasing held messages out of order, and says so.
    let (status, text) = common::http("GET", &env.http_addr(1), "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(
        env.procs[1]
            .log()
            .contains("released the oldest held messages out of order"),
        "{}",
        tail(&env.procs[1].log(), 20)
    );
    let forced = common::sample(
        &text,
        "wfe_stage_events_total",
        &[("stage", "forecast"), ("event", "merge.forced")],
    );
    assert!(forced.is_some_and(|n| n > 0.0), "{text}");
}

/// The contention planner as a service over three partitions: one instance reads every
/// partition (a host's workloads are keyed into all of them), is killed with SIGKILL once it
/// has planned a move and written a snapshot, and restarted; the fleet's `migrations` are
/// still the embedded run's, row for row, each on its workload's partition, and its snapshot
/// restores the same from the compacted view of its state topic (`wfe state`).
#[test]
fn the_contention_service_plans_the_embedded_moves_over_every_partition_across_a_kill() {
    use wfe_kafka::rdkafka::{Offset, message::Message};
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("pipeline/cli/tests/kafka/job.toml"))
        .unwrap()
        .replace("../shared/data", &data_dir().display().to_string())
        .replace("ipc = [", "ipc = [\"migrations\", ");
    // Two hosts of 37.5 vCPU: 0.6 of the four workloads' summed CPU peaks, as `wfe contention
    // --hosts 2 --fill 0.6` places them.
    let text = format!(
        "{text}\n[stages.contention]\n\
         hosts = [{{ name = \"host-1\", capacity = 37.5 }}, {{ name = \"host-2\", capacity = 37.5 }}]\n\
         placement = {{ \"machine-1-6\" = \"host-1\", \"omi-1\" = \"host-2\", \"omi-2\" = \"host-2\", \"omi-3\" = \"host-1\" }}\n"
    );
    let job = dir.path().join("job.toml");
    std::fs::write(&job, &text).unwrap();
    let embedded = dir.path().join("embedded");
    run_embedded(&job, &embedded);
    let want = arrows_rows(&embedded.join("migrations.arrows"));
    assert!(!want.is_empty(), "the embedded run planned no move");

    let broker = Broker::start(dir.path());
    let mut env = Env::bare(dir, broker, job);
    for s in STAGES {
        env.stage(s, "a");
    }
    let first = env.stage("contention", "a");
    // Paced (45 days of event time in about 20 s), so that the kill lands mid-stream.
    let mut replay = env.wfe(&["replay", "--speed", "200000x"], "replay");
    // Killed once it has planned a move and its one snapshot (`…/all`, every partition's
    // offsets) is in the state topic.
    let state = env.cfg.state_topic("contention");
    let start = Instant::now();
    let planned = loop {
        let snapshot = wfe_kafka::broker::read_partition(&env.cfg, &state, 0, Offset::Beginning)
            .unwrap_or_default()
            .iter()
            .any(|m| m.key().is_some_and(|k| k.ends_with(b"/all")));
        let moves = read_topic(&env.cfg, Topic::Migrations, PARTITIONS).map_or(0, |c| c.rows.len());
        if snapshot && moves > 0 {
            break moves;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no move or no snapshot of the contention service:\n{}",
            env.procs[first].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        planned < want.len(),
        "every move was out before the kill: the restart restores nothing"
    );
    eprintln!("killed after {planned} of {} moves", want.len());
    env.procs[first].kill9();
    let second = env.stage("contention", "a2");
    assert!(replay.child.wait().unwrap().success(), "{}", replay.log());
    let start = Instant::now();
    let got = loop {
        if let Ok(c) = read_topic(&env.cfg, Topic::Migrations, PARTITIONS)
            && c.ended == PARTITIONS as usize
        {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "`migrations` did not end:\n{}",
            env.procs[second].log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = env.procs[second].log();
    let restored = log.lines().find(|l| l.contains("restored snapshot"));
    let restored =
        restored.unwrap_or_else(|| panic!("the restarted service did not restore:\n{log}"));
    eprintln!("{restored}");
    // At least once: a move written after the snapshot may be written again, the same row.
    assert_same_rows("migrations (distinct)", &distinct(&got.rows), &want);
    // Its one snapshot restores the same from what compaction keeps of the state topic.
    let state = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["state", "--stage", "contention", "--config"])
        .args([env.job.to_str().unwrap(), "--bootstrap", &env.bootstrap])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&state.stdout);
    let err = String::from_utf8_lossy(&state.stderr);
    assert!(state.status.success(), "{text}\n{err}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("| contention | all |") && l.contains("| yes |")),
        "{text}"
    );
    // Each row on its workload's partition, as every wfe topic keeps it.
    let name = env.cfg.topic(Topic::Migrations);
    for p in 0..PARTITIONS {
        for m in wfe_kafka::broker::read_partition(&env.cfg, &name, p, Offset::Beginning).unwrap() {
            let h = HeaderMap::from_kafka(m.headers());
            if h.is_control() {
                continue;
            }
            let batch = codec::decode(Topic::Migrations, &h, m.payload()).unwrap();
            for row in row_strings(&batch) {
                let w = field(&row, "workload");
                assert!(!w.is_empty(), "no workload in {row}");
                assert_eq!(codec::partition_of(w.as_bytes(), PARTITIONS), p, "{row}");
            }
        }
    }
}
