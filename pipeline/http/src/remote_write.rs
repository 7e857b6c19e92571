//! The Prometheus remote_write receiver.
//!
//! Protocol (remote write 1.0): `POST` of a snappy block-compressed protobuf
//! `prometheus.WriteRequest { repeated TimeSeries timeseries = 1; }`, where
//! `TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }`,
//! `Label { string name = 1; string value = 2; }` and
//! `Sample { double value = 1; int64 timestamp = 2; }` (ms). Other fields (metadata,
//! exemplars, histograms) are skipped by the decoder.
//!
//! Mapping: the metric is the `__name__` label; the workload the first of
//! `workload_labels` a series has (default `instance`, then `job`), prefixed by
//! `workload_prefix`; every other label goes to `labels`. A series with no workload label
//! is counted and left out; Prometheus' staleness markers (a special NaN) are skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use arrow_array::{ArrayRef, Float64Array};
use prost::Message;
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_contract::schemas::labels;
use wfe_contract::{Context, Error, Event, RecordBatch, Result, Source, Topic};

use crate::server::Server;

/// Settings of the receiver (`[remote_write]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Address to listen on (`host:port`; port 0: any free port, logged).
    #[serde(default = "d_listen")]
    pub listen: String,
    /// Labels that name the workload, first present wins.
    #[serde(default = "d_workload_labels")]
    pub workload_labels: Vec<String>,
    /// Put before every workload id (e.g. `prom:`), so resource maps can select them.
    #[serde(default)]
    pub workload_prefix: String,
    /// Largest request body accepted (bytes, compressed).
    #[serde(default = "d_max_body")]
    pub max_body_bytes: usize,
    /// Requests waiting for the pipeline before new ones are answered 503 (retry later).
    #[serde(default = "d_queue")]
    pub queue: usize,
}

fn d_listen() -> String {
    "127.0.0.1:9201".into()
}
fn d_workload_labels() -> Vec<String> {
    vec!["instance".into(), "job".into()]
}
fn d_max_body() -> usize {
    16 * 1024 * 1024
}
fn d_queue() -> usize {
    64
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        Self {
            listen: d_listen(),
            workload_labels: d_workload_labels(),
            workload_prefix: String::new(),
            max_body_bytes: d_max_body(),
            queue: d_queue(),
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Prometheus' staleness marker: a NaN with this bit pattern.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What one request held.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    pub rows: usize,
    pub no_workload: usize,
    pub stale: usize,
}

/// A decoded request as `metrics.raw` rows (None when it held no sample).
pub fn decode(
    body: &[u8],
    cfg: &RemoteWriteConfig,
) -> std::result::Result<(Option<RecordBatch>, Decoded), String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy (block format): {e}"))?;
    let req =
        WriteRequest::decode(raw.as_slice()).map_err(|e| format!("not a WriteRequest: {e}"))?;
    let mut d = Decoded::default();
    let (mut ts, mut wk, mut mk, mut vals, mut lk) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut workloads, mut metrics, mut label_sets) = (
        Interner::default(),
        Interner::default(),
        Interner::default(),
    );
    for series in &req.timeseries {
        let get = |n: &str| {
            series
                .labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.as_str())
        };
        let Some(name) = get("__name__").filter(|n| !n.is_empty()) else {
            d.no_workload += series.samples.len();
            continue;
        };
        let Some((wl, w)) = cfg
            .workload_labels
            .iter()
            .find_map(|l| get(l).filter(|v| !v.is_empty()).map(|v| (l.as_str(), v)))
        else {
            d.no_workload += series.samples.len();
            continue;
        };
        let rest = labels::format(
            series
                .labels
                .iter()
                .filter(|l| l.name != "__name__" && l.name != wl)
                .map(|l| (l.name.as_str(), l.value.as_str())),
        );
        let w = workloads.key(&format!("{}{w}", cfg.workload_prefix));
        let m = metrics.key(name);
        let l = (!rest.is_empty()).then(|| label_sets.key(&rest));
        for s in &series.samples {
            if s.value.to_bits() == STALE_NAN {
                d.stale += 1;
                continue;
            }
            ts.push(s.timestamp);
            wk.push(w);
            mk.push(m);
            vals.push(s.value);
            lk.push(l);
        }
    }
    d.rows = ts.len();
    if ts.is_empty() {
        return Ok((None, d));
    }
    let columns: Vec<ArrayRef> = vec![
        timestamp_column(ts),
        dictionary(wk, &workloads.refs()).map_err(|e| e.to_string())?,
        dictionary(mk, &metrics.refs()).map_err(|e| e.to_string())?,
        Arc::new(Float64Array::from(vals)),
        dictionary_opt(lk, &label_sets.refs()).map_err(|e| e.to_string())?,
    ];
    RecordBatch::try_new(Topic::MetricsRaw.schema(), columns)
        .map(|b| (Some(b), d))
        .map_err(|e| e.to_string())
}

