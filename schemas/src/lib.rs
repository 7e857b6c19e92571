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
//! `wfe schemas` prints [`describe_markdown`]; `schemas/TOPICS.md` is that output, checked in
//! for other teams and kept current by a test.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub mod labels;

/// Metadata key holding a schema's topic name.
pub const META_NAME: &str = "wfe.schema.name";
/// Metadata key holding a schema's version.
pub const META_VERSION: &str = "wfe.schema.version";

/// The topics of the pipeline. The string form is the Kafka topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    MetricsRaw,
    MetricsNorm,
    Fingerprints,
    Anomalies,
    Forecasts,
    Decisions,
    Actions,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::MetricsRaw,
        Topic::MetricsNorm,
        Topic::Fingerprints,
        Topic::Anomalies,
        Topic::Forecasts,
        Topic::Decisions,
        Topic::Actions,
    ];

    /// The topic name, as used for Kafka topics and output files.
    pub fn name(self) -> &'static str {
        match self {
            Topic::MetricsRaw => "metrics.raw",
            Topic::MetricsNorm => "metrics.norm",
            Topic::Fingerprints => "fingerprints",
            Topic::Anomalies => "anomalies",
            Topic::Forecasts => "forecasts",
            Topic::Decisions => "decisions",
            Topic::Actions => "actions",
        }
    }

    /// Parses a topic name as printed by [`Topic::name`].
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
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

/// Time zone of every timestamp column: UTC written as an offset, which every Arrow reader
/// understands without a time-zone database.
pub const TZ: &str = "+00:00";

/// Timestamps are UTC milliseconds everywhere.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(TZ.into()))
}

/// Dictionary-encoded strings: high-volume topics repeat workload and metric names on every row.
pub fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn f(name: &str, dt: DataType, nullable: bool, doc: &str) -> Field {
    Field::new(name, dt, nullable)
        .with_metadata(HashMap::from([("doc".to_string(), doc.to_string())]))
}

