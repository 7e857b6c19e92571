//! The host and container agent (`wfe agent`): a [`Source`] that samples this machine.
//!
//! Every `interval_s` it reads the kernel's counters and publishes one `metrics.raw` row per
//! (workload, metric):
//! - the **host** (workload `host:<hostname>`) from `/proc`: CPU busy and iowait fractions
//!   and cores busy (`/proc/stat`), memory used (`/proc/meminfo`), disk bytes, operations, busy fraction and
//!   mean latency per I/O over whole disks (`/proc/diskstats`), network bytes and packets
//!   (`/proc/net/dev`, loopback left out), and pressure stall information
//!   (`/proc/pressure/*`: the share of the interval some or all tasks stalled);
//! - each **cgroup v2** group down to `cgroup_depth` (workload `cgroup:<path>`: containers,
//!   services, pods): CPU cores used (`cpu.stat`), memory (`memory.current`, and its share
//!   of `memory.max` when limited), disk bytes (`io.stat`) and its own pressure files.
//!
//! Counters become rates over the interval, so the first sample has gauges only. A file the
//! kernel does not offer (no PSI, no cgroup v2, a group that went away) leaves its metrics
//! out and is reported once, never an error: the agent runs on whatever the host has.
//! Host rows carry `env.kernel` and `env.cpus` labels (the fingerprint's `environment`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wfe_contract::raw::RawBuilder;
use wfe_contract::schemas::labels;
use wfe_contract::{Context, Error, RecordBatch, Result, Source};

mod kernel;
use kernel::{cgroup2_mount, cgroups};
pub use kernel::{
    parse_cgroup_cpu, parse_diskstats, parse_io_stat, parse_meminfo, parse_net_dev, parse_pressure,
    parse_stat,
};

/// Settings of `wfe agent` (`[agent]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Seconds between samples.
    #[serde(default = "d_interval")]
    pub interval_s: f64,
    /// Samples to take before stopping; none: until stopped (Ctrl-C).
    #[serde(default)]
    pub samples: Option<u64>,
    /// The host's workload id; default: `host:<hostname>`.
    #[serde(default)]
    pub host: Option<String>,
    /// Where `/proc` is (a container sees the host's through a mount).
    #[serde(default = "d_proc")]
    pub proc_root: PathBuf,
    /// The cgroup v2 hierarchy; default: found in `/proc/mounts`; none there: host only.
    #[serde(default)]
    pub cgroup_root: Option<PathBuf>,
    /// Deepest cgroup level sampled as a workload (1: the root's children).
    #[serde(default = "d_depth")]
    pub cgroup_depth: usize,
}

fn d_interval() -> f64 {
    1.0
}
fn d_proc() -> PathBuf {
    PathBuf::from("/proc")
}
fn d_depth() -> usize {
    2
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval_s: d_interval(),
            samples: None,
            host: None,
            proc_root: d_proc(),
            cgroup_root: None,
            cgroup_depth: d_depth(),
        }
    }
}

/// Counters of one sample: (workload, metric) -> value, and gauges already in their unit.
#[derive(Debug, Default, Clone)]
struct Sample {
    at: Option<Instant>,
    counters: BTreeMap<(String, &'static str), f64>,
    gauges: BTreeMap<(String, &'static str), f64>,
}

/// The agent as a source of `metrics.raw`.
pub struct AgentSource {
    cfg: AgentConfig,
    host: String,
    host_labels: String,
    cgroup_root: Option<PathBuf>,
    prev: Sample,
    taken: u64,
    next_at: Option<Instant>,
    /// Files already reported missing (once each).
    missing: HashSet<String>,
}

impl AgentSource {
    pub fn new(cfg: AgentConfig) -> Result<Self> {
        if !(cfg.interval_s.is_finite() && cfg.interval_s > 0.0) {
            return Err(Error::config(
                "agent.interval_s",
                "must be a positive number of seconds",
            ));
        }
        let stat = cfg.proc_root.join("stat");
        if !stat.exists() {
            return Err(Error::config(
                "agent.proc_root",
                format!("{} does not exist: not a Linux /proc", stat.display()),
            ));
        }
        let read = |p: &str| {
            std::fs::read_to_string(cfg.proc_root.join(p))
                .map(|s| s.trim().to_string())
                .ok()
        };
        let host = cfg
            .host
            .clone()
            .or_else(|| read("sys/kernel/hostname").map(|h| format!("host:{h}")))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host:localhost".into());
        let kernel = read("sys/kernel/osrelease").unwrap_or_default();
        let cpus = std::fs::read_to_string(&stat)
            .map(|s| {
                s.lines()
                    .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                    .count()
            })
            .unwrap_or(0);
        let host_labels = labels::format([
            ("env.cpus", cpus.to_string().as_str()),
            ("env.kernel", kernel.as_str()),
            ("source", "agent"),
        ]);
        let cgroup_root = cfg
            .cgroup_root
            .clone()
            .or_else(|| cgroup2_mount(&cfg.proc_root));
        Ok(Self {
            cfg,
            host,
            host_labels,
            cgroup_root,
            prev: Sample::default(),
            taken: 0,
            next_at: None,
            missing: HashSet::new(),
        })
    }

    /// The host's workload id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Reads a file, reporting a missing one once.
    fn read(&mut self, path: &Path, ctx: &mut Context) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(s) => Some(s),
            Err(e) => {
                let key = path.display().to_string();
                if self.missing.insert(key.clone()) {
                    let msg = format!("{e}: its metrics are left out");
                    ctx.reject("agent_file_unreadable", &key, &msg);
                }
                None
            }
        }
    }

