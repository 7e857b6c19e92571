//! KEDA's external-scaler protocol over a run's state.
//!
//! - [`query`]: a trigger's metadata, checked: workload, resource, quantile, pod start-up,
//!   the demand one replica serves, the activation value, the floor.
//! - [`metric`]: the value for a query from the run's state (the HTTP API's
//!   [`wfe_http::ApiState`], folded from the run's topics): the newest forecast of the
//!   shortest horizon covering start-up, at the quantile, not below the demand observed last.
//! - [`service`]: KEDA's four calls (IsActive, StreamIsActive, GetMetricSpec, GetMetrics).
//! - [`server`]: tonic on a thread of its own, bound before it starts, stopped when dropped;
//!   every request and stream count is bounded.

pub mod metric;
pub mod query;
pub mod server;
pub mod service;

pub use query::{Defaults, Query};
pub use server::KedaServer;
pub use service::{Scaler, ScalerOptions};
