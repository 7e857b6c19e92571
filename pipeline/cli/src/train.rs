//! `wfe train`: trains the forecast stage's LSTM (and its gradient-boosted model, when the
//! config's models name `gbm`) on history and writes a new version of each to the model
//! folder (`wfe_forecast::store`, `wfe_forecast::boosted`), which running stages swap to.
//!
//! History is the shared files (read through ingest, as the pipeline reads them; labelled sets
//! give their `split=train` rows only, so `wfe eval forecast` scores unseen steps) or stored
//! `metrics.norm` Parquet (read through DataFusion). Each metric of each workload is one
//! series of raw values, which for a utilisation metric is the fraction of capacity the stage
//! feeds the model. Series are grouped by their step: one model per step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_schema::{DataType, TimeUnit};
use wfe_contract::{Error, Result};
use wfe_forecast::boosted::{self, GbmMeta};
use wfe_forecast::gbm::GbmModel;
use wfe_forecast::lstm::{Cut, train_validated};
use wfe_forecast::models::filled_same_len;
use wfe_forecast::store::{self, LocalDir, ModelMeta, Trained};
use wfe_forecast::{ForecastConfig, Model};
use wfe_neural::DeviceChoice;

use crate::config::JobConfig;
use crate::eval::data;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// History: a folder or file of data files (e.g. ../shared/data/smd), or a `metrics.norm`
    /// Parquet file a run stored (e.g. out/metrics.norm.parquet). Repeat for more.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Model folder; default: `stages.forecast.model_dir` of the config, else `models`.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Where to train: cpu, cuda or auto (default: the config's).
    #[arg(long)]
    pub device: Option<String>,
    /// Job config whose forecast settings (horizons, season, quantiles, LSTM) are used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Series of one step: (step in seconds) -> (series, first and last time in ms, sources).
type Grouped = BTreeMap<u64, (Vec<Vec<f64>>, i64, i64, Vec<String>)>;

pub fn train(args: TrainArgs) -> Result<()> {
    let job = JobConfig::load(args.config.as_deref())?;
    let mut cfg = job.stages.forecast.clone();
    if let Some(d) = &args.device {
        cfg.lstm.model.device = match d.as_str() {
            "cpu" => DeviceChoice::Cpu,
            "cuda" => DeviceChoice::Cuda,
            "auto" => DeviceChoice::Auto,
            other => {
                return Err(Error::config(
                    "--device",
                    format!("`{other}` is not cpu, cuda or auto"),
                ));
            }
        };
    }
    let dir = args
        .model_dir
        .clone()
        .or_else(|| cfg.model_dir.clone())
        .unwrap_or_else(|| PathBuf::from("models"));
    let mut grouped = Grouped::new();
    for path in &args.data {
        if path.extension().is_some_and(|e| e == "parquet") {
            read_parquet(path, &mut grouped)?;
        } else {
            read_files(path, &mut grouped)?;
        }
    }
    if grouped.is_empty() {
        return Err(Error::config("--data", "no series with at least two steps"));
    }
    if !cfg.models.contains(&Model::Lstm) && !cfg.models.contains(&Model::Gbm) {
        return Err(Error::config(
            "stages.forecast.models",
            "names no trained model: add lstm or gbm",
        ));
    }
    if cfg.models.contains(&Model::Lstm) {
        train_lstm(&cfg, &dir, &grouped)?;
    }
    if cfg.models.contains(&Model::Gbm) {
        train_gbm(&cfg, &dir, &grouped)?;
    }
    Ok(())
}

