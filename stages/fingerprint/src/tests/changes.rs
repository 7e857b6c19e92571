//! A snapshot of the changes since the one before, laid over that one's entries, is the whole
//! state (what a service's changelog holds after each commit), through windows of some
//! workloads and not others and a retirement that moves the places of the workloads after it.

use wfe_contract::Context;
use wfe_contract::state::{Split, checked_changes};
use wfe_domain::retire::test_clock;

use super::*;

#[test]
fn the_changes_since_each_snapshot_make_up_the_whole_state() {
    let names = ["omi-1", "omi-2", "omi-3"];
    let per: Vec<Vec<RecordBatch>> = (names.iter())
        .map(|n| normalised("asd", &[n], 40))
        .collect();
    assert!(per.iter().all(|b| b.len() >= 5), "batches per workload");
    let cfg = FingerprintConfig {
        retire_after_s: 3600,
        ..Default::default()
    };
    let mut st = Fingerprint::new(cfg).unwrap();
    st.sweep.clock = test_clock::now;
    let (mut ctx, mut out) = (Context::new("fingerprint"), VecCollector::new());
    let mut feed = |st: &mut Fingerprint, b: &RecordBatch| {
        st.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap()
    };
    let (mut whole, mut token) = (Split::new(), None);
    test_clock::set(0);
    for k in 0..3 {
        for (w, batches) in per.iter().enumerate() {
            feed(&mut st, &batches[k]);
            let c = checked_changes(&st, &mut whole, &mut token).unwrap();
            assert!(c.entries().contains_key(&format!("w/{}", names[w])));
            // The others, once they exist, are kept, not encoded again.
            assert_eq!(c.kept().len(), if k == 0 { w } else { 2 }, "batch {k}");
        }
    }
    let nothing = checked_changes(&st, &mut whole, &mut token).unwrap();
    assert_eq!(nothing.kept().len(), 3);
    // As in the forecast stage's test: the middle workload retired at 4,700 s, the last
    // moved to its place unread.
    for (clock, w, k) in [(1000, 0, 3), (4000, 2, 3), (4700, 0, 4)] {
        test_clock::set(clock);
        feed(&mut st, &per[w][k]);
        checked_changes(&st, &mut whole, &mut token).unwrap();
    }
    assert_eq!(st.state.workloads.items.len(), 2, "the middle one retired");
    assert!(!whole.entries().keys().any(|k| k.contains(names[1])));
    assert!(whole.entries().contains_key("w/omi-3"));
}