fn build(topic: Topic) -> Schema {
    use DataType::*;
    let fields = match topic {
        Topic::MetricsRaw => vec![
            f(
                "event_time",
                ts_type(),
                false,
                "When the sample was taken (UTC ms).",
            ),
            f(
                "workload",
                dict_type(),
                false,
                "Workload id: host, service or container.",
            ),
            f(
                "metric",
                dict_type(),
                false,
                "Metric name, e.g. `m00` or `cpu_seconds_total`.",
            ),
            f(
                "value",
                Float64,
                true,
                "Sample value; NaN, infinity and null are rejected by normalise.",
            ),
            f(
                "labels",
                dict_type(),
                true,
                "Other labels as a canonical set `k=v,k=v` sorted by key (see `labels` module); `split` and `label` carry the SMD/ASD ground truth.",
            ),
        ],
        Topic::MetricsNorm => vec![
            f(
                "event_time",
                ts_type(),
                false,
                "Step-aligned time (UTC ms).",
            ),
            f("workload", dict_type(), false, "Workload id."),
            f("metric", dict_type(), false, "Metric name."),
            f(
                "value",
                Float64,
                true,
                "Scaled value ((raw - min) / (max - min) learned from history); null when missing.",
            ),
            f(
                "raw_value",
                Float64,
                true,
                "The value before scaling, in the source's unit; null when missing.",
            ),
            f("step_ms", Int64, false, "The workload's fixed step."),
            f(
                "filled",
                Boolean,
                false,
                "True when the value was filled over a short gap rather than observed.",
            ),
            f(
                "missing",
                Boolean,
                false,
                "True inside a gap longer than the fill limit: value is null.",
            ),
            f(
                "labels",
                dict_type(),
                true,
                "Labels carried over from metrics.raw.",
            ),
        ],
        Topic::Fingerprints => vec![
            f(
                "window_start",
                ts_type(),
                false,
                "First step of the window.",
            ),
            f("window_end", ts_type(), false, "Last step of the window."),
            f("workload", Utf8, false, "Workload id."),
            f(
                "method",
                Utf8,
                false,
                "How the vector was made, e.g. `stats-pca`.",
            ),
            f(
                "model_version",
                Utf8,
                false,
                "Metric set and basis that made the vector: vectors with equal versions are comparable.",
            ),
            f("vector", list_of(Float32), false, "The fingerprint."),
            f(
                "n_samples",
                Int64,
                false,
                "Steps in the window that were observed (not filled or missing).",
            ),
            f(
                "cold_start",
                Boolean,
                false,
                "True while the workload has less history than the learning period.",
            ),
            f(
                "neighbours",
                list_of(Utf8),
                true,
                "Nearest known workloads of the same metric set, nearest first.",
            ),
            f(
                "neighbour_weights",
                list_of(Float32),
                true,
                "Similarity weight of each neighbour, summing to 1.",
            ),
            // Version 2.
            f(
                "allocation_metrics",
                list_of(Utf8),
                true,
                "Metrics of `allocation`, in order.",
            ),
            f(
                "allocation",
                list_of(Float64),
                true,
                "Per metric, the allocation in raw units: the workload's own typical peak (a quantile per window, averaged), or while `cold_start` the similarity-weighted mean of its neighbours' (null when there are none yet).",
            ),
            // Version 3.
            f(
                "environment",
                Utf8,
                true,
                "Where the workload runs: its `env.*` labels (host metadata such as instance type, CPU model, kernel, software versions) as a canonical set `k=v,k=v` without the `env.` prefix; null when it has none.",
            ),
            f(
                "profile",
                list_of(Float32),
                true,
                "The workload's profile so far (the mean of its windows) in this row's model version, measured from the fleet's centre: what its neighbours were searched by, and what `wfe similar` compares.",
            ),
        ],
        Topic::Anomalies => vec![
            f(
                "event_time",
                ts_type(),
                false,
                "Time of the step that caused this event.",
            ),
            f("workload", Utf8, false, "Workload id."),
            f(
                "segment_id",
                Utf8,
                false,
                "Deterministic id of the segment: stable across replays.",
            ),
            f("event", Utf8, false, "`opened`, `updated` or `closed`."),
            f(
                "segment_start",
                ts_type(),
                false,
                "First anomalous step of the segment.",
            ),
            f(
                "segment_end",
                ts_type(),
                true,
                "Last anomalous step; null while the segment is open.",
            ),
            f(
                "score",
                Float64,
                false,
                "Anomaly score of this step (for `closed`: the segment's peak).",
            ),
            f(
                "threshold",
                Float64,
                false,
                "Threshold the score is compared with, learned without test labels.",
            ),
            f(
                "detector",
                Utf8,
                false,
                "Detector (or combination) that produced the score.",
            ),
            f(
                "top_metrics",
                list_of(Utf8),
                false,
                "Metrics ranked by contribution to the score, largest first.",
            ),
            f(
                "top_contributions",
                list_of(Float64),
                false,
                "Share of the score of each of `top_metrics`.",
            ),
        ],
        Topic::Forecasts => vec![
            f(
                "issued_at",
                ts_type(),
                false,
                "Time of the last observation the forecast used.",
            ),
            f("target_time", ts_type(), false, "issued_at + horizon."),
            f("workload", Utf8, false, "Workload id."),
            f(
                "resource",
                Utf8,
                false,
                "Resource forecast: `cpu`, `memory`, `network`, `disk` or as configured.",
            ),
            f(
                "unit",
                Utf8,
                false,
                "Capacity unit of the values, e.g. `vcpu`, `gib`.",
            ),
            f("horizon_s", Int64, false, "Horizon in seconds."),
            f(
                "quantile_levels",
                list_of(Float64),
                false,
                "Quantile levels, ascending, e.g. [0.1, 0.5, 0.9].",
            ),
            f(
                "quantile_values",
                list_of(Float64),
                false,
                "Forecast value at each level, in `unit`.",
            ),
            f("model", Utf8, false, "Model that made the forecast."),
            f("model_version", Utf8, false, "Version of the model."),
            f(
                "validation_metric",
                Utf8,
                false,
                "Name of the validation score, e.g. `mae`.",
            ),
            f(
                "validation_score",
                Float64,
                true,
                "The model's score on held-out history; null if it had too little.",
            ),
            f(
                "fallback_reason",
                Utf8,
                true,
                "Why a simpler model was used than configured, if one was.",
            ),
        ],
        Topic::Decisions => vec![
            f(
                "decision_id",
                Utf8,
                false,
                "Deterministic id (workload, time): a replayed decision has the same id.",
            ),
            f(
                "decided_at",
                ts_type(),
                false,
                "Event time of the forecast the decision came from.",
            ),
            f("workload", Utf8, false, "Workload id."),
            f(
                "tier",
                Utf8,
                false,
                "Chosen tier: `spot` when all of it is spot, else the tier of the on-demand part: `on-demand`, `high-performance` or as configured.",
            ),
            f("instance_type", Utf8, false, "Instance type."),
            f(
                "count",
                Int64,
                false,
                "Instances wanted from this decision on.",
            ),
            f(
                "previous_count",
                Int64,
                false,
                "Instances wanted before it.",
            ),
            f(
                "expected_cost_per_hour",
                Float64,
                false,
                "Expected cost of `count` instances per hour.",
            ),
            f(
                "risk",
                Float64,
                false,
                "Estimated probability that the capacity is not enough (incl. spot interruption).",
            ),
            f(
                "driver_resource",
                Utf8,
                false,
                "Resource that drove the count.",
            ),
            f(
                "driver_quantile",
                Float64,
                false,
                "Quantile level that drove the count.",
            ),
            f(
                "driver_horizon_s",
                Int64,
                false,
                "Horizon that drove the count.",
            ),
            f(
                "required",
                Float64,
                false,
                "Capacity required in the driver resource's unit.",
            ),
            f(
                "considered",
                Utf8,
                false,
                "JSON list of the options considered with cost and risk.",
            ),
            f("reason", Utf8, false, "Why this option, in words."),
            f(
                "spot_count",
                Int64,
                true,
                "How many of `count` are bought as spot; the rest are on demand in `tier` (or all spot when `tier` is `spot`). Null in version 1: all in `tier`.",
            ),
        ],
        Topic::Actions => vec![
            f(
                "action_id",
                Utf8,
                false,
                "Deterministic id derived from the decision id: the idempotency key.",
            ),
            f(
                "decision_id",
                Utf8,
                false,
                "Decision that caused the action.",
            ),
            f(
                "event_time",
                ts_type(),
                false,
                "Event time of the decision.",
            ),
            f("workload", Utf8, false, "Workload id."),
            f(
                "api_call",
                Utf8,
                false,
                "Provider API call, e.g. `ec2:RunInstances`.",
            ),
            f(
                "parameters",
                Utf8,
                false,
                "JSON of the call's parameters (never credentials).",
            ),
            f(
                "mode",
                Utf8,
                false,
                "`record-only`, `dry-run` (EC2 DryRun) or `apply`.",
            ),
            f(
                "outcome",
                Utf8,
                false,
                "`recorded`, `dry-run-ok`, `applied`, `skipped` or `error`.",
            ),
            f("error", Utf8, true, "The provider's error, if any."),
            f(
                "instance_ids",
                list_of(Utf8),
                true,
                "Instances launched or terminated, when applied.",
            ),
        ],
    };
    Schema::new(fields).with_metadata(HashMap::from([
        (META_NAME.to_string(), topic.name().to_string()),
        (META_VERSION.to_string(), topic.version().to_string()),
    ]))
}

