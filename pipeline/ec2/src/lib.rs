//! # wfe-ec2: the cloud the actuator and tier selection talk to
//!
//! [`Cloud`] is what wfe needs of a provider: launch and terminate instances of one type in
//! one market (on demand or spot), describe a workload's instances, and read current spot
//! prices. [`Ec2`] implements it on aws-sdk-ec2 (the maintained SDK; rusoto is not), with the
//! standard credential chain and region, an endpoint override for moto and private endpoints,
//! the SDK's retries with backoff, and a rate limit of its own. [`Notices`] is where spot
//! interruption notices come from; [`Sqs`] reads them from an SQS queue of EC2 events
//! (aws-sdk-sqs, which shares the SDK's runtime crates). [`Catalog`] is the dated snapshot of
//! instance types and prices: tier-select chooses from it, and the actuator prices what it
//! launches by it (its spend cap never trusts a decision's own cost).
//!
//! The SDK is a very large dependency: it lives here only, so the stages that need it
//! (actuate, and tier-select for spot prices) share one build of it and nothing else pulls it
//! in. [`Clients`] builds each EC2 client once per process (one per region and endpoint) and
//! hands the stages handles to it.

mod catalog;
mod clients;
mod cloud;
mod ec2;
mod notices;
mod sdk;

pub use catalog::{Catalog, Instance};
pub use clients::{Clients, Connect};
pub use cloud::{Cloud, DRY_RUN_OK, Launch, Running};
pub use ec2::Ec2;
pub use notices::{Notice, NoticeKind, Notices, Received, Sqs, parse_event};
pub use sdk::Ec2Settings;
pub mod testing;
