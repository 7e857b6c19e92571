//! # wfe-runtime: running stages
//!
//! The embedded runner puts the whole pipeline in one process: the [`Source`] on the calling
//! thread, each [`Stage`] on its own thread as an actor with a bounded mailbox, and each
//! configured output (a [`sink::Sink`]) on a thread of its own. A topic is a fan-out: every
//! batch emitted on it goes to the mailbox of each stage that consumes it and each sink that
//! writes it. Mailboxes are bounded, so a slow consumer blocks its producer, and that
//! backpressure reaches the source, which stops reading files.
//!
//! Schemas are checked at both edges: when a stage emits (against the topic it emits on,
//! which must be one it declared) and when a batch arrives (against the topic it arrived on).
//!
//! Shutdown: when the source is exhausted, or `stop` is set (Ctrl-C), the source's senders are
//! dropped; each actor drains its mailbox, flushes, and drops its own senders, so the close
//! travels down the graph and every stage flushes exactly once. An error in any actor sets
//! `stop`, the rest drain, and the first error is returned. A panic counts as an error: every
//! hook, the source and each sink run inside [`wfe_contract::panic::contain`], so a stage that
//! panics fails the run (naming itself) and `/health`, instead of ending its thread unseen.
//!
//! Observability: rows in and out per stage and topic, batch latency, errors by kind and each
//! mailbox's depth (the embedded form of consumer lag) go to the `metrics` facade
//! (`wfe_rows_in_total`, `wfe_rows_out_total`, `wfe_batch_seconds`, `wfe_stage_errors_total`,
//! `wfe_mailbox_batches`); [`Health`] says ready once the actors run and live while none has
//! failed; every stage's [`Context`] shares the run's [`Control`].

mod actor;
mod cpu;
mod report;
pub mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wfe_contract::panic::contain;
use wfe_contract::{
    Collector, Context, Control, Error, Health, RecordBatch, Result, Source, Stage, Topic,
};

use actor::{Fanout, Inbox, Mailbox, Msg, receive, run_actor};
pub use report::ActorReport;
use report::{Depth, Failure, TopicRows};

pub use cpu::{process_cpu, thread_cpu};
pub use sink::SinkFormat;

/// How the embedded runner runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Batches a mailbox holds before its producer waits.
    pub mailbox: usize,
    /// Replay speed as a factor of event time (`None`: as fast as possible).
    pub speed: Option<f64>,
    /// Wall-clock interval of `on_tick` calls (`None`: no ticks).
    pub tick: Option<Duration>,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// Set to stop reading input; the stages then drain and flush.
    pub stop: Arc<AtomicBool>,
    /// Run-time settings shared by the stages and whoever changes them (the HTTP API).
    pub control: Arc<Control>,
    /// Readiness and liveness, for `/ready` and `/health`.
    pub health: Arc<Health>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            mailbox: 16,
            speed: None,
            tick: None,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            control: Arc::new(Control::new()),
            health: Arc::new(Health::default()),
        }
    }
}

/// Write `topic` to `path` in `format`: one file, or with `roll` a folder of parts.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: Topic,
    pub format: SinkFormat,
    pub path: PathBuf,
    pub roll: Option<sink::Roll>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub elapsed: Duration,
    pub source: ActorReport,
    pub stages: Vec<ActorReport>,
    pub sinks: Vec<ActorReport>,
    pub rows: BTreeMap<Topic, u64>,
    pub outputs: Vec<PathBuf>,
    /// Set when the run was stopped before its input was exhausted.
    pub stopped: bool,
}

/// Checks that every consumed topic has a producer.
fn check_topology(stages: &[Box<dyn Stage>], outputs: &[Output]) -> Result<()> {
    let mut produced = vec![Topic::MetricsRaw];
    for s in stages {
        produced.extend(s.outputs());
    }
    for s in stages {
        for t in s.inputs() {
            if !produced.contains(&t) {
                return Err(Error::config(
                    format!("stages.{}", s.name()),
                    format!("consumes `{t}`, which no enabled stage produces"),
                ));
            }
        }
    }
    for o in outputs {
        if !produced.contains(&o.topic) {
            return Err(Error::config(
                "outputs",
                format!("`{}` is written but no enabled stage produces it", o.topic),
            ));
        }
    }
    Ok(())
}

