//! Fuzz target of the remote_write decoder: any body is rows or a refusal, never a panic,
//! and never an allocation past the configured bounds.

use proptest::prelude::*;
use prost::Message;
use wfe_http::remote_write::{RemoteWriteConfig, TimeSeries, WriteRequest, decode};
use wfe_testkit::fuzz;

fn valid_request() -> Vec<u8> {
    let series = |name: &str, inst: &str| {
        let labels = [
            ("__name__", name),
            ("instance", inst),
            ("job", "node"),
            ("split", "train"),
        ];
        TimeSeries::new(&labels, &[(1_700_000_000_000, 1.0), (i64::MAX, f64::NAN)])
    };
    WriteRequest {
        timeseries: vec![series("up", "a:9100"), series("load1", "b:9100")],
    }
    .encode_to_vec()
}

#[test]
fn fuzz_remote_write() {
    let cfg = RemoteWriteConfig {
        max_decoded_bytes: 1 << 20,
        ..Default::default()
    };
    // Mutations of the protobuf under valid snappy, and of the snappy block itself.
    let raw = valid_request();
    let framed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let inputs = prop_oneof![
        fuzz::mutations(raw, 8).prop_map(|p| snap::raw::Encoder::new().compress_vec(&p).unwrap()),
        fuzz::mutations(framed, 6),
    ];
    fuzz::run("remote_write", inputs, |body| {
        let _ = decode(&body, &cfg);
        Ok(())
    });
}