    /// One sample of every counter and gauge.
    fn sample(&mut self, ctx: &mut Context) -> Sample {
        let mut s = Sample {
            at: Some(Instant::now()),
            ..Default::default()
        };
        let host = self.host.clone();
        let proc = self.cfg.proc_root.clone();
        if let Some(t) = self.read(&proc.join("stat"), ctx) {
            for (m, v) in parse_stat(&t) {
                s.counters.insert((host.clone(), m), v);
            }
            let cpus = t
                .lines()
                .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                .count();
            s.gauges.insert((host.clone(), "cpu_count"), cpus as f64);
        }
        if let Some(t) = self.read(&proc.join("meminfo"), ctx) {
            for (m, v) in parse_meminfo(&t) {
                s.gauges.insert((host.clone(), m), v);
            }
        }
        if let Some(t) = self.read(&proc.join("diskstats"), ctx) {
            for (m, v) in parse_diskstats(&t) {
                s.counters.insert((host.clone(), m), v);
            }
        }
        if let Some(t) = self.read(&proc.join("net/dev"), ctx) {
            for (m, v) in parse_net_dev(&t) {
                s.counters.insert((host.clone(), m), v);
            }
        }
        for res in ["cpu", "memory", "io"] {
            if let Some(t) = self.read(&proc.join("pressure").join(res), ctx) {
                for (m, v) in parse_pressure(res, &t) {
                    s.counters.insert((host.clone(), m), v);
                }
            }
        }
        if let Some(root) = self.cgroup_root.clone() {
            for (name, dir) in cgroups(&root, self.cfg.cgroup_depth) {
                let w = format!("cgroup:{name}");
                // A group that went away between listing and reading is skipped silently.
                let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
                if let Some(t) = read("cpu.stat") {
                    for (m, v) in parse_cgroup_cpu(&t) {
                        s.counters.insert((w.clone(), m), v);
                    }
                }
                if let Some(cur) = read("memory.current").and_then(|t| t.trim().parse::<f64>().ok())
                {
                    s.gauges.insert((w.clone(), "memory_used_bytes"), cur);
                    let max = read("memory.max").and_then(|t| t.trim().parse::<f64>().ok());
                    if let Some(max) = max.filter(|m| *m > 0.0) {
                        s.gauges
                            .insert((w.clone(), "memory_used_fraction"), cur / max);
                    }
                }
                if let Some(t) = read("io.stat") {
                    for (m, v) in parse_io_stat(&t) {
                        s.counters.insert((w.clone(), m), v);
                    }
                }
                for res in ["cpu", "memory", "io"] {
                    if let Some(t) = read(&format!("{res}.pressure")) {
                        for (m, v) in parse_pressure(res, &t) {
                            s.counters.insert((w.clone(), m), v);
                        }
                    }
                }
            }
        }
        s
    }
}

