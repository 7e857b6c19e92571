//! Each topic's rows folded into the API's per-workload state.

use arrow_array::{Array, ArrayRef, RecordBatch};
use wfe_contract::columns::{
    bools, f64s, i64s, list_row_f32, list_row_f64, list_row_str, strings, timestamps,
};
use wfe_contract::{Error, Result};
use wfe_domain::ResourceMap;

use super::view::*;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::bad_input(name.to_string(), "no such column"))
}

fn opt_str(a: &arrow_array::StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

pub(super) fn fold_actuals(
    s: &mut State,
    maps: &[ResourceMap],
    steps: Vec<wfe_domain::resources::ResourceStep>,
) {
    for step in steps {
        let w = s.seen(&step.workload, step.time);
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

pub(super) fn fold_fingerprints(s: &mut State, b: &RecordBatch) -> Result<()> {
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
        let w = s.seen(workload.value(i), view.window_end);
        // Only a cold window with neighbours was sized from them (the first machines of a
        // fleet have none).
        if view.cold_start && !view.neighbours.is_empty() {
            w.cold_start = Some(view.clone());
        }
        w.fingerprint = Some(view);
    }
    Ok(())
}

pub(super) fn fold_anomalies(s: &mut State, b: &RecordBatch) -> Result<()> {
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
        let w = s.seen(workload.value(i), t.value(i));
        let named = list_row_str(top.as_ref(), i)?;
        for m in &named {
            w.metrics.follow(m);
        }
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
                    top_metrics: named,
                },
                EVENTS_CAP,
            ),
        }
    }
    Ok(())
}

pub(super) fn fold_forecasts(s: &mut State, b: &RecordBatch) -> Result<()> {
    let (issued, target) = (timestamps(b, "issued_at")?, timestamps(b, "target_time")?);
    let (workload, resource, unit) = (
        strings(b, "workload")?,
        strings(b, "resource")?,
        strings(b, "unit")?,
    );
    let (horizon, model) = (i64s(b, "horizon_s")?, strings(b, "model")?);
    let (levels, values) = (column(b, "quantile_levels")?, column(b, "quantile_values")?);
    for i in 0..b.num_rows() {
        let w = s.seen(workload.value(i), issued.value(i));
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

pub(super) fn fold_decisions(s: &mut State, b: &RecordBatch) -> Result<()> {
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
        let t = at.value(i);
        let w = s.seen(workload.value(i), t);
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

pub(super) fn fold_actions(s: &mut State, b: &RecordBatch) -> Result<()> {
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
        let w = s.seen(workload.value(i), t.value(i));
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
pub(super) fn evict(s: &mut State, cap: usize) -> usize {
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
