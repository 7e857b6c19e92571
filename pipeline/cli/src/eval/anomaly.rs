//! `wfe eval anomaly`: the anomaly stage's detector on labelled data, per entity and mean.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use wfe_anomaly::{AnomalyConfig, Ensemble};
use wfe_contract::{Error, Result};

use super::data;
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
        let mut model = Ensemble::fit(&s.train, cfg)
            .map_err(|e| Error::config(format!("{}/{name}", dir.display()), e))?;
        detector = model.name();
        let (scores, contrib) = score_test(&mut model, &s.test);
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
            label_free_f1: f1_at(&scores, &s.labels, model.threshold),
            f1_pa: best_f1_pa(&scores, &s.labels),
            auprc,
            hit_rate_100: hr(1.0),
            hit_rate_150: hr(1.5),
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
    };
    Ok(AnomalyReport {
        data: dir.display().to_string(),
        detector,
        entities,
        mean,
    })
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
    out
}