/// The LSTM of each step.
fn train_lstm(cfg: &ForecastConfig, dir: &Path, grouped: &Grouped) -> Result<()> {
    let levels = wfe_forecast::lstm::served_levels(&cfg.quantiles);
    let repo = LocalDir::new(dir);
    println!(
        "| step | version | series | windows | epochs | pinball first -> last | device | seconds | validation MAE (lstm / persistence) |"
    );
    println!("|---:|---:|---:|---:|---:|---|---|---:|---|");
    let mut class_lines = Vec::new();
    for (&step_s, (series, from, to, sources)) in grouped {
        let steps = |sec: u64| (sec / step_s.max(1)).max(1) as usize;
        let cut = Cut::new(
            cfg.lstm.steps,
            steps(cfg.season_s),
            cfg.horizons_s.iter().map(|&h| steps(h)).collect(),
        );
        let (model, report, valid, persist) =
            train_validated(series, cut.clone(), &levels, &cfg.lstm)?;
        let meta = ModelMeta {
            format: store::FORMAT,
            version: 0,
            trained: Trained::now(sources.join(", "), series.len(), (*from, *to), step_s, cfg),
            cut: model.cut.clone(),
            levels: levels.clone(),
            validation_mae: valid.clone(),
            persistence_mae: persist.clone(),
            train: report.clone(),
            classes: model.classes.clone(),
        };
        let version = store::save(&repo, &model, meta)?;
        let scores: Vec<String> = cfg
            .horizons_s
            .iter()
            .zip(valid.iter().zip(&persist))
            .map(|(h, (v, p))| format!("{}: {v:.4} / {p:.4}", wfe_forecast::horizon_label(*h)))
            .collect();
        println!(
            "| {step_s} s | v{version} | {} | {} | {} | {:.4} -> {:.4} | {} | {:.1} | {} |",
            series.len(),
            report.windows,
            report.epochs,
            report.first_loss,
            report.last_loss,
            report.device,
            report.seconds,
            scores.join(", ")
        );
        for c in &model.classes.classes {
            class_lines.push(format!(
                "| {step_s} s | {} | {} | {:.4} / {:.4} | {} | {:.1} |",
                c.id,
                c.members.len(),
                c.global_mae,
                c.variant_mae,
                if c.kept { "kept" } else { "global serves" },
                c.train.seconds
            ));
        }
    }
    if !class_lines.is_empty() {
        println!(
            "\nclasses of similar fingerprints (held-out MAE of the global model / the class's variant):"
        );
        println!("| step | class | series | MAE global / variant | variant | seconds |");
        println!("|---:|---:|---:|---|---|---:|");
        for l in class_lines {
            println!("{l}");
        }
    }
    println!("\nwritten to {}", dir.join(store::KIND).display());
    Ok(())
}

/// The gradient-boosted model of each step, when the config's models name `gbm`.
fn train_gbm(cfg: &ForecastConfig, dir: &Path, grouped: &Grouped) -> Result<()> {
    let repo = LocalDir::of_kind(dir, boosted::KIND);
    println!(
        "\n| step | gbm version | series | rows | kept (loss budget units) | trees | seconds | held-out MAE (gbm / persistence) |"
    );
    println!("|---:|---:|---:|---|---|---|---:|---|");
    for (&step_s, (series, from, to, sources)) in grouped {
        let steps = |sec: u64| (sec / step_s.max(1)).max(1) as usize;
        let horizons: Vec<usize> = cfg.horizons_s.iter().map(|&h| steps(h)).collect();
        let (model, report) = GbmModel::train(series, &horizons, steps(cfg.season_s), &cfg.gbm)?;
        let meta = GbmMeta {
            format: boosted::FORMAT,
            version: 0,
            trained: Trained::now(sources.join(", "), series.len(), (*from, *to), step_s, cfg),
            report: report.clone(),
        };
        let version = boosted::save(&repo, &model, meta)?;
        let scores: Vec<String> = cfg
            .horizons_s
            .iter()
            .zip(report.holdout_mae.iter().zip(&report.persistence_mae))
            .map(|(h, (v, p))| format!("{}: {v:.4} / {p:.4}", wfe_forecast::horizon_label(*h)))
            .collect();
        println!(
            "| {step_s} s | v{version} | {} | {:?} | {} | {:?} | {:.1} | {} |",
            series.len(),
            report.rows,
            report.chosen.join(", "),
            report.trees,
            report.seconds,
            scores.join(", ")
        );
    }
    println!("\nwritten to {}", dir.join(boosted::KIND).display());
    Ok(())
}

fn add(
    grouped: &mut Grouped,
    step_ms: i64,
    series: Vec<Vec<f64>>,
    from: i64,
    to: i64,
    source: String,
) {
    let e = grouped
        .entry((step_ms / 1000).max(1) as u64)
        .or_insert_with(|| (Vec::new(), i64::MAX, i64::MIN, Vec::new()));
    e.0.extend(series);
    e.1 = e.1.min(from);
    e.2 = e.2.max(to);
    if !e.3.contains(&source) {
        e.3.push(source);
    }
}

