//! `wfe eval fingerprint`: do fingerprints find workloads that run the same services, and how
//! well does cold start size a workload it has seen for one learning period?
//!
//! - **Group accuracy** (leave one out): the fingerprint stage runs over every entity; each
//!   entity's nearest other profile must share its service group (the name up to its last
//!   `-`: SMD's `machine-1-*` run the same services), over each entity's `train` history.
//! - **Cold start**: for each entity, a fresh stage sees all the others, then the hidden
//!   entity's first steps; its first (cold) row's borrowed allocation is compared with the
//!   allocation it really used over its whole history (mean absolute error per metric, in the
//!   data's units). The same error of the plain fleet mean is printed beside it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use wfe_contract::{Context, RecordBatch, Result, Stage, Topic, VecCollector};
use wfe_fingerprint::{Distance, Fingerprint, FingerprintConfig};

use super::data;

#[derive(Debug, Clone, Default, Serialize)]
pub struct EntityFigures {
    pub group: String,
    pub nearest: String,
    pub correct: bool,
    pub cold_start_neighbours: Vec<String>,
    pub cold_start_error: f64,
    pub fleet_mean_error: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MeanFigures {
    pub group_accuracy: f64,
    pub correct: usize,
    pub entities: usize,
    pub cold_start_error: f64,
    pub fleet_mean_error: f64,
}

#[derive(Debug, Serialize)]
pub struct FingerprintReport {
    pub data: String,
    pub entities: BTreeMap<String, EntityFigures>,
    pub mean: MeanFigures,
}

fn group_of(name: &str) -> String {
    name.rsplit_once('-')
        .map(|(g, _)| g.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// An entity's `train` steps: its history, free of the labelled anomalies of `test`.
fn history(dir: &Path, entity: &str) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for b in data::normalised(dir, entity)? {
        let labels = b
            .column_by_name("labels")
            .and_then(|c| arrow_cast::cast(c, &arrow_schema::DataType::Utf8).ok());
        let keep: arrow_array::BooleanArray = match &labels {
            Some(l) => {
                use arrow_array::Array;
                let l = arrow_array::cast::AsArray::as_string::<i32>(l.as_ref());
                (0..l.len())
                    .map(|i| {
                        Some(
                            l.is_null(i)
                                || wfe_contract::schemas::labels::get(l.value(i), "split")
                                    != Some("test"),
                        )
                    })
                    .collect()
            }
            None => continue,
        };
        let f = arrow_select::filter::filter_record_batch(&b, &keep)?;
        if f.num_rows() > 0 {
            out.push(f);
        }
    }
    Ok(out)
}

fn feed(stage: &mut Fingerprint, batches: &[RecordBatch], out: &mut VecCollector) -> Result<()> {
    let mut ctx = Context::new("fingerprint");
    for b in batches {
        stage.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, out)?;
    }
    Ok(())
}

pub fn evaluate(dir: &Path, cfg: &FingerprintConfig) -> Result<FingerprintReport> {
    let names = data::entities(dir)?;
    // Each entity is read and normalised once; the runs below share its batches.
    let histories: Vec<Vec<RecordBatch>> = names
        .iter()
        .map(|n| history(dir, n))
        .collect::<Result<_>>()?;
    // Everything, once: profiles for group accuracy and each entity's real allocation.
    let mut all = Fingerprint::new(cfg.clone())?;
    let mut sink = VecCollector::new();
    for h in &histories {
        feed(&mut all, h, &mut sink)?;
    }
    all.flush(&mut Context::new("fingerprint"), &mut sink)?;
    let profiles = all.profiles();
    let mut entities = BTreeMap::new();
    for n in &names {
        let Some(me) = profiles.iter().find(|p| &p.0 == n) else {
            continue;
        };
        let nearest = profiles
            .iter()
            .filter(|p| &p.0 != n && p.1 == me.1)
            .map(|p| (Distance::Cosine.between(&me.2, &p.2), &p.0))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, name)| name.clone())
            .unwrap_or_default();
        entities.insert(
            n.clone(),
            EntityFigures {
                group: group_of(n),
                correct: group_of(&nearest) == group_of(n),
                nearest,
                ..Default::default()
            },
        );
    }
    // Cold start, one hidden entity at a time.
    for (k, n) in names.iter().enumerate() {
        let Some(real) = all.allocation(n) else {
            continue;
        };
        let mut stage = Fingerprint::new(cfg.clone())?;
        let mut sink = VecCollector::new();
        for (_, h) in histories.iter().enumerate().filter(|(i, _)| *i != k) {
            feed(&mut stage, h, &mut sink)?;
        }
        let fleet: Vec<Vec<f64>> = names
            .iter()
            .filter(|o| *o != n)
            .filter_map(|o| stage.allocation(o))
            .filter(|a| a.0 == real.0)
            .map(|a| a.1)
            .collect();
        let mut hidden = VecCollector::new();
        // Its first steps: one ingest chunk of its history holds the first learning period.
        feed(
            &mut stage,
            &histories[k][..histories[k].len().min(1)],
            &mut hidden,
        )?;
        let Some((neighbours, predicted)) = first_cold_allocation(&hidden, n) else {
            continue;
        };
        let mae = |p: &[f64]| {
            p.iter()
                .zip(&real.1)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / real.1.len().max(1) as f64
        };
        let fleet_mean: Vec<f64> = (0..real.1.len())
            .map(|j| fleet.iter().map(|a| a[j]).sum::<f64>() / fleet.len().max(1) as f64)
            .collect();
        if let Some(e) = entities.get_mut(n) {
            e.cold_start_neighbours = neighbours;
            e.cold_start_error = mae(&predicted);
            e.fleet_mean_error = mae(&fleet_mean);
        }
        tracing::info!(entity = n.as_str(), "cold start evaluated");
    }
    let k = entities.len();
    let correct = entities.values().filter(|e| e.correct).count();
    let avg =
        |f: fn(&EntityFigures) -> f64| entities.values().map(f).sum::<f64>() / k.max(1) as f64;
    let mean = MeanFigures {
        group_accuracy: correct as f64 / k.max(1) as f64,
        correct,
        entities: k,
        cold_start_error: avg(|e| e.cold_start_error),
        fleet_mean_error: avg(|e| e.fleet_mean_error),
    };
    Ok(FingerprintReport {
        data: dir.display().to_string(),
        entities,
        mean,
    })
}

