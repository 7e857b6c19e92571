//! # wfe: the Workload Fingerprint Engine command line
//!
//! - `wfe run`: the whole pipeline embedded in one process (the default job replays the shared
//!   SMD and ASD sets) and a summary at the end.
//! - `wfe bench`: the same job without file outputs, timed, with per-stage time and peak
//!   memory, optionally beside the Python reference implementation run in the same invocation.
//! - `wfe schemas`: the topic schemas other teams read.
//! - `wfe config`: the documented default config.
//! - `wfe sql "SELECT ..."`: SQL (DataFusion) over the Parquet outputs and recordings.
//! - `wfe similar WORKLOAD`: the nearest workloads in the fingerprint store and the known
//!   environment that suits it best.
//! - `wfe recommend`: container requests and limits from a run's forecasts (VPA-shaped, or
//!   the `kubectl patch` that applies them).
//! - `wfe backtest --data DIR`: what each provisioning policy (wfe, reactive, static, vpa,
//!   oracle) would have cost on the test split, and how often it had too little.
//! - `wfe synth --workloads N`: a synthetic fleet from the shared series, one Parquet file.
//! - `wfe stage NAME`: one stage as a service over Kafka; `wfe replay` and `wfe record` move
//!   the job's sources or recordings onto topics and topics into files.

mod agent;
mod backtest;
mod bench;
mod capture;
mod config;
mod contention;
mod eval;
mod http;
mod parallel;
mod receive;
mod recommend;
mod scratch;
mod services;
mod similar;
mod sql;
mod state;
mod store;
mod summary;
mod synth;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use config::JobConfig;
use wfe_contract::Result;
use wfe_runtime::{RunOptions, run_embedded};

