//! `wfe eval anomaly`: the anomaly stage's detector on labelled data, per entity and mean:
//! point-wise figures at the best threshold (which needs the labels) and at the stage's own
//! label-free one (which follows the score's level as the stage does), and the event-level
//! figures of the alerts the stage would raise ([`super::events`]). With `--single-metric`,
//! each metric that experts named in a labelled segment is a workload of its own, labelled
//! where they named it: the figures of the detectors a single-metric workload gets.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use wfe_anomaly::{AnomalyConfig, Clock, Ensemble, Level, segment};
use wfe_contract::{Error, Result};

use super::data::{self, Interpretation, Series};
use super::events::{EventFigures, event_figures};
use super::metrics::{best_f1_and_auprc, best_f1_pa, f1_at, hit_rate};

/// The figures of one entity, or their mean.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnomalyFigures {
    pub best_f1: f64,
    pub label_free_f1: f64,
    pub f1_pa: f64,
    pub auprc: f64,
    pub hit_rate_100: f64,
    pub hit_rate_150: f64,
    /// The alerts at the label-free threshold, event by event.
    pub events: EventFigures,
}

#[derive(Debug, Serialize)]
pub struct AnomalyReport {
    pub data: String,
    pub detector: String,
    /// Single-metric workloads evaluated (`--single-metric`; the entities' rows are the mean
    /// of their metrics', the mean row is over every workload); 0 for whole entities.
    pub single_metric_workloads: usize,
    pub entities: BTreeMap<String, AnomalyFigures>,
    pub mean: AnomalyFigures,
}

/// Smoothed scores and per-metric contributions of the test steps (at `times`).
pub fn score_test(model: &mut Ensemble, test: &[Vec<f64>], times: &[i64]) -> (Vec<f64>, Vec<f64>) {
    let d = model.width;
    let mut flat = Vec::with_capacity(test.len() * d);
    for r in test {
        flat.extend((0..d).map(|j| r.get(j).copied().unwrap_or(f64::NAN)));
    }
    let (mut raw, mut contrib) = (Vec::new(), Vec::new());
    model.score_block(&flat, d, times, &mut raw, &mut contrib);
    let mut prev = None;
    let smoothed = raw
        .iter()
        .map(|&s| {
            let v = model.smooth(prev, s);
            prev = Some(v);
            v
        })
        .collect();
    (smoothed, contrib)
}

/// The label-free threshold of each test step: the fitted one, raised as the workload's
/// score level moves (the stage's rule, [`Level`]), steps at `times`.
pub fn thresholds(
    model: &Ensemble,
    held_out: &[f64],
    scores: &[f64],
    times: &[i64],
    cfg: &AnomalyConfig,
) -> Vec<f64> {
    let mut level = Level::new(held_out);
    scores
        .iter()
        .zip(times)
        .map(|(&s, &t)| {
            level.observe(t, s, cfg.level_window_h);
            model.threshold + level.raise()
        })
        .collect()
}

fn mean_of(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// One workload's figures and its detectors' name: fitted on `s`'s train steps, scored on
/// its test steps against `labels`, its segments' named metrics against the contributions.
fn figures(
    s: &Series,
    labels: &[u8],
    segs: &[Interpretation],
    cfg: &AnomalyConfig,
) -> std::result::Result<(AnomalyFigures, String), String> {
    let n = s.train.len();
    let clock = (n > 0).then(|| Clock {
        end_ms: s.times[n - 1],
        step_ms: s.step_ms,
    });
    let (mut model, held_out) = Ensemble::fit_scored(&s.train, clock, cfg)?;
    let test_times = &s.test_times;
    let (scores, contrib) = score_test(&mut model, &s.test, test_times);
    let limits = thresholds(&model, &held_out, &scores, test_times, cfg);
    let alerts = segment::segments_of(
        &scores,
        &limits,
        test_times,
        cfg.close_after,
        cfg.alert_budget_per_day,
    );
    let (best_f1, auprc) = best_f1_and_auprc(&scores, labels);
    let d = model.width;
    let hr = |p: f64| {
        mean_of(segs.iter().map(|seg| {
            let mut sum = vec![0.0; d];
            for t in seg.start..seg.end {
                for (a, c) in sum.iter_mut().zip(&contrib[t * d..(t + 1) * d]) {
                    *a += c;
                }
            }
            hit_rate(&sum, &s.metrics, &seg.metrics, p)
        }))
    };
    let fig = AnomalyFigures {
        best_f1,
        label_free_f1: f1_at(&scores, labels, &limits),
        f1_pa: best_f1_pa(&scores, labels),
        auprc,
        hit_rate_100: hr(1.0),
        hit_rate_150: hr(1.5),
        events: event_figures(&alerts, labels, s.step_ms),
    };
    Ok((fig, model.name()))
}

/// Metric `j` of `s` alone, labelled where experts named it: the series, its labels and
/// segments; `None` where no segment names it (no positives to score against).
fn metric_alone(
    s: &Series,
    segs: &[Interpretation],
    j: usize,
) -> Option<(Series, Vec<u8>, Vec<Interpretation>)> {
    let name = &s.metrics[j];
    let mine: Vec<Interpretation> = segs
        .iter()
        .filter(|g| g.metrics.contains(name))
        .map(|g| Interpretation {
            start: g.start,
            end: g.end,
            metrics: vec![name.clone()],
        })
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut labels = vec![0u8; s.labels.len()];
    for g in &mine {
        labels[g.start..g.end].fill(1);
    }
    let column = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
        let at = |r: &Vec<f64>| r.get(j).copied().unwrap_or(f64::NAN);
        rows.iter().map(|r| vec![at(r)]).collect()
    };
    let alone = Series {
        metrics: vec![name.clone()],
        train: column(&s.train),
        test: column(&s.test),
        raw_train: Vec::new(),
        raw_test: Vec::new(),
        labels: labels.clone(),
        times: s.times.clone(),
        test_times: s.test_times.clone(),
        step_ms: s.step_ms,
    };
    Some((alone, labels, mine))
}

