//! The Kafka commands: `wfe stage` (one stage as a service), `wfe replay` (the job's sources
//! or a recording onto a topic) and `wfe record` (a topic into a file).

use std::path::PathBuf;
use std::sync::Arc;

use wfe_contract::{Error, Result, Topic};
use wfe_kafka::replay::{self, TransferReport};
use wfe_kafka::{ServiceOptions, StageFactory};

use crate::config::JobConfig;

#[derive(clap::Args)]
pub struct StageArgs {
    /// `ingest` (the job's sources onto `metrics.raw`, then exit), a stage after it
    /// (normalise, fingerprint, anomaly, forecast, tier-select, actuate, or contention: with
    /// `[stages.contention]` hosts, one replica reading every partition, since a host's
    /// workloads span partitions), or `api`: the
    /// fleet's API, web UI and (--keda) KEDA scaler over every partition of the topics the
    /// embedded run's API reads (needs --http).
    pub name: String,
    /// Job config (TOML) with a `[kafka]` section; default: the built-in job.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Run with Kafka transactions (exactly-once), whatever `kafka.exactly_once` says.
    #[arg(long)]
    pub exactly_once: bool,
    /// This instance's id within its group (part of its transactional id); default: pid.
    #[arg(long)]
    pub instance: Option<String>,
    /// Brokers, overriding `kafka.bootstrap_servers`.
    #[arg(long)]
    pub bootstrap: Option<String>,
    #[command(flatten)]
    pub http: crate::http::HttpArgs,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A recording made by `wfe record`; without it, the job's sources are replayed.
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Job config (sources and `[kafka]`); default: the built-in job over ../shared/data.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Topic to produce to; default: the recording's own topic, or `metrics.raw` for sources.
    #[arg(long)]
    pub topic: Option<String>,
    /// `max`, or a factor of event time such as `10x`.
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// Do not end a replay of sources with the end-of-stream marker on every partition (the
    /// marker makes stages flush their pending windows, as the embedded run does at the end).
    #[arg(long)]
    pub no_end_of_stream: bool,
    /// Brokers, overriding `kafka.bootstrap_servers`.
    #[arg(long)]
    pub bootstrap: Option<String>,
}

#[derive(clap::Args)]
pub struct RecordArgs {
    /// Topic to record, from its beginning to its end now (the broker's name, prefix included).
    #[arg(long)]
    pub topic: String,
    /// Output file: `.parquet` for Parquet, anything else for an Arrow IPC file.
    #[arg(long)]
    pub out: PathBuf,
    /// Job config with a `[kafka]` section; default: the built-in job.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Brokers, overriding `kafka.bootstrap_servers`.
    #[arg(long)]
    pub bootstrap: Option<String>,
}

fn load(config: Option<&std::path::Path>, bootstrap: Option<String>) -> Result<JobConfig> {
    let mut cfg = JobConfig::load(config)?;
    if let Some(b) = bootstrap {
        cfg.kafka.bootstrap_servers = b;
    }
    Ok(cfg)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))
}

/// Resolves on SIGINT or SIGTERM (how Kubernetes stops a pod).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The stage name of the fleet's API service.
const API: &str = "api";

pub fn stage(args: StageArgs) -> Result<()> {
    let mut cfg = load(args.config.as_deref(), args.bootstrap)?;
    let rt = runtime()?;
    let api = args.name == API;
    if api && args.http.http.is_none() {
        return Err(Error::config(
            "--http",
            "`wfe stage api` serves the API and the UI: give it an address",
        ));
    }
    let http = crate::http::start(&args.http, api.then_some(&cfg))?;
    if args.name == "ingest" {
        let mut source = wfe_ingest::FileSource::open(&cfg.sources, cfg.run.strict)?;
        let speed = cfg.speed()?;
        let r = rt.block_on(replay::replay_source(
            &cfg.kafka,
            &mut source,
            Topic::MetricsRaw,
            speed,
            true,
            "ingest",
        ))?;
        print_transfer("ingest", &cfg.kafka.topic(Topic::MetricsRaw), &r);
        return Ok(());
    }
    let instance = args
        .instance
        .unwrap_or_else(|| std::process::id().to_string());
    let make: StageFactory = match http.as_ref().filter(|_| api) {
        Some(h) => {
            // The API's state lives in memory only: each start reads what the topics retain
            // from their beginning, in a consumer group of its own (a shared group would
            // start where the last instance committed, with nothing of the past to show).
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            cfg.kafka.group_prefix = format!("{}.{instance}-{started}", cfg.kafka.group_prefix);
            h.api_stage_factory(&cfg.resources)
                .ok_or_else(|| Error::config("--http", "the API service keeps no state"))?
        }
        None => {
            cfg.build_stage(&args.name)?;
            let name = args.name.clone();
            let cfg = Arc::new(cfg.clone());
            Box::new(move || cfg.build_stage(&name))
        }
    };
    let exactly_once = !api && (args.exactly_once || cfg.kafka.exactly_once.contains(&args.name));
    let opts = ServiceOptions {
        kafka: cfg.kafka.clone(),
        exactly_once,
        instance,
        health: http.as_ref().map(|h| h.health.clone()).unwrap_or_default(),
        control: http.as_ref().map(|h| h.control.clone()).unwrap_or_default(),
        // The API's state is rebuilt from the topics at every start (above).
        ephemeral: api,
    };
    let report = rt.block_on(wfe_kafka::run_stage(make, opts, shutdown_signal()))?;
    println!(
        "stage {}: {} messages in, {} out, {} dead letters, {} commits",
        args.name, report.messages_in, report.messages_out, report.dead_letters, report.commits
    );
    for (k, v) in &report.counters {
        println!("  {k}: {v}");
    }
    Ok(())
}

