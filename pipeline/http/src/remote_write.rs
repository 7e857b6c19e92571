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
//!
//! Bounds ([`decode`]): the compressed body (`max_body_bytes`), its decoded size, series and
//! samples per request (413 past them), and what waits for the pipeline in requests (`queue`)
//! and in bytes (`max_queue_bytes`; 503, retry later, past either). Senders may have to
//! authenticate ([`auth`]: 401 without credentials, 403 with wrong ones).

mod auth;
mod config;
pub mod decode;

pub use auth::SenderAuth;
pub use config::RemoteWriteConfig;
pub use decode::{Decoded, Label, Refusal, Sample, TimeSeries, WriteRequest, decode, encode};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use wfe_contract::{Context, Error, Event, RecordBatch, Result, Source, Topic};

use crate::server::Server;

/// What the handler tells the source besides batches.
enum Msg {
    /// A request's rows and what it held, with the bytes it holds in the queue.
    Batch(RecordBatch, Decoded, usize),
    Bad(String),
}

struct Shared {
    tx: SyncSender<Msg>,
    cfg: RemoteWriteConfig,
    /// The `Authorization` header senders must send, if any.
    expected_auth: Option<String>,
    /// Bytes of rows in the queue (the source takes them off as it receives).
    queued: Arc<AtomicUsize>,
}

async fn write(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth::check(shared.expected_auth.as_deref(), given) {
        Ok(()) => {}
        Err(true) => {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer, Basic"))
                .body("this receiver needs an Authorization header");
        }
        Err(false) => return HttpResponse::Forbidden().body("wrong credentials"),
    }
    match decode(&body, &shared.cfg) {
        Ok((None, d)) => {
            // Nothing usable (all stale, or no workload label): accepted, counted.
            let empty = RecordBatch::new_empty(Topic::MetricsRaw.schema());
            let _ = shared.tx.try_send(Msg::Batch(empty, d, 0));
            HttpResponse::NoContent().finish()
        }
        Ok((Some(b), d)) => enqueue(&shared, b, d),
        Err(refusal) => {
            let why = refusal.message().to_string();
            let _ = shared.tx.try_send(Msg::Bad(why.clone()));
            match refusal {
                Refusal::Bad(_) => HttpResponse::BadRequest().body(why),
                Refusal::TooLarge(_) => HttpResponse::PayloadTooLarge().body(why),
            }
        }
    }
}

/// Queues a request's rows, unless the queue is full in requests or in bytes: then 503, and
/// the sender retries with backoff (Prometheus does).
fn enqueue(shared: &Shared, b: RecordBatch, d: Decoded) -> HttpResponse {
    let size = b.get_array_memory_size();
    let before = shared.queued.fetch_add(size, Ordering::AcqRel);
    if before > 0 && before + size > shared.cfg.max_queue_bytes {
        shared.queued.fetch_sub(size, Ordering::AcqRel);
        return HttpResponse::ServiceUnavailable().body("wfe is behind (queue bytes): retry");
    }
    match shared.tx.try_send(Msg::Batch(b, d, size)) {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => {
            shared.queued.fetch_sub(size, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => {
                    HttpResponse::ServiceUnavailable().body("wfe is behind: retry")
                }
                TrySendError::Disconnected(_) => {
                    HttpResponse::ServiceUnavailable().body("wfe is stopping")
                }
            }
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
    queued: Arc<AtomicUsize>,
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
        let queued = Arc::new(AtomicUsize::new(0));
        let shared = web::Data::new(Shared {
            tx,
            expected_auth: cfg.auth.as_ref().map(SenderAuth::expected_header),
            cfg,
            queued: queued.clone(),
        });
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
            queued,
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
                Ok(Msg::Batch(b, d, size)) => {
                    self.queued.fetch_sub(size, Ordering::AcqRel);
                    self.requests += 1;
                    ctx.count("remote_write.requests", 1);
                    if d.stale > 0 {
                        ctx.count("remote_write.stale_markers", d.stale as u64);
                    }
                    if d.reserved > 0 {
                        ctx.event(Event::Rejected {
                            kind: "remote_write_reserved_label",
                            location: "remote_write",
                            message: "labels `split` and `label` are wfe's own: dropped from the series",
                            count: d.reserved as u64,
                        });
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
                    ctx.reject("remote_write_bad_request", "remote_write", &why);
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
mod tests;
