//! `wfe eval anomaly`: the anomaly stage's detector on labelled data, per entity and mean:
//! point-wise figures at the best threshold (which needs the labels) and at the stage's own
//! label-free one (which follows the score's level as the stage does), and the event-level
//! figures of the alerts the stage would raise ([`super::events`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use wfe_anomaly::{AnomalyConfig, Ensemble, Level, segment};
use wfe_contract::{Error, Result};

use super::data;
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
    pub entities: BTreeMap<String, AnomalyFigures>,
    pub mean: AnomalyFigures,
}

/// Smoothed scores and per-metric contributions of the test steps.
pub fn score_test(model: &mut Ensemble, test: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let d = model.width;
    let mut flat = Vec::with_capacity(test.len() * d);
    for r in test {
        flat.extend((0..d).map(|j| r.get(j).copied().unwrap_or(f64::NAN)));
    }
    let (mut raw, mut contrib) = (Vec::new(), Vec::new());
    model.score_block(&flat, d, &mut raw, &mut contrib);
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

/// Evaluates every entity of `dir`.
pub fn evaluate(dir: &Path, cfg: &AnomalyConfig) -> Result<AnomalyReport> {
    let mut entities = BTreeMap::new();
    let mut detector = String::new();
    for name in data::entities(dir)? {
        let s = data::load(dir, &name)?;
        let (mut model, held_out) = Ensemble::fit_scored(&s.train, cfg)
            .map_err(|e| Error::config(format!("{}/{name}", dir.display()), e))?;
        detector = model.name();
        let (scores, contrib) = score_test(&mut model, &s.test);
        let test_times = &s.test_times;
        let limits = thresholds(&model, &held_out, &scores, test_times, cfg);
        let alerts = segment::segments_of(
            &scores,
            &limits,
            test_times,
            cfg.close_after,
            cfg.alert_budget_per_day,
        );
        let (best_f1, auprc) = best_f1_and_auprc(&scores, &s.labels);
        let segs = data::interpretation(dir, &name, &s.labels)?;
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
            label_free_f1: f1_at(&scores, &s.labels, &limits),
            f1_pa: best_f1_pa(&scores, &s.labels),
            auprc,
            hit_rate_100: hr(1.0),
            hit_rate_150: hr(1.5),
            events: event_figures(&alerts, &s.labels, s.step_ms),
        };
        tracing::info!(
            entity = name,
            best_f1 = fig.best_f1,
            auprc = fig.auprc,
            "evaluated"
        );
        entities.insert(name, fig);
    }
    let f = |g: fn(&AnomalyFigures) -> f64| mean_of(entities.values().map(g));
    let mean = AnomalyFigures {
        best_f1: f(|x| x.best_f1),
        label_free_f1: f(|x| x.label_free_f1),
        f1_pa: f(|x| x.f1_pa),
        auprc: f(|x| x.auprc),
        hit_rate_100: f(|x| x.hit_rate_100),
        hit_rate_150: f(|x| x.hit_rate_150),
        events: mean_events(entities.values().map(|x| &x.events)),
    };
    Ok(AnomalyReport {
        data: dir.display().to_string(),
        detector,
        entities,
        mean,
    })
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
    let mut out = format!(
        "anomaly detection on {} (detector {})\n\n| entity | best F1 | label-free F1 | F1 PA | AUPRC | HitRate@100% | HitRate@150% |\n|---|---:|---:|---:|---:|---:|---:|\n",
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
