//! `wfe bench`: the embedded pipeline's throughput, per-stage time and peak memory, with the
//! Python reference implementation timed in the same invocation so the two can be compared
//! as a ratio measured together.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wfe_contract::{Error, Result, Topic};
use wfe_runtime::{RunOptions, RunReport, run_embedded};

use crate::config::JobConfig;

mod fleet;
mod forecast;
mod state;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Job config (TOML); default: the built-in job over ../shared/data.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Runs of the pipeline, and of the peer; the fastest of each is compared.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// The Python reference script to time in the same invocation
    /// (e.g. ../shared/bench/python_peer.py).
    #[arg(long)]
    peer: Option<PathBuf>,
    /// Python interpreter for the peer (one with pandas and scikit-learn).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Instead of the pipeline: time neighbour search, exact against the HNSW index, at these
    /// fleet sizes (comma-separated, e.g. `1000,100000,1000000`).
    #[arg(long, value_delimiter = ',')]
    knn: Vec<usize>,
    /// Instead of the pipeline: forecasts per second of each forecast model on SMD series,
    /// the LSTM at several batch sizes on the CPU and (when libtorch sees one) the GPU, fp32
    /// and mixed precision, beside the arithmetic limit measured in the same run.
    #[arg(long)]
    forecast: bool,
    /// Keep the config's forecast models (by default the pipeline is timed with the two
    /// baseline models the Python peer also runs).
    #[arg(long)]
    all_models: bool,
    /// Instead of the pipeline: what each stage service's changelog writes per commit and
    /// how long a restore takes, with the stage's state copied up to these numbers of
    /// workloads (comma-separated, e.g. `1000,10000`).
    #[arg(long, value_delimiter = ',')]
    state: Vec<usize>,
    /// Instead of the job's data: synthetic fleets of these numbers of workloads (`wfe
    /// synth`, comma-separated, e.g. `100,1000,10000`), each replayed by each of `--jobs` in
    /// a child process of its own; a table per size and job.
    #[arg(long, value_delimiter = ',')]
    fleet: Vec<usize>,
    /// Days of event time of each `--fleet` fleet.
    #[arg(long, default_value_t = 2.0)]
    days: f64,
    /// The jobs `--fleet` runs: `light` (the peer's two baseline models), `default` (the
    /// config's models).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "light")]
    jobs: Vec<fleet::Job>,
    /// Read this file instead of the job's sources (what `--fleet` gives its child runs).
    #[arg(long)]
    source: Option<PathBuf>,
    /// Steps each workload's scaler and anomaly detectors are learned from where the data has
    /// no `split` label (`stages.normalise.learn_steps` and `stages.anomaly.learn_steps`, the
    /// same first steps as by default; `--fleet` gives its child runs one day).
    #[arg(long)]
    learn_steps: Option<usize>,
    /// Print the fastest run's figures as one line of JSON instead of the tables (what
    /// `--fleet` reads from its child runs).
    #[arg(long)]
    json: bool,
    /// LSTM batch sizes for `--forecast` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024,8192,65536")]
    batches: Vec<usize>,
}

