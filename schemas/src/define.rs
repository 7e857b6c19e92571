//! Every topic's columns: names, types, nullability and the documentation TOPICS.md shows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::topic::{META_NAME, META_VERSION, Topic};

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

pub(crate) fn build(topic: Topic) -> Schema {
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
                "The workload's profile so far (the mean of its windows) in this row's model version, measured from the fleet's centre: what `wfe similar` compares (neighbours are searched by the feature-space profiles of `profiles`, the same in every instance).",
            ),
        ],
        Topic::Profiles => vec![
            f(
                "event_time",
                ts_type(),
                false,
                "Last step of the window that last changed the profile.",
            ),
            f("workload", Utf8, false, "Workload id (the message key)."),
            f(
                "metric_set",
                Utf8,
                false,
                "Hash of the workload's metric names (16 hex digits): only profiles of one metric set are compared.",
            ),
            f(
                "observed_steps",
                Int64,
                false,
                "Observed steps so far; the workload is known (a neighbour others may borrow from) past the fingerprint stage's `learning_steps`.",
            ),
            f(
                "features",
                list_of(Float64),
                false,
                "The mean of its windows' features, before any basis: neighbours are compared in this space, the same for every fingerprint instance. Empty when the workload retired (idle for `retire_after_s`): readers drop it.",
            ),
            f(
                "allocation_metrics",
                list_of(Utf8),
                false,
                "Metrics of `allocation`, in order.",
            ),
            f(
                "allocation",
                list_of(Float64),
                false,
                "Per metric, its own allocation in raw units (a quantile per window, averaged).",
            ),
            f(
                "environment",
                Utf8,
                true,
                "Its `env.*` labels as `k=v,k=v` (see `fingerprints`); null when it has none.",
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
        Topic::Recommendations => vec![
            f(
                "issued_at",
                ts_type(),
                false,
                "When the forecasts the sizes come from were issued (event time).",
            ),
            f("workload", Utf8, false, "Workload id."),
            f("resource", Utf8, false, "Resource name, e.g. `cpu`."),
            f(
                "unit",
                Utf8,
                false,
                "Unit of the sizes, the forecasts' (e.g. `vcpu`, `gib`).",
            ),
            f(
                "lower_bound",
                Float64,
                false,
                "VPA's lowerBound: the largest forecast median over the horizons read.",
            ),
            f(
                "target",
                Float64,
                false,
                "VPA's target, the container's request: the largest value at `quantile` over the horizons read, plus `margin`.",
            ),
            f(
                "upper_bound",
                Float64,
                false,
                "VPA's upperBound, the container's limit: the largest value at the highest quantile level, plus `margin`.",
            ),
            f(
                "horizon_s",
                Int64,
                false,
                "The forecast horizon whose value set the target.",
            ),
            f(
                "quantile",
                Float64,
                false,
                "Quantile level the target covers (`stages.forecast.recommendation.quantile`).",
            ),
            f(
                "margin",
                Float64,
                false,
                "Share added to the target and the upper bound (0.15: 15 %).",
            ),
        ],
        Topic::Migrations => vec![
            f(
                "planned_at",
                ts_type(),
                false,
                "Issuance time (event time) of the forecasts the move was planned from.",
            ),
            f("workload", Utf8, false, "Workload to move."),
            f(
                "resource",
                Utf8,
                false,
                "Resource the hosts are sized in, e.g. `cpu` (`stages.contention.resource`).",
            ),
            f(
                "from_host",
                Utf8,
                false,
                "Host it runs on, which is contended.",
            ),
            f("to_host", Utf8, false, "Host to move it to."),
            f(
                "horizon_s",
                Int64,
                false,
                "Forecast horizon at which the source host's chance of passing its capacity was largest.",
            ),
            f(
                "from_risk",
                Float64,
                false,
                "The source host's chance of passing its capacity before this move (the largest over the horizons).",
            ),
            f(
                "from_risk_after",
                Float64,
                false,
                "The source host's chance after the move.",
            ),
            f(
                "to_risk_after",
                Float64,
                false,
                "The destination's chance with the workload added: within `bound`.",
            ),
            f(
                "bound",
                Float64,
                false,
                "Chance above which a host is contended (`stages.contention.bound`).",
            ),
            f("reason", Utf8, false, "Why this move, in words."),
        ],
    };
    Schema::new(fields).with_metadata(HashMap::from([
        (META_NAME.to_string(), topic.name().to_string()),
        (META_VERSION.to_string(), topic.version().to_string()),
    ]))
}
