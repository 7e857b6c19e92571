//! `wfe capture` on traffic the test makes itself on loopback: tcpdump records TCP
//! connections and UDP datagrams to two ports into a pcap file, and wfe turns it into
//! per-workload packet features whose counts match the traffic sent; the live path
//! (`--interface lo`) counts datagrams as they are sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, jsonl};

const CONNECTIONS: usize = 5;
const TCP_BYTES: usize = 2000;
const DATAGRAMS: usize = 20;
const UDP_PAYLOAD: usize = 100;

fn tcpdump() -> PathBuf {
    std::env::var_os("WFE_TCPDUMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tcpdump"))
}

fn job(dir: &Path, tcp: u16, udp: u16) {
    std::fs::write(
        dir.join("job.toml"),
        format!(
            r#"
[run]
progress = false

[stages]
enabled = ["normalise"]

[stages.normalise]
step_s = 1
learn_steps = 2

[packets]
window_s = 1.0
tcpdump = "{}"

[[packets.workloads]]
name = "tcp-svc"
ports = [{tcp}]

[[packets.workloads]]
name = "udp-svc"
ports = [{udp}]
addresses = ["127.0.0.1"]

[outputs]
dir = "out"
jsonl = ["metrics.raw", "metrics.norm"]
parquet = []
"#,
            tcpdump().display()
        ),
    )
    .unwrap();
}

/// TCP connections that each send `TCP_BYTES` and close, and UDP datagrams, to the ports.
fn traffic(tcp: &TcpListener, udp_port: u16) {
    let port = tcp.local_addr().unwrap().port();
    for _ in 0..CONNECTIONS {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut s, _) = tcp.accept().unwrap();
        c.write_all(&[7u8; TCP_BYTES]).unwrap();
        let mut buf = vec![0u8; TCP_BYTES];
        s.read_exact(&mut buf).unwrap();
        drop(c);
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..DATAGRAMS {
        tx.send_to(&[1u8; UDP_PAYLOAD], ("127.0.0.1", udp_port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_tcpdump(pcap: &Path, filter: &str) -> Child {
    let child = Command::new(tcpdump())
        .args(["-i", "lo", "--immediate-mode", "-U", "-n", "-w"])
        .arg(pcap)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): `make test` installs Debian's tcpdump, or set WFE_TCPDUMP",
                tcpdump().display()
            )
        });
    // Capturing once the file has its header, and a moment more for the filter to attach.
    let start = Instant::now();
    while std::fs::metadata(pcap).map(|m| m.len()).unwrap_or(0) < 24 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tcpdump wrote no header"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child
}

/// Sum over windows of `metric` for `workload` (rates x 1 s windows = counts).
fn total(rows: &[serde_json::Value], workload: &str, metric: &str) -> f64 {
    rows.iter()
        .filter(|r| r["workload"] == workload && r["metric"] == metric)
        .map(|r| r["value"].as_f64().unwrap())
        .sum()
}

fn values(rows: &[serde_json::Value], workload: &str, metric: &str) -> Vec<f64> {
    rows.iter()
        .filter(|r| r["workload"] == workload && r["metric"] == metric)
        .map(|r| r["value"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_loopback_capture_becomes_packet_features_per_workload() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tp, up) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    job(dir.path(), tp, up);
    let pcap = dir.path().join("lo.pcap");
    let dump = start_tcpdump(&pcap, &format!("port {tp} or port {up}"));
    traffic(&tcp, up);
    std::thread::sleep(Duration::from_millis(500));
    let pid = dump.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let out = dump.wait_with_output().unwrap();
    let stats = String::from_utf8_lossy(&out.stderr);
    assert!(stats.contains("packets captured"), "{stats}");

    let o = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["capture", "--pcap", "lo.pcap", "--config", "job.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = jsonl(dir.path().join("out/metrics.raw.jsonl"));
    // Every TCP connection opens with SYN and SYN-ACK and closes with a FIN each way.
    assert_eq!(
        total(&raw, "tcp-svc", "net.syn_per_s"),
        (2 * CONNECTIONS) as f64,
        "{stats}"
    );
    assert_eq!(
        total(&raw, "tcp-svc", "net.fin_per_s"),
        (2 * CONNECTIONS) as f64
    );
    assert_eq!(total(&raw, "tcp-svc", "net.rst_per_s"), 0.0);
    let tcp_bytes = total(&raw, "tcp-svc", "net.bytes_per_s");
    assert!(
        tcp_bytes > (CONNECTIONS * TCP_BYTES) as f64,
        "{tcp_bytes} bytes"
    );
    assert!(
        values(&raw, "tcp-svc", "net.tcp_share")
            .iter()
            .all(|v| *v == 1.0)
    );
    // Each datagram: Ethernet (14) + IPv4 (20) + UDP (8) + payload on loopback.
    assert_eq!(
        total(&raw, "udp-svc", "net.packets_per_s"),
        DATAGRAMS as f64,
        "{:?}\n{stats}\n{}",
        values(&raw, "udp-svc", "net.packets_per_s"),
        String::from_utf8_lossy(&o.stderr)
    );
    let size = (14 + 20 + 8 + UDP_PAYLOAD) as f64;
    assert!(
        values(&raw, "udp-svc", "net.size_p50")
            .iter()
            .all(|v| *v == size)
    );
    assert!(
        values(&raw, "udp-svc", "net.udp_share")
            .iter()
            .all(|v| *v == 1.0)
    );
    let iat = values(&raw, "udp-svc", "net.iat_mean_ms");
    assert!(
        !iat.is_empty() && iat.iter().all(|v| *v >= 15.0),
        "sent 20 ms apart: {iat:?}"
    );
    // Through normalise: the features are steps of metrics.norm.
    let norm = jsonl(dir.path().join("out/metrics.norm.jsonl"));
    for w in ["tcp-svc", "udp-svc"] {
        assert!(
            norm.iter()
                .any(|r| r["workload"] == w && r["metric"] == "net.packets_per_s"),
            "{w}"
        );
    }
}

#[test]
fn a_live_interface_is_captured_through_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up = udp.local_addr().unwrap().port();
    job(dir.path(), free_port(), up);
    let filter = format!("udp port {up}");
    let wfe = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args([
            "capture",
            "--interface",
            "lo",
            "--filter",
            &filter,
            "--seconds",
            "6",
            "--config",
            "job.toml",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..DATAGRAMS {
        tx.send_to(&[1u8; UDP_PAYLOAD], ("127.0.0.1", up)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = wfe.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = jsonl(dir.path().join("out/metrics.raw.jsonl"));
    assert_eq!(
        total(&raw, "udp-svc", "net.packets_per_s"),
        DATAGRAMS as f64,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
