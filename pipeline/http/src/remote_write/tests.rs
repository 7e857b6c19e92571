//! The receiver over a real socket: what a sender gets back, and what reaches the pipeline.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;

fn request(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> Vec<u8> {
    let samples: Vec<(i64, f64)> = samples.iter().map(|&(v, t)| (t, v)).collect();
    encode(&WriteRequest {
        timeseries: vec![TimeSeries::new(labels, &samples)],
    })
}

/// POSTs `body` and returns the status code.
fn post(addr: std::net::SocketAddr, body: &[u8], authorization: Option<&str>) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn receiver(cfg: RemoteWriteConfig) -> RemoteWriteSource {
    let cfg = RemoteWriteConfig {
        listen: "127.0.0.1:0".into(),
        ..cfg
    };
    RemoteWriteSource::new(cfg, Arc::new(AtomicBool::new(false)), Some(5.0)).unwrap()
}

#[test]
fn senders_must_authenticate_when_asked_and_bombs_get_413() {
    let mut src = receiver(RemoteWriteConfig {
        auth: Some(SenderAuth::BearerToken("s3cret".into())),
        ..Default::default()
    });
    let addr = src.addr();
    let body = request(&[("__name__", "up"), ("instance", "w")], &[(1.0, 1000)]);
    assert_eq!(post(addr, &body, None), 401);
    assert_eq!(post(addr, &body, Some("Bearer wrong")), 403);
    assert_eq!(post(addr, &body, Some("Bearer s3cret")), 204);
    let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x61];
    assert_eq!(post(addr, &bomb, Some("Bearer s3cret")), 413);
    assert_eq!(post(addr, b"not snappy", Some("Bearer s3cret")), 400);
    // The accepted request's row reaches the pipeline; the refusals are counted.
    let mut ctx = Context::new("ingest");
    let b = src.next_batch(&mut ctx).unwrap().unwrap();
    assert_eq!(b.num_rows(), 1);
    assert_eq!(ctx.counters()["remote_write.requests"], 1);
    // The refusals are reported as the source reads on (they came after the good one);
    // it stops once told to.
    let stop = src.stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(src.next_batch(&mut ctx).unwrap().is_none());
    stopper.join().unwrap();
    assert_eq!(ctx.counters()["rejected.remote_write_bad_request"], 2);
}

#[test]
fn the_queue_is_bounded_in_bytes_as_well_as_requests() {
    // Nobody reads the source: the first request is always taken, the next ones only while
    // the queued bytes stay under the bound.
    let src = receiver(RemoteWriteConfig {
        max_queue_bytes: 1,
        queue: 100,
        ..Default::default()
    });
    let addr = src.addr();
    let body = request(&[("__name__", "up"), ("instance", "w")], &[(1.0, 1000)]);
    assert_eq!(post(addr, &body, None), 204);
    assert_eq!(post(addr, &body, None), 503);
    assert!(src.queued.load(Ordering::Acquire) > 0);
}
