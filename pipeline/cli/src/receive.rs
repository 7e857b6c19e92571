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
    #[command(flatten)]
    pub live: services::LiveArgs,
}

pub fn receive(
    args: ReceiveArgs,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut cfg = JobConfig::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        cfg.remote_write.listen = l;
    }
    cfg.outputs.roll_live();
    let source = RemoteWriteSource::new(cfg.remote_write.clone(), stop.clone(), args.seconds)?;
    // Scripts and tests read the address from here (with port 0, the port chosen).
    eprintln!("listening on http://{}/api/v1/write", source.addr());
    services::run_live(&mut cfg, Box::new(source), &args.live, stop, "receive")
}
