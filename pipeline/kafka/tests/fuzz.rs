//! Fuzz target of the Kafka message codec: any message value is a batch or an error that
//! dead-letters it, never a panic (a contained one counts as found) or an abort.

use std::sync::Arc;

use arrow_array::{Float64Array, RecordBatch};
use wfe_contract::Topic;
use wfe_contract::columns::{dictionary, dictionary_opt, timestamp_column};
use wfe_kafka::codec::{HeaderMap, decode, encode};
use wfe_testkit::fuzz;

fn payload() -> Vec<u8> {
    let b = RecordBatch::try_new(
        Topic::MetricsRaw.schema(),
        vec![
            timestamp_column(vec![1_700_000_000_000, 1_700_000_060_000]),
            dictionary(vec![0, 1], &["a", "b"]).unwrap(),
            dictionary(vec![0, 0], &["cpu"]).unwrap(),
            Arc::new(Float64Array::from(vec![0.5, 1.5])),
            dictionary_opt(vec![Some(0), None], &["split=train"]).unwrap(),
        ],
    )
    .unwrap();
    encode(&b).unwrap()
}

#[test]
fn fuzz_kafka_codec() {
    let headers = HeaderMap::data(Topic::MetricsRaw, "fuzz", "t");
    // The codec's own checks must hold; what passes them is decoded by arrow-ipc, whose
    // panics on corrupt buffers the codec contains and dead-letters (kind `panic`).
    fuzz::run("kafka_codec", fuzz::mutations(payload(), 8), |value| {
        let _ = decode(Topic::MetricsRaw, &headers, Some(&value));
        Ok(())
    });
}
