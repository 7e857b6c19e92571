//! # wfe-http: wfe's HTTP side
//!
//! A tour:
//! - [`server`]: an actix-web server on a thread of its own, bound before it starts (port 0
//!   works, a taken port is an error at once) and stopped when dropped.
//! - [`RemoteWriteSource`]: a Prometheus remote_write receiver (the standard protocol:
//!   snappy-compressed protobuf `WriteRequest`s POSTed by Prometheus, Grafana Agent, Mimir
//!   and others) as a [`Source`](wfe_contract::Source) of `metrics.raw`: each sample becomes a
//!   row whose workload and metric come from its labels by config ([`remote_write`]).
//!   Requests become batches on a bounded channel that the pipeline drains; a full channel
//!   answers 503 so the sender retries later, an undecodable body 400, so nothing accepted is
//!   lost and nothing unreadable is retried forever.
//! - [`observe`]: the Prometheus recorder behind `/metrics` (the stages count through the
//!   `metrics` facade).
//! - [`api`]: a stage that folds the run's topics into the latest state per workload.
//! - [`web`]: `/metrics`, `/health`, `/ready`, the JSON API over that state, the run-time
//!   settings (token-guarded changes) and the web UI.

pub mod api;
pub mod observe;
pub mod remote_write;
pub mod server;
pub mod web;

pub use api::{ApiStage, ApiState};
pub use remote_write::{RemoteWriteConfig, RemoteWriteSource};
pub use server::Server;
pub use web::{Endpoints, WorkloadAnswer, serve};