/// Runs the pipeline in this process until the source is exhausted or `opts.stop` is set.
pub fn run_embedded(
    mut source: Box<dyn Source>,
    stages: Vec<Box<dyn Stage>>,
    outputs: Vec<Output>,
    opts: RunOptions,
) -> Result<RunReport> {
    check_topology(&stages, &outputs)?;
    let start = Instant::now();
    let rows = Arc::new(TopicRows::default());
    let fail = Failure {
        stop: opts.stop.clone(),
        first: Arc::new(Mutex::new(None)),
        health: opts.health.clone(),
    };

    // Mailboxes, and who sends to them.
    let mut subscribers: BTreeMap<Topic, Vec<Mailbox>> = BTreeMap::new();
    let mut stage_rx = Vec::new();
    for s in &stages {
        let (tx, rx) = sync_channel::<Msg>(opts.mailbox.max(1));
        let depth = Depth::new(s.name());
        for t in s.inputs() {
            let m = Mailbox {
                tx: tx.clone(),
                depth: depth.clone(),
                progress: true,
            };
            subscribers.entry(t).or_default().push(m);
        }
        stage_rx.push((rx, depth));
    }
    let mut sinks = Vec::new();
    for o in &outputs {
        let sink = sink::open_output(o.format, o.path.clone(), o.topic.schema(), o.roll)?;
        let (tx, rx) = sync_channel::<Msg>(opts.mailbox.max(1));
        let depth = Depth::new(&format!("sink {}", o.topic));
        subscribers.entry(o.topic).or_default().push(Mailbox {
            tx,
            depth: depth.clone(),
            progress: false,
        });
        sinks.push((o.topic, sink, rx, depth));
    }
    let fanout = |name: &str, topics: &[Topic]| {
        Fanout {
        stage: name.to_string(),
        routes: topics
            .iter()
            .map(|t| {
                let rows_out = metrics::counter!("wfe_rows_out_total", "stage" => name.to_string(), "topic" => t.to_string());
                (*t, subscribers.get(t).cloned().unwrap_or_default(), rows_out)
            })
            .collect(),
        rows: rows.clone(),
        seq: wfe_contract::merge::Seq::MIN,
        sent: wfe_contract::merge::Seq::MIN,
    }
    };
    let mut source_out = fanout("ingest", &[Topic::MetricsRaw]);
    let actors: Vec<(Box<dyn Stage>, Inbox, Fanout)> = stages
        .into_iter()
        .zip(stage_rx)
        .map(|(s, rx)| {
            let f = fanout(s.name(), &s.outputs());
            (s, rx, f)
        })
        .collect();
    drop(subscribers); // from here on, only producers hold senders

    let (stage_reports, sink_reports, source_report) = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (stage, inbox, out) in actors {
            let (fail, tick) = (fail.clone(), opts.tick);
            let ctx = Context::with_control(stage.name(), opts.control.clone());
            let name = stage.name();
            let h = std::thread::Builder::new()
                .name(format!("stage-{name}"))
                .spawn_scoped(scope, move || run_actor(stage, ctx, inbox, out, tick, fail))
                .expect("spawn stage thread");
            handles.push((format!("stage {name}"), h));
        }
        let mut sink_handles = Vec::new();
        for (topic, sink, rx, depth) in sinks {
            let (fail, tick) = (fail.clone(), opts.tick);
            let h = std::thread::Builder::new()
                .name(format!("sink-{topic}"))
                .spawn_scoped(scope, move || {
                    run_sink(topic, sink, (rx, depth), tick, fail)
                })
                .expect("spawn sink thread");
            sink_handles.push((format!("sink {topic}"), h));
        }
        opts.health.beat();
        opts.health.set_ready(true);
        let source_report = run_source(source.as_mut(), &mut source_out, &opts, &fail);
        drop(source_out);
        let stage_reports: Vec<ActorReport> = handles
            .into_iter()
            .map(|(name, h)| joined(&name, h, &fail))
            .collect();
        let sink_reports: Vec<ActorReport> = sink_handles
            .into_iter()
            .map(|(name, h)| joined(&name, h, &fail))
            .collect();
        (stage_reports, sink_reports, source_report)
    });
    opts.health.set_ready(false);
    if let Some(e) = fail.first.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    let stopped = opts.stop.load(Ordering::Relaxed);
    Ok(RunReport {
        elapsed: start.elapsed(),
        source: source_report,
        stages: stage_reports,
        sinks: sink_reports,
        rows: rows.snapshot(),
        outputs: outputs.into_iter().map(|o| o.path).collect(),
        stopped,
    })
}