/// Evaluates every entity of `dir`; with `single_metric`, each of its expert-named metrics
/// alone.
pub fn evaluate(dir: &Path, cfg: &AnomalyConfig, single_metric: bool) -> Result<AnomalyReport> {
    let mut entities = BTreeMap::new();
    let mut detector = String::new();
    let mut workloads = Vec::new();
    for name in data::entities(dir)? {
        let s = data::load(dir, &name)?;
        let segs = data::interpretation(dir, &name, &s.labels)?;
        let fail = |e: String| Error::config(format!("{}/{name}", dir.display()), e);
        let fig = if single_metric {
            let mut per_metric = Vec::new();
            for j in 0..s.metrics.len() {
                let Some((alone, labels, mine)) = metric_alone(&s, &segs, j) else {
                    continue;
                };
                let (fig, d) = figures(&alone, &labels, &mine, cfg).map_err(fail)?;
                detector = d;
                per_metric.push(fig);
            }
            let fig = mean_figures(&per_metric);
            workloads.extend(per_metric);
            fig
        } else {
            let (fig, d) = figures(&s, &s.labels, &segs, cfg).map_err(fail)?;
            detector = d;
            fig
        };
        tracing::info!(
            entity = name,
            best_f1 = fig.best_f1,
            auprc = fig.auprc,
            "evaluated"
        );
        entities.insert(name, fig);
    }
    let mean = if single_metric {
        mean_figures(&workloads)
    } else {
        mean_figures(&entities.values().cloned().collect::<Vec<_>>())
    };
    Ok(AnomalyReport {
        data: dir.display().to_string(),
        detector,
        single_metric_workloads: workloads.len(),
        entities,
        mean,
    })
}

/// The mean of each figure.
fn mean_figures(all: &[AnomalyFigures]) -> AnomalyFigures {
    let f = |g: fn(&AnomalyFigures) -> f64| mean_of(all.iter().map(g));
    AnomalyFigures {
        best_f1: f(|x| x.best_f1),
        label_free_f1: f(|x| x.label_free_f1),
        f1_pa: f(|x| x.f1_pa),
        auprc: f(|x| x.auprc),
        hit_rate_100: f(|x| x.hit_rate_100),
        hit_rate_150: f(|x| x.hit_rate_150),
        events: mean_events(all.iter().map(|x| &x.events)),
    }
}

/// The mean of each event figure over the entities (a median delay: the mean of theirs, over
/// the entities that detected any).
fn mean_events<'a>(all: impl Iterator<Item = &'a EventFigures> + Clone) -> EventFigures {
    let f = |g: fn(&EventFigures) -> f64| mean_of(all.clone().map(g));
    EventFigures {
        segments: f(|e| e.segments),
        detected: f(|e| e.detected),
        event_recall: f(|e| e.event_recall),
        alerts: f(|e| e.alerts),
        alerts_per_day: f(|e| e.alerts_per_day),
        alert_precision: f(|e| e.alert_precision),
        event_f1: f(|e| e.event_f1),
        median_delay_min: f(|e| e.median_delay_min),
    }
}

/// The report as a Markdown table.
pub fn render(r: &AnomalyReport) -> String {
    let single = match r.single_metric_workloads {
        0 => String::new(),
        n => format!(
            "; each metric experts named in a labelled segment alone, labelled where named: {n} workloads, an entity's row the mean of its metrics', the mean row of all {n}"
        ),
    };
    let mut out = format!(
        "anomaly detection on {} (detector {}{single})\n\n| entity | best F1 | label-free F1 | F1 PA | AUPRC | HitRate@100% | HitRate@150% |\n|---|---:|---:|---:|---:|---:|---:|\n",
        r.data, r.detector
    );
    let row = |name: &str, f: &AnomalyFigures| {
        format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            f.best_f1, f.label_free_f1, f.f1_pa, f.auprc, f.hit_rate_100, f.hit_rate_150
        )
    };
    for (name, f) in &r.entities {
        out += &row(name, f);
    }
    out += &row("**mean**", &r.mean);
    out += "\nalerts at the label-free threshold, event-wise (a labelled segment is detected when an alert overlaps it; an alert is true when it overlaps a labelled segment; delay from the segment's first step to the first overlapping alert's)\n\n| entity | segments | detected | event recall | alerts | alerts/day | alert precision | event F1 | median delay min |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let events = |name: &str, e: &EventFigures| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.3} | {:.1} | {:.2} | {:.3} | {:.3} | {:.1} |\n",
            e.segments,
            e.detected,
            e.event_recall,
            e.alerts,
            e.alerts_per_day,
            e.alert_precision,
            e.event_f1,
            e.median_delay_min
        )
    };
    for (name, f) in &r.entities {
        out += &events(name, &f.events);
    }
    out += &events("**mean**", &r.mean.events);
    out
}
