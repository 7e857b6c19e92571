//! Typed internal events that both log and count (after Vector's `internal_events`).
//!
//! A stage never calls `tracing` or a metrics registry for its data-path events directly: it
//! emits an [`Event`] on its [`Context`], which counts it (the runner prints the counters in
//! the summary and exports them as Prometheus metrics) and logs it, rate-limited (10 per kind
//! every 10 s, with the number held back said in the next line logged) so a file of a million
//! bad rows does not drown the log, and a bad sender an hour later is still seen.
//!
//! Every count and measurement also goes to the `metrics` facade, so whatever recorder the
//! binary installed (the Prometheus exporter behind `/metrics`) sees it, labelled by stage:
//! `wfe_rejected_rows_total{stage,kind}`, `wfe_dropped_rows_total`, `wfe_filled_values_total`,
//! `wfe_model_events_total`, other counters as `wfe_stage_events_total{stage,event}` and
//! measurements (a model's running error) as `wfe_stage_measurement{stage,name}`. Without a
//! recorder (tests, libraries) these are no-ops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::Control;

/// Events of one kind logged per stage within one [`LOG_INTERVAL`]; the rest are counted and
/// summed up in one line when the next interval's first event is logged.
const LOG_LIMIT: u64 = 10;
/// The rate limit's interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A fixed-window rate limit for one kind of event: at most `limit` per `interval`, and how
/// many were held back, so the log never goes silent for good and never floods.
#[derive(Debug, Clone)]
struct LogWindow {
    start: Instant,
    logged: u64,
    suppressed: u64,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Log it; `suppressed` events of its kind were held back since the last logged one.
    Log { suppressed: u64 },
    /// Count it only.
    Suppress,
}

