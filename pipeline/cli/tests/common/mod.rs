//! Helpers the `wfe` binary's integration tests share.
#![allow(dead_code)] // each test crate uses its own subset

pub mod held;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The stages after ingest, in pipeline order (as `wfe` names them).
pub const STAGES: [&str; 6] = [
    "normalise",
    "fingerprint",
    "anomaly",
    "forecast",
    "tier-select",
    "actuate",
];

/// Runs the `wfe` binary built for these tests in `dir`.
pub fn wfe(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run wfe")
}

/// `../shared/data` beside the checkout, or `$WFE_DATA`, absolute.
pub fn shared_data() -> PathBuf {
    let data = std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let data = data.canonicalize().expect("shared data (set WFE_DATA)");
    assert!(data.join("smd").is_dir(), "no smd/ in {}", data.display());
    data
}

/// A loopback port free at the time of asking (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 request to a loopback server (no client library needed): status and body.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of a Prometheus sample `name{...}` whose labels include all of `labels`
/// (summed over the other labels); None when there is no such sample.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, lbls) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| lbls.contains(&format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.parse().unwrap_or(f64::NAN);
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// The rows of a JSON-lines output file.
pub fn jsonl(path: PathBuf) -> Vec<serde_json::Value> {
    output_text(&path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The text of an output: its file, or a rolled output's parts (`part-*`, the folder of a live
/// source's outputs) joined in order.
pub fn output_text(path: &Path) -> String {
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if !path.is_dir() {
        return read(path);
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    parts.sort();
    parts.iter().map(|p| read(p)).collect()
}
