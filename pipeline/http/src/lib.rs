//! # wfe-http: wfe's HTTP side
//!
//! [`RemoteWriteSource`]: a Prometheus remote_write receiver (the standard protocol:
//! snappy-compressed protobuf `WriteRequest`s POSTed by Prometheus, Grafana Agent, Mimir
//! and others) as a [`Source`](wfe_contract::Source) of `metrics.raw`: each sample becomes a
//! row whose workload and metric come from its labels by config ([`remote_write`]).
//!
//! actix-web serves it on its own thread; requests become batches on a bounded channel that
//! the pipeline drains. A full channel answers 503 so the sender retries later (Prometheus
//! backs off and resends), an undecodable body 400 (it would never decode), so nothing
//! accepted is lost and nothing unreadable is retried forever.

pub mod remote_write;

pub use remote_write::{RemoteWriteConfig, RemoteWriteSource};
