//! `wfe similar WORKLOAD`: the nearest workloads to one in the fingerprint store (the
//! `fingerprints` Parquet files a run writes, or a recording of the topic), and which known
//! environment suits it best. The query itself is `wfe_fingerprint::similar`; this file reads
//! the store ([`crate::store`]) and prints the answer.

use std::path::PathBuf;

use wfe_contract::{Error, Result};
use wfe_fingerprint::Distance;
use wfe_fingerprint::similar::{Similar, Store};

use crate::store;

#[derive(clap::Args)]
pub struct SimilarArgs {
    /// The workload to answer for.
    workload: String,
    /// A fingerprints file (`.parquet`, or `.arrows` as `wfe record` writes), or a folder
    /// whose `fingerprints*.parquet` / `fingerprints*.arrows` files are all read.
    #[arg(long, default_value = "out")]
    store: PathBuf,
    /// Neighbours, and voters for the environment.
    #[arg(long, short, default_value_t = 5)]
    k: usize,
    /// `cosine` or `euclidean`.
    #[arg(long, default_value = "cosine")]
    distance: String,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn similar(args: SimilarArgs) -> Result<()> {
    let distance: Distance =
        serde_json::from_value(serde_json::Value::String(args.distance.clone())).map_err(|_| {
            Error::config(
                "--distance",
                format!("`{}` is not cosine or euclidean", args.distance),
            )
        })?;
    if args.k == 0 {
        return Err(Error::config("--k", "must be at least 1"));
    }
    let files = store::topic_files(&args.store, "fingerprints")?;
    let mut batches = Vec::new();
    for f in &files {
        batches.extend(store::read(f)?);
    }
    let store = Store::from_batches(&batches)?;
    let answer = store.similar(&args.workload, args.k, distance)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).map_err(|e| Error::io("stdout", e.into()))?
        );
    } else {
        print!("{}", render(&answer));
    }
    Ok(())
}

fn render(s: &Similar) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let env = s.environment.as_deref().unwrap_or("unknown");
    let _ = writeln!(
        o,
        "{} (model {}, environment {env})\n\nnearest workloads:",
        s.workload, s.model_version
    );
    let _ = writeln!(
        o,
        "  {:<24} {:>9} {:>7}  environment",
        "workload", "distance", "weight"
    );
    for n in &s.neighbours {
        let _ = writeln!(
            o,
            "  {:<24} {:>9.4} {:>7.3}  {}",
            n.workload,
            n.distance,
            n.weight,
            n.environment.as_deref().unwrap_or("-")
        );
    }
    if s.environments.is_empty() {
        let _ = writeln!(o, "\nno neighbour carries an environment (env.* labels)");
        return o;
    }
    let _ = writeln!(o, "\nenvironments, best first:");
    for e in &s.environments {
        let alloc: Vec<String> = e
            .allocation_metrics
            .iter()
            .zip(&e.allocation)
            .take(4)
            .map(|(m, v)| format!("{m}={v:.3}"))
            .collect();
        let _ = writeln!(
            o,
            "  {:>5.3}  {}  (from {}; allocation {}{})",
            e.score,
            e.environment,
            e.workloads.join(", "),
            alloc.join(" "),
            if e.allocation.len() > 4 { " ..." } else { "" }
        );
    }
    o
}
