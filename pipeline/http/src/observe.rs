//! The process's one metrics recorder: the Prometheus exporter, rendered by `/metrics`.
//!
//! Installed by the binary when it serves HTTP (`--http`); until then every `metrics::`
//! call in the stages and runners is a no-op. The exporter's own listener is not used:
//! actix-web serves the text, beside `/health`, `/ready` and the API.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wfe_contract::{Error, Result};

/// Batch latency buckets (seconds): a stage's batch takes from microseconds (normalise) to
/// seconds (an LSTM forward pass over a large fleet on CPU).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("wfe_batch_seconds".into()), &LATENCY_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| Error::state("metrics", format!("install the Prometheus recorder: {e}")))?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// HELP lines of every metric wfe exports.
fn describe() {
    describe_counter!(
        "wfe_rows_in_total",
        Unit::Count,
        "Rows a stage received, by stage and topic."
    );
    describe_counter!(
        "wfe_rows_out_total",
        Unit::Count,
        "Rows a stage emitted, by stage and topic."
    );
    describe_histogram!(
        "wfe_batch_seconds",
        Unit::Seconds,
        "Time a stage spent on one input batch."
    );
    describe_counter!(
        "wfe_stage_errors_total",
        Unit::Count,
        "Errors by stage and kind (schema, bad_input, config, state, io, external, arrow); a service's dead-lettered batches count here too."
    );
    describe_counter!(
        "wfe_rejected_rows_total",
        Unit::Count,
        "Input rows a stage skipped, by stage and kind (nan, late, non_numeric, ...)."
    );
    describe_counter!(
        "wfe_dropped_rows_total",
        Unit::Count,
        "Rows dropped on purpose (exact duplicates, ...), by stage and kind."
    );
    describe_counter!(
        "wfe_filled_values_total",
        Unit::Count,
        "Values filled in over short gaps, by stage and kind."
    );
    describe_counter!(
        "wfe_model_events_total",
        Unit::Count,
        "Model events (loaded, load_failed, retrained, ...), by stage and kind."
    );
    describe_counter!(
        "wfe_stage_events_total",
        Unit::Count,
        "Other counted events of a stage, by stage and event."
    );
    describe_gauge!(
        "wfe_stage_measurement",
        "Latest value of a stage's measurement (a model's running error, ...), by stage and name."
    );
    describe_gauge!(
        "wfe_mailbox_batches",
        Unit::Count,
        "Batches waiting in an embedded actor's mailbox: the embedded runner's lag."
    );
    describe_gauge!(
        "wfe_consumer_lag_messages",
        Unit::Count,
        "Messages of an assigned input partition not yet consumed (a stage service)."
    );
    describe_counter!(
        "wfe_kafka_messages_in_total",
        Unit::Count,
        "Messages a stage service consumed."
    );
    describe_counter!(
        "wfe_dead_letters_total",
        Unit::Count,
        "Messages a stage service sent to its dead-letter topic."
    );
    describe_counter!(
        "wfe_commits_total",
        Unit::Count,
        "Commit points a stage service completed (outputs acknowledged, snapshots written, offsets committed)."
    );
    describe_counter!(
        "wfe_keda_calls_total",
        Unit::Count,
        "Calls of the KEDA external scaler (--keda), by call and outcome (ok, or why not)."
    );
}