impl LogWindow {
    fn new(now: Instant) -> Self {
        Self {
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    fn admit(&mut self, now: Instant, limit: u64, interval: Duration) -> Admit {
        if now.duration_since(self.start) >= interval {
            self.start = now;
            self.logged = 0;
        }
        if self.logged < limit {
            self.logged += 1;
            Admit::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Admit::Suppress
        }
    }
}

/// Something that happened in a stage, worth counting.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// Input rows were skipped: `kind` classifies why (e.g. `non_numeric`, `nan`, `late`),
    /// `location` says where (file:line:column, or workload and time).
    Rejected {
        kind: &'static str,
        location: &'a str,
        message: &'a str,
        count: u64,
    },
    /// Rows were dropped on purpose and need no attention (e.g. exact duplicates).
    Dropped { kind: &'static str, count: u64 },
    /// A value was filled in (e.g. a short gap interpolated).
    Filled { kind: &'static str, count: u64 },
    /// Something happened to a stage's model (`kind`: e.g. `loaded`, `load_failed`,
    /// `retrained`), said in `message`.
    Model {
        kind: &'static str,
        message: &'a str,
    },
}

/// What a stage gets besides its input: its name and its counters.
#[derive(Debug, Clone)]
pub struct Context {
    stage: String,
    counters: BTreeMap<String, u64>,
    /// Latest values of named measurements (e.g. a model's running error).
    gauges: BTreeMap<String, f64>,
    logged: BTreeMap<&'static str, LogWindow>,
    /// Settings changed at run time, shared by the runner's stages and its API.
    control: Arc<Control>,
    /// The seq of the input under way (see [`seq`](Self::seq)).
    seq: Option<i64>,
}

impl Context {
    pub fn new(stage: impl Into<String>) -> Self {
        Self::with_control(stage, Arc::new(Control::new()))
    }

    /// A context whose stage reads (and registers) settings in a shared `control`.
    pub fn with_control(stage: impl Into<String>, control: Arc<Control>) -> Self {
        Self {
            stage: stage.into(),
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            logged: BTreeMap::new(),
            control,
            seq: None,
        }
    }

    /// The sequence number ([`crate::merge`]) of the input batch under way when it is the
    /// source's batch it descends from: always in the embedded runner, in a replay over
    /// Kafka; `None` live over Kafka and outside a runner. Batches of one seq are one step
    /// of the source in both runners, however each cut them: what a stage makes visible to
    /// its own later batches by seq rather than by batch is the same everywhere.
    pub fn seq(&self) -> Option<i64> {
        self.seq
    }

    /// Set by the runner before each input batch.
    pub fn set_seq(&mut self, seq: Option<i64>) {
        self.seq = seq;
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The run-time settings this stage may register and read.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Adds `n` to a named counter.
    pub fn count(&mut self, name: &str, n: u64) {
        if n > 0 {
            *self.counters.entry(name.to_string()).or_default() += n;
            export_count(&self.stage, name, n);
        }
    }

    /// Sets a named measurement to its latest value.
    pub fn gauge(&mut self, name: &str, value: f64) {
        self.gauges.insert(name.to_string(), value);
        metrics::gauge!("wfe_stage_measurement", "stage" => self.stage.clone(), "name" => name.to_string())
            .set(value);
    }

    pub fn gauges(&self) -> &BTreeMap<String, f64> {
        &self.gauges
    }

    /// Counts and logs an event.
    /// One input left out: [`Event::Rejected`] with a count of one.
    pub fn reject(&mut self, kind: &'static str, location: &str, message: &str) {
        self.event(Event::Rejected {
            kind,
            location,
            message,
            count: 1,
        });
    }

    pub fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Rejected {
                kind,
                location,
                message,
                count,
            } => {
                self.count(&format!("rejected.{kind}"), count);
                match self.admit(kind) {
                    Admit::Log { suppressed: 0 } => {
                        tracing::warn!(stage = %self.stage, kind, location, "rejected: {message}");
                    }
                    Admit::Log { suppressed } => {
                        tracing::warn!(stage = %self.stage, kind, location, suppressed, "rejected: {message} ({suppressed} more `{kind}` events since the last one logged, counted but not logged)");
                    }
                    Admit::Suppress => {}
                }
            }
            Event::Dropped { kind, count } => self.count(&format!("dropped.{kind}"), count),
            Event::Filled { kind, count } => self.count(&format!("filled.{kind}"), count),
            Event::Model { kind, message } => {
                self.count(&format!("model.{kind}"), 1);
                if kind.ends_with("failed") {
                    tracing::warn!(stage = %self.stage, kind, "model: {message}");
                } else {
                    tracing::info!(stage = %self.stage, kind, "model: {message}");
                }
            }
        }
    }

    /// Whether to log an event of `kind` now (at most [`LOG_LIMIT`] per [`LOG_INTERVAL`]).
    fn admit(&mut self, kind: &'static str) -> Admit {
        let now = Instant::now();
        self.logged
            .entry(kind)
            .or_insert_with(|| LogWindow::new(now))
            .admit(now, LOG_LIMIT, LOG_INTERVAL)
    }

    pub fn counters(&self) -> &BTreeMap<String, u64> {
        &self.counters
    }

    /// Sum of all `rejected.*` counters.
    pub fn rejected_total(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with("rejected."))
            .map(|(_, v)| v)
            .sum()
    }
}

/// A counter of the context, as a Prometheus counter: the event families by kind, the rest by
/// name.
fn export_count(stage: &str, name: &str, n: u64) {
    let family = match name.split_once('.') {
        Some(("rejected", kind)) => Some(("wfe_rejected_rows_total", kind)),
        Some(("dropped", kind)) => Some(("wfe_dropped_rows_total", kind)),
        Some(("filled", kind)) => Some(("wfe_filled_values_total", kind)),
        Some(("model", kind)) => Some(("wfe_model_events_total", kind)),
        _ => None,
    };
    match family {
        Some((metric, kind)) => {
            metrics::counter!(metric, "stage" => stage.to_string(), "kind" => kind.to_string())
                .increment(n)
        }
        None => metrics::counter!("wfe_stage_events_total", "stage" => stage.to_string(), "event" => name.to_string())
            .increment(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_by_kind() {
        let mut ctx = Context::new("t");
        for _ in 0..20 {
            ctx.event(Event::Rejected {
                kind: "nan",
                location: "x",
                message: "NaN",
                count: 1,
            });
        }
        ctx.event(Event::Dropped {
            kind: "duplicate",
            count: 3,
        });
        assert_eq!(ctx.counters()["rejected.nan"], 20);
        assert_eq!(ctx.counters()["dropped.duplicate"], 3);
        assert_eq!(ctx.rejected_total(), 20);
    }

    #[test]
    fn logging_is_rate_limited_per_interval_and_says_what_it_held_back() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let mut w = LogWindow::new(t0);
        let first: Vec<Admit> = (0..15).map(|_| w.admit(t0, 3, every)).collect();
        assert_eq!(
            first[..3],
            [
                Admit::Log { suppressed: 0 },
                Admit::Log { suppressed: 0 },
                Admit::Log { suppressed: 0 }
            ]
        );
        assert!(first[3..].iter().all(|a| *a == Admit::Suppress));
        // Still within the interval: held back.
        assert_eq!(
            w.admit(t0 + Duration::from_secs(9), 3, every),
            Admit::Suppress
        );
        // A new interval logs again, saying how many were held back (12 + 1).
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(w.admit(later, 3, every), Admit::Log { suppressed: 13 });
        assert_eq!(w.admit(later, 3, every), Admit::Log { suppressed: 0 });
    }
}