/// `wfe bench --knn`: per fleet size, the exact search's and the HNSW index's time per query
/// (and the index's build time and recall@5 against exact), in one run.
fn bench_knn(sizes: &[usize]) -> Result<()> {
    use std::time::Instant;
    use wfe_fingerprint::knn::{Approximate, Distance, exact, synthetic_fleet};
    const DIM: usize = 16;
    const K: usize = 5;
    println!(
        "k = {K} nearest of {DIM}-component fingerprints (cosine; 32 synthetic service groups)\n\n\
         | fingerprints | exact ms/query | HNSW build s | ef | HNSW ms/query | exact / HNSW | recall@{K} |\n\
         |---:|---:|---:|---:|---:|---:|---:|"
    );
    for &n in sizes {
        let fleet = synthetic_fleet(n, DIM, 42);
        let queries: Vec<usize> = (0..200.min(n)).map(|i| i * n / 200.min(n).max(1)).collect();
        let t = Instant::now();
        let truth: Vec<Vec<(usize, f64)>> = queries
            .iter()
            .map(|&q| {
                exact(
                    &fleet[q],
                    fleet
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != q)
                        .map(|(i, v)| (i, v.as_slice())),
                    K,
                    Distance::Cosine,
                )
            })
            .collect();
        let exact_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len().max(1) as f64;
        let t = Instant::now();
        let mut index = Approximate::build(
            fleet.iter().cloned().enumerate().collect(),
            Distance::Cosine,
        );
        let build_s = t.elapsed().as_secs_f64();
        let default_ef = index.ef;
        // The stage's beam (the index's default at this size, `knn::auto_ef`) among others:
        // speed against recall.
        for ef in [16, 32, 64, 128, 256] {
            index.ef = ef;
            let t = Instant::now();
            let found: Vec<Vec<(usize, f64)>> = queries
                .iter()
                .map(|&q| index.search(&fleet[q], K, Some(q)))
                .collect();
            let hnsw_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len().max(1) as f64;
            let hits: usize = truth
                .iter()
                .zip(&found)
                .map(|(t, f)| f.iter().filter(|x| t.iter().any(|y| y.0 == x.0)).count())
                .sum();
            let recall = hits as f64 / (truth.iter().map(Vec::len).sum::<usize>()).max(1) as f64;
            let mark = if ef == default_ef { " (default)" } else { "" };
            println!(
                "| {n} | {exact_ms:.3} | {build_s:.2} | {ef}{mark} | {hnsw_ms:.3} | {:.1} x | {recall:.3} |",
                exact_ms / hnsw_ms.max(1e-9)
            );
        }
    }
    Ok(())
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One run, and the CPU time the whole process spent in it.
fn once(cfg: &JobConfig) -> Result<(RunReport, Duration)> {
    let (_scratch, cfg) = crate::scratch::scratch_models(cfg)?;
    let cpu0 = wfe_runtime::process_cpu();
    let source = wfe_ingest::FileSource::open(&cfg.sources, cfg.run.strict)?;
    let opts = RunOptions {
        mailbox: cfg.run.mailbox,
        progress: false,
        ..Default::default()
    };
    let report = run_embedded(Box::new(source), cfg.build_stages()?, vec![], opts)?;
    Ok((report, wfe_runtime::process_cpu().saturating_sub(cpu0)))
}

