//! Packet-header features: a pcap capture (a file, or a live interface through tcpdump) as
//! `metrics.raw`, so the fingerprint stage sees how each workload talks on the network.
//!
//! Each packet is read to its IP and TCP/UDP headers (etherparse; Ethernet, Linux cooked and
//! raw-IP captures) and counted for every workload it belongs to (`[[packets.workloads]]`:
//! by address and/or port, as source or destination). Per workload and window of
//! `window_s` seconds of capture time, it publishes (all `net.*`):
//! - `packets_per_s`, `bytes_per_s` (frame lengths on the wire);
//! - the packet size distribution: `size_mean`, `size_p10`, `size_p50`, `size_p90` (bytes);
//! - inter-arrival times: `iat_mean_ms`, `iat_p90_ms`;
//! - protocol mix: `tcp_share`, `udp_share`, `other_share`;
//! - TCP flags: `syn_per_s`, `fin_per_s`, `rst_per_s`.
//!
//! A workload seen before and silent in a window gets zero rates (and no size or timing
//! rows), so its series stays regular. Undecodable packets are counted and skipped, a packet
//! older than the open window is counted as late and left out; a file that is not pcap, or a
//! link type it cannot read, is an error naming it.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{ArrayRef, Float64Array};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_contract::{Context, Error, Event, RecordBatch, Result, Source, Topic};

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

/// What the features need of one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Capture time, microseconds since the epoch.
    pub ts_us: i64,
    /// Length on the wire.
    pub len: u32,
    pub src: Option<(IpAddr, u16)>,
    pub dst: Option<(IpAddr, u16)>,
    pub proto: Proto,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Other,
}

/// Reads a captured frame's headers; None when it is not IP at all or cannot be decoded.
pub fn decode(link: DataLink, ts_us: i64, len: u32, data: &[u8]) -> Option<Header> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        // BSD loopback: a 4-byte address family, then IP.
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (sa, da): (IpAddr, IpAddr) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let mut h = Header {
        ts_us,
        len,
        src: Some((sa, 0)),
        dst: Some((da, 0)),
        proto: Proto::Other,
        syn: false,
        fin: false,
        rst: false,
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            h.proto = Proto::Tcp;
            h.src = Some((sa, t.source_port()));
            h.dst = Some((da, t.destination_port()));
            (h.syn, h.fin, h.rst) = (t.syn(), t.fin(), t.rst());
        }
        Some(TransportSlice::Udp(u)) => {
            h.proto = Proto::Udp;
            h.src = Some((sa, u.source_port()));
            h.dst = Some((da, u.destination_port()));
        }
        _ => {}
    }
    Some(h)
}

