//! A snapshot of the changes since the one before, laid over that one's entries, is the whole
//! state: what a service's changelog holds after each commit. Through steps of some workloads
//! and not others, a mask, and a retirement that moves the places of the workloads after it.

use wfe_contract::state::{Split, checked_changes};
use wfe_domain::retire::test_clock;

use super::*;

fn changes(st: &Forecast, whole: &mut Split, token: &mut Option<u64>) -> Split {
    checked_changes(st, whole, token).unwrap()
}

fn written(s: &Split, workload: &str) -> bool {
    s.entries().contains_key(&format!("w/{workload}"))
}

#[test]
fn the_changes_since_each_snapshot_make_up_the_whole_state() {
    let names = ["machine-1-6", "machine-1-7", "machine-2-1"];
    let per: Vec<Vec<RecordBatch>> = (names.iter())
        .map(|n| normalised("smd", &[n], 40))
        .collect();
    assert!(per.iter().all(|b| b.len() >= 5), "batches per workload");
    let cfg = ForecastConfig {
        models: vec![Model::Persistence, Model::SeasonalNaive, Model::Ets],
        retire_after_s: 3600,
        ..Default::default()
    };
    let mut st = Forecast::new(cfg, cpu()).unwrap();
    st.sweep.clock = test_clock::now;
    let (mut ctx, mut out) = (Context::new("forecast"), VecCollector::new());
    let mut feed = |st: &mut Forecast, topic: Topic, b: &RecordBatch| {
        st.process_batch(topic, b.clone(), &mut ctx, &mut out)
            .unwrap()
    };
    let (mut whole, mut token) = (Split::new(), None);
    test_clock::set(0);
    for k in 0..3 {
        for (w, batches) in per.iter().enumerate() {
            feed(&mut st, Topic::MetricsNorm, &batches[k]);
            let c = changes(&st, &mut whole, &mut token);
            // Only the workload that moved is written again; the others are kept.
            for (o, name) in names.iter().enumerate().filter(|(o, _)| k > 0 || *o < w) {
                assert_eq!(written(&c, name), o == w, "batch {k} of {}", names[w]);
                assert_eq!(c.kept().contains(*name), o != w);
            }
        }
    }
    assert!(whole.entries().keys().any(|k| k.starts_with("runs/")));
    assert!(whole.entries().keys().any(|k| k.starts_with("ets/")));
    let nothing = changes(&st, &mut whole, &mut token);
    assert!(names.iter().all(|n| !written(&nothing, n)));

    // A span masks errors of the workload it names: that workload is written again.
    let t0 = NormBatch::new(&per[2][1]).unwrap().time[0];
    feed(
        &mut st,
        Topic::Anomalies,
        &anomaly(names[2], t0, t0 + 3_600_000),
    );
    let c = changes(&st, &mut whole, &mut token);
    assert!(written(&c, names[2]) && !written(&c, names[0]) && !written(&c, names[1]));

    // A sweep registers every workload at 1,000 s; the last moves at 4,000 s; at 4,700 s
    // the middle one, idle for 3,700 s, is retired with the first's step, and the last
    // moves to its place unread.
    for (clock, w, k) in [(1000, 0, 3), (4000, 2, 3)] {
        test_clock::set(clock);
        feed(&mut st, Topic::MetricsNorm, &per[w][k]);
        changes(&st, &mut whole, &mut token);
    }
    test_clock::set(4700);
    feed(&mut st, Topic::MetricsNorm, &per[0][4]);
    assert_eq!(st.workloads.items.len(), 2, "the middle one retired");
    let c = changes(&st, &mut whole, &mut token);
    assert!(written(&c, names[2]), "moved to another place");
    assert!(!whole.entries().keys().any(|k| k.contains(names[1])));
}
