//! The windowing: packets in, per workload and window the `net.*` feature rows out.

use std::collections::BTreeMap;

use wfe_contract::Result;

use super::config::PacketConfig;
use super::header::{Header, Proto};

/// One workload's packets in the open window.
#[derive(Debug, Default, Clone)]
struct Acc {
    sizes: Vec<f64>,
    iat_ms: Vec<f64>,
    bytes: f64,
    tcp: u64,
    udp: u64,
    syn: u64,
    fin: u64,
    rst: u64,
}

/// The windowing: packets in, feature rows out as windows close.
/// A packet older than the open window: left out, and counted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late;

#[derive(Debug)]
pub struct Features {
    pub(super) cfg: PacketConfig,
    window_us: i64,
    /// Start of the open window (µs); None before the first packet.
    open: Option<i64>,
    /// End (µs) of the last window closed: windows from there to the next packet's were
    /// silent, and known workloads get zero rates for each.
    closed_until: Option<i64>,
    acc: BTreeMap<String, Acc>,
    /// Last packet time per workload (for inter-arrival times across windows).
    last: BTreeMap<String, i64>,
}

/// Feature rows: (window end ms, workload, metric, value).
pub type Row = (i64, String, &'static str, f64);

fn quantile(sorted: &[f64], q: f64) -> f64 {
    // Linear between the closest ranks.
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Features {
    pub fn new(cfg: PacketConfig) -> Result<Self> {
        cfg.validate()?;
        let window_us = (cfg.window_s * 1e6).round().max(1.0) as i64;
        Ok(Self {
            cfg,
            window_us,
            open: None,
            closed_until: None,
            acc: BTreeMap::new(),
            last: BTreeMap::new(),
        })
    }

    /// Adds a packet; returns the rows of every window it closed. `Err(Late)`: the packet is
    /// older than the open window and was left out.
    pub fn add(&mut self, h: &Header) -> std::result::Result<Vec<Row>, Late> {
        let window = h.ts_us.div_euclid(self.window_us) * self.window_us;
        let mut rows = Vec::new();
        match self.open {
            Some(start) if h.ts_us < start => return Err(Late),
            Some(start) if h.ts_us >= start + self.window_us => rows = self.close(),
            Some(_) => {}
            None if self.closed_until.is_some_and(|c| h.ts_us < c) => return Err(Late),
            None => {}
        }
        if self.open.is_none() {
            rows.extend(self.silent_until(window));
            self.open = Some(window);
        }
        let names: Vec<String> = {
            let mut n: Vec<String> = self
                .cfg
                .workloads
                .iter()
                .filter(|w| w.matches(h))
                .map(|w| w.name.clone())
                .collect();
            if n.is_empty()
                && let Some(o) = &self.cfg.other
            {
                n.push(o.clone());
            }
            n
        };
        for name in names {
            let a = self.acc.entry(name.clone()).or_default();
            a.sizes.push(h.len as f64);
            a.bytes += h.len as f64;
            match h.proto {
                Proto::Tcp => a.tcp += 1,
                Proto::Udp => a.udp += 1,
                Proto::Other => {}
            }
            a.syn += h.syn as u64;
            a.fin += h.fin as u64;
            a.rst += h.rst as u64;
            if let Some(prev) = self.last.insert(name, h.ts_us) {
                a.iat_ms.push((h.ts_us - prev).max(0) as f64 / 1000.0);
            }
        }
        Ok(rows)
    }

    /// Closes the open window: its rows, and zero rates for known workloads without packets.
    pub fn close(&mut self) -> Vec<Row> {
        let Some(start) = self.open else {
            return Vec::new();
        };
        let end_ms = (start + self.window_us) / 1000;
        let secs = self.window_us as f64 / 1e6;
        let mut rows = Vec::new();
        let mut acc = std::mem::take(&mut self.acc);
        for name in self.last.keys() {
            acc.entry(name.clone()).or_default();
        }
        for (name, mut a) in acc {
            let n = a.sizes.len() as f64;
            let mut push = |m: &'static str, v: f64| rows.push((end_ms, name.clone(), m, v));
            push("net.packets_per_s", n / secs);
            push("net.bytes_per_s", a.bytes / secs);
            push("net.syn_per_s", a.syn as f64 / secs);
            push("net.fin_per_s", a.fin as f64 / secs);
            push("net.rst_per_s", a.rst as f64 / secs);
            if n == 0.0 {
                continue;
            }
            a.sizes.sort_by(f64::total_cmp);
            push("net.size_mean", a.bytes / n);
            push("net.size_p10", quantile(&a.sizes, 0.1));
            push("net.size_p50", quantile(&a.sizes, 0.5));
            push("net.size_p90", quantile(&a.sizes, 0.9));
            push("net.tcp_share", a.tcp as f64 / n);
            push("net.udp_share", a.udp as f64 / n);
            push("net.other_share", (n - (a.tcp + a.udp) as f64) / n);
            if !a.iat_ms.is_empty() {
                a.iat_ms.sort_by(f64::total_cmp);
                push(
                    "net.iat_mean_ms",
                    a.iat_ms.iter().sum::<f64>() / a.iat_ms.len() as f64,
                );
                push("net.iat_p90_ms", quantile(&a.iat_ms, 0.9));
            }
        }
        self.closed_until = Some(start + self.window_us);
        self.open = None;
        rows
    }

    /// Zero rates for every known workload in each silent window between the last closed
    /// one and `until` (at most `MAX_SILENT` windows: a capture paused for days is a gap).
    fn silent_until(&mut self, until: i64) -> Vec<Row> {
        const MAX_SILENT: i64 = 10_000;
        let Some(from) = self.closed_until else {
            return Vec::new();
        };
        let n = ((until - from) / self.window_us).clamp(0, MAX_SILENT);
        let mut rows = Vec::new();
        for k in 0..n {
            let end_ms = (from + (k + 1) * self.window_us) / 1000;
            for name in self.last.keys() {
                for m in [
                    "net.packets_per_s",
                    "net.bytes_per_s",
                    "net.syn_per_s",
                    "net.fin_per_s",
                    "net.rst_per_s",
                ] {
                    rows.push((end_ms, name.clone(), m, 0.0));
                }
            }
        }
        self.closed_until = Some(from + n * self.window_us);
        rows
    }

    /// The open window ends (µs) before this wall-clock instant has passed.
    pub(super) fn open_until(&self) -> Option<i64> {
        self.open.map(|s| s + self.window_us)
    }
}
