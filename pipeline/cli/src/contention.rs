//! `wfe contention`: contention between co-located workloads, replayed over a run's outputs.
//! The workloads are placed on hosts of one size, fewer than their peaks need (`--fill`),
//! balanced by mean demand; the placement is then replayed over their observed demand, once
//! as it is and once with the moves planned at each forecast issuance, and the minutes some
//! host's total passed its capacity are counted. The policy is `wfe_kube::contention`; this
//! file reads the store, makes the placement and prints.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use wfe_contract::{Error, Result};
use wfe_domain::resources::resource_steps;
use wfe_kube::contention::issued::issued;
use wfe_kube::contention::plan::Host;
use wfe_kube::contention::replay::{Issued, Outcome, Settings, replay};

use crate::config::JobConfig;
use crate::store;

/// Most hosts a placement is made on (each is planned over at every issuance).
const MAX_HOSTS: usize = 10_000;

#[derive(clap::Args)]
pub struct ContentionArgs {
    /// Job config whose `[[resources]]` turn `metrics.norm` into demand (default: the
    /// built-in job).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A run's outputs: a folder with its `metrics.norm` and `forecasts` files.
    #[arg(long, default_value = "out")]
    store: PathBuf,
    /// The resource hosts are sized in (a `[[resources]]` name).
    #[arg(long, default_value = "cpu")]
    resource: String,
    /// Hosts the workloads are placed on.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Each host's capacity: this share of the workloads' summed peaks, over the hosts
    /// (below 1: fewer hosts than the peaks need).
    #[arg(long, default_value_t = 0.8)]
    fill: f64,
    /// Chance of passing capacity above which a host is contended.
    #[arg(long, default_value_t = 0.05)]
    bound: f64,
    /// Horizons read: those up to this many seconds.
    #[arg(long, default_value_t = 86_400)]
    max_horizon_s: i64,
    /// Print the placement, the capacity and the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    /// Replay the job's own `[stages.contention]`: its hosts, placement, resource, bound,
    /// horizons and history, instead of placing the workloads on `--hosts` (what the
    /// contention stage planned in the run, replayed: its `migrations` are these moves).
    #[arg(long)]
    configured: bool,
}

pub fn contention(mut args: ContentionArgs) -> Result<()> {
    if !(1..=MAX_HOSTS).contains(&args.hosts) {
        return Err(Error::config(
            "--hosts",
            format!("must be 1 to {MAX_HOSTS}"),
        ));
    }
    if !(args.fill > 0.0 && args.fill.is_finite()) {
        return Err(Error::config("--fill", "must be above 0"));
    }
    if !(args.bound > 0.0 && args.bound < 1.0) {
        return Err(Error::config("--bound", "must be in (0, 1)"));
    }
    let job = JobConfig::load(args.config.as_deref())?;
    let c = &job.stages.contention;
    if args.configured {
        if !c.is_configured() {
            return Err(Error::config(
                "--configured",
                "the job's [stages.contention] lists no hosts",
            ));
        }
        args.resource = c.resource.clone();
        args.bound = c.bound;
        args.max_horizon_s = c.max_horizon_s;
    }
    let actual = observed(&job, &args)?;
    let issued = forecasts(&args)?;
    let settings = Settings {
        bound: args.bound,
        max_horizon_s: args.max_horizon_s,
        history_ms: 3 * 86_400_000,
        min_points: 30,
        stale_ms: 300_000,
    };
    let (hosts, placement, settings) = if args.configured {
        let hosts = c.planner_hosts();
        let s = Settings {
            history_ms: c.history_s.saturating_mul(1000),
            min_points: c.min_points,
            ..settings
        };
        (hosts, c.placement.clone(), s)
    } else {
        let (hosts, placement) = place(&actual, args.hosts, args.fill);
        (hosts, placement, settings)
    };
    let out = replay(&hosts, &placement, &actual, &issued, &settings);
    if args.json {
        let v = serde_json::json!({
            "resource": args.resource,
            "capacity": hosts[0].capacity,
            "capacities": hosts.iter().map(|h| h.capacity).collect::<Vec<_>>(),
            "hosts": hosts.iter().map(|h| &h.name).collect::<Vec<_>>(),
            "placement": placement,
            "bound": args.bound,
            "stale_ms": settings.stale_ms,
            "outcome": out,
        });
        println!("{v}");
    } else {
        print!("{}", render(&args, &hosts, &placement, &out));
    }
    Ok(())
}

