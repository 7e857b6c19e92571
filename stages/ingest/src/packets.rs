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

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use wfe_contract::raw::RawBuilder;
use wfe_contract::{Context, Error, RecordBatch, Result, Source};

mod config;
mod features;
mod header;
pub use config::{PacketConfig, PacketWorkload};
pub use features::{Features, Row};
pub use header::{Header, Proto, decode};

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
    let mut b = RawBuilder::with_capacity(rows.len());
    let pcap = b.label_key("source=pcap");
    for (t, w, m, v) in rows {
        let (wk, mk) = (b.workload_key(w), b.metric_key(m));
        b.push(*t, wk, mk, *v, Some(pcap));
    }
    b.finish()
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
                        Err(features::Late) => {
                            let loc = format!("{} at {} µs", self.what, h.ts_us);
                            ctx.reject("late_packet", &loc, "older than the open window: left out");
                        }
                    }
                }
                Msg::Undecodable(n) => {
                    let loc = format!("{}: packet {n}", self.what);
                    ctx.reject(
                        "undecodable_packet",
                        &loc,
                        "not IPv4/IPv6 or truncated headers: left out",
                    );
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
mod tests;
