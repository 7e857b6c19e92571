//! A stage as an actor: its mailbox, the fan-out it emits through, and its loop.
//!
//! Every message carries the sequence number of the source batch it descends from, and
//! producers follow their data with progress marks ([`wfe_contract::merge`]). The actor puts
//! what arrives through a [`Merge`] of its inputs, so a stage that reads several topics sees
//! them in `(seq, topic)` order whatever the threads' timing: the embedded run decides the
//! same every time, and the same as a fleet of services.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use wfe_contract::merge::{self, END, Merge, Seq};
use wfe_contract::panic::contain;
use wfe_contract::{Collector, Context, Error, RecordBatch, Result, Stage, Topic};

use crate::cpu::thread_cpu;
use crate::report::{ActorReport, Depth, Failure, TopicRows};

/// What travels through a mailbox.
pub(crate) enum Msg {
    /// A batch of `topic`, descending from source batch `seq`.
    Data(Topic, Seq, RecordBatch),
    /// The producer of `topic` has sent everything of seq <= this.
    Progress(Topic, Seq),
}

/// One actor's mailbox, as its producers hold it.
#[derive(Clone)]
pub(crate) struct Mailbox {
    pub tx: SyncSender<Msg>,
    pub depth: Arc<Depth>,
    /// A stage's mailbox (it gets progress marks); a sink's gets data only.
    pub progress: bool,
}

impl Mailbox {
    fn send(&self, msg: Msg) {
        self.depth.add(1);
        // A closed mailbox belongs to an actor that failed; its error is reported.
        if self.tx.send(msg).is_err() {
            self.depth.add(-1);
        }
    }
}

/// A producer's view of the topics it may emit on.
pub(crate) struct Fanout {
    pub stage: String,
    pub routes: Vec<(Topic, Vec<Mailbox>, metrics::Counter)>,
    pub rows: Arc<TopicRows>,
    /// The seq of the input being processed: what emitted batches descend from.
    pub seq: Seq,
    /// The last progress sent.
    pub sent: Seq,
}

impl Fanout {
    /// Tells the consumers of every output that all of seq <= `through` has been sent.
    pub fn progress(&mut self, through: Seq) {
        if through <= self.sent {
            return;
        }
        self.sent = through;
        for (topic, mailboxes, _) in &self.routes {
            for m in mailboxes.iter().filter(|m| m.progress) {
                m.send(Msg::Progress(*topic, through));
            }
        }
    }
}

