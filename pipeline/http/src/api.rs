//! The latest state of a run, for the HTTP API and the web UI.
//!
//! [`ApiStage`] is a stage like the others (it consumes whichever of `metrics.norm`,
//! `fingerprints`, `anomalies`, `forecasts`, `decisions` and `actions` the run produces, and
//! emits nothing), so it sees exactly what the pipeline made, in order, with the runner's
//! backpressure. It folds the rows into a bounded [`ApiState`] per workload:
//! - actual demand per resource (through the job's `[[resources]]`, as tier-select reads it)
//!   and, per resource and horizon, the forecast quantiles at their target time;
//! - the latest fingerprint, and the neighbours of its last cold-start window;
//! - anomaly segments by id (opened, updated, closed);
//! - decisions with their explanation, actions, and the running cost: each decision's
//!   expected cost per hour held until the next one, integrated over event time.
//!
//! Every series is a ring of the newest [`SERIES_CAP`] points, so a long run holds a bounded
//! window and a chart of the recent past.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use serde::Serialize;
use wfe_contract::{Collector, Context, Result, Stage, Topic};
use wfe_domain::ResourceMap;
use wfe_domain::resources::resource_steps;

mod fold;
use fold::{
    evict, fold_actions, fold_actuals, fold_anomalies, fold_decisions, fold_fingerprints,
    fold_forecasts,
};

/// Points kept per series (actuals per resource; forecasts per resource and horizon).
pub const SERIES_CAP: usize = 2000;
/// Decisions, actions and anomaly segments kept per workload.
pub const EVENTS_CAP: usize = 500;
/// Workloads the API keeps. Past it, those seen longest ago (in event time) are dropped, so
/// the state stays bounded however many workloads come and go; the topics and outputs keep
/// everything.
pub const MAX_WORKLOADS: usize = 10_000;

/// A bounded, oldest-first list.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Ring<T>(VecDeque<T>);

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<T> Ring<T> {
    fn push(&mut self, v: T, cap: usize) {
        if self.0.len() == cap {
            self.0.pop_front();
        }
        self.0.push_back(v);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

/// One forecast at its target time.
#[derive(Debug, Clone, Serialize)]
pub struct ForecastPoint {
    pub target_time: i64,
    pub issued_at: i64,
    pub values: Vec<f64>,
    pub model: String,
}

/// Forecasts of one resource at one horizon.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForecastSeries {
    pub levels: Vec<f64>,
    pub points: Ring<ForecastPoint>,
}

/// A resource of a workload: what it used and what was forecast.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceView {
    pub unit: String,
    /// `[event_time, value]` in `unit`.
    pub actual: Ring<(i64, f64)>,
    /// By horizon in seconds.
    pub forecasts: BTreeMap<i64, ForecastSeries>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FingerprintView {
    pub window_end: i64,
    pub method: String,
    pub model_version: String,
    pub cold_start: bool,
    pub neighbours: Vec<String>,
    pub neighbour_weights: Vec<f32>,
    pub environment: Option<String>,
    pub allocation_metrics: Vec<String>,
    pub allocation: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub segment_id: String,
    pub start: i64,
    /// None while open.
    pub end: Option<i64>,
    pub last_event_time: i64,
    pub peak_score: f64,
    pub threshold: f64,
    pub detector: String,
    pub top_metrics: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub decision_id: String,
    pub decided_at: i64,
    pub tier: String,
    pub instance_type: String,
    pub count: i64,
    pub previous_count: i64,
    /// Of `count`, bought as spot.
    pub spot_count: i64,
    pub expected_cost_per_hour: f64,
    pub risk: f64,
    pub driver_resource: String,
    pub driver_quantile: f64,
    pub driver_horizon_s: i64,
    pub required: f64,
    pub reason: String,
    /// Cost of this workload up to this decision (USD).
    pub cost_to_date: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub action_id: String,
    pub decision_id: String,
    pub event_time: i64,
    pub api_call: String,
    pub mode: String,
    pub outcome: String,
    pub error: Option<String>,
    pub instance_ids: Vec<String>,
}

/// Everything known about one workload.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadView {
    pub resources: BTreeMap<String, ResourceView>,
    pub fingerprint: Option<FingerprintView>,
    /// The last fingerprint made while the workload was cold and had neighbours: whose
    /// history sized it.
    pub cold_start: Option<FingerprintView>,
    pub anomalies: Ring<Segment>,
    pub decisions: Ring<DecisionView>,
    pub actions: Ring<ActionView>,
    /// Running cost (USD) up to `cost_until`.
    pub cost_usd: f64,
    pub cost_until: Option<i64>,
    /// Cost per hour of the decision in force.
    pub cost_per_hour: f64,
    /// Newest event time seen for the workload.
    pub last_event_time: Option<i64>,
}

