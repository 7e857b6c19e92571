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
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{ArrayRef, Float64Array};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_contract::schemas::labels;
use wfe_contract::{Context, Error, Event, RecordBatch, Result, Source, Topic};

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
                    ctx.event(Event::Rejected {
                        kind: "agent_file_unreadable",
                        location: &key,
                        message: &msg,
                        count: 1,
                    });
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
        if let (Some(total), Some(idle)) = (delta(w, "cpu_total"), delta(w, "cpu_idle")) {
            if total > 0.0 {
                put("cpu_utilisation", Some(1.0 - idle / total));
                let cpus = now.gauges.get(&(w.clone(), "cpu_count"));
                put("cpu_cores", cpus.map(|n| n * (1.0 - idle / total)));
                put(
                    "cpu_iowait_fraction",
                    delta(w, "cpu_iowait").map(|x| x / total),
                );
            }
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
    let mut workloads: Vec<&str> = Vec::new();
    let mut metrics: Vec<&str> = Vec::new();
    let key = |list: &mut Vec<&'static str>, v: &'static str| -> i32 {
        match list.iter().position(|x| *x == v) {
            Some(i) => i as i32,
            None => {
                list.push(v);
                list.len() as i32 - 1
            }
        }
    };
    let mut wk = Vec::with_capacity(rows.len());
    let mut mk = Vec::with_capacity(rows.len());
    let mut lk = Vec::with_capacity(rows.len());
    for (w, m, _) in rows {
        let i = match workloads.iter().position(|x| x == w) {
            Some(i) => i,
            None => {
                workloads.push(w);
                workloads.len() - 1
            }
        };
        wk.push(i as i32);
        mk.push(key(&mut metrics, m));
        lk.push((w == host).then_some(0));
    }
    let columns: Vec<ArrayRef> = vec![
        timestamp_column(vec![ms; rows.len()]),
        dictionary(wk, &workloads)?,
        dictionary(mk, &metrics)?,
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )),
        dictionary_opt(lk, &[host_labels])?,
    ];
    Ok(RecordBatch::try_new(Topic::MetricsRaw.schema(), columns)?)
}

/// The cgroup v2 mount point named in `<proc>/mounts`.
fn cgroup2_mount(proc_root: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string(proc_root.join("mounts")).ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// The groups under `root` down to `depth` levels (the root itself as `/`), by path.
fn cgroups(root: &Path, depth: usize) -> Vec<(String, PathBuf)> {
    let mut out = vec![("/".to_string(), root.to_path_buf())];
    let mut level = vec![root.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        next.sort();
        for d in &next {
            if let Ok(rel) = d.strip_prefix(root) {
                out.push((format!("/{}", rel.display()), d.clone()));
            }
        }
        level = next;
    }
    out
}

/// `/proc/stat`'s first line: total, idle (idle + iowait) and iowait jiffies.
pub fn parse_stat(text: &str) -> Vec<(&'static str, f64)> {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return Vec::new();
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user and nice.
    let total: f64 = v.iter().take(8).sum();
    vec![
        ("cpu_total", total),
        ("cpu_idle", v[3] + v[4]),
        ("cpu_iowait", v[4]),
    ]
}

/// `/proc/meminfo`: used bytes and the used fraction (MemTotal - MemAvailable).
pub fn parse_meminfo(text: &str) -> Vec<(&'static str, f64)> {
    let kb = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v * 1024.0)
    };
    match (kb("MemTotal"), kb("MemAvailable")) {
        (Some(total), Some(avail)) if total > 0.0 => vec![
            ("memory_used_bytes", total - avail),
            ("memory_used_fraction", (total - avail) / total),
        ],
        _ => Vec::new(),
    }
}

/// `/proc/diskstats` summed over whole disks (partitions, loop, ram and device-mapper left
/// out so nothing counts twice): bytes read and written, operations, time busy and time
/// operations waited (ms).
pub fn parse_diskstats(text: &str) -> Vec<(&'static str, f64)> {
    let mut sum = [0.0f64; 6];
    let mut any = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 14 || !is_whole_disk(f[2]) {
            continue;
        }
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        // 3 reads, 5 sectors read, 6 ms reading, 7 writes, 9 sectors written, 10 ms writing,
        // 12 ms doing I/O (sectors are 512 bytes whatever the device).
        sum[0] += n(5) * 512.0;
        sum[1] += n(9) * 512.0;
        sum[2] += n(3) + n(7);
        sum[3] += n(12);
        sum[4] += n(6) + n(10);
        any = true;
    }
    if !any {
        return Vec::new();
    }
    vec![
        ("disk_read_bytes", sum[0]),
        ("disk_write_bytes", sum[1]),
        ("disk_ios", sum[2]),
        ("disk_io_ms", sum[3]),
        ("disk_io_wait_ms", sum[4]),
    ]
}