/// Why a batch does not fit a topic's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    pub expected: String,
    pub found: String,
    pub detail: String,
}

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema mismatch: expected {}, found {}: {}",
            self.expected, self.found, self.detail
        )
    }
}

impl std::error::Error for SchemaMismatch {}

/// `name vN` of a schema, from its metadata, or a short field list when it has none.
pub fn schema_label(schema: &Schema) -> String {
    match (
        schema.metadata().get(META_NAME),
        schema.metadata().get(META_VERSION),
    ) {
        (Some(n), Some(v)) => format!("{n} v{v}"),
        _ => {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!("unnamed schema ({})", names.join(", "))
        }
    }
}

/// Checks that `found` is the schema of `topic` (same name, a version this build reads, and
/// the declared columns with their types). Extra trailing columns from a newer version of the
/// same topic are accepted: changes are additive.
pub fn check(topic: Topic, found: &Schema) -> Result<(), SchemaMismatch> {
    let expected = topic.schema();
    let mismatch = |detail: String| SchemaMismatch {
        expected: schema_label(&expected),
        found: schema_label(found),
        detail,
    };
    match found.metadata().get(META_NAME) {
        Some(n) if n == topic.name() => {}
        Some(n) => {
            return Err(mismatch(format!(
                "topic name is `{n}`, not `{}`",
                topic.name()
            )));
        }
        None => return Err(mismatch(format!("no `{META_NAME}` metadata"))),
    }
    let version: u32 = found
        .metadata()
        .get(META_VERSION)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| mismatch(format!("missing or non-numeric `{META_VERSION}`")))?;
    if version < topic.version() {
        return Err(mismatch(format!(
            "version {version} is older than {} read here",
            topic.version()
        )));
    }
    if found.fields().len() < expected.fields().len() {
        return Err(mismatch(format!(
            "{} columns, expected at least {}",
            found.fields().len(),
            expected.fields().len()
        )));
    }
    for (i, (e, g)) in expected
        .fields()
        .iter()
        .zip(found.fields().iter())
        .enumerate()
    {
        if e.name() != g.name() {
            return Err(mismatch(format!(
                "column {i} is `{}`, expected `{}`",
                g.name(),
                e.name()
            )));
        }
        if !types_match(e.data_type(), g.data_type()) {
            return Err(mismatch(format!(
                "column `{}` has type {}, expected {}",
                e.name(),
                g.data_type(),
                e.data_type()
            )));
        }
        if g.is_nullable() && !e.is_nullable() {
            return Err(mismatch(format!(
                "column `{}` is nullable, expected non-null",
                e.name()
            )));
        }
    }
    Ok(())
}