impl PacketWorkload {
    fn matches(&self, h: &Header) -> bool {
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
#[derive(Debug)]
pub struct Features {
    cfg: PacketConfig,
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

    /// Adds a packet; returns the rows of every window it closed. `Err(())`: the packet is
    /// older than the open window (late) and was left out.
    pub fn add(&mut self, h: &Header) -> std::result::Result<Vec<Row>, ()> {
        let window = h.ts_us.div_euclid(self.window_us) * self.window_us;
        let mut rows = Vec::new();
        match self.open {
            Some(start) if h.ts_us < start => return Err(()),
            Some(start) if h.ts_us >= start + self.window_us => rows = self.close(),
            Some(_) => {}
            None if self.closed_until.is_some_and(|c| h.ts_us < c) => return Err(()),
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
    fn open_until(&self) -> Option<i64> {
        self.open.map(|s| s + self.window_us)
    }
}

/// What the reader thread sends.
enum Msg {
    Packet(Header),
    Undecodable(u64),
    Failed(Error),
}

/// A pcap capture as a source of `metrics.raw`.
pub struct PacketSource {
    what: String,
    rx: Receiver<Msg>,
    features: Features,
    /// Live: windows also close by wall time, and the capture stops with `stop` or `until`.
    live: Option<Live>,
    packets: u64,
    pending: Vec<Row>,
    done: bool,
}

struct Live {
    child: Child,
    stop: Arc<AtomicBool>,
    until: Option<Instant>,
}

impl Drop for PacketSource {
    fn drop(&mut self) {
        if let Some(l) = &mut self.live {
            let _ = l.child.kill();
            let _ = l.child.wait();
        }
    }
}

/// Reads a pcap stream on a thread of its own (a file, or tcpdump's stdout), decoding headers.
fn spawn_reader<R: Read + Send + 'static>(input: R, what: String) -> Result<Receiver<Msg>> {
    let (tx, rx) = sync_channel(4096);
    std::thread::Builder::new()
        .name("pcap-reader".into())
        .spawn(move || {
            // A panic in the decoder on a hostile capture ends the source with an error naming
            // the capture, not a reader thread that silently stops.
            let at = format!("pcap reader of {what}");
            let r = wfe_contract::panic::contain(&at, || {
                read_pcap(input, &what, &tx);
                Ok(())
            });
            if let Err(e) = r {
                let _ = tx.send(Msg::Failed(e));
            }
        })
        .map_err(|e| Error::io("pcap reader thread", e))?;
    Ok(rx)
}

/// The reader thread's loop: every packet's headers, or the error that ends the capture.
fn read_pcap<R: Read>(input: R, what: &str, tx: &SyncSender<Msg>) {
    let mut reader = match PcapReader::new(input) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Msg::Failed(Error::bad_input(
                what,
                format!("not a pcap capture: {e}"),
            )));
            return;
        }
    };
    let link = reader.header().datalink;
    if !matches!(
        link,
        DataLink::ETHERNET
            | DataLink::LINUX_SLL
            | DataLink::RAW
            | DataLink::IPV4
            | DataLink::IPV6
            | DataLink::NULL
            | DataLink::LOOP
    ) {
        let msg = format!(
            "link type {link:?} is not read (Ethernet, Linux cooked, raw IP, loopback are)"
        );
        let _ = tx.send(Msg::Failed(Error::bad_input(what, msg)));
        return;
    }
    let mut n = 0u64;
    while let Some(p) = reader.next_packet() {
        n += 1;
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Msg::Failed(Error::bad_input(
                    format!("{what}: packet {n}"),
                    e.to_string(),
                )));
                return;
            }
        };
        let ts_us = p.timestamp.as_micros() as i64;
        let msg = match decode(link, ts_us, p.orig_len, &p.data) {
            Some(h) => Msg::Packet(h),
            None => Msg::Undecodable(n),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

impl PacketSource {
    /// Features of a capture file (pcap, as tcpdump -w writes it).
    pub fn file(path: &Path, cfg: PacketConfig) -> Result<Self> {
        let features = Features::new(cfg)?;
        let what = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| Error::io(&what, e))?;
        let rx = spawn_reader(std::io::BufReader::new(f), what.clone())?;
        Ok(Self::new(what, rx, features, None))
    }

    /// Features of a live interface, captured by tcpdump (`-U -w -`), optionally filtered
    /// (a BPF expression), until `stop` is set or `seconds` have passed.
    pub fn live(
        interface: &str,
        filter: Option<&str>,
        cfg: PacketConfig,
        stop: Arc<AtomicBool>,
        seconds: Option<f64>,
    ) -> Result<Self> {
        let features = Features::new(cfg)?;
        let mut cmd = Command::new(&features.cfg.tcpdump);
        // Immediate mode: packets reach wfe as they arrive, not when a kernel buffer fills.
        cmd.args(["-i", interface, "--immediate-mode", "-U", "-n", "-w", "-"]);
        if let Some(f) = filter {
            cmd.arg(f);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!(
                        "{} (packets.tcpdump; Debian's tcpdump package)",
                        features.cfg.tcpdump.display()
                    ),
                    e,
                )
            })?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| Error::state("capture", "tcpdump has no stdout"))?;
        let what = format!("interface {interface}");
        let rx = spawn_reader(out, what.clone())?;
        let until = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
        Ok(Self::new(
            what,
            rx,
            features,
            Some(Live { child, stop, until }),
        ))
    }

    fn new(what: String, rx: Receiver<Msg>, features: Features, live: Option<Live>) -> Self {
        Self {
            what,
            rx,
            features,
            live,
            packets: 0,
            pending: Vec::new(),
            done: false,
        }
    }

    fn live_should_stop(&self) -> bool {
        self.live.as_ref().is_some_and(|l| {
            l.stop.load(Ordering::Relaxed) || l.until.is_some_and(|t| Instant::now() >= t)
        })
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Feature rows as a `metrics.raw` batch.
fn build(rows: &[Row]) -> Result<RecordBatch> {
    let mut workloads: Vec<&str> = Vec::new();
    let mut metrics: Vec<&str> = Vec::new();
    let key = |list: &mut Vec<&str>, v: &'static str| -> i32 {
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
    for (_, w, m, _) in rows {
        let i = match workloads.iter().position(|x| *x == w.as_str()) {
            Some(i) => i,
            None => {
                workloads.push(w);
                workloads.len() - 1
            }
        };
        wk.push(i as i32);
        mk.push(key(&mut metrics, m));
    }
    let columns: Vec<ArrayRef> = vec![
        timestamp_column(rows.iter().map(|r| r.0).collect()),
        dictionary(wk, &workloads)?,
        dictionary(mk, &metrics)?,
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        dictionary_opt(vec![Some(0); rows.len()], &["source=pcap"])?,
    ];
    Ok(RecordBatch::try_new(Topic::MetricsRaw.schema(), columns)?)
}

impl Source for PacketSource {
    fn describe(&self) -> String {
        format!("packet headers of {}", self.what)
    }

    fn next_batch(&mut self, ctx: &mut Context) -> Result<Option<RecordBatch>> {
        loop {
            if !self.pending.is_empty() {
                let rows = std::mem::take(&mut self.pending);
                return build(&rows).map(Some);
            }
            if self.done {
                return Ok(None);
            }
            if self.live_should_stop() {
                self.pending = self.features.close();
                self.done = true;
                continue;
            }
            let msg = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    // Live: a window closes when the wall clock passes its end, packets or not.
                    if self.live.is_some()
                        && self.features.open_until().is_some_and(|end| now_us() > end)
                    {
                        self.pending = self.features.close();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.pending = self.features.close();
                    self.done = true;
                    continue;
                }
            };
            match msg {
                Msg::Packet(h) => {
                    self.packets += 1;
                    match self.features.add(&h) {
                        Ok(rows) => self.pending = rows,
                        Err(()) => {
                            let loc = format!("{} at {} µs", self.what, h.ts_us);
                            ctx.event(Event::Rejected {
                                kind: "late_packet",
                                location: &loc,
                                message: "older than the open window: left out",
                                count: 1,
                            });
                        }
                    }
                }
                Msg::Undecodable(n) => {
                    let loc = format!("{}: packet {n}", self.what);
                    ctx.event(Event::Rejected {
                        kind: "undecodable_packet",
                        location: &loc,
                        message: "not IPv4/IPv6 or truncated headers: left out",
                        count: 1,
                    });
                }
                Msg::Failed(e) => return Err(e),
            }
        }
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.packets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

    fn eth_ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, transport: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + transport.len()) as u16;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend(ip);
        f.extend_from_slice(transport);
        f
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let mut u = vec![0u8; 8 + payload];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        u
    }

    fn cfg() -> PacketConfig {
        PacketConfig {
            window_s: 1.0,
            workloads: vec![
                PacketWorkload {
                    name: "web".into(),
                    addresses: vec![],
                    ports: vec![8080],
                },
                PacketWorkload {
                    name: "dns".into(),
                    addresses: vec!["10.0.0.53".parse().unwrap()],
                    ports: vec![53],
                },
            ],
            other: None,
            ..Default::default()
        }
    }

    fn row<'a>(rows: &'a [Row], w: &str, m: &str) -> Option<&'a Row> {
        rows.iter().find(|r| r.1 == w && r.2 == m)
    }

    #[test]
    fn windows_hold_sizes_timing_protocols_and_flags_per_workload() {
        let mut f = Features::new(cfg()).unwrap();
        let l = DataLink::ETHERNET;
        let web = |us: i64, flags: u8, n: u32| {
            let frame = eth_ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, &tcp(40000, 8080, flags));
            let mut h = decode(l, us, n, &frame).unwrap();
            h.len = n;
            h
        };
        // Window [0, 1 s): SYN, two data packets, a FIN from the web workload; one DNS query.
        let mut rows = Vec::new();
        for h in [
            web(100_000, 0x02, 60),
            web(200_000, 0x10, 1500),
            web(400_000, 0x10, 500),
            web(900_000, 0x11, 60),
        ] {
            rows.extend(f.add(&h).unwrap());
        }
        let q = eth_ipv4([10, 0, 0, 9], [10, 0, 0, 53], 17, &udp(5353, 53, 30));
        rows.extend(
            f.add(&decode(l, 500_000, q.len() as u32, &q).unwrap())
                .unwrap(),
        );
        assert!(rows.is_empty(), "no window closed yet");
        // The next window's first packet closes it.
        rows.extend(f.add(&web(1_300_000, 0x14, 60)).unwrap());
        let v = |w: &str, m: &str| row(&rows, w, m).map(|r| r.3);
        assert_eq!(
            row(&rows, "web", "net.packets_per_s").unwrap().0,
            1000,
            "window end in ms"
        );
        assert_eq!(v("web", "net.packets_per_s"), Some(4.0));
        assert_eq!(v("web", "net.bytes_per_s"), Some(2120.0));
        assert_eq!(v("web", "net.size_p50"), Some(280.0), "between 60 and 500");
        assert_eq!(v("web", "net.size_mean"), Some(530.0));
        assert_eq!(v("web", "net.syn_per_s"), Some(1.0));
        assert_eq!(v("web", "net.fin_per_s"), Some(1.0));
        assert_eq!(v("web", "net.rst_per_s"), Some(0.0));
        assert_eq!(v("web", "net.tcp_share"), Some(1.0));
        assert_eq!(v("web", "net.iat_mean_ms"), Some(800.0 / 3.0));
        assert_eq!(v("dns", "net.udp_share"), Some(1.0));
        assert_eq!(v("dns", "net.size_p50"), Some((14 + 20 + 8 + 30) as f64));
        assert_eq!(v("dns", "net.iat_mean_ms"), None, "one packet: no interval");
        // A packet from before the open window is late.
        assert!(f.add(&web(900_000, 0x10, 60)).is_err());
        // Two silent windows, then a packet at 4.2 s: the window [1, 2 s) closes with its
        // data, [2, 3 s) and [3, 4 s) get zero rates for both workloads.
        let later = f.add(&web(4_200_000, 0x10, 60)).unwrap();
        let at = |end: i64, w: &str| {
            later
                .iter()
                .find(|r| r.0 == end && r.1 == w && r.2 == "net.packets_per_s")
                .map(|r| r.3)
        };
        assert_eq!(at(2000, "web"), Some(1.0));
        assert_eq!(at(2000, "dns"), Some(0.0));
        assert_eq!((at(3000, "web"), at(4000, "dns")), (Some(0.0), Some(0.0)));
        assert_eq!(
            at(5000, "web"),
            None,
            "the packet's own window is still open"
        );
        // At the end: the open window closes; DNS, silent in it, gets zero rates only.
        let last = f.close();
        assert_eq!(row(&last, "web", "net.packets_per_s").unwrap().3, 1.0);
        assert_eq!(row(&last, "dns", "net.packets_per_s").unwrap().3, 0.0);
        assert!(row(&last, "dns", "net.size_p50").is_none());
    }

    #[test]
    fn a_capture_file_becomes_metrics_and_bad_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        {
            let file = std::fs::File::create(&path).unwrap();
            let header = PcapHeader {
                datalink: DataLink::ETHERNET,
                ..Default::default()
            };
            let mut w = PcapWriter::with_header(file, header).unwrap();
            for i in 0..30u64 {
                let frame = eth_ipv4([127, 0, 0, 1], [127, 0, 0, 1], 17, &udp(50000, 8080, 100));
                let ts = Duration::from_millis(1_700_000_000_000 + i * 100);
                w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
                    .unwrap();
            }
            // A truncated frame: counted, skipped.
            let ts = Duration::from_millis(1_700_000_003_050);
            w.write_packet(&PcapPacket::new(ts, 5, &[1, 2, 3, 4, 5]))
                .unwrap();
        }
        let mut src = PacketSource::file(&path, cfg()).unwrap();
        let mut ctx = Context::new("ingest");
        let mut rows = 0;
        let mut pps = Vec::new();
        while let Some(b) = src.next_batch(&mut ctx).unwrap() {
            rows += b.num_rows();
            let m = wfe_contract::columns::DictStrings::new(&b, "metric").unwrap();
            let v = wfe_contract::columns::f64s(&b, "value").unwrap();
            for i in 0..b.num_rows() {
                if m.get(i) == Some("net.packets_per_s") {
                    pps.push(v.value(i));
                }
            }
        }
        assert!(rows > 0);
        assert_eq!(pps, [10.0, 10.0, 10.0], "30 packets, 10 per 1 s window");
        assert_eq!(ctx.counters()["rejected.undecodable_packet"], 1);

        std::fs::write(dir.path().join("no.pcap"), b"not a capture at all").unwrap();
        let mut src = PacketSource::file(&dir.path().join("no.pcap"), cfg()).unwrap();
        let e = src.next_batch(&mut ctx).unwrap_err().to_string();
        assert!(e.contains("no.pcap") && e.contains("not a pcap"), "{e}");
        let bad = PacketConfig {
            workloads: vec![PacketWorkload {
                name: "x".into(),
                addresses: vec![],
                ports: vec![],
            }],
            ..cfg()
        };
        assert!(
            Features::new(bad)
                .unwrap_err()
                .to_string()
                .contains("packets.workloads[0]")
        );
    }
}
