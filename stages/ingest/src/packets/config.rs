//! Settings of `wfe capture`: the feature window and which packets belong to which workload.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

use super::header::{Header, Proto};

/// Settings of `wfe capture` (`[packets]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PacketConfig {
    /// Seconds of capture time per feature window.
    #[serde(default = "d_window")]
    pub window_s: f64,
    /// Which packets belong to which workload.
    #[serde(default)]
    pub workloads: Vec<PacketWorkload>,
    /// Workload id for packets of no configured workload; unset: such packets are left out.
    #[serde(default)]
    pub other: Option<String>,
    /// The tcpdump that captures a live interface (`--interface`).
    #[serde(default = "d_tcpdump")]
    pub tcpdump: PathBuf,
}

/// A workload's packets: those with one of its addresses and/or one of its ports, as source
/// or destination (both lists given: both must match).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PacketWorkload {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub ports: Vec<u16>,
}

fn d_window() -> f64 {
    10.0
}
fn d_tcpdump() -> PathBuf {
    PathBuf::from("tcpdump")
}

impl Default for PacketConfig {
    fn default() -> Self {
        Self {
            window_s: d_window(),
            workloads: Vec::new(),
            other: None,
            tcpdump: d_tcpdump(),
        }
    }
}

impl PacketConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.window_s.is_finite() && self.window_s > 0.0) {
            return Err(Error::config(
                "packets.window_s",
                "must be a positive number of seconds",
            ));
        }
        if self.workloads.is_empty() && self.other.is_none() {
            return Err(Error::config(
                "packets.workloads",
                "map at least one workload by address or port (or set `other`)",
            ));
        }
        for (i, w) in self.workloads.iter().enumerate() {
            if w.addresses.is_empty() && w.ports.is_empty() {
                return Err(Error::config(
                    format!("packets.workloads[{i}]"),
                    format!("`{}` names no address and no port", w.name),
                ));
            }
        }
        Ok(())
    }
}

impl PacketWorkload {
    /// Whether the packet `h` is this workload's.
    pub(super) fn matches(&self, h: &Header) -> bool {
        let ends = [h.src, h.dst];
        let addr = self.addresses.is_empty()
            || ends
                .iter()
                .flatten()
                .any(|(a, _)| self.addresses.contains(a));
        let port = self.ports.is_empty()
            || (h.proto != Proto::Other
                && ends.iter().flatten().any(|(_, p)| self.ports.contains(p)));
        addr && port
    }
}