/// Dictionary keys of one request's strings (a request holds thousands of series).
#[derive(Default)]
struct Interner {
    values: Vec<String>,
    index: std::collections::HashMap<String, i32>,
}

impl Interner {
    fn key(&mut self, v: &str) -> i32 {
        if let Some(&k) = self.index.get(v) {
            return k;
        }
        let k = self.values.len() as i32;
        self.values.push(v.to_string());
        self.index.insert(v.to_string(), k);
        k
    }

    fn refs(&self) -> Vec<&str> {
        self.values.iter().map(String::as_str).collect()
    }
}

/// What the handler tells the source besides batches.
enum Msg {
    Batch(RecordBatch, Decoded),
    Bad(String),
}

struct Shared {
    tx: SyncSender<Msg>,
    cfg: RemoteWriteConfig,
}

async fn write(body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    match decode(&body, &shared.cfg) {
        Ok((None, d)) => {
            // Nothing usable (all stale, or no workload label): accepted, counted.
            let _ = shared.tx.try_send(Msg::Batch(
                RecordBatch::new_empty(Topic::MetricsRaw.schema()),
                d,
            ));
            HttpResponse::NoContent().finish()
        }
        Ok((Some(b), d)) => match shared.tx.try_send(Msg::Batch(b, d)) {
            Ok(()) => HttpResponse::NoContent().finish(),
            // The pipeline is behind: the sender retries with backoff.
            Err(TrySendError::Full(_)) => {
                HttpResponse::ServiceUnavailable().body("wfe is behind: retry")
            }
            Err(TrySendError::Disconnected(_)) => {
                HttpResponse::ServiceUnavailable().body("wfe is stopping")
            }
        },
        Err(why) => {
            let _ = shared.tx.try_send(Msg::Bad(why.clone()));
            HttpResponse::BadRequest().body(why)
        }
    }
}

/// The receiver as a source: listens from `new` until dropped.
pub struct RemoteWriteSource {
    rx: Receiver<Msg>,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    until: Option<Instant>,
    /// Dropped with the source: stops listening.
    _server: Server,
    requests: u64,
}

