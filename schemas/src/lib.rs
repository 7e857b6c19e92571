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

pub use check::{SchemaMismatch, check, schema_label};
use define::build;
pub use define::{TZ, dict_type, ts_type};
pub use markdown::describe_markdown;

/// Metadata key holding a schema's topic name.
pub const META_NAME: &str = "wfe.schema.name";
/// Metadata key holding a schema's version.
pub const META_VERSION: &str = "wfe.schema.version";

/// The topics of the pipeline. The string form is the Kafka topic name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "lowercase")]
pub enum Topic {
    #[strum(serialize = "metrics.raw")]
    MetricsRaw,
    #[strum(serialize = "metrics.norm")]
    MetricsNorm,
    Fingerprints,
    Profiles,
    Anomalies,
    Forecasts,
    Decisions,
    Actions,
}

impl Topic {
    pub const ALL: [Topic; 8] = [
        Topic::MetricsRaw,
        Topic::MetricsNorm,
        Topic::Fingerprints,
        Topic::Profiles,
        Topic::Anomalies,
        Topic::Forecasts,
        Topic::Decisions,
        Topic::Actions,
    ];

    /// The topic name, as used for Kafka topics and output files.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Parses a topic name as printed by [`Topic::name`].
    pub fn from_name(name: &str) -> Option<Topic> {
        name.parse().ok()
    }

    /// The current schema version of this topic.
    pub fn version(self) -> u32 {
        match self {
            // 2: allocation_metrics, allocation. 3: environment, profile.
            Topic::Fingerprints => 3,
            // 2: spot_count (a mix of spot and on-demand).
            Topic::Decisions => 2,
            _ => 1,
        }
    }

    /// Whether the topic is a table (one row per key matters: the newest), which Kafka keeps
    /// compacted, rather than a stream of events.
    pub fn is_table(self) -> bool {
        self == Topic::Profiles
    }

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

    /// One line saying what the topic holds, for the generated description.
    pub fn summary(self) -> &'static str {
        match self {
            Topic::MetricsRaw => {
                "Samples as ingested, one row per (time, workload, metric). Not yet checked or aligned."
            }
            Topic::MetricsNorm => {
                "Samples on a fixed step per workload, deduplicated, gap-filled or flagged, scaled per metric with parameters learned from history."
            }
            Topic::Fingerprints => {
                "A behavioural vector per workload and window, its nearest known workloads, and its allocation (borrowed from those neighbours while the workload is new)."
            }
            Topic::Profiles => {
                "The fleet's table of workloads: each workload's latest profile, metric set, environment and allocation, keyed by workload on a compacted topic (a reader keeps the newest row per workload). Every fingerprint instance reads all of it, so neighbours are searched across the whole fleet, not one instance's partitions."
            }
            Topic::Anomalies => {
                "One row per opened, updated and closed anomaly segment, with the metrics ranked by contribution."
            }
            Topic::Forecasts => {
                "Quantile forecasts per workload, resource and horizon, with the model that made them and its validation score."
            }
            Topic::Decisions => {
                "Capacity decisions per workload: tier, instance type, count, expected cost, risk and the reason."
            }
            Topic::Actions => {
                "Every provider API call the actuator made or would make, with parameters, mode and outcome."
            }
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
