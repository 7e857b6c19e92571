//! `wfe receive`: a Prometheus remote_write receiver as the pipeline's source, through the
//! job's stages embedded (the default) or onto the `metrics.raw` topic (--kafka).

use std::path::PathBuf;

use wfe_contract::Result;
use wfe_http::RemoteWriteSource;

use crate::config::JobConfig;
use crate::services;

#[derive(clap::Args)]
pub struct ReceiveArgs {
    /// Job config (TOML) with a `[remote_write]` section and the `[[resources]]` of the
    /// metrics it will receive; default: the built-in job.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `remote_write.listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<f64>,
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

pub fn receive(
    args: ReceiveArgs,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut cfg = JobConfig::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        cfg.remote_write.listen = l;
    }
    if let Some(b) = args.bootstrap {
        cfg.kafka.bootstrap_servers = b;
    }
    let source = RemoteWriteSource::new(cfg.remote_write.clone(), stop.clone(), args.seconds)?;
    // Scripts and tests read the address from here (with port 0, the port chosen).
    eprintln!("listening on http://{}/api/v1/write", source.addr());
    services::run_live(
        &cfg,
        Box::new(source),
        args.kafka,
        args.out.as_deref(),
        stop,
        "receive",
        &args.http,
    )
}
