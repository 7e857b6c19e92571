use std::collections::HashMap;

use tokio_stream::StreamExt;
use tonic::Code;
use wfe_http::ApiState;

use super::*;
use crate::fixtures::{series, state};

fn scaler(max_streams: usize) -> Scaler {
    let s = state(&[(0, 1.0)], vec![series(900, &[(0, [4.0, 5.0, 6.0])])]);
    Scaler::new(
        ApiState::from_state(s),
        ScalerOptions {
            max_streams,
            poll: Duration::from_millis(10),
            ..Default::default()
        },
    )
}

fn reference(pairs: &[(&str, &str)]) -> Request<ScaledObjectRef> {
    let scaler_metadata: HashMap<String, String> = [("workload", "w"), ("targetPerReplica", "2")]
        .iter()
        .chain(pairs)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Request::new(ScaledObjectRef {
        name: "so".into(),
        namespace: "default".into(),
        scaler_metadata,
    })
}

#[tokio::test]
async fn the_calls_answer_from_the_state_and_name_one_metric() {
    let s = scaler(4);
    let spec = s
        .get_metric_spec(reference(&[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs[0].metric_name, "wfe-cpu-w");
    assert_eq!(spec.metric_specs[0].target_size_float, 2.0);
    let asked = GetMetricsRequest {
        scaled_object_ref: Some(reference(&[]).into_inner()),
        metric_name: "s0-wfe-cpu-w".into(),
    };
    let v = s
        .get_metrics(Request::new(asked))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.metric_values[0].metric_value_float, 6.0);
    assert_eq!(v.metric_values[0].metric_value, 6);
    let active = s
        .is_active(reference(&[("activationValue", "7")]))
        .await
        .unwrap();
    assert!(!active.into_inner().result);
    // No reference at all: the trigger names no workload.
    let none = GetMetricsRequest::default();
    let e = s.get_metrics(Request::new(none)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("workload"), "{e:?}");
}

#[tokio::test]
async fn open_streams_are_bounded_and_a_closed_one_frees_its_place() {
    let s = scaler(1);
    let mut first = s
        .stream_is_active(reference(&[]))
        .await
        .unwrap()
        .into_inner();
    assert!(first.next().await.unwrap().unwrap().result);
    let e = s.stream_is_active(reference(&[])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    drop(first);
    // The stream's task notices its client is gone within a poll, and frees the place.
    let mut again = None;
    for _ in 0..200 {
        if let Ok(r) = s.stream_is_active(reference(&[])).await {
            again = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = again.expect("the place of a closed stream was never freed");
    assert!(again.next().await.unwrap().unwrap().result);
}

#[tokio::test]
async fn a_stream_for_a_workload_not_there_yet_waits_and_one_with_bad_metadata_is_refused() {
    let s = scaler(4);
    let mut waiting = s
        .stream_is_active(reference(&[("workload", "later")]))
        .await
        .unwrap()
        .into_inner();
    let nothing = tokio::time::timeout(Duration::from_millis(100), waiting.next()).await;
    assert!(
        nothing.is_err(),
        "sent {nothing:?} before the workload existed"
    );
    let e = s
        .stream_is_active(reference(&[("quantile", "2")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}