/// What the peer printed: values and total seconds.
fn run_peer(python: &str, script: &PathBuf) -> Result<(u64, f64, String)> {
    let out = Command::new(python)
        .arg(script)
        .output()
        .map_err(|e| Error::External {
            service: format!("{python} {}", script.display()),
            message: e.to_string(),
            retryable: false,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(Error::External {
            service: format!("{python} {}", script.display()),
            message: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            retryable: false,
        });
    }
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_end_matches('s').to_string())
    };
    let values = field("values=").and_then(|v| v.parse().ok());
    let total = field("total=").and_then(|v| v.parse().ok());
    match (values, total) {
        (Some(v), Some(t)) => Ok((v, t, text)),
        _ => Err(Error::External {
            service: script.display().to_string(),
            message: format!("no `values=` and `total=` in its output: {text}"),
            retryable: false,
        }),
    }
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.forecast {
        return forecast::bench(&args.batches);
    }
    if !args.knn.is_empty() {
        return bench_knn(&args.knn);
    }
    if !args.fleet.is_empty() {
        return fleet::bench_fleet(&args.fleet, args.days, &args.jobs, args.config.as_deref());
    }
    let mut cfg = JobConfig::load(args.config.as_deref())?;
    if let Some(file) = &args.source {
        cfg.sources = vec![wfe_ingest::SourceConfig::new(file)];
    }
    if let Some(n) = args.learn_steps {
        cfg.stages.normalise.learn_steps = n;
        cfg.stages.anomaly.learn_steps = n;
    }
    if args.all_models {
        eprintln!("forecast models: {:?}", cfg.stages.forecast.models);
    } else {
        // The peer forecasts with the two baselines: so does the pipeline being compared.
        // `--all-models` keeps the config's models; `wfe bench --forecast` times each model.
        cfg.stages.forecast.models = vec![
            wfe_forecast::Model::Persistence,
            wfe_forecast::Model::SeasonalNaive,
        ];
        eprintln!(
            "forecast models: persistence and seasonal naive, as the peer (--all-models for the config's)"
        );
    }
    if !args.state.is_empty() {
        // A forecast series keeps the same history whatever its models (the longest window
        // any model may need): the baselines make the state as large, sooner.
        return state::bench_state(&cfg, &args.state);
    }
    let mut runs = Vec::new();
    for i in 0..args.repeat.max(1) {
        let (r, cpu) = once(&cfg)?;
        eprintln!(
            "run {}: {:.3} s wall, {:.2} s cpu",
            i + 1,
            r.elapsed.as_secs_f64(),
            cpu.as_secs_f64()
        );
        runs.push((r, cpu));
    }
    let peak = peak_rss();
    let (best, cpu) = runs
        .iter()
        .min_by_key(|(r, _)| r.elapsed)
        .cloned()
        .unwrap_or_default();
    let runs: Vec<RunReport> = runs.into_iter().map(|(r, _)| r).collect();
    if args.json {
        let s = fleet::Summary::of(&best, cpu.as_secs_f64(), peak.unwrap_or(0));
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
        return Ok(());
    }
    let values = best.rows.get(&Topic::MetricsRaw).copied().unwrap_or(0);
    let secs = best.elapsed.as_secs_f64();
    let rate = values as f64 / secs.max(1e-9);
    println!(
        "\nwfe bench: embedded pipeline, all stages, no file outputs ({} run(s), fastest shown)",
        runs.len()
    );
    println!(
        "\n{:<28} {:>14} {:>10} {:>16}",
        "", "values", "seconds", "values/s"
    );
    println!(
        "{:<28} {:>14} {:>10.3} {:>14.2} M",
        "wfe embedded",
        values,
        secs,
        rate / 1e6
    );
    let all: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.3}", r.elapsed.as_secs_f64()))
        .collect();
    println!("{:<28} {}", "  all runs (s)", all.join(", "));
    if let Some(script) = &args.peer {
        // The peer runs as often as wfe did and its fastest run is compared, so neither side
        // is measured cold against the other warm.
        let mut peer = Vec::new();
        for _ in 0..args.repeat.max(1) {
            peer.push(run_peer(&args.python, script)?);
        }
        let (pv, pt, text) = peer
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .cloned()
            .unwrap_or_default();
        let prate = pv as f64 / pt.max(1e-9);
        println!(
            "{:<28} {:>14} {:>10.3} {:>14.2} M",
            "python peer (pandas+sklearn)",
            pv,
            pt,
            prate / 1e6
        );
        let all: Vec<String> = peer.iter().map(|p| format!("{:.3}", p.1)).collect();
        println!("{:<28} {}", "  all runs (s)", all.join(", "));
        println!(
            "{:<28} {:>14} {:>10} {:>14.2} x",
            "ratio wfe / peer",
            "",
            "",
            rate / prate
        );
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            println!("  peer: {line}");
        }
    }
    println!(
        "\nper actor, fastest run ({} cores; busy = time inside the stage, including waiting for a full mailbox downstream):",
        cores()
    );
    println!(
        "{:<22} {:>8} {:>8} {:>14}",
        "actor", "cpu s", "busy s", "rows in"
    );
    let actors: Vec<_> = std::iter::once(&best.source).chain(&best.stages).collect();
    for a in &actors {
        println!(
            "{:<22} {:>8.2} {:>8.3} {:>14}",
            a.name,
            a.cpu.as_secs_f64(),
            a.busy.as_secs_f64(),
            a.rows_in
        );
    }
    let others = cpu.saturating_sub(actors.iter().map(|a| a.cpu).sum());
    println!(
        "{:<22} {:>8.2}",
        "file readers + rest",
        others.as_secs_f64()
    );
    println!("{:<22} {:>8.2}", "process total", cpu.as_secs_f64());
    println!(
        "\npeak memory (VmHWM of the process): {:.0} MiB",
        peak.unwrap_or(0) as f64 / (1 << 20) as f64
    );
    println!("\n{:<14} {:>14}", "topic", "rows");
    for t in Topic::ALL {
        println!(
            "{:<14} {:>14}",
            t.name(),
            best.rows.get(&t).copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