fn is_whole_disk(name: &str) -> bool {
    if ["loop", "ram", "dm-", "zram", "sr"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return false;
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        // nvme0n1 is a disk, nvme0n1p1 a partition: digits, `p`, digits at the end.
        let Some((head, tail)) = name.rsplit_once('p') else {
            return true;
        };
        let partition = !tail.is_empty()
            && tail.chars().all(|c| c.is_ascii_digit())
            && head.ends_with(|c: char| c.is_ascii_digit());
        return !partition;
    }
    // sda, vda, xvda are disks; sda1 a partition.
    !name.ends_with(|c: char| c.is_ascii_digit())
}

/// `/proc/net/dev` summed over interfaces other than loopback.
pub fn parse_net_dev(text: &str) -> Vec<(&'static str, f64)> {
    let mut sum = [0.0f64; 4];
    let mut any = false;
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 10 {
            continue;
        }
        sum[0] += f[0];
        sum[1] += f[1];
        sum[2] += f[8];
        sum[3] += f[9];
        any = true;
    }
    if !any {
        return Vec::new();
    }
    vec![
        ("net_rx_bytes", sum[0]),
        ("net_rx_packets", sum[1]),
        ("net_tx_bytes", sum[2]),
        ("net_tx_packets", sum[3]),
    ]
}

/// A pressure file (`some ... total=N`, `full ... total=N`): stalled microseconds.
pub fn parse_pressure(res: &str, text: &str) -> Vec<(&'static str, f64)> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let names: &[(&str, &'static str)] = match res {
        "cpu" => &[("some", "psi_cpu_some_us")],
        "memory" => &[
            ("some", "psi_memory_some_us"),
            ("full", "psi_memory_full_us"),
        ],
        "io" => &[("some", "psi_io_some_us"), ("full", "psi_io_full_us")],
        _ => &[],
    };
    names
        .iter()
        .filter_map(|(k, m)| total(k).map(|v| (*m, v)))
        .collect()
}

/// A cgroup's `cpu.stat`: microseconds of CPU used.
pub fn parse_cgroup_cpu(text: &str) -> Vec<(&'static str, f64)> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| vec![("cpu_usage_usec", v)])
        .unwrap_or_default()
}