/// An actor thread's report. Its hooks run inside [`contain`], so a thread that still ended
/// in a panic (in the runner's own code) fails the run like any actor error: its report is
/// empty, never silently so.
fn joined(
    name: &str,
    h: std::thread::ScopedJoinHandle<'_, ActorReport>,
    fail: &Failure,
) -> ActorReport {
    h.join().unwrap_or_else(|payload| {
        fail.record(name, wfe_contract::panic::panicked(name, payload));
        ActorReport {
            name: name.to_string(),
            ..Default::default()
        }
    })
}

fn run_source(
    source: &mut dyn Source,
    out: &mut Fanout,
    opts: &RunOptions,
    fail: &Failure,
) -> ActorReport {
    let mut ctx = Context::with_control("ingest", opts.control.clone());
    let mut report = ActorReport {
        name: "ingest".into(),
        ..Default::default()
    };
    let bar = progress_bar(opts.progress, source);
    let (wall0, mut event0) = (Instant::now(), None::<i64>);
    let latency = metrics::histogram!("wfe_batch_seconds", "stage" => "ingest");
    while !fail.stopping() {
        opts.health.beat();
        let t = Instant::now();
        let next = contain("ingest", || source.next_batch(&mut ctx));
        report.busy += t.elapsed();
        let batch = match next {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                fail.record("ingest", e);
                break;
            }
        };
        latency.record(t.elapsed().as_secs_f64());
        if let Some(speed) = opts.speed {
            pace(&batch, speed, wall0, &mut event0);
        }
        report.batches_in += 1;
        report.rows_in += batch.num_rows() as u64;
        if let Some(bar) = &bar {
            let (done, total) = source.progress();
            bar.set_length(total.unwrap_or(0));
            bar.set_position(done);
            bar.set_message(format!("{} values", report.rows_in));
        }
        // The source batch's number is the seq of everything made from it.
        out.seq = report.batches_in as i64;
        if let Err(e) = out.emit(Topic::MetricsRaw, batch) {
            fail.record("ingest", e);
            break;
        }
        out.progress(out.seq);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.counters = ctx.counters().clone();
    report.gauges = ctx.gauges().clone();
    report.cpu = thread_cpu();
    report
}

fn progress_bar(enabled: bool, source: &dyn Source) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(source.progress().1.unwrap_or(0));
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files, {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(source.describe());
    Some(bar)
}

/// Sleeps so that event time advances `speed` times faster than wall time.
fn pace(batch: &RecordBatch, speed: f64, wall0: Instant, event0: &mut Option<i64>) {
    let Ok(ts) = wfe_contract::columns::timestamps(batch, "event_time") else {
        return;
    };
    let Some(&first) = ts.values().first() else {
        return;
    };
    let e0 = *event0.get_or_insert(first);
    // Saturating: a hostile timestamp (i64 extremes from a remote_write sender) must not
    // overflow; `from_secs_f64` would panic on an infinite wait, so it is capped at a day.
    let secs = (first.saturating_sub(e0).max(0) as f64 / 1000.0) / speed.max(1e-9);
    let due = Duration::from_secs_f64(secs.min(86_400.0));
    if let Some(wait) = due.checked_sub(wall0.elapsed()) {
        std::thread::sleep(wait);
    }
}

fn run_sink(
    topic: Topic,
    mut sink: Box<dyn sink::Sink>,
    (rx, depth): Inbox,
    tick: Option<Duration>,
    fail: Failure,
) -> ActorReport {
    let name = format!("sink {topic}");
    let mut report = ActorReport {
        name: name.clone(),
        ..Default::default()
    };
    let mut failed = false;
    while let Some(msg) = receive(&rx, tick) {
        if msg.is_some() {
            depth.add(-1);
        }
        if failed {
            continue;
        }
        let t = Instant::now();
        let batch = match msg {
            Some(Msg::Data(_, _, batch)) => batch,
            Some(Msg::Progress(..)) => continue,
            None => {
                if let Err(e) = contain(&name, || sink.tick()) {
                    fail.record(&name, e);
                    failed = true;
                }
                continue;
            }
        };
        report.batches_in += 1;
        report.rows_in += batch.num_rows() as u64;
        if let Err(e) = contain(&name, || sink.write(&batch)) {
            fail.record(&name, e);
            failed = true;
        }
        report.busy += t.elapsed();
    }
    let t = Instant::now();
    if let Err(e) = contain(&name, || sink.close()) {
        fail.record(&name, e);
    }
    report.busy += t.elapsed();
    report
}

#[cfg(test)]
mod tests;
