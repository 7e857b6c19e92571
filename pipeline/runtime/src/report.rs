//! What the runner's actors report and share: each actor's report, rows per topic, mailbox
//! depth, and the failure that stops a run. A leaf module: the runner and its actors both
//! use it, and it uses neither.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wfe_contract::{Error, Health, Topic};

/// What one actor did.
#[derive(Debug, Clone, Default)]
pub struct ActorReport {
    pub name: String,
    /// Time spent inside the stage's own code (parsing, for the source).
    pub busy: Duration,
    pub batches_in: u64,
    pub rows_in: u64,
    /// CPU time of the actor's thread (Linux; zero elsewhere).
    pub cpu: Duration,
    pub counters: BTreeMap<String, u64>,
    /// Latest values of the stage's measurements.
    pub gauges: BTreeMap<String, f64>,
}

#[derive(Default)]
pub(crate) struct TopicRows([AtomicU64; Topic::ALL.len()]);

impl TopicRows {
    pub(crate) fn add(&self, t: Topic, n: u64) {
        self.0[Topic::ALL.iter().position(|x| *x == t).unwrap_or(0)]
            .fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> BTreeMap<Topic, u64> {
        Topic::ALL
            .iter()
            .zip(&self.0)
            .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// How many batches wait in one actor's mailbox, as the gauge `wfe_mailbox_batches{stage}`:
/// the embedded runner's lag.
pub(crate) struct Depth {
    n: AtomicI64,
    gauge: metrics::Gauge,
}

impl Depth {
    pub(crate) fn new(actor: &str) -> Arc<Self> {
        Arc::new(Self {
            n: AtomicI64::new(0),
            gauge: metrics::gauge!("wfe_mailbox_batches", "stage" => actor.to_string()),
        })
    }
    pub(crate) fn add(&self, d: i64) {
        let n = self.n.fetch_add(d, Ordering::Relaxed) + d;
        self.gauge.set(n as f64);
    }
}

/// What an actor does when it fails: stop the run, keep the first error, say unhealthy.
#[derive(Clone)]
pub(crate) struct Failure {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) first: Arc<Mutex<Option<Error>>>,
    pub(crate) health: Arc<Health>,
}

impl Failure {
    pub(crate) fn record(&self, actor: &str, e: Error) {
        metrics::counter!("wfe_stage_errors_total", "stage" => actor.to_string(), "kind" => e.kind())
            .increment(1);
        self.health.fail(&format!("{actor}: {e}"));
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.first.lock()
            && slot.is_none()
        {
            *slot = Some(e);
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