impl Collector for Fanout {
    fn emit(&mut self, topic: Topic, batch: RecordBatch) -> Result<()> {
        wfe_contract::schemas::check(topic, &batch.schema())?;
        let Some((_, mailboxes, rows_out)) = self.routes.iter().find(|(t, _, _)| *t == topic)
        else {
            return Err(Error::config(
                format!("stages.{}", self.stage),
                format!("emitted on `{topic}`, which it does not declare as an output"),
            ));
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows.add(topic, batch.num_rows() as u64);
        rows_out.increment(batch.num_rows() as u64);
        for m in mailboxes {
            m.send(Msg::Data(topic, self.seq, batch.clone()));
        }
        Ok(())
    }
}

/// An actor's end of its mailbox.
pub(crate) type Inbox = (Receiver<Msg>, Arc<Depth>);

/// Runs one stage until its mailbox closes; then flushes it.
pub(crate) fn run_actor(
    mut stage: Box<dyn Stage>,
    mut ctx: Context,
    (rx, depth): Inbox,
    mut out: Fanout,
    tick: Option<Duration>,
    fail: Failure,
) -> ActorReport {
    let name = stage.name();
    let mut report = ActorReport {
        name: name.to_string(),
        ..Default::default()
    };
    let inputs = merge::ranked(stage.inputs());
    let mut merged: Merge<RecordBatch> = Merge::new(inputs.len());
    let index = |t: Topic| inputs.iter().position(|x| *x == t);
    let latency = metrics::histogram!("wfe_batch_seconds", "stage" => name);
    let mut failed = false;
    let at = format!("stage {name}");
    if let Err(e) = contain(&at, || stage.on_start(&mut ctx)) {
        fail.record(name, e);
        failed = true;
    }
    let process = |stage: &mut Box<dyn Stage>,
                   ctx: &mut Context,
                   out: &mut Fanout,
                   topic: Topic,
                   batch: RecordBatch,
                   report: &mut ActorReport| {
        let t = Instant::now();
        report.batches_in += 1;
        report.rows_in += batch.num_rows() as u64;
        metrics::counter!("wfe_rows_in_total", "stage" => name, "topic" => topic.to_string())
            .increment(batch.num_rows() as u64);
        let r = wfe_contract::schemas::check(topic, &batch.schema())
            .map_err(Error::from)
            .and_then(|_| contain(&at, || stage.process_batch(topic, batch, ctx, out)));
        latency.record(t.elapsed().as_secs_f64());
        report.busy += t.elapsed();
        r
    };
    // Everything the merge releases now, in order.
    let drain = |stage: &mut Box<dyn Stage>,
                 ctx: &mut Context,
                 out: &mut Fanout,
                 merged: &mut Merge<RecordBatch>,
                 report: &mut ActorReport|
     -> Result<()> {
        while let Some((i, seq, batch)) = merged.pop() {
            out.seq = seq;
            ctx.set_seq(Some(seq));
            process(stage, ctx, out, inputs[i], batch, report)?;
        }
        Ok(())
    };
    while let Some(msg) = receive(&rx, tick) {
        if msg.is_some() {
            depth.add(-1);
        }
        if failed {
            continue; // drain, so producers never block on a dead actor
        }
        fail.health.beat();
        let mut result = Ok(());
        match msg {
            Some(Msg::Data(topic, seq, batch)) => match index(topic) {
                Some(i) => merged.push(i, seq, batch),
                None => result = Err(undeclared(name, topic)),
            },
            Some(Msg::Progress(topic, seq)) => {
                if let Some(i) = index(topic) {
                    merged.progress(i, seq);
                }
            }
            None => {
                let t = Instant::now();
                out.seq = merged.through();
                result = contain(&at, || stage.on_tick(&mut ctx, &mut out));
                report.busy += t.elapsed();
            }
        }
        if result.is_ok() {
            result = drain(&mut stage, &mut ctx, &mut out, &mut merged, &mut report);
        }
        if let Err(e) = result {
            tracing::error!(stage = name, "stage failed: {e}");
            fail.record(name, e);
            failed = true;
            continue;
        }
        out.progress(merged.through());
    }
    if !failed {
        // Every producer is done: what is held goes in order, then the stage flushes.
        for i in 0..inputs.len() {
            merged.close(i);
        }
        let result = drain(&mut stage, &mut ctx, &mut out, &mut merged, &mut report);
        let t = Instant::now();
        out.seq = END;
        if let Err(e) = result.and_then(|_| contain(&at, || stage.flush(&mut ctx, &mut out))) {
            fail.record(name, e);
        }
        report.busy += t.elapsed();
    }
    report.counters = ctx.counters().clone();
    report.gauges = ctx.gauges().clone();
    report.cpu = thread_cpu();
    report
}

fn undeclared(stage: &str, topic: Topic) -> Error {
    Error::config(
        format!("stages.{stage}"),
        format!("received `{topic}`, which it does not declare as an input"),
    )
}

/// The next message of a mailbox: `Some(None)` when `tick` passed without one, `None` once
/// every sender is gone.
pub(crate) fn receive<T>(rx: &Receiver<T>, tick: Option<Duration>) -> Option<Option<T>> {
    match tick {
        Some(d) => match rx.recv_timeout(d) {
            Ok(m) => Some(Some(m)),
            Err(RecvTimeoutError::Timeout) => Some(None),
            Err(RecvTimeoutError::Disconnected) => None,
        },
        None => rx.recv().ok().map(Some),
    }
}
