//! What the API keeps per workload: bounded rings of actuals, forecasts, anomaly segments,
//! decisions and actions, and the running cost (the types the handlers serialise).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::metrics::MetricsView;

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
pub struct Ring<T>(pub(super) VecDeque<T>);

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

/// Oldest first, as pushed (a state made elsewhere: a restore, a test).
impl<T> FromIterator<T> for Ring<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<T> Ring<T> {
    pub(super) fn push(&mut self, v: T, cap: usize) {
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
    /// The metrics its anomaly segments named, followed (served on their own route).
    #[serde(skip)]
    pub metrics: MetricsView,
}

impl WorkloadView {
    pub(super) fn seen(&mut self, t: i64) {
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
    pub(super) fn accrue(&mut self, t: i64) {
        if let Some(since) = self.cost_until
            && t > since
        {
            self.cost_usd += self.cost_per_hour * (t - since) as f64 / 3_600_000.0;
            self.cost_until = Some(t);
        }
    }
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
    pub(super) fn seen(&mut self, workload: &str, t: i64) -> &mut WorkloadView {
        let w = self.workloads.entry(workload.to_string()).or_default();
        w.seen(t);
        w
    }
}