/// Each workload's observed demand of the resource, in time order.
fn observed(job: &JobConfig, args: &ContentionArgs) -> Result<BTreeMap<String, Vec<(i64, f64)>>> {
    let idx = job
        .resources
        .iter()
        .position(|m| m.name == args.resource)
        .ok_or_else(|| {
            Error::config(
                "--resource",
                format!("`{}` is not one of the job's [[resources]]", args.resource),
            )
        })?;
    let mut actual: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for f in store::topic_files(&args.store, "metrics.norm")? {
        for b in store::read(&f)? {
            for step in resource_steps(&job.resources, &b)? {
                if let Some(v) = step.values[idx].filter(|v| v.is_finite()) {
                    actual
                        .entry(step.workload)
                        .or_default()
                        .push((step.time, v));
                }
            }
        }
    }
    for s in actual.values_mut() {
        s.sort_by_key(|(t, _)| *t);
    }
    if actual.is_empty() {
        return Err(Error::bad_input(
            args.store.display().to_string(),
            format!("no observed `{}` in metrics.norm", args.resource),
        ));
    }
    Ok(actual)
}

/// The resource's forecasts, each row read as a demand, in issuance order.
fn forecasts(args: &ContentionArgs) -> Result<Vec<Issued>> {
    let mut out = Vec::new();
    for f in store::topic_files(&args.store, "forecasts")? {
        for b in store::read(&f)? {
            out.extend(issued(&b, &args.resource)?);
        }
    }
    out.sort_by_key(|i| i.at);
    Ok(out)
}

/// `n` hosts of one size (`fill` x the summed peaks / n), the workloads placed largest mean
/// first on the host with the least mean so far.
fn place(
    actual: &BTreeMap<String, Vec<(i64, f64)>>,
    n: usize,
    fill: f64,
) -> (Vec<Host>, BTreeMap<String, String>) {
    let stat = |s: &[(i64, f64)]| {
        let peak = s.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let mean = s.iter().map(|(_, v)| v).sum::<f64>() / s.len().max(1) as f64;
        (peak, mean)
    };
    let mut by_mean: Vec<(&String, f64, f64)> = actual
        .iter()
        .map(|(w, s)| {
            let (peak, mean) = stat(s);
            (w, peak, mean)
        })
        .collect();
    let capacity = fill * by_mean.iter().map(|x| x.1).sum::<f64>() / n as f64;
    by_mean.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
    let hosts: Vec<Host> = (1..=n)
        .map(|i| Host {
            name: format!("host-{i}"),
            capacity,
            environment: None,
        })
        .collect();
    let mut load = vec![0.0_f64; n];
    let mut placement = BTreeMap::new();
    for (w, _, mean) in by_mean {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        load[i] += mean;
        placement.insert(w.clone(), hosts[i].name.clone());
    }
    (hosts, placement)
}

fn render(
    args: &ContentionArgs,
    hosts: &[Host],
    placement: &BTreeMap<String, String>,
    out: &Outcome,
) -> String {
    let mut o = String::new();
    if args.configured {
        let _ = writeln!(
            o,
            "{} workloads on the job's {} hosts ({} {} in all), bound {}",
            placement.len(),
            hosts.len(),
            hosts.iter().map(|h| h.capacity).sum::<f64>(),
            args.resource,
            args.bound
        );
    } else {
        let _ = writeln!(
            o,
            "{} workloads on {} hosts of {:.2} {} each ({} of their summed peaks), bound {}",
            placement.len(),
            hosts.len(),
            hosts.first().map_or(0.0, |h| h.capacity),
            args.resource,
            args.fill,
            args.bound
        );
    }
    let _ = writeln!(o, "  {:<28} {:>18}", "", "contended minutes");
    let _ = writeln!(
        o,
        "  {:<28} {:>18.1}",
        "placement as it was", out.contended_minutes_static
    );
    let _ = writeln!(
        o,
        "  {:<28} {:>18.1}   moves {}, issuances flagged {}, left over the bound {}",
        "with the planned moves",
        out.contended_minutes_planned,
        out.moves.len(),
        out.flagged,
        out.unresolved
    );
    for (at, m) in &out.moves {
        let _ = writeln!(
            o,
            "  at {at}: {} {} -> {}: {}",
            m.workload, m.from, m.to, m.reason
        );
    }
    o
}
