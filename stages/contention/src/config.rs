//! The contention stage's settings: the hosts, where the workloads run, and the bound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_kube::contention::plan::Host;

/// Most hosts the stage plans over (each issuance computes every host's risk).
pub const MAX_HOSTS: usize = 10_000;
/// Most observations a workload's history keeps (1.6 MB), whatever `history_s` says: a
/// replay may deliver weeks of a workload before its issuances can be planned (a learning
/// period released at once, another workload's still being learned).
pub const MAX_POINTS: usize = 100_000;
/// Most issuances a workload keeps waiting to be planned (a few hundred bytes each).
pub const MAX_ISSUANCES: usize = 4_000;

/// Settings of the contention stage. It runs when `hosts` lists hosts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContentionConfig {
    /// The hosts workloads run on, with what each can serve in `resource`'s unit. Empty (the
    /// default): the stage does not run.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Where workloads run: workload id -> host name. A workload not listed runs where its
    /// `host_label` label says (on its `metrics.norm` samples); one with neither is not
    /// placed, and counts on no host.
    #[serde(default)]
    pub placement: BTreeMap<String, String>,
    /// The label that names a workload's host.
    #[serde(default = "d_label")]
    pub host_label: String,
    /// The resource hosts are sized in (a `[[resources]]` name; its forecasts are summed).
    #[serde(default = "d_resource")]
    pub resource: String,
    /// Chance of passing a host's capacity above which the host is contended and moves are
    /// planned.
    #[serde(default = "d_bound")]
    pub bound: f64,
    /// Horizons read: those up to this many seconds.
    #[serde(default = "d_horizon")]
    pub max_horizon_s: i64,
    /// History (event time before each issuance) the workloads' correlations are read from.
    #[serde(default = "d_history")]
    pub history_s: i64,
    /// Common times two workloads need for their correlation to be read; with fewer they
    /// count as moving together (the careful guess).
    #[serde(default = "d_points")]
    pub min_points: usize,
    /// Event time a workload may lag the newest observation and still be waited for
    /// before an issuance is planned; live (not a replay), also how far past an issuance a
    /// workload may be observed before its forecast of it is no longer waited for.
    #[serde(default = "d_wait")]
    pub max_wait_s: i64,
}

/// One host.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    /// What it can serve, in the resource's unit (e.g. vCPU).
    pub capacity: f64,
    /// Its environment as `k=v,k=v` (the `env.*` labels of the workloads that may run on
    /// it, without the prefix); unset: any workload may.
    #[serde(default)]
    pub environment: Option<String>,
}

fn d_label() -> String {
    "host".into()
}
fn d_resource() -> String {
    "cpu".into()
}
fn d_bound() -> f64 {
    0.05
}
fn d_horizon() -> i64 {
    86_400
}
fn d_history() -> i64 {
    3 * 86_400
}
fn d_points() -> usize {
    30
}
fn d_wait() -> i64 {
    600
}

impl Default for ContentionConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            placement: BTreeMap::new(),
            host_label: d_label(),
            resource: d_resource(),
            bound: d_bound(),
            max_horizon_s: d_horizon(),
            history_s: d_history(),
            min_points: d_points(),
            max_wait_s: d_wait(),
        }
    }
}

impl ContentionConfig {
    /// The hosts, as the planner reads them.
    pub fn planner_hosts(&self) -> Vec<Host> {
        self.hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                capacity: h.capacity,
                environment: h.environment.clone(),
            })
            .collect()
    }

    /// Whether the stage has hosts to plan over.
    pub fn is_configured(&self) -> bool {
        !self.hosts.is_empty()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::config(format!("contention.{field}"), why));
        if self.hosts.len() > MAX_HOSTS {
            return bad(
                "hosts",
                format!("{} hosts; at most {MAX_HOSTS}", self.hosts.len()),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for h in &self.hosts {
            if h.name.is_empty() || !names.insert(h.name.as_str()) {
                return bad("hosts", format!("host name `{}` empty or repeated", h.name));
            }
            if !(h.capacity.is_finite() && h.capacity > 0.0) {
                return bad("hosts", format!("`{}`: capacity must be above 0", h.name));
            }
        }
        for (w, h) in &self.placement {
            if !names.contains(h.as_str()) {
                return bad(
                    "placement",
                    format!("`{w}` on `{h}`, which is not in hosts"),
                );
            }
        }
        if !(self.bound > 0.0 && self.bound < 1.0) {
            return bad("bound", format!("{} is not in (0, 1)", self.bound));
        }
        if self.max_horizon_s <= 0 {
            return bad("max_horizon_s", "must be above 0".into());
        }
        if !(60..=30 * 86_400).contains(&self.history_s) {
            return bad("history_s", "must be 60 s to 30 days".into());
        }
        if !(0..=30 * 86_400).contains(&self.max_wait_s) {
            return bad("max_wait_s", "must be 0 to 30 days".into());
        }
        if self.min_points < 2 {
            return bad("min_points", "must be at least 2".into());
        }
        if self.host_label.is_empty() {
            return bad("host_label", "must not be empty".into());
        }
        Ok(())
    }
}