pub fn replay(args: ReplayArgs) -> Result<()> {
    let mut cfg = load(args.config.as_deref(), args.bootstrap)?;
    cfg.run.speed = args.speed;
    let speed = cfg.speed()?;
    let rt = runtime()?;
    match args.input {
        Some(path) => {
            let (recorded, batches) = replay::read_recording(&path)?;
            let topic = args.topic.or(recorded).ok_or_else(|| {
                Error::config(
                    "--topic",
                    "the recording does not say its topic: pass --topic",
                )
            })?;
            rt.block_on(wfe_kafka::broker::ensure_topics(
                &cfg.kafka,
                &[(topic.clone(), false)],
            ))?;
            let r = replay::replay_recording(&cfg.kafka, &batches, &topic, speed)?;
            print_transfer("replay", &topic, &r);
        }
        None => {
            let topic = match args.topic.as_deref() {
                None => Topic::MetricsRaw,
                Some(t) => Topic::from_name(t.trim_start_matches(&cfg.kafka.topic_prefix))
                    .filter(|t| *t == Topic::MetricsRaw)
                    .ok_or_else(|| Error::config("--topic", "sources replay onto `metrics.raw`"))?,
            };
            let mut source = wfe_ingest::FileSource::open(&cfg.sources, cfg.run.strict)?;
            let r = rt.block_on(replay::replay_source(
                &cfg.kafka,
                &mut source,
                topic,
                speed,
                !args.no_end_of_stream,
                "replay",
            ))?;
            print_transfer("replay", &cfg.kafka.topic(topic), &r);
        }
    }
    Ok(())
}

pub fn record(args: RecordArgs) -> Result<()> {
    let cfg = load(args.config.as_deref(), args.bootstrap)?;
    let r = replay::record(&cfg.kafka, &args.topic, &args.out)?;
    print_transfer("record", &args.topic, &r);
    Ok(())
}

fn print_transfer(what: &str, topic: &str, r: &TransferReport) {
    println!(
        "{what} {topic}: {} messages, {} rows, {:.1} MB in {:.2} s",
        r.messages,
        r.rows,
        r.bytes as f64 / 1e6,
        r.seconds
    );
}

/// Where a live source's rows go: the options `wfe agent`, `wfe receive` and `wfe capture`
/// share.
#[derive(clap::Args)]
pub struct LiveArgs {
    /// Publish to the `metrics.raw` topic of the config's Kafka instead of running the stages.
    #[arg(long)]
    pub kafka: bool,
    /// Brokers, overriding `kafka.bootstrap_servers` (with --kafka).
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Folder for output files (overrides `outputs.dir`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub http: crate::http::HttpArgs,
}

/// Runs a live source (the agent, the remote_write receiver, a packet capture), which paces
/// itself: onto the `metrics.raw` topic with `--kafka`, else through the job's stages
/// embedded, printing the summary. `name` is the producer's name in Kafka.
pub(crate) fn run_live(
    cfg: &mut JobConfig,
    mut source: Box<dyn wfe_contract::Source>,
    live: &LiveArgs,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    name: &str,
) -> Result<()> {
    if let Some(b) = &live.bootstrap {
        cfg.kafka.bootstrap_servers = b.clone();
    }
    let (kafka, out) = (live.kafka, live.out.as_deref());
    let http = crate::http::start(&live.http, (!kafka).then_some(&*cfg))?;
    if kafka {
        let rt = runtime()?;
        let r = rt.block_on(replay::replay_source(
            &cfg.kafka,
            source.as_mut(),
            Topic::MetricsRaw,
            None,
            false,
            name,
        ))?;
        print_transfer(name, &cfg.kafka.topic(Topic::MetricsRaw), &r);
        return Ok(());
    }
    let outputs = cfg.outputs(out)?;
    if let Some(dir) = outputs.first().and_then(|o| o.path.parent()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    let mut opts = wfe_runtime::RunOptions {
        mailbox: cfg.run.mailbox,
        speed: None,
        tick: Some(std::time::Duration::from_secs(1)),
        progress: false,
        stop,
        ..Default::default()
    };
    let mut stages = cfg.build_stages()?;
    if let Some(h) = &http {
        h.add_api_stage(&mut stages, &cfg.resources);
        h.attach(&mut opts);
    }
    let report = wfe_runtime::run_embedded(source, stages, outputs, opts)?;
    print!("{}", crate::summary::render(&report));
    Ok(())
}
