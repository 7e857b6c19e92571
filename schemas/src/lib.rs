//! # wfe-schemas: the Arrow schema of every wfe topic, as code
//!
//! Every batch that crosses between stages, in memory or over Kafka, has one of the schemas
//! below. Each schema carries its topic name and version in the Arrow schema metadata
//! (`wfe.schema.name`, `wfe.schema.version`), so a message read from a file or a broker says
//! what it is. Versions only grow by **additive** changes: a new nullable column at the end.
//! A reader of version N can read version N+k by ignoring the columns it does not know.
//!
//! The data flow, topic by topic:
//!
//! ```text
//! ingest ──metrics.raw──▶ normalise ──metrics.norm──┬──▶ fingerprint ──fingerprints──┐
//!                                                   ├──▶ anomaly ─────anomalies      │
//!                                                   └──▶ forecast ────forecasts──▶ tier-select ──decisions──▶ actuate ──actions
//! ```
//!
//! Beside that line, forecast also reads `anomalies` (flagged spans are kept out of the
//! errors behind its model choice and intervals), and tier-select reads `metrics.norm` (the
//! reactive floor) and `fingerprints` (cold start: a new workload sized from its neighbours).
//!
//! `wfe schemas` prints [`describe_markdown`]; `schemas/TOPICS.md` is that output, checked in
//! for other teams and kept current by a test.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_schema::SchemaRef;

mod check;
mod define;
pub mod labels;
mod markdown;
mod topic;

pub use check::{SchemaMismatch, check, schema_label};
use define::build;
pub use define::{TZ, dict_type, ts_type};
pub use markdown::describe_markdown;
pub use topic::{META_NAME, META_VERSION, Topic};

impl Topic {
    /// The Arrow schema of this topic (built once, shared).
    pub fn schema(self) -> SchemaRef {
        static CACHE: OnceLock<HashMap<Topic, SchemaRef>> = OnceLock::new();
        CACHE
            .get_or_init(|| {
                Topic::ALL
                    .into_iter()
                    .map(|t| (t, Arc::new(build(t))))
                    .collect()
            })
            .get(&self)
            .cloned()
            .expect("every topic has a schema")
    }
}

#[cfg(test)]
mod tests;
