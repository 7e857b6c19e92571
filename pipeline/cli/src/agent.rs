//! `wfe agent`: this machine's `/proc` and cgroup v2 as `metrics.raw`, either through the
//! job's stages embedded (the default: fingerprints, anomalies, forecasts and decisions of
//! the host and its containers) or onto the `metrics.raw` topic for a fleet of stage services.

use std::path::PathBuf;

use wfe_contract::Result;
use wfe_ingest::AgentSource;

use crate::config::JobConfig;
use crate::services;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Job config (TOML) with an `[agent]` section; default: the built-in agent job
    /// (`pipeline/cli/agent.toml`: every 10 s, outputs in out/agent).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seconds between samples (overrides `agent.interval_s`).
    #[arg(long)]
    pub interval: Option<f64>,
    /// Samples to take, then stop (overrides `agent.samples`); default: until Ctrl-C.
    #[arg(long)]
    pub samples: Option<u64>,
    #[command(flatten)]
    pub live: services::LiveArgs,
}

pub fn agent(args: AgentArgs, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    let mut cfg = JobConfig::load_agent(args.config.as_deref())?;
    if let Some(i) = args.interval {
        cfg.agent.interval_s = i;
    }
    if args.samples.is_some() {
        cfg.agent.samples = args.samples;
    }
    cfg.outputs.roll_live();
    let source = AgentSource::new(cfg.agent.clone())?;
    tracing::info!("sampling {}", wfe_contract::Source::describe(&source));
    services::run_live(&mut cfg, Box::new(source), &args.live, stop, "agent")
}
