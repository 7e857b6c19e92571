//! `wfe recommend`: container sizes from a run's forecasts. Per workload and resource, a
//! VPA-shaped recommendation (lower bound, target, upper bound); with `--kubernetes`, the
//! `kubectl patch` of the workload's Deployment that sets its container's requests to the
//! target and its limits to the upper bound. The policy is `wfe_kube::recommend`; this file
//! reads the store (through the API's fold of `forecasts`) and prints.

use std::fmt::Write;
use std::path::PathBuf;

use wfe_contract::{Context, Error, Result, Stage, Topic, VecCollector};
use wfe_http::{ApiStage, ApiState};
use wfe_kube::recommend::patch::{deployment_patch, object_name, vpa};
use wfe_kube::recommend::{Policy, Recommendation, recommend as size};

use crate::store;

#[derive(clap::Args)]
pub struct RecommendArgs {
    /// A forecasts file (`.parquet`, or `.arrows` as `wfe record` writes), or a folder whose
    /// `forecasts*.parquet` / `forecasts*.arrows` files are all read.
    #[arg(long, default_value = "out")]
    store: PathBuf,
    /// Only this workload.
    #[arg(long)]
    workload: Option<String>,
    /// Quantile level the request covers.
    #[arg(long, default_value_t = 0.9)]
    quantile: f64,
    /// Share added to the request and the limit (0.15: 15 %).
    #[arg(long, default_value_t = 0.15)]
    margin: f64,
    /// Horizons read: those up to this many seconds (how long a size is to hold).
    #[arg(long, default_value_t = 86_400)]
    max_horizon_s: i64,
    /// Print each workload's `kubectl patch` of its Deployment (named after the workload).
    #[arg(long)]
    kubernetes: bool,
    /// The container the patch resizes (default: the workload's name).
    #[arg(long)]
    container: Option<String>,
    /// Print one JSON object per workload: the recommendations, the VPA object, the patch.
    #[arg(long)]
    json: bool,
}

/// One workload's answer.
struct Sized {
    workload: String,
    recs: Vec<Recommendation>,
}

pub fn recommend(args: RecommendArgs) -> Result<()> {
    let policy = Policy {
        quantile: args.quantile,
        margin: args.margin,
        max_horizon_s: args.max_horizon_s,
    };
    policy
        .check()
        .map_err(|(k, why)| Error::config(format!("--{}", k.replace('_', "-")), why))?;
    let sized = read(&args, &policy)?;
    let mut out = String::new();
    for s in &sized {
        let container = args
            .container
            .clone()
            .unwrap_or_else(|| object_name(&s.workload));
        if args.json {
            let v = serde_json::json!({
                "workload": s.workload,
                "deployment": object_name(&s.workload),
                "container": container,
                "recommendations": s.recs,
                "vpa": vpa(&container, &s.recs),
                "patch": deployment_patch(&container, &s.recs),
            });
            let _ = writeln!(out, "{v}");
        } else if args.kubernetes {
            let _ = writeln!(
                out,
                "# {}: requests at q{} + {:.0} %, limits at the highest quantile + {:.0} %\n\
                 kubectl patch deployment {} --type strategic -p '{}'",
                s.workload,
                policy.quantile,
                policy.margin * 100.0,
                policy.margin * 100.0,
                object_name(&s.workload),
                deployment_patch(&container, &s.recs)
            );
        } else {
            table(&mut out, s);
        }
    }
    print!("{out}");
    Ok(())
}

/// The recommendations of every workload in the store (or the one asked for). The API's fold
/// keeps its bound: at most `wfe_http::api::MAX_WORKLOADS` workloads, those seen last.
fn read(args: &RecommendArgs, policy: &Policy) -> Result<Vec<Sized>> {
    let files = store::topic_files(&args.store, "forecasts")?;
    let state = ApiState::new();
    let mut stage = ApiStage::new(state.clone(), Vec::new(), &[Topic::Forecasts]);
    let mut ctx = Context::new("recommend");
    for f in &files {
        for b in store::read(f)? {
            stage.process_batch(Topic::Forecasts, b, &mut ctx, &mut VecCollector::new())?;
        }
    }
    let at = args.store.display().to_string();
    let sized = state.read(|s| {
        if let Some(n) = s.rejected.get(&Topic::Forecasts.to_string()) {
            return Err(Error::bad_input(
                at.clone(),
                format!("{n} forecast rows are not of the forecasts schema"),
            ));
        }
        Ok(s.workloads
            .iter()
            .filter(|(w, _)| args.workload.as_ref().is_none_or(|x| x == *w))
            .map(|(w, view)| Sized {
                workload: w.clone(),
                recs: size(w, view, policy),
            })
            .filter(|s| !s.recs.is_empty())
            .collect::<Vec<_>>())
    })?;
    if sized.is_empty() {
        let whose = args
            .workload
            .as_ref()
            .map_or("any workload".to_string(), |w| format!("workload `{w}`"));
        return Err(Error::bad_input(
            at,
            format!(
                "no usable forecast of {whose} within {} s",
                policy.max_horizon_s
            ),
        ));
    }
    Ok(sized)
}

fn table(out: &mut String, s: &Sized) {
    let _ = writeln!(
        out,
        "{}\n  {:<10} {:<5} {:>10} {:>10} {:>10} {:>10}  issued_at (ms)",
        s.workload, "resource", "unit", "lower", "target", "upper", "horizon_s"
    );
    for r in &s.recs {
        let _ = writeln!(
            out,
            "  {:<10} {:<5} {:>10.3} {:>10.3} {:>10.3} {:>10}  {}",
            r.resource, r.unit, r.lower_bound, r.target, r.upper_bound, r.horizon_s, r.issued_at
        );
    }
}
