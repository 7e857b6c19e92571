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

use arrow_array::{Array, ArrayRef, RecordBatch};
use serde::Serialize;
use wfe_contract::columns::{
    bools, f64s, i64s, list_row_f32, list_row_f64, list_row_str, strings, timestamps,
};
use wfe_contract::resources::resource_steps;
use wfe_contract::{Collector, Context, Error, ResourceMap, Result, Stage, Topic};

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

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::bad_input(name.to_string(), "no such column"))
}

fn opt_str(a: &arrow_array::StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

fn fold_actuals(
    s: &mut State,
    maps: &[ResourceMap],
    steps: Vec<wfe_contract::resources::ResourceStep>,
) {
    for step in steps {
        let w = s.workloads.entry(step.workload).or_default();
        w.seen(step.time);
        for (m, v) in maps.iter().zip(step.values) {
            if let Some(v) = v {
                let r = w.resources.entry(m.name.clone()).or_default();
                if r.unit.is_empty() {
                    r.unit = m.unit.clone();
                }
                r.actual.push((step.time, v), SERIES_CAP);
            }
        }
    }
}

fn fold_fingerprints(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (end, workload) = (timestamps(b, "window_end")?, strings(b, "workload")?);
    let (method, version) = (strings(b, "method")?, strings(b, "model_version")?);
    let cold = bools(b, "cold_start")?;
    let (nb, nw) = (column(b, "neighbours")?, column(b, "neighbour_weights")?);
    let env = strings(b, "environment")?;
    let (am, al) = (column(b, "allocation_metrics")?, column(b, "allocation")?);
    for i in 0..b.num_rows() {
        let view = FingerprintView {
            window_end: end.value(i),
            method: method.value(i).to_string(),
            model_version: version.value(i).to_string(),
            cold_start: cold.value(i),
            neighbours: list_row_str(nb.as_ref(), i)?,
            neighbour_weights: list_row_f32(nw.as_ref(), i)?,
            environment: opt_str(env, i),
            allocation_metrics: list_row_str(am.as_ref(), i)?,
            allocation: list_row_f64(al.as_ref(), i)?,
        };
        let w = s
            .workloads
            .entry(workload.value(i).to_string())
            .or_default();
        w.seen(view.window_end);
        // Only a cold window with neighbours was sized from them (the first machines of a
        // fleet have none).
        if view.cold_start && !view.neighbours.is_empty() {
            w.cold_start = Some(view.clone());
        }
        w.fingerprint = Some(view);
    }
    Ok(())
}

fn fold_anomalies(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (t, workload, id) = (
        timestamps(b, "event_time")?,
        strings(b, "workload")?,
        strings(b, "segment_id")?,
    );
    let (event, start, end) = (
        strings(b, "event")?,
        timestamps(b, "segment_start")?,
        timestamps(b, "segment_end")?,
    );
    let (score, threshold, detector) = (
        f64s(b, "score")?,
        f64s(b, "threshold")?,
        strings(b, "detector")?,
    );
    let top = column(b, "top_metrics")?;
    for i in 0..b.num_rows() {
        let w = s
            .workloads
            .entry(workload.value(i).to_string())
            .or_default();
        w.seen(t.value(i));
        let seg_end = (!end.is_null(i)).then(|| end.value(i));
        let closed = event.value(i) == "closed";
        match w
            .anomalies
            .0
            .iter_mut()
            .rev()
            .find(|g| g.segment_id == id.value(i))
        {
            Some(g) => {
                g.last_event_time = g.last_event_time.max(t.value(i));
                g.peak_score = g.peak_score.max(score.value(i));
                if closed {
                    g.end = seg_end.or(Some(t.value(i)));
                }
            }
            None => w.anomalies.push(
                Segment {
                    segment_id: id.value(i).to_string(),
                    start: start.value(i),
                    end: if closed {
                        seg_end.or(Some(t.value(i)))
                    } else {
                        None
                    },
                    last_event_time: t.value(i),
                    peak_score: score.value(i),
                    threshold: threshold.value(i),
                    detector: detector.value(i).to_string(),
                    top_metrics: list_row_str(top.as_ref(), i)?,
                },
                EVENTS_CAP,
            ),
        }
    }
    Ok(())
}

fn fold_forecasts(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (issued, target) = (timestamps(b, "issued_at")?, timestamps(b, "target_time")?);
    let (workload, resource, unit) = (
        strings(b, "workload")?,
        strings(b, "resource")?,
        strings(b, "unit")?,
    );
    let (horizon, model) = (i64s(b, "horizon_s")?, strings(b, "model")?);
    let (levels, values) = (column(b, "quantile_levels")?, column(b, "quantile_values")?);
    for i in 0..b.num_rows() {
        let w = s
            .workloads
            .entry(workload.value(i).to_string())
            .or_default();
        w.seen(issued.value(i));
        let r = w
            .resources
            .entry(resource.value(i).to_string())
            .or_default();
        if r.unit.is_empty() {
            r.unit = unit.value(i).to_string();
        }
        let series = r.forecasts.entry(horizon.value(i)).or_default();
        let lv = list_row_f64(levels.as_ref(), i)?;
        if series.levels != lv {
            series.levels = lv;
        }
        series.points.push(
            ForecastPoint {
                target_time: target.value(i),
                issued_at: issued.value(i),
                values: list_row_f64(values.as_ref(), i)?,
                model: model.value(i).to_string(),
            },
            SERIES_CAP,
        );
    }
    Ok(())
}

fn fold_decisions(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (id, at, workload) = (
        strings(b, "decision_id")?,
        timestamps(b, "decided_at")?,
        strings(b, "workload")?,
    );
    let (tier, itype, count, prev) = (
        strings(b, "tier")?,
        strings(b, "instance_type")?,
        i64s(b, "count")?,
        i64s(b, "previous_count")?,
    );
    let (cost, risk, dres, dq, dh, req, reason, spot) = (
        f64s(b, "expected_cost_per_hour")?,
        f64s(b, "risk")?,
        strings(b, "driver_resource")?,
        f64s(b, "driver_quantile")?,
        i64s(b, "driver_horizon_s")?,
        f64s(b, "required")?,
        strings(b, "reason")?,
        i64s(b, "spot_count")?,
    );
    for i in 0..b.num_rows() {
        let w = s
            .workloads
            .entry(workload.value(i).to_string())
            .or_default();
        let t = at.value(i);
        w.seen(t);
        w.accrue(t);
        if w.cost_until.is_none() {
            w.cost_until = Some(t);
        }
        let spot_count = if spot.is_null(i) {
            if tier.value(i) == "spot" {
                count.value(i)
            } else {
                0
            }
        } else {
            spot.value(i)
        };
        w.cost_per_hour = cost.value(i);
        let d = DecisionView {
            decision_id: id.value(i).to_string(),
            decided_at: t,
            tier: tier.value(i).to_string(),
            instance_type: itype.value(i).to_string(),
            count: count.value(i),
            previous_count: prev.value(i),
            spot_count,
            expected_cost_per_hour: cost.value(i),
            risk: risk.value(i),
            driver_resource: dres.value(i).to_string(),
            driver_quantile: dq.value(i),
            driver_horizon_s: dh.value(i),
            required: req.value(i),
            reason: reason.value(i).to_string(),
            cost_to_date: w.cost_usd,
        };
        w.decisions.push(d, EVENTS_CAP);
    }
    Ok(())
}

fn fold_actions(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (aid, did, t, workload) = (
        strings(b, "action_id")?,
        strings(b, "decision_id")?,
        timestamps(b, "event_time")?,
        strings(b, "workload")?,
    );
    let (call, mode, outcome, error) = (
        strings(b, "api_call")?,
        strings(b, "mode")?,
        strings(b, "outcome")?,
        strings(b, "error")?,
    );
    let ids = column(b, "instance_ids")?;
    for i in 0..b.num_rows() {
        let w = s
            .workloads
            .entry(workload.value(i).to_string())
            .or_default();
        w.seen(t.value(i));
        w.actions.push(
            ActionView {
                action_id: aid.value(i).to_string(),
                decision_id: did.value(i).to_string(),
                event_time: t.value(i),
                api_call: call.value(i).to_string(),
                mode: mode.value(i).to_string(),
                outcome: outcome.value(i).to_string(),
                error: opt_str(error, i),
                instance_ids: list_row_str(ids.as_ref(), i)?,
            },
            EVENTS_CAP,
        );
    }
    Ok(())
}

/// Drops the workloads seen longest ago until `cap` less 1% remain (a sweep per 1% of new
/// workloads, not per workload); returns how many went.
fn evict(s: &mut State, cap: usize) -> usize {
    if s.workloads.len() <= cap {
        return 0;
    }
    let keep = cap - cap / 100;
    let mut seen: Vec<(i64, String)> = s
        .workloads
        .iter()
        .map(|(k, w)| (w.last_event_time.unwrap_or(i64::MIN), k.clone()))
        .collect();
    seen.sort_unstable();
    let n = s.workloads.len() - keep;
    for (_, k) in seen.into_iter().take(n) {
        s.workloads.remove(&k);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_contract::VecCollector;

    const H: i64 = 3_600_000;

    /// A batch of `topic` from JSON rows (columns left out are null).
    fn rows(topic: Topic, json: &[serde_json::Value]) -> RecordBatch {
        let text: String = json.iter().map(|r| format!("{r}\n")).collect();
        let mut reader = arrow_json::ReaderBuilder::new(topic.schema())
            .build(std::io::Cursor::new(text))
            .unwrap();
        reader.next().unwrap().unwrap()
    }

    fn decision(id: &str, w: &str, t: i64, cost: f64, count: i64, spot: i64) -> serde_json::Value {
        serde_json::json!({
            "decision_id": id, "decided_at": t, "workload": w, "tier": "on-demand",
            "instance_type": "m7i.xlarge", "count": count, "previous_count": 0,
            "expected_cost_per_hour": cost, "risk": 0.01, "driver_resource": "cpu",
            "driver_quantile": 0.9, "driver_horizon_s": 3600, "required": 3.0,
            "considered": "[]", "reason": "test", "spot_count": spot,
        })
    }

    fn fingerprint(w: &str, t: i64, cold: bool, neighbours: &[&str]) -> serde_json::Value {
        let weights: Vec<f32> = neighbours
            .iter()
            .map(|_| 1.0 / neighbours.len() as f32)
            .collect();
        serde_json::json!({
            "window_start": t - H, "window_end": t, "workload": w, "method": "stats-pca",
            "model_version": "v", "vector": [0.1, 0.2], "n_samples": 60, "cold_start": cold,
            "neighbours": neighbours, "neighbour_weights": weights,
        })
    }

    fn feed(stage: &mut ApiStage, topic: Topic, b: RecordBatch) -> Context {
        let mut ctx = Context::new("api");
        stage
            .process_batch(topic, b, &mut ctx, &mut VecCollector::new())
            .unwrap();
        ctx
    }

    #[test]
    fn the_running_cost_integrates_each_decision_until_the_next_event() {
        let state = ApiState::new();
        let mut st = ApiStage::new(state.clone(), vec![], &API_TOPICS);
        // 2 $/h from 0 to 1 h, 4 $/h from 1 h to 3 h, then 1 $/h.
        let d = rows(
            Topic::Decisions,
            &[
                decision("a", "w", 0, 2.0, 2, 1),
                decision("b", "w", H, 4.0, 4, 0),
                decision("c", "w", 3 * H, 1.0, 1, 1),
            ],
        );
        feed(&mut st, Topic::Decisions, d);
        state.read(|s| {
            let w = &s.workloads["w"];
            let to_date: Vec<f64> = w.decisions.iter().map(|d| d.cost_to_date).collect();
            assert_eq!(to_date, [0.0, 2.0, 10.0]);
            assert_eq!(w.running_cost(), 10.0);
            assert_eq!(
                w.decisions.iter().map(|d| d.spot_count).collect::<Vec<_>>(),
                [1, 0, 1]
            );
        });
        // A later event of the workload (a forecast issued at 4 h) runs the clock on.
        let f = rows(
            Topic::Forecasts,
            &[serde_json::json!({
                "issued_at": 4 * H, "target_time": 5 * H, "workload": "w", "resource": "cpu",
                "unit": "vcpu", "horizon_s": 3600, "quantile_levels": [0.1, 0.5, 0.9],
                "quantile_values": [1.0, 2.0, 3.0], "model": "ets", "model_version": "1",
                "validation_metric": "mae",
            })],
        );
        feed(&mut st, Topic::Forecasts, f);
        state.read(|s| {
            let w = &s.workloads["w"];
            assert_eq!(w.running_cost(), 11.0);
            let series = &w.resources["cpu"].forecasts[&3600];
            assert_eq!(series.levels, [0.1, 0.5, 0.9]);
            assert_eq!(series.points.len(), 1);
        });
    }

    #[test]
    fn cold_start_neighbours_segments_and_unreadable_batches() {
        let state = ApiState::new();
        let mut st = ApiStage::new(state.clone(), vec![], &API_TOPICS);
        let fp = rows(
            Topic::Fingerprints,
            &[
                fingerprint("new", H, true, &["a", "b"]),
                fingerprint("new", 2 * H, false, &["a"]),
                fingerprint("first", H, true, &[]),
            ],
        );
        feed(&mut st, Topic::Fingerprints, fp);
        state.read(|s| {
            let new = &s.workloads["new"];
            assert_eq!(new.cold_start.as_ref().unwrap().neighbours, ["a", "b"]);
            assert!(
                !new.fingerprint.as_ref().unwrap().cold_start,
                "the latest is warm"
            );
            assert!(
                s.workloads["first"].cold_start.is_none(),
                "no neighbours: not sized by any"
            );
        });
        let seg = |event: &str, t: i64, end: Option<i64>, score: f64| {
            serde_json::json!({
                "event_time": t, "workload": "new", "segment_id": "s1", "event": event,
                "segment_start": H, "segment_end": end, "score": score, "threshold": 1.0,
                "detector": "pca", "top_metrics": ["m00"], "top_contributions": [1.0],
            })
        };
        let a = rows(
            Topic::Anomalies,
            &[
                seg("opened", H, None, 3.0),
                seg("updated", H + 60_000, None, 5.0),
            ],
        );
        feed(&mut st, Topic::Anomalies, a);
        state.read(|s| {
            let g = s.workloads["new"].anomalies.iter().next().unwrap();
            assert_eq!((g.end, g.peak_score), (None, 5.0));
        });
        let a = rows(
            Topic::Anomalies,
            &[seg("closed", H + 120_000, Some(H + 120_000), 5.0)],
        );
        feed(&mut st, Topic::Anomalies, a);
        state.read(|s| {
            let w = &s.workloads["new"];
            assert_eq!(w.anomalies.len(), 1, "one segment, updated in place");
            assert_eq!(w.anomalies.iter().next().unwrap().end, Some(H + 120_000));
        });
        // A batch of another topic's shape on `decisions`: reported, counted, nothing lost.
        let wrong = rows(Topic::Anomalies, &[seg("opened", H, None, 1.0)]);
        let ctx = feed(&mut st, Topic::Decisions, wrong);
        assert_eq!(ctx.counters()["rejected.api_unreadable"], 1);
        state.read(|s| {
            assert_eq!(s.rejected["decisions"], 1);
            assert_eq!(s.workloads["new"].anomalies.len(), 1);
        });
    }

    #[test]
    fn the_workloads_kept_are_bounded_and_the_newest_stay() {
        let mut s = State::default();
        for i in 0..1_050i64 {
            let w = s.workloads.entry(format!("w{i}")).or_default();
            w.seen(i * 60_000);
        }
        assert_eq!(evict(&mut s, 1_000), 60);
        assert_eq!(s.workloads.len(), 990);
        assert!(s.workloads.contains_key("w1049"));
        assert!(!s.workloads.contains_key("w59"));
        assert!(s.workloads.contains_key("w60"));
        assert_eq!(evict(&mut s, 1_000), 0);
    }
}
