use super::*;
use wfe_contract::VecCollector;

const H: i64 = 3_600_000;

/// A batch of `topic` from JSON rows (columns left out are null).
fn rows(topic: Topic, json: &[serde_json::Value]) -> RecordBatch {
    let text: String = json.iter().map(|r| format!("{r}\n")).collect();
    let mut reader = arrow_json::ReaderBuilder::new(topic.schema())
        .build(std::io::Cursor::new(text))
        .unwrap();
    reader.next().unwrap().unwrap()
}

fn decision(id: &str, w: &str, t: i64, cost: f64, count: i64, spot: i64) -> serde_json::Value {
    serde_json::json!({
        "decision_id": id, "decided_at": t, "workload": w, "tier": "on-demand",
        "instance_type": "m7i.xlarge", "count": count, "previous_count": 0,
        "expected_cost_per_hour": cost, "risk": 0.01, "driver_resource": "cpu",
        "driver_quantile": 0.9, "driver_horizon_s": 3600, "required": 3.0,
        "considered": "[]", "reason": "test", "spot_count": spot,
    })
}

fn fingerprint(w: &str, t: i64, cold: bool, neighbours: &[&str]) -> serde_json::Value {
    let weights: Vec<f32> = neighbours
        .iter()
        .map(|_| 1.0 / neighbours.len() as f32)
        .collect();
    serde_json::json!({
        "window_start": t - H, "window_end": t, "workload": w, "method": "stats-pca",
        "model_version": "v", "vector": [0.1, 0.2], "n_samples": 60, "cold_start": cold,
        "neighbours": neighbours, "neighbour_weights": weights,
    })
}

fn feed(stage: &mut ApiStage, topic: Topic, b: RecordBatch) -> Context {
    let mut ctx = Context::new("api");
    stage
        .process_batch(topic, b, &mut ctx, &mut VecCollector::new())
        .unwrap();
    ctx
}

#[test]
fn the_running_cost_integrates_each_decision_until_the_next_event() {
    let state = ApiState::new();
    let mut st = ApiStage::new(state.clone(), vec![], &API_TOPICS);
    // 2 $/h from 0 to 1 h, 4 $/h from 1 h to 3 h, then 1 $/h.
    let d = rows(
        Topic::Decisions,
        &[
            decision("a", "w", 0, 2.0, 2, 1),
            decision("b", "w", H, 4.0, 4, 0),
            decision("c", "w", 3 * H, 1.0, 1, 1),
        ],
    );
    feed(&mut st, Topic::Decisions, d);
    state.read(|s| {
        let w = &s.workloads["w"];
        let to_date: Vec<f64> = w.decisions.iter().map(|d| d.cost_to_date).collect();
        assert_eq!(to_date, [0.0, 2.0, 10.0]);
        assert_eq!(w.running_cost(), 10.0);
        assert_eq!(
            w.decisions.iter().map(|d| d.spot_count).collect::<Vec<_>>(),
            [1, 0, 1]
        );
    });
    // A later event of the workload (a forecast issued at 4 h) runs the clock on.
    let f = rows(
        Topic::Forecasts,
        &[serde_json::json!({
            "issued_at": 4 * H, "target_time": 5 * H, "workload": "w", "resource": "cpu",
            "unit": "vcpu", "horizon_s": 3600, "quantile_levels": [0.1, 0.5, 0.9],
            "quantile_values": [1.0, 2.0, 3.0], "model": "ets", "model_version": "1",
            "validation_metric": "mae",
        })],
    );
    feed(&mut st, Topic::Forecasts, f);
    state.read(|s| {
        let w = &s.workloads["w"];
        assert_eq!(w.running_cost(), 11.0);
        let series = &w.resources["cpu"].forecasts[&3600];
        assert_eq!(series.levels, [0.1, 0.5, 0.9]);
        assert_eq!(series.points.len(), 1);
    });
}

#[test]
fn cold_start_neighbours_segments_and_unreadable_batches() {
    let state = ApiState::new();
    let mut st = ApiStage::new(state.clone(), vec![], &API_TOPICS);
    let fp = rows(
        Topic::Fingerprints,
        &[
            fingerprint("new", H, true, &["a", "b"]),
            fingerprint("new", 2 * H, false, &["a"]),
            fingerprint("first", H, true, &[]),
        ],
    );
    feed(&mut st, Topic::Fingerprints, fp);
    state.read(|s| {
        let new = &s.workloads["new"];
        assert_eq!(new.cold_start.as_ref().unwrap().neighbours, ["a", "b"]);
        assert!(
            !new.fingerprint.as_ref().unwrap().cold_start,
            "the latest is warm"
        );
        assert!(
            s.workloads["first"].cold_start.is_none(),
            "no neighbours: not sized by any"
        );
    });
    let seg = |event: &str, t: i64, end: Option<i64>, score: f64| {
        serde_json::json!({
            "event_time": t, "workload": "new", "segment_id": "s1", "event": event,
            "segment_start": H, "segment_end": end, "score": score, "threshold": 1.0,
            "detector": "pca", "top_metrics": ["m00"], "top_contributions": [1.0],
        })
    };
    let a = rows(
        Topic::Anomalies,
        &[
            seg("opened", H, None, 3.0),
            seg("updated", H + 60_000, None, 5.0),
        ],
    );
    feed(&mut st, Topic::Anomalies, a);
    state.read(|s| {
        let g = s.workloads["new"].anomalies.iter().next().unwrap();
        assert_eq!((g.end, g.peak_score), (None, 5.0));
    });
    let a = rows(
        Topic::Anomalies,
        &[seg("closed", H + 120_000, Some(H + 120_000), 5.0)],
    );
    feed(&mut st, Topic::Anomalies, a);
    state.read(|s| {
        let w = &s.workloads["new"];
        assert_eq!(w.anomalies.len(), 1, "one segment, updated in place");
        assert_eq!(w.anomalies.iter().next().unwrap().end, Some(H + 120_000));
    });
    // A batch of another topic's shape on `decisions`: reported, counted, nothing lost.
    let wrong = rows(Topic::Anomalies, &[seg("opened", H, None, 1.0)]);
    let ctx = feed(&mut st, Topic::Decisions, wrong);
    assert_eq!(ctx.counters()["rejected.api_unreadable"], 1);
    state.read(|s| {
        assert_eq!(s.rejected["decisions"], 1);
        assert_eq!(s.workloads["new"].anomalies.len(), 1);
    });
}

#[test]
fn the_workloads_kept_are_bounded_and_the_newest_stay() {
    let mut s = State::default();
    for i in 0..1_050i64 {
        let w = s.workloads.entry(format!("w{i}")).or_default();
        w.seen(i * 60_000);
    }
    assert_eq!(evict(&mut s, 1_000), 60);
    assert_eq!(s.workloads.len(), 990);
    assert!(s.workloads.contains_key("w1049"));
    assert!(!s.workloads.contains_key("w59"));
    assert!(s.workloads.contains_key("w60"));
    assert_eq!(evict(&mut s, 1_000), 0);
}
