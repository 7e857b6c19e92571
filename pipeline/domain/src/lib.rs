//! # wfe-domain: what the stages share about workloads
//!
//! Not the contract between stages (that is `wfe-contract`: traits, errors, columns, the
//! `metrics.norm` readers) but the domain helpers more than one stage uses, in one place so
//! that two stages cannot drift apart:
//! - [`resources`]: a resource map (metrics to a resource such as vCPUs, and its demand), the
//!   one formula every reader of demand goes through.
//! - [`spans`]: anomalous spans per workload, to keep anomalies out of training data.
//! - [`features`]: the statistical features of a window of metrics that fingerprints are made
//!   of (the fingerprint stage reduces them; the forecast stage's LSTM reads them as context).
//! - [`retire`]: when a stage drops a workload that went quiet.
//! - [`ragged`]: rows of varying length stored flat (the steps a learning workload holds).
//! - [`stats`]: quantiles and the one seeded generator (with reservoir sampling).

pub mod features;
pub mod ragged;
pub mod resources;
pub mod retire;
pub mod sizing;
pub mod spans;
pub mod stats;

pub use ragged::Ragged;
pub use resources::ResourceMap;