impl WorkloadView {
    fn seen(&mut self, t: i64) {
        self.last_event_time = Some(self.last_event_time.map_or(t, |l| l.max(t)));
    }

    /// The running cost (USD): the decisions' costs up to the newest event time seen.
    pub fn running_cost(&self) -> f64 {
        match (self.cost_until, self.last_event_time) {
            (Some(since), Some(now)) if now > since => {
                self.cost_usd + self.cost_per_hour * (now - since) as f64 / 3_600_000.0
            }
            _ => self.cost_usd,
        }
    }

    /// Adds the cost of the decision in force up to `t` (event time).
    fn accrue(&mut self, t: i64) {
        if let Some(since) = self.cost_until
            && t > since
        {
            self.cost_usd += self.cost_per_hour * (t - since) as f64 / 3_600_000.0;
            self.cost_until = Some(t);
        }
    }
}

/// The state the API serves, shared between the stage (writer) and the handlers (readers).
#[derive(Debug, Default)]
pub struct ApiState {
    inner: RwLock<State>,
}

#[derive(Debug, Default)]
pub struct State {
    pub workloads: BTreeMap<String, WorkloadView>,
    /// Rows folded in, by topic.
    pub rows: BTreeMap<String, u64>,
    /// Rows that could not be read (a column of the wrong type), by topic.
    pub rejected: BTreeMap<String, u64>,
}

impl State {
    /// The view of `workload` (made on its first row), its newest event time moved to `t`.
    fn seen(&mut self, workload: &str, t: i64) -> &mut WorkloadView {
        let w = self.workloads.entry(workload.to_string()).or_default();
        w.seen(t);
        w
    }
}

impl ApiState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Reads the state (a writer holds it only while folding one batch).
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.inner.write().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }
}

/// The stage that keeps [`ApiState`] up to date.
pub struct ApiStage {
    state: Arc<ApiState>,
    maps: Vec<ResourceMap>,
    inputs: Vec<Topic>,
}

/// The topics the API reads, when produced.
pub const API_TOPICS: [Topic; 6] = [
    Topic::MetricsNorm,
    Topic::Fingerprints,
    Topic::Anomalies,
    Topic::Forecasts,
    Topic::Decisions,
    Topic::Actions,
];

impl ApiStage {
    /// Reads those of [`API_TOPICS`] that are in `produced` (the topics the run's stages emit);
    /// `maps` turn `metrics.norm` into actual demand per resource.
    pub fn new(state: Arc<ApiState>, maps: Vec<ResourceMap>, produced: &[Topic]) -> Self {
        let inputs = API_TOPICS
            .iter()
            .copied()
            .filter(|t| produced.contains(t))
            .collect();
        Self {
            state,
            maps,
            inputs,
        }
    }
}

impl Stage for ApiStage {
    fn name(&self) -> &'static str {
        "api"
    }

    fn inputs(&self) -> Vec<Topic> {
        self.inputs.clone()
    }

    fn outputs(&self) -> Vec<Topic> {
        Vec::new()
    }

    fn process_batch(
        &mut self,
        topic: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        _out: &mut dyn Collector,
    ) -> Result<()> {
        // Resource steps are computed outside the lock: readers never wait on the arithmetic.
        let steps = match topic {
            Topic::MetricsNorm => Some(resource_steps(&self.maps, &batch)),
            _ => None,
        };
        let maps = &self.maps;
        let result = self.state.write(|s| {
            let r = match (topic, steps) {
                (Topic::MetricsNorm, Some(steps)) => steps.map(|st| fold_actuals(s, maps, st)),
                (Topic::Fingerprints, _) => fold_fingerprints(s, &batch),
                (Topic::Anomalies, _) => fold_anomalies(s, &batch),
                (Topic::Forecasts, _) => fold_forecasts(s, &batch),
                (Topic::Decisions, _) => fold_decisions(s, &batch),
                (Topic::Actions, _) => fold_actions(s, &batch),
                _ => Ok(()),
            };
            evict(s, MAX_WORKLOADS);
            let key = topic.to_string();
            match &r {
                Ok(()) => *s.rows.entry(key).or_default() += batch.num_rows() as u64,
                Err(_) => *s.rejected.entry(key).or_default() += batch.num_rows() as u64,
            }
            r
        });
        // The API shows what it can; a batch it cannot read is reported, never fatal.
        if let Err(e) = result {
            ctx.event(wfe_contract::Event::Rejected {
                kind: "api_unreadable",
                location: topic.name(),
                message: &e.to_string(),
                count: batch.num_rows() as u64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
