//! `wfe capture`: packet-header features of a pcap file or a live interface as
//! `metrics.raw`, through the job's stages embedded (the default) or onto the topic (--kafka).

use std::path::PathBuf;

use wfe_contract::{Error, Result};
use wfe_ingest::PacketSource;

use crate::config::JobConfig;
use crate::services;

#[derive(clap::Args)]
pub struct CaptureArgs {
    /// Job config (TOML) with `[packets]` (window and the workloads' addresses and ports) and
    /// the `[[resources]]` or stages to run; default: the built-in job.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A capture file (pcap, as `tcpdump -w` writes it).
    #[arg(long, conflicts_with = "interface")]
    pub pcap: Option<PathBuf>,
    /// A live interface, captured by tcpdump (needs the right to capture: root or
    /// CAP_NET_RAW).
    #[arg(long)]
    pub interface: Option<String>,
    /// A BPF filter for the live capture (e.g. "tcp port 443").
    #[arg(long, requires = "interface")]
    pub filter: Option<String>,
    /// Stop a live capture after this many seconds (default: until Ctrl-C).
    #[arg(long, requires = "interface")]
    pub seconds: Option<f64>,
    #[command(flatten)]
    pub live: services::LiveArgs,
}

pub fn capture(
    args: CaptureArgs,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let mut cfg = JobConfig::load(args.config.as_deref())?;
    let source = match (&args.pcap, &args.interface) {
        (Some(p), None) => PacketSource::file(p, cfg.packets.clone())?,
        (None, Some(i)) => {
            cfg.outputs.roll_live();
            PacketSource::live(
                i,
                args.filter.as_deref(),
                cfg.packets.clone(),
                stop.clone(),
                args.seconds,
            )?
        }
        _ => {
            return Err(Error::config(
                "capture",
                "give --pcap FILE or --interface NAME",
            ));
        }
    };
    tracing::info!("reading {}", wfe_contract::Source::describe(&source));
    services::run_live(&mut cfg, Box::new(source), &args.live, stop, "capture")
}