/// Data files through ingest and normalise; labelled sets give their train split.
fn read_files(path: &Path, grouped: &mut Grouped) -> Result<()> {
    for entity in data::entities(path)? {
        let batches = data::normalised(path, &entity)?;
        let s = data::load_batches(&entity, batches)?;
        let rows = if s.raw_train.len() > 1 {
            &s.raw_train
        } else {
            &s.raw_test
        };
        let step = s
            .times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > 0)
            .min()
            .unwrap_or(0);
        if step <= 0 || rows.len() < 2 {
            continue;
        }
        let series = (0..s.metrics.len())
            .map(|j| {
                filled_same_len(
                    &rows
                        .iter()
                        .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let (from, to) = (s.times[0], s.times[rows.len() - 1]);
        add(grouped, step, series, from, to, path.display().to_string());
    }
    Ok(())
}

/// One series read from a table: its step (ms), times and values.
type Steps = (i64, Vec<i64>, Vec<f64>);

/// A stored `metrics.norm` table through DataFusion: one series per workload and metric.
fn read_parquet(path: &Path, grouped: &mut Grouped) -> Result<()> {
    let catalog = wfe_sql::Catalog::open(&[path.to_path_buf()])?;
    let table = catalog
        .tables()
        .first()
        .map(|t| t.name.clone())
        .ok_or_else(|| Error::config("--data", format!("{} is not a table", path.display())))?;
    let sql = format!(
        "SELECT CAST(workload AS VARCHAR) AS w, CAST(metric AS VARCHAR) AS m, \
         CAST(event_time AS TIMESTAMP(3)) AS t, raw_value AS v, step_ms AS s \
         FROM \"{table}\" ORDER BY w, m, t"
    );
    let batches = catalog.query(&sql).map_err(|e| {
        Error::config(
            format!("--data {}", path.display()),
            format!(
                "not a metrics.norm table (workload, metric, event_time, raw_value, step_ms): {e}"
            ),
        )
    })?;
    // (workload, metric) -> (step, times, values)
    let mut by: BTreeMap<(String, String), Steps> = BTreeMap::new();
    let bad = |e: arrow_schema::ArrowError| {
        Error::config(
            format!("--data {}", path.display()),
            format!("reading its columns: {e}"),
        )
    };
    let as_type = |b: &arrow_array::RecordBatch, i: usize, t: &DataType| {
        arrow_cast::cast(b.column(i), t).map_err(bad)
    };
    for b in &batches {
        let (w, m) = (
            as_type(b, 0, &DataType::Utf8)?,
            as_type(b, 1, &DataType::Utf8)?,
        );
        let t = as_type(b, 2, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let (v, s) = (
            as_type(b, 3, &DataType::Float64)?,
            as_type(b, 4, &DataType::Int64)?,
        );
        let (w, m) = (w.as_string::<i32>(), m.as_string::<i32>());
        let t = t.as_primitive::<TimestampMillisecondType>();
        let (v, s) = (
            v.as_primitive::<Float64Type>(),
            s.as_primitive::<Int64Type>(),
        );
        for r in 0..b.num_rows() {
            if w.is_null(r) || m.is_null(r) || t.is_null(r) || s.is_null(r) {
                continue;
            }
            let e = by
                .entry((w.value(r).to_string(), m.value(r).to_string()))
                .or_default();
            e.0 = s.value(r);
            e.1.push(t.value(r));
            e.2.push(if v.is_null(r) { f64::NAN } else { v.value(r) });
        }
    }
    for (step, times, values) in by.into_values() {
        if values.len() < 2 || step <= 0 {
            continue;
        }
        // Steps absent from the table are gaps: place each value at its step.
        let (first, last) = (times[0], times[times.len() - 1]);
        let n = ((last - first) / step + 1) as usize;
        let mut y = vec![f64::NAN; n];
        for (t, v) in times.iter().zip(values) {
            y[((t - first) / step) as usize] = v;
        }
        add(
            grouped,
            step,
            vec![filled_same_len(&y)],
            first,
            last,
            path.display().to_string(),
        );
    }
    Ok(())
}
