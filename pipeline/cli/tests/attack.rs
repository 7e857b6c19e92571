//! `wfe receive` under attack, as a process: a decompression bomb, 20,000 new workloads that
//! each bring a metric of their own, a far-future and an i64-extreme sample, and the first
//! samples of a workload out of order. The receiver answers each as it should, stays up and
//! within a stated memory bound, and its summary counts every rejection.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wfe_http::remote_write::{TimeSeries, WriteRequest, encode};

mod common;
use common::free_port;

/// Peak resident memory the receiver may reach through all of it (its idle size with
/// libtorch linked is part of it).
const PEAK_RSS_MIB: u64 = 600;

fn series(workload: &str, metric: &str, samples: &[(i64, f64)]) -> TimeSeries {
    let labels = [
        ("__name__", metric),
        ("instance", workload),
        ("split", "train"),
    ];
    TimeSeries::new(&labels, samples)
}

/// POSTs a body to the receiver: the status code.
fn post(addr: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Encoding: snappy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// POSTs until accepted (a 503 says the pipeline is behind: retry, as Prometheus does).
fn post_until_taken(addr: &str, body: &[u8]) -> u16 {
    let start = Instant::now();
    loop {
        match post(addr, body) {
            503 if start.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            code => return code,
        }
    }
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn hostile_senders_leave_the_receiver_up_small_and_counting() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            "[remote_write]\nlisten = \"{addr}\"\nworkload_labels = [\"instance\"]\n\n[stages]\nenabled = [\"normalise\"]\n\n[stages.normalise]\nlearn_steps = 3\n"
        ),
    )
    .unwrap();
    let mut wfe = Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(["receive", "--config", "job.toml", "--seconds", "30"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wfe");
    let pid = wfe.id();
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "receiver never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = 1_700_000_000_000i64;

    // A snappy header that declares ~4 GiB: refused before anything is allocated.
    assert_eq!(
        post(&addr, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x61]),
        413
    );

    // 20,000 new workloads, each with a metric of its own, in requests of 2,000 series.
    for chunk in 0..10 {
        let req = WriteRequest {
            timeseries: (0..2000)
                .map(|i| {
                    let w = chunk * 2000 + i;
                    series(
                        &format!("w{w}"),
                        &format!("m{w}"),
                        &[
                            (t, 1.0),
                            (t + 60_000, 2.0),
                            (t + 120_000, 3.0),
                            (t + 180_000, 4.0),
                        ],
                    )
                })
                .collect(),
        };
        assert_eq!(post_until_taken(&addr, &encode(&req)), 204);
    }

    // First samples out of order (this crashed normalise's thread before), then times no
    // clock can reach.
    let odd = WriteRequest {
        timeseries: vec![
            series(
                "ooo",
                "cpu",
                &[
                    (t + 60_000, 1.0),
                    (t + 120_000, 2.0),
                    (t + 180_000, 3.0),
                    (t, 4.0),
                ],
            ),
            series(
                "w1",
                "m1",
                &[
                    (i64::MAX, 1.0),
                    (i64::MIN, 1.0),
                    (t + 100 * 365 * 86_400_000, 1.0),
                ],
            ),
        ],
    };
    assert_eq!(post_until_taken(&addr, &encode(&odd)), 204);

    let mut peak = 0;
    let out = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        if let Ok(Some(_)) = wfe.try_wait() {
            break wfe.wait_with_output().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "receiver did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rejected.time=3"), "{text}");
    assert!(
        text.contains("rejected.remote_write_bad_request=1"),
        "{text}"
    );
    assert!(
        text.contains("rejected.remote_write_reserved_label=20,002"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    let peak_mib = peak / 1024;
    eprintln!("peak resident memory of wfe receive: {peak_mib} MiB (bound {PEAK_RSS_MIB})");
    assert!(peak_mib < PEAK_RSS_MIB, "peak RSS {peak_mib} MiB\n{text}");
}