impl RemoteWriteSource {
    /// Binds `cfg.listen` and serves `POST /api/v1/write` (and `/`), stopping when `stop` is
    /// set or after `seconds` of wall time.
    pub fn new(
        cfg: RemoteWriteConfig,
        stop: Arc<AtomicBool>,
        seconds: Option<f64>,
    ) -> Result<Self> {
        if cfg.workload_labels.is_empty() {
            return Err(Error::config(
                "remote_write.workload_labels",
                "name at least one label",
            ));
        }
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let max_body = cfg.max_body_bytes;
        let listen = cfg.listen.clone();
        let shared = web::Data::new(Shared { tx, cfg });
        let server = Server::start(&listen, "remote_write.listen", 1, move |app| {
            app.app_data(shared.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .route("/api/v1/write", web::post().to(write))
                .route("/", web::post().to(write));
        })?;
        let addr = server.addr();
        tracing::info!(%addr, "remote_write receiver listening on http://{addr}/api/v1/write");
        Ok(Self {
            rx,
            addr,
            stop,
            until: seconds.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0))),
            _server: server,
            requests: 0,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Source for RemoteWriteSource {
    fn describe(&self) -> String {
        format!(
            "Prometheus remote_write on http://{}/api/v1/write",
            self.addr
        )
    }

    fn next_batch(&mut self, ctx: &mut Context) -> Result<Option<RecordBatch>> {
        loop {
            if self.stop.load(Ordering::Relaxed) || self.until.is_some_and(|t| Instant::now() >= t)
            {
                return Ok(None);
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Batch(b, d)) => {
                    self.requests += 1;
                    ctx.count("remote_write.requests", 1);
                    if d.stale > 0 {
                        ctx.count("remote_write.stale_markers", d.stale as u64);
                    }
                    if d.no_workload > 0 {
                        let msg = format!(
                            "{} samples without a __name__ or any of the workload labels: left out",
                            d.no_workload
                        );
                        ctx.event(Event::Rejected {
                            kind: "remote_write_no_workload",
                            location: "remote_write",
                            message: &msg,
                            count: d.no_workload as u64,
                        });
                    }
                    if b.num_rows() > 0 {
                        ctx.count("rows_out", b.num_rows() as u64);
                        return Ok(Some(b));
                    }
                }
                Ok(Msg::Bad(why)) => {
                    ctx.event(Event::Rejected {
                        kind: "remote_write_bad_request",
                        location: "remote_write",
                        message: &why,
                        count: 1,
                    });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::state("remote_write", "the HTTP server stopped"));
                }
            }
        }
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.requests, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_contract::columns::{DictStrings, f64s, timestamps};

    fn body(series: Vec<TimeSeries>) -> Vec<u8> {
        let raw = WriteRequest { timeseries: series }.encode_to_vec();
        snap::raw::Encoder::new().compress_vec(&raw).unwrap()
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    #[test]
    fn samples_become_rows_by_the_label_mapping() {
        let cfg = RemoteWriteConfig {
            workload_prefix: "prom:".into(),
            ..Default::default()
        };
        let b = body(vec![
            series(
                &[
                    ("__name__", "up"),
                    ("instance", "web-1:9100"),
                    ("job", "node"),
                ],
                &[(1.0, 1000), (1.0, 2000)],
            ),
            series(&[("__name__", "load1"), ("job", "batch")], &[(0.5, 1000)]),
            series(&[("instance", "x")], &[(3.0, 1000)]),
            series(
                &[("__name__", "up"), ("instance", "web-2")],
                &[(f64::from_bits(STALE_NAN), 3000)],
            ),
        ]);
        let (batch, d) = decode(&b, &cfg).unwrap();
        let batch = batch.unwrap();
        assert_eq!(
            d,
            Decoded {
                rows: 3,
                no_workload: 1,
                stale: 1
            }
        );
        let w = DictStrings::new(&batch, "workload").unwrap();
        let m = DictStrings::new(&batch, "metric").unwrap();
        let l = DictStrings::new(&batch, "labels").unwrap();
        let got: Vec<_> = (0..3)
            .map(|r| (w.get(r).unwrap(), m.get(r).unwrap(), l.get(r)))
            .collect();
        assert_eq!(
            got,
            [
                ("prom:web-1:9100", "up", Some("job=node")),
                ("prom:web-1:9100", "up", Some("job=node")),
                ("prom:batch", "load1", None),
            ]
        );
        assert_eq!(
            timestamps(&batch, "event_time").unwrap().values().to_vec(),
            [1000, 2000, 1000]
        );
        assert_eq!(
            f64s(&batch, "value").unwrap().values().to_vec(),
            [1.0, 1.0, 0.5]
        );
    }

    #[test]
    fn bad_bodies_are_named_not_a_panic() {
        let cfg = RemoteWriteConfig::default();
        assert!(
            decode(b"plain text", &cfg)
                .unwrap_err()
                .starts_with("not snappy")
        );
        let junk = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff])
            .unwrap();
        assert!(
            decode(&junk, &cfg)
                .unwrap_err()
                .starts_with("not a WriteRequest")
        );
        assert_eq!(decode(&body(vec![]), &cfg).unwrap().0, None);
    }
}
