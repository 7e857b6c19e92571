//! # wfe-kube: wfe for Kubernetes
//!
//! Most teams that would use wfe run Kubernetes, where HPA and VPA react after the fact. This
//! crate turns wfe's forecasts into what Kubernetes acts on.
//!
//! A tour:
//! - [`keda`]: wfe as a KEDA external scaler. KEDA scales a Deployment from the metric a
//!   scaler reports, through the HPA it manages (`replicas = ceil(metric / target)`); reactive
//!   scalers report what the workload uses now, this one what wfe forecasts it will use by
//!   the time a new replica serves, so a Deployment grows ahead of demand. A ScaledObject
//!   names it with a trigger of `type: external` (or `external-push`) and `scalerAddress`;
//!   its metadata selects the workload and resource
//!   (`deploy/k8s/examples/predictive-scaling.yaml`).
//! - [`recommend`]: container sizes (vertical): per workload and resource, requests and limits
//!   from the forecast distribution in VPA's recommendation shape, and the patch that applies
//!   them (`wfe recommend --kubernetes`).
//! - [`contention`]: co-located workloads' forecasts summed per host (with their
//!   correlation from history), the chance a host's capacity is passed, and the moves that
//!   bring contended hosts within a bound.
//! - [`error`]: what cannot be answered, as gRPC statuses that say whether to wait.
//! - [`proto`]: KEDA's messages and service, generated from `proto/externalscaler.proto`.

pub mod contention;
pub mod error;
pub mod keda;
pub mod recommend;

#[cfg(test)]
mod fixtures;

/// The messages and service of `proto/externalscaler.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

pub use error::ScalerError;
pub use keda::{Defaults, KedaServer, Query, Scaler, ScalerOptions};