/// The neighbours and borrowed allocation of `workload`'s first cold row.
fn first_cold_allocation(out: &VecCollector, workload: &str) -> Option<(Vec<String>, Vec<f64>)> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    for b in out.of(Topic::Fingerprints) {
        let w = wfe_contract::columns::strings(&b, "workload").ok()?;
        let cold = wfe_contract::columns::bools(&b, "cold_start").ok()?;
        let nb = b.column_by_name("neighbours")?.as_list::<i32>().clone();
        let al = b.column_by_name("allocation")?.as_list::<i32>().clone();
        for r in 0..b.num_rows() {
            if w.value(r) == workload && cold.value(r) && !al.is_null(r) {
                let names = nb.value(r);
                let names = names.as_string::<i32>();
                let alloc = al.value(r);
                let alloc = alloc.as_primitive::<arrow_array::types::Float64Type>();
                return Some((
                    (0..names.len())
                        .map(|i| names.value(i).to_string())
                        .collect(),
                    alloc.values().to_vec(),
                ));
            }
        }
    }
    None
}

pub fn render(r: &FingerprintReport) -> String {
    let mut out = format!(
        "fingerprints on {}\n\n| entity | group | nearest | same group | cold-start neighbours | cold-start error | fleet-mean error |\n|---|---|---|---|---|---:|---:|\n",
        r.data
    );
    for (n, e) in &r.entities {
        out += &format!(
            "| {n} | {} | {} | {} | {} | {:.4} | {:.4} |\n",
            e.group,
            e.nearest,
            if e.correct { "yes" } else { "no" },
            e.cold_start_neighbours.join(" "),
            e.cold_start_error,
            e.fleet_mean_error
        );
    }
    out += &format!(
        "| **mean** | | | {}/{} ({:.3}) | | {:.4} | {:.4} |\n",
        r.mean.correct,
        r.mean.entities,
        r.mean.group_accuracy,
        r.mean.cold_start_error,
        r.mean.fleet_mean_error
    );
    out
}