/// Rates over the interval from two samples' counters, and the derived host fractions.
fn rows(prev: &Sample, now: &Sample) -> Vec<(String, &'static str, f64)> {
    let mut out: Vec<(String, &'static str, f64)> = now
        .gauges
        .iter()
        .map(|((w, m), v)| (w.clone(), *m, *v))
        .collect();
    let (Some(t0), Some(t1)) = (prev.at, now.at) else {
        return out;
    };
    let dt = t1.duration_since(t0).as_secs_f64();
    if dt <= 0.0 {
        return out;
    }
    let delta = |w: &str, m: &'static str| -> Option<f64> {
        let key = (w.to_string(), m);
        let d = now.counters.get(&key)? - prev.counters.get(&key)?;
        // A counter that went back (a reset, a device gone) gives no rate this time.
        (d >= 0.0).then_some(d)
    };
    let workloads: std::collections::BTreeSet<&String> =
        now.counters.keys().map(|(w, _)| w).collect();
    for w in workloads {
        let mut put = |m: &'static str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                out.push((w.clone(), m, v));
            }
        };
        // Host CPU: jiffies busy and in iowait over all jiffies.
        if let (Some(total), Some(idle)) = (delta(w, "cpu_total"), delta(w, "cpu_idle"))
            && total > 0.0
        {
            put("cpu_utilisation", Some(1.0 - idle / total));
            let cpus = now.gauges.get(&(w.clone(), "cpu_count"));
            put("cpu_cores", cpus.map(|n| n * (1.0 - idle / total)));
            put(
                "cpu_iowait_fraction",
                delta(w, "cpu_iowait").map(|x| x / total),
            );
        }
        // cgroup CPU: microseconds used per second of interval = cores.
        put(
            "cpu_cores",
            delta(w, "cpu_usage_usec").map(|u| u / 1e6 / dt),
        );
        for (counter, rate) in [
            ("disk_read_bytes", "disk_read_bytes_per_s"),
            ("disk_write_bytes", "disk_write_bytes_per_s"),
            ("disk_ios", "disk_ios_per_s"),
            ("net_rx_bytes", "net_rx_bytes_per_s"),
            ("net_tx_bytes", "net_tx_bytes_per_s"),
            ("net_rx_packets", "net_rx_packets_per_s"),
            ("net_tx_packets", "net_tx_packets_per_s"),
        ] {
            put(rate, delta(w, counter).map(|d| d / dt));
        }
        put(
            "disk_busy_fraction",
            delta(w, "disk_io_ms").map(|ms| (ms / 1e3 / dt).min(1.0)),
        );
        if let (Some(ms), Some(n)) = (delta(w, "disk_io_wait_ms"), delta(w, "disk_ios")) {
            put("disk_latency_ms", (n > 0.0).then(|| ms / n));
        }
        // PSI totals are stalled microseconds: their share of the interval.
        for (counter, share) in [
            ("psi_cpu_some_us", "psi_cpu_some"),
            ("psi_memory_some_us", "psi_memory_some"),
            ("psi_memory_full_us", "psi_memory_full"),
            ("psi_io_some_us", "psi_io_some"),
            ("psi_io_full_us", "psi_io_full"),
        ] {
            put(share, delta(w, counter).map(|us| (us / 1e6 / dt).min(1.0)));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

impl Source for AgentSource {
    fn describe(&self) -> String {
        format!(
            "agent on {} every {} s ({}; cgroups: {})",
            self.host,
            self.cfg.interval_s,
            self.cfg.proc_root.display(),
            self.cgroup_root
                .as_ref()
                .map_or("none (no cgroup v2 mount)".into(), |p| p
                    .display()
                    .to_string())
        )
    }

    fn next_batch(&mut self, ctx: &mut Context) -> Result<Option<RecordBatch>> {
        if self.cfg.samples.is_some_and(|n| self.taken >= n) {
            return Ok(None);
        }
        let every = Duration::from_secs_f64(self.cfg.interval_s);
        if let Some(at) = self.next_at {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        // A fixed schedule keeps steps regular; a source that fell more than an interval
        // behind (a stalled pipeline) starts afresh instead of sampling in a burst.
        let now = Instant::now();
        let due = self.next_at.filter(|t| *t + every > now).unwrap_or(now);
        self.next_at = Some(due + every);
        let now = self.sample(ctx);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Error::state("agent", format!("clock before 1970: {e}")))?
            .as_millis() as i64;
        let rows = rows(&self.prev, &now);
        self.prev = now;
        self.taken += 1;
        ctx.count("agent.samples", 1);
        ctx.count("rows_out", rows.len() as u64);
        build(ms, &rows, &self.host, &self.host_labels).map(Some)
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.taken, self.cfg.samples)
    }
}

/// The rows as a `metrics.raw` batch (host rows labelled with the host's environment).
fn build(
    ms: i64,
    rows: &[(String, &'static str, f64)],
    host: &str,
    host_labels: &str,
) -> Result<RecordBatch> {
    let mut b = RawBuilder::with_capacity(rows.len());
    for (w, m, v) in rows {
        let (wk, mk) = (b.workload_key(w), b.metric_key(m));
        let lk = (w == host).then(|| b.label_key(host_labels));
        b.push(ms, wk, mk, *v, lk);
    }
    b.finish()
}

#[cfg(test)]
mod tests;
