//! `wfe eval`: the stages' models scored on labelled data (the shared SMD and ASD sets).

pub mod anomaly;
pub mod data;
pub mod events;
pub mod fingerprint;
pub mod forecast;
pub mod metrics;

use std::path::PathBuf;

use wfe_contract::Result;

use crate::config::JobConfig;

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Anomaly detection: best and label-free F1, F1 PA, AUPRC, HitRate@100%/150%, and the
    /// label-free threshold's alerts event by event (detected segments, delay, alerts per day).
    Anomaly(AnomalyArgs),
    /// Fingerprints: leave-one-out service-group accuracy and cold-start allocation error.
    Fingerprint(EvalArgs),
    /// Forecasts: MAE, MASE, pinball loss and interval coverage per model and horizon, and
    /// of the model cross-validation selects.
    Forecast(EvalArgs),
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Folder of labelled entities (`<entity>.csv.gz` with split and label columns, and
    /// `<entity>.interpretation.txt`), e.g. ../shared/data/smd.
    #[arg(long)]
    pub data: PathBuf,
    /// Job config whose stage settings are evaluated; default: the built-in defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct AnomalyArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Each metric that experts named in a labelled segment alone, as a workload of one
    /// series labelled where they named it: the single-metric detectors' figures.
    #[arg(long)]
    pub single_metric: bool,
}

pub fn eval(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Anomaly(AnomalyArgs {
            eval: args,
            single_metric,
        }) => {
            let cfg = JobConfig::load(args.config.as_deref())?;
            let report = anomaly::evaluate(&args.data, &cfg.stages.anomaly, single_metric)?;
            print_report(args.json, &report, anomaly::render);
        }
        EvalCommand::Fingerprint(args) => {
            let cfg = JobConfig::load(args.config.as_deref())?;
            let report = fingerprint::evaluate(&args.data, &cfg.stages.fingerprint)?;
            print_report(args.json, &report, fingerprint::render);
        }
        EvalCommand::Forecast(args) => {
            let cfg = JobConfig::load(args.config.as_deref())?;
            let report = forecast::evaluate(&args.data, &cfg.stages.forecast)?;
            print_report(args.json, &report, forecast::render);
        }
    }
    Ok(())
}

/// One JSON object with `--json`, else the Markdown table.
fn print_report<T: serde::Serialize>(json: bool, report: &T, render: fn(&T) -> String) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", render(report));
    }
}