/// A cgroup's `io.stat`: bytes read and written over its devices.
pub fn parse_io_stat(text: &str) -> Vec<(&'static str, f64)> {
    let (mut r, mut w, mut any) = (0.0, 0.0, false);
    for l in text.lines() {
        for f in l.split_whitespace().skip(1) {
            if let Some(v) = f
                .strip_prefix("rbytes=")
                .and_then(|v| v.parse::<f64>().ok())
            {
                r += v;
                any = true;
            } else if let Some(v) = f
                .strip_prefix("wbytes=")
                .and_then(|v| v.parse::<f64>().ok())
            {
                w += v;
                any = true;
            }
        }
    }
    if any {
        vec![("disk_read_bytes", r), ("disk_write_bytes", w)]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_contract::columns::{DictStrings, f64s};

    #[test]
    fn parses_the_kernels_formats() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(
            parse_stat(stat),
            [
                ("cpu_total", 980.0),
                ("cpu_idle", 820.0),
                ("cpu_iowait", 20.0)
            ]
        );
        let mem = "MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:   4000000 kB\n";
        let m = parse_meminfo(mem);
        assert_eq!(m[0], ("memory_used_bytes", 12_000_000.0 * 1024.0));
        assert!((m[1].1 - 0.75).abs() < 1e-12);
        let disks = "   8       0 sda 10 0 200 30 20 0 400 50 0 70 80 0 0 0 0\n\
                     8       1 sda1 10 0 200 30 20 0 400 50 0 70 80 0 0 0 0\n\
                     7       0 loop0 99 0 999 9 9 0 9 9 0 9 9 0 0 0 0\n\
                   259       0 nvme0n1 1 0 8 2 1 0 8 2 0 3 4 0 0 0 0\n\
                   259       1 nvme0n1p1 1 0 8 2 1 0 8 2 0 3 4 0 0 0 0\n";
        let d: BTreeMap<_, _> = parse_diskstats(disks).into_iter().collect();
        assert_eq!(d["disk_read_bytes"], (200.0 + 8.0) * 512.0);
        assert_eq!(d["disk_write_bytes"], (400.0 + 8.0) * 512.0);
        assert_eq!(d["disk_ios"], 30.0 + 2.0);
        assert_eq!(d["disk_io_ms"], 73.0);
        assert_eq!(d["disk_io_wait_ms"], 80.0 + 4.0);
        let net = "Inter-| head\n face | head\n    lo: 999 9 0 0 0 0 0 0 999 9 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
        let n: BTreeMap<_, _> = parse_net_dev(net).into_iter().collect();
        assert_eq!(
            (n["net_rx_bytes"], n["net_tx_bytes"], n["net_rx_packets"]),
            (1000.0, 2000.0, 10.0)
        );
        let psi = "some avg10=0.23 avg60=1.85 avg300=6.51 total=9308\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n";
        assert_eq!(
            parse_pressure("io", psi),
            [("psi_io_some_us", 9308.0), ("psi_io_full_us", 17.0)]
        );
        assert_eq!(parse_pressure("cpu", psi), [("psi_cpu_some_us", 9308.0)]);
        assert_eq!(
            parse_cgroup_cpu("usage_usec 1234\nuser_usec 1000\n"),
            [("cpu_usage_usec", 1234.0)]
        );
        assert_eq!(
            parse_io_stat("8:0 rbytes=100 wbytes=50 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n"),
            [("disk_read_bytes", 101.0), ("disk_write_bytes", 52.0)]
        );
        // Garbage gives nothing, not a panic.
        for f in [parse_stat, parse_meminfo, parse_diskstats, parse_net_dev] {
            assert!(f("garbage\n\u{0}\n").is_empty());
        }
    }

    #[test]
    fn counters_become_rates_and_a_reset_gives_no_rate() {
        let t0 = Instant::now();
        let mut a = Sample {
            at: Some(t0),
            ..Default::default()
        };
        let mut b = Sample {
            at: Some(t0 + Duration::from_secs(2)),
            ..Default::default()
        };
        let h = "h".to_string();
        for (s, total, idle, rx, ios, wait) in [
            (&mut a, 1000.0, 800.0, 5000.0, 10.0, 100.0),
            (&mut b, 1400.0, 900.0, 9000.0, 30.0, 300.0),
        ] {
            s.counters.insert((h.clone(), "cpu_total"), total);
            s.counters.insert((h.clone(), "cpu_idle"), idle);
            s.counters.insert((h.clone(), "net_rx_bytes"), rx);
            s.counters.insert((h.clone(), "disk_ios"), ios);
            s.counters.insert((h.clone(), "disk_io_wait_ms"), wait);
        }
        a.counters.insert((h.clone(), "net_tx_bytes"), 10.0);
        b.counters.insert((h.clone(), "net_tx_bytes"), 5.0);
        b.gauges.insert((h.clone(), "memory_used_fraction"), 0.5);
        let r: BTreeMap<_, _> = rows(&a, &b).into_iter().map(|(_, m, v)| (m, v)).collect();
        assert!((r["cpu_utilisation"] - 0.75).abs() < 1e-9);
        assert!((r["net_rx_bytes_per_s"] - 2000.0).abs() < 1e-9);
        assert!((r["disk_ios_per_s"] - 10.0).abs() < 1e-9);
        assert!((r["disk_latency_ms"] - 10.0).abs() < 1e-9);
        assert_eq!(r["memory_used_fraction"], 0.5);
        assert!(
            !r.contains_key("net_tx_bytes_per_s"),
            "a counter that went back"
        );
        // The first sample: gauges only.
        assert_eq!(rows(&Sample::default(), &b).len(), 1);
    }

    #[test]
    fn samples_this_machine() {
        let mut src = AgentSource::new(AgentConfig {
            interval_s: 0.2,
            samples: Some(3),
            ..Default::default()
        })
        .unwrap();
        let mut ctx = Context::new("agent");
        let mut batches = Vec::new();
        while let Some(b) = src.next_batch(&mut ctx).unwrap() {
            batches.push(b);
        }
        assert_eq!(batches.len(), 3);
        let last = batches.last().unwrap();
        let w = DictStrings::new(last, "workload").unwrap();
        let m = DictStrings::new(last, "metric").unwrap();
        let v = f64s(last, "value").unwrap();
        let host = src.host().to_string();
        let of = |name: &str| {
            (0..last.num_rows())
                .find(|&r| w.get(r) == Some(host.as_str()) && m.get(r) == Some(name))
                .map(|r| v.value(r))
        };
        let cpu = of("cpu_utilisation").expect("host CPU from /proc/stat");
        assert!((0.0..=1.0).contains(&cpu), "{cpu}");
        let mem = of("memory_used_fraction").expect("host memory from /proc/meminfo");
        assert!(mem > 0.0 && mem < 1.0, "{mem}");
        assert!(v.values().iter().all(|x| x.is_finite() && *x >= 0.0));
        let labels = DictStrings::new(last, "labels").unwrap();
        let l = (0..last.num_rows()).find_map(|r| labels.get(r)).unwrap();
        assert!(
            l.contains("env.kernel=") && l.contains("source=agent"),
            "{l}"
        );
        // A /proc that is not one: a clear error.
        let e = AgentSource::new(AgentConfig {
            proc_root: "/nonexistent".into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("not a Linux /proc"), "{e}");
    }
}