/// Types match ignoring list item field names and nullability (writers differ on those).
fn types_match(expected: &DataType, found: &DataType) -> bool {
    match (expected, found) {
        (DataType::List(a), DataType::List(b)) => types_match(a.data_type(), b.data_type()),
        _ => expected == found,
    }
}

/// A Markdown description of every topic, for other teams (`wfe schemas`, `schemas/TOPICS.md`).
pub fn describe_markdown() -> String {
    let mut out = String::from(
        "# wfe topics\n\nGenerated by `wfe schemas` from `schemas/src/lib.rs`; do not edit by hand.\n\n\
         Every message is an Arrow IPC stream (schema + batch). The schema metadata carries\n\
         `wfe.schema.name` and `wfe.schema.version`. Changes are additive only: new nullable\n\
         columns at the end, with a version bump. Timestamps are UTC milliseconds.\n",
    );
    for t in Topic::ALL {
        out.push_str(&format!(
            "\n## `{}` (version {})\n\n{}\n\n",
            t.name(),
            t.version(),
            t.summary()
        ));
        out.push_str("| column | type | nullable | meaning |\n|---|---|---|---|\n");
        for field in t.schema().fields() {
            let doc = field
                .metadata()
                .get("doc")
                .map(String::as_str)
                .unwrap_or("");
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                field.name(),
                type_name(field.data_type()),
                if field.is_nullable() { "yes" } else { "no" },
                doc
            ));
        }
    }
    out
}

fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) => format!("timestamp[ms, {tz}]"),
        DataType::Dictionary(_, v) if **v == DataType::Utf8 => "string (dictionary)".into(),
        DataType::Utf8 => "string".into(),
        DataType::Float64 => "float64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Boolean => "bool".into(),
        DataType::List(item) => format!("list<{}>", type_name(item.data_type())),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_names_itself() {
        for t in Topic::ALL {
            let s = t.schema();
            assert_eq!(s.metadata()[META_NAME], t.name());
            assert_eq!(Topic::from_name(t.name()), Some(t));
            check(t, &s).unwrap();
        }
    }

    #[test]
    fn mismatch_names_both_schemas() {
        let err = check(Topic::Forecasts, &Topic::Decisions.schema()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("forecasts v1") && msg.contains("decisions v2"),
            "{msg}"
        );
    }

    #[test]
    fn additive_columns_are_accepted_and_changed_types_are_not() {
        let base = Topic::Actions.schema();
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("extra", DataType::Utf8, true));
        let newer = Schema::new(fields.clone()).with_metadata(base.metadata().clone());
        check(Topic::Actions, &newer).unwrap();

        fields[5] = Field::new("parameters", DataType::Int64, false);
        let wrong = Schema::new(fields).with_metadata(base.metadata().clone());
        let msg = check(Topic::Actions, &wrong).unwrap_err().to_string();
        assert!(msg.contains("`parameters` has type Int64"), "{msg}");
    }

    #[test]
    fn checked_in_description_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/TOPICS.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        if std::env::var_os("WFE_BLESS").is_some() {
            std::fs::write(path, describe_markdown()).unwrap();
            return;
        }
        assert_eq!(
            on_disk,
            describe_markdown(),
            "schemas/TOPICS.md is stale: run `WFE_BLESS=1 cargo test -p wfe-schemas`"
        );
    }
}