// Batches are large, short-lived buffers: mimalloc reuses their memory where the system
// allocator maps and faults in fresh pages for each one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wfe",
    version,
    about = "Workload Fingerprint Engine: fingerprint, detect, forecast and provision workloads"
)]
struct Cli {
    /// Log format on stderr: `text`, or `json` (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline embedded, in one process, and print a summary.
    Run(RunArgs),
    /// Time the embedded pipeline (no file outputs) and print a table.
    Bench(bench::BenchArgs),
    /// Print the Arrow schema of every topic (Markdown, or JSON with --json).
    Schemas {
        /// Print the schemas as JSON (Arrow's serde form) instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Print the documented default config, or (--check FILE) check a job config: it
    /// parses, and every enabled stage accepts its settings.
    Config {
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
    /// Run one stage as a service over Kafka (`ingest` produces the job's sources and exits).
    Stage(services::StageArgs),
    /// Produce the job's sources (or a recording) onto a topic.
    Replay(services::ReplayArgs),
    /// Record a topic into an Arrow IPC or Parquet file.
    Record(services::RecordArgs),
    /// What each stage service would restore from its state topic, whole and compacted: the
    /// snapshot per input partition, its size and restore time (exit 1 if they differ).
    State(state::StateArgs),
    /// SQL over stored topics: a run's Parquet outputs and recordings, one table per file.
    Sql(sql::SqlArgs),
    /// The nearest workloads to one in the fingerprint store, and which known environment
    /// (`env.*` labels) suits it best.
    Similar(similar::SimilarArgs),
    /// Container sizes (requests, limits) from a run's forecasts, VPA-shaped; with
    /// --kubernetes the `kubectl patch` of each workload's Deployment.
    Recommend(recommend::RecommendArgs),
    /// Co-located workloads replayed on too few hosts: contended minutes with and without
    /// the moves planned from the forecasts.
    Contention(contention::ContentionArgs),
    /// Score the stages' models on labelled data and print the figures.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Train the forecast LSTM on history and write a new model version (running stages with
    /// that `model_dir` swap to it).
    Train(train::TrainArgs),
    /// Sample this machine (/proc, cgroup v2: CPU, memory, disk, network, pressure; per
    /// container) into `metrics.raw`, through the job's stages or onto Kafka (--kafka).
    Agent(agent::AgentArgs),
    /// Receive Prometheus remote_write (snappy protobuf over HTTP) into `metrics.raw`, through
    /// the job's stages or onto Kafka (--kafka).
    Receive(receive::ReceiveArgs),
    /// Packet-header features (sizes, inter-arrival times, protocol mix, TCP flags) per
    /// workload from a pcap file or a live interface, into `metrics.raw`.
    Capture(capture::CaptureArgs),
    /// Replay the test split of labelled data and price every provisioning policy's fleet:
    /// cost, slack, under-provisioned minutes, SLA violations, changes.
    Backtest(backtest::BacktestArgs),
    /// Write a synthetic fleet built from the shared ASD series (time-shifted, scaled,
    /// noised) as one Parquet file in event-time order, for measuring wfe at fleet scale.
    Synth(synth::SynthArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Job config (TOML); default: the built-in job over ../shared/data (see `wfe config`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Stop at the first bad row (file, line and column in the error) instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Replay speed: `max`, or a factor of event time such as `60x`.
    #[arg(long)]
    speed: Option<String>,
    /// Folder for output files (overrides `outputs.dir`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    http: http::HttpArgs,
    /// With --http: after the input is exhausted, keep serving the run's state (API, UI,
    /// metrics) until Ctrl-C (SIGINT; a SIGTERM ends the process at once).
    #[arg(long, requires = "http")]
    hold: bool,
}

/// Keeps freed memory in the process instead of handing it back to the OS after a delay:
/// the pipeline frees and reallocates batch-sized buffers continuously, and every page given
/// back is faulted in and zeroed again when reused (measured: about 10% of a run's CPU).
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2 and v3), which the -sys crate
    // does not name; -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a plain integer option of the allocator this binary uses; no memory is
    // touched, and mimalloc reads its options with atomics.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Loads a job and builds its stages (no input is read, nothing is connected but what a
/// stage's constructor connects: EC2 or SQS in `dry-run`/`apply` mode).
fn check_config(path: &std::path::Path) -> Result<()> {
    let job = JobConfig::load(Some(path))?;
    wfe_sql::Retention::new(&job.retention)?;
    let stages = job.build_stages()?;
    println!(
        "{}: ok ({} stages: {}; {} sources, {} resource maps)",
        path.display(),
        stages.len(),
        stages
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        job.sources.len(),
        job.resources.len()
    );
    Ok(())
}

fn backtest_command(args: backtest::BacktestArgs) -> Result<()> {
    let job = JobConfig::load(args.config.as_deref())?;
    if args.sweep {
        let picture = args.picture.clone().unwrap_or_else(|| {
            let name = args
                .data
                .file_name()
                .map_or("data".into(), |n| n.to_string_lossy());
            format!("{name}-frontier.svg").into()
        });
        let report = backtest::sweep(&args.data, &job, &picture)?;
        if args.json {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        } else {
            print!("{}", backtest::sweep::render(&report));
        }
        return Ok(());
    }
    let policies: Vec<String> = if args.policy.is_empty() {
        backtest::POLICIES.iter().map(|p| p.to_string()).collect()
    } else {
        args.policy.clone()
    };
    let report = backtest::backtest(&args.data, &job, &policies)?;
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", backtest::render(&report));
    }
    Ok(())
}

/// Logs on stderr: text (coloured on a terminal only: services log to files and collectors)
/// or JSON lines with the fields of each event (stage, kind, location, ...). Libraries that
/// log every step at info (hnsw_rs per insertion batch, perpetual per stopped booster: a
/// dozen lines per horizon when gbm trains) are kept to warnings unless RUST_LOG asks.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hnsw_rs=warn,perpetual=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Schemas { json } => {
            if json {
                let all: Vec<_> = wfe_contract::Topic::ALL
                    .iter()
                    .map(|t| t.schema())
                    .collect();
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                print!("{}", wfe_contract::schemas::describe_markdown());
            }
            Ok(())
        }
        Command::Config { check: None } => {
            print!("{}", config::DEFAULT);
            Ok(())
        }
        Command::Config { check: Some(path) } => check_config(&path),
        Command::Stage(args) => services::stage(args),
        Command::Replay(args) => services::replay(args),
        Command::Record(args) => services::record(args),
        Command::State(args) => state::state(args),
        Command::Eval(cmd) => eval::eval(cmd),
        Command::Similar(args) => similar::similar(args),
        Command::Recommend(args) => recommend::recommend(args),
        Command::Contention(args) => contention::contention(args),
        Command::Sql(args) => sql::sql(args),
        Command::Train(args) => train::train(args),
        Command::Backtest(args) => backtest_command(args),
        Command::Synth(args) => synth::synth(args),
        Command::Agent(args) => agent::agent(args, stop_on_ctrl_c()),
        Command::Receive(args) => receive::receive(args, stop_on_ctrl_c()),
        Command::Capture(args) => capture::capture(args, stop_on_ctrl_c()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the returned flag on Ctrl-C, so the run drains and flushes instead of dying.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!(
                    "stopping: draining the stages and flushing outputs (Ctrl-C again to abort)"
                );
                flag.store(true, Ordering::Relaxed);
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            }
        });
    });
    stop
}

fn run(args: RunArgs) -> Result<()> {
    let mut cfg = JobConfig::load(args.config.as_deref())?;
    if let Some(speed) = args.speed {
        cfg.run.speed = speed;
    }
    let strict = args.strict || cfg.run.strict;
    let outputs = cfg.outputs(args.out.as_deref())?;
    if let Some(dir) = outputs.first().and_then(|o| o.path.parent()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| wfe_contract::Error::io(dir.display().to_string(), e))?;
    }
    let source = wfe_ingest::FileSource::open(&cfg.sources, strict)?;
    tracing::info!("reading {}", wfe_contract::Source::describe(&source));
    let http = http::start(&args.http, Some(&cfg))?;
    let mut opts = RunOptions {
        mailbox: cfg.run.mailbox,
        speed: cfg.speed()?,
        // Stages with timers (the actuator's notice queue) are called between batches.
        tick: Some(std::time::Duration::from_secs(1)),
        progress: cfg.run.progress && !args.no_progress,
        stop: stop_on_ctrl_c(),
        ..Default::default()
    };
    let mut stages = cfg.build_stages()?;
    if let Some(h) = &http {
        h.add_api_stage(&mut stages, &cfg.resources);
        h.attach(&mut opts);
    }
    let stop = opts.stop.clone();
    let report = run_embedded(Box::new(source), stages, outputs, opts)?;
    print!("{}", summary::render(&report));
    if let Some(h) = http.as_ref().filter(|_| args.hold) {
        h.hold(&stop);
    }
    Ok(())
}
