//! The latest state of a run, for the HTTP API and the web UI.
//!
//! [`ApiStage`] is a stage like the others (it consumes whichever of `metrics.norm`,
//! `fingerprints`, `anomalies`, `forecasts`, `decisions` and `actions` the run produces, and
//! emits nothing), so it sees exactly what the pipeline made, in order, with the runner's
//! backpressure. It folds the rows into a bounded [`ApiState`] per workload:
//! - actual demand per resource (through the job's `[[resources]]`, as tier-select reads it)
//!   and, per resource and horizon, the forecast quantiles at their target time;
//! - the latest fingerprint, and the neighbours of its last cold-start window;
//! - anomaly segments by id (opened, updated, closed), and the series of the metrics they
//!   name ([`metrics`]);
//! - decisions with their explanation, actions, and the running cost: each decision's
//!   expected cost per hour held until the next one, integrated over event time.
//!
//! Every series is a ring of the newest [`SERIES_CAP`] points, so a long run holds a bounded
//! window and a chart of the recent past.

use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use wfe_contract::{Collector, Context, Result, Stage, Topic};
use wfe_domain::ResourceMap;
use wfe_domain::resources::resource_steps;

mod fold;
use fold::{
    evict, fold_actions, fold_actuals, fold_anomalies, fold_decisions, fold_fingerprints,
    fold_forecasts,
};
mod metrics;
pub use metrics::{FOLLOWED_CAP, METRIC_CAP, METRICS_PER_WORKLOAD, MetricsView, PREROLL};
mod view;
pub use view::{
    ActionView, DecisionView, EVENTS_CAP, FingerprintView, ForecastPoint, ForecastSeries,
    MAX_WORKLOADS, ResourceView, Ring, SERIES_CAP, Segment, State, WorkloadView,
};

/// The state the API serves, shared between the stage (writer) and the handlers (readers).
#[derive(Debug, Default)]
pub struct ApiState {
    inner: RwLock<State>,
}

impl ApiState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `state` as it is (made elsewhere: a test, a restore).
    pub fn from_state(state: State) -> Arc<Self> {
        Arc::new(Self {
            inner: RwLock::new(state),
        })
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
                (Topic::MetricsNorm, Some(steps)) => steps
                    .map(|st| fold_actuals(s, maps, st))
                    .and_then(|()| metrics::fold_metric_values(s, &batch)),
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
