//! `wfe similar WORKLOAD`: the nearest workloads to one in the fingerprint store (the
//! `fingerprints` Parquet files a run writes, or a recording of the topic), and which known
//! environment suits it best. The query itself is `wfe_fingerprint::similar`; this file finds
//! and reads the files and prints the answer.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use wfe_contract::{Error, Result};
use wfe_fingerprint::Distance;
use wfe_fingerprint::similar::{Similar, Store};

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
    let files = fingerprint_files(&args.store)?;
    let mut batches = Vec::new();
    for f in &files {
        batches.extend(read(f)?);
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

/// Whether `p` is named like a fingerprint output (a file, or a rolled output's folder).
fn is_fingerprints(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name.starts_with("fingerprints") && (name.ends_with(".parquet") || name.ends_with(".arrows"))
}

/// The store's fingerprint files: the path itself, or the matching files of a folder; a
/// rolled output (a live source's `fingerprints.parquet/` folder) gives its finished parts.
fn fingerprint_files(store: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(store).map_err(|e| Error::io(store.display().to_string(), e))?;
    if !meta.is_dir() {
        return Ok(vec![store.to_path_buf()]);
    }
    if is_fingerprints(store) {
        return wfe_sql::parts(store);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for p in std::fs::read_dir(store)
        .map_err(|e| Error::io(store.display().to_string(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_fingerprints(p))
    {
        if p.is_dir() {
            files.extend(wfe_sql::parts(&p)?);
        } else {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_input(
            store.display().to_string(),
            "no fingerprints*.parquet or fingerprints*.arrows files here: run `wfe run` with \
             `fingerprints` in outputs.parquet, or pass --store",
        ));
    }
    Ok(files)
}

/// All batches of one Parquet or Arrow IPC stream file.
fn read(path: &Path) -> Result<Vec<RecordBatch>> {
    let at = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(at.clone(), e))?;
    let bad = |e: String| Error::bad_input(at.clone(), e);
    if path.extension().is_some_and(|e| e == "parquet") {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| bad(e.to_string()))?
            .map(|b| b.map_err(|e| bad(e.to_string())))
            .collect()
    } else {
        arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| bad(e.to_string()))?
            .map(|b| b.map_err(|e| bad(e.to_string())))
            .collect()
    }
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
