//! # wfe-testkit: helpers for wfe's own tests (a dev-dependency only)
//!
//! - [`fuzz`]: property-based fuzzing of the parsers that take input from outside (CSV,
//!   Parquet, Arrow IPC, remote_write, the Kafka message codec, pcap, config). Each target
//!   runs a short smoke in `make test` and for a set time in `make fuzz`.

pub mod fuzz;
