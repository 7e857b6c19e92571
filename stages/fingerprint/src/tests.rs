use arrow_array::RecordBatch;
use wfe_contract::columns::{strings, timestamps};
use wfe_contract::{Stage, Topic, VecCollector};
use wfe_normalise::testing::normalised;

use super::*;

fn run(stage: &mut Fingerprint, batches: &[RecordBatch]) -> VecCollector {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("fingerprint");
    for b in batches {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    out
}

fn vectors(out: &VecCollector) -> Vec<(String, i64, Vec<f32>, bool)> {
    let mut rows = vec![];
    for b in out.of(Topic::Fingerprints) {
        let w = strings(&b, "workload").unwrap();
        let end = timestamps(&b, "window_end").unwrap();
        let cold = wfe_contract::columns::bools(&b, "cold_start").unwrap();
        let vec = b.column_by_name("vector").unwrap();
        for r in 0..b.num_rows() {
            let list = arrow_array::cast::AsArray::as_list::<i32>(vec.as_ref()).value(r);
            let v = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Float32Type>(
                list.as_ref(),
            )
            .values()
            .to_vec();
            rows.push((w.value(r).to_string(), end.value(r), v, cold.value(r)));
        }
    }
    rows
}

#[test]
fn one_vector_per_window_of_an_smd_machine() {
    let norm = normalised("smd", &["machine-1-6"], 3); // 3 x 1024 steps
    let mut st = Fingerprint::new(FingerprintConfig {
        learning_steps: 120,
        ..Default::default()
    })
    .unwrap();
    let rows = vectors(&run(&mut st, &norm));
    let steps: usize = norm.iter().map(|b| b.num_rows()).sum::<usize>() / 38;
    assert_eq!(rows.len(), steps / 60 + usize::from(steps % 60 >= 2));
    for (w, _, v, _) in &rows {
        assert_eq!(w, "machine-1-6");
        assert!(!v.is_empty() && v.len() <= 16, "PCA-reduced: {}", v.len());
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // Windows are 60 steps of 60 s apart, the first two cold, later ones not.
    assert_eq!(rows[1].1 - rows[0].1, 60 * 60_000);
    assert!(rows[0].3 && rows[1].3 && !rows[2].3);
}

/// A row's (workload, cold, neighbours, weights, allocation).
type NeighbourRow = (String, bool, Vec<String>, Vec<f32>, Option<Vec<f64>>);

/// Every row's (workload, cold, neighbours, weights, allocation).
fn neighbour_rows(out: &VecCollector) -> Vec<NeighbourRow> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type};
    let mut rows = vec![];
    for b in out.of(Topic::Fingerprints) {
        let w = strings(&b, "workload").unwrap();
        let cold = wfe_contract::columns::bools(&b, "cold_start").unwrap();
        let nb = b
            .column_by_name("neighbours")
            .unwrap()
            .as_list::<i32>()
            .clone();
        let nw = b
            .column_by_name("neighbour_weights")
            .unwrap()
            .as_list::<i32>()
            .clone();
        let al = b
            .column_by_name("allocation")
            .unwrap()
            .as_list::<i32>()
            .clone();
        for r in 0..b.num_rows() {
            let names = if nb.is_null(r) {
                vec![]
            } else {
                let v = nb.value(r);
                let v = v.as_string::<i32>();
                (0..v.len()).map(|i| v.value(i).to_string()).collect()
            };
            let weights = if nw.is_null(r) {
                vec![]
            } else {
                nw.value(r).as_primitive::<Float32Type>().values().to_vec()
            };
            let alloc = (!al.is_null(r))
                .then(|| al.value(r).as_primitive::<Float64Type>().values().to_vec());
            rows.push((w.value(r).to_string(), cold.value(r), names, weights, alloc));
        }
    }
    rows
}

#[test]
fn a_new_machine_borrows_its_allocation_from_its_service_group() {
    // Two machines of group 2 and one of group 3 are known; machine-2-2 arrives last.
    let mut norm = normalised("smd", &["machine-2-1", "machine-2-7", "machine-3-3"], 12);
    norm.extend(normalised("smd", &["machine-2-2"], 1));
    let mut st = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let out = run(&mut st, &norm);
    let rows = neighbour_rows(&out);
    let cold: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "machine-2-2" && r.1)
        .collect();
    assert!(!cold.is_empty());
    for (_, _, names, weights, alloc) in &cold {
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names[0].starts_with("machine-2-"),
            "nearest is of its group: {names:?}"
        );
        assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(weights.windows(2).all(|w| w[0] >= w[1]));
        let alloc = alloc
            .as_ref()
            .expect("a cold workload with neighbours gets an allocation");
        assert_eq!(alloc.len(), 38);
        assert!(alloc.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
    // Known workloads carry their own allocation; nobody is their own neighbour.
    for (w, cold, names, _, alloc) in &rows {
        assert!(!names.contains(w));
        if !cold {
            assert!(alloc.is_some());
        }
    }
    // Every workload has a profile in one comparable basis.
    let p = st.profiles();
    assert_eq!(p.len(), 4);
    assert!(p.iter().all(|x| x.1 == p[0].1 && x.2.len() == p[0].2.len()));
}

#[test]
fn indexed_neighbours_are_the_exact_ones_on_a_small_fleet() {
    // Twelve ASD servers: with `index_above = 2` every search goes through the HNSW index
    // once two servers are known; on a fleet this small it must find the exact neighbours.
    let all = [
        "omi-1", "omi-2", "omi-3", "omi-4", "omi-5", "omi-6", "omi-7", "omi-8", "omi-9", "omi-10",
        "omi-11", "omi-12",
    ];
    let norm = normalised("asd", &all, 24);
    let rows = |index_above: usize, index_ef: usize| {
        let mut st = Fingerprint::new(FingerprintConfig {
            index_above,
            index_ef,
            ..Default::default()
        })
        .unwrap();
        let mut out = VecCollector::new();
        let mut ctx = Context::new("fingerprint");
        for b in &norm {
            st.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
                .unwrap();
        }
        st.flush(&mut ctx, &mut out).unwrap();
        let rebuilt = ctx.counters().get("index.rebuilt").copied().unwrap_or(0);
        (neighbour_rows(&out), rebuilt)
    };
    let (exact, none) = rows(0, 0);
    let (indexed, rebuilt) = rows(2, 0);
    // The beam set in config (here the least that still yields the 4 x 3 candidates).
    let (narrow, _) = rows(2, 12);
    assert_eq!(none, 0);
    assert!(
        rebuilt >= 2,
        "the index was built and rebuilt as the fleet grew: {rebuilt}"
    );
    assert!(exact.iter().filter(|r| r.2.len() == 3).count() > 100);
    let names = |r: &[NeighbourRow]| {
        r.iter()
            .map(|x| (x.0.clone(), x.2.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&indexed), names(&exact));
    assert_eq!(names(&narrow), names(&exact));
}

#[test]
fn state_survives_a_restart_and_bad_config_is_refused() {
    let norm = normalised("asd", &["omi-3", "omi-4"], 40);
    let (a, b) = norm.split_at(norm.len() / 2);
    let expected = vectors(&run(
        &mut Fingerprint::new(FingerprintConfig::default()).unwrap(),
        &norm,
    ));
    let mut first = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let mut out = VecCollector::new();
    let mut ctx = Context::new("fingerprint");
    for x in a {
        first
            .process_batch(Topic::MetricsNorm, x.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    let snap = first.snapshot().unwrap().unwrap();
    // The changelog's form (entries per workload and basis) restores the same state, in the
    // same order, as the whole one.
    let split = first.snapshot_split().unwrap().unwrap();
    let keys: Vec<&String> = split.entries().keys().collect();
    assert!(
        keys.iter().filter(|k| k.starts_with("w/")).count() > 1,
        "{keys:?}"
    );
    let mut second = Fingerprint::new(FingerprintConfig::default()).unwrap();
    second.restore_split(split).unwrap();
    assert_eq!(second.snapshot().unwrap().unwrap(), snap);
    let mut got = vectors(&out);
    got.extend(vectors(&run(&mut second, b)));
    assert_eq!(got, expected);
    assert!(
        Fingerprint::new(FingerprintConfig {
            window: 1,
            hop: 1,
            learning_steps: 1,
            ..Default::default()
        })
        .is_err()
    );
    let weights = FeatureWeights {
        trend: f64::NAN,
        ..Default::default()
    };
    let e = Fingerprint::new(FingerprintConfig {
        weights,
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("stages.fingerprint.weights"), "{e}");
    let mut mw = std::collections::BTreeMap::new();
    mw.insert("m00".to_string(), -1.0);
    let e = Fingerprint::new(FingerprintConfig {
        metric_weights: mw,
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("metric_weights.m00"), "{e}");
}

#[test]
fn the_lstm_method_needs_libtorch_or_says_so() {
    let cfg = FingerprintConfig {
        method: Method::Lstm,
        ..Default::default()
    };
    match Fingerprint::new(cfg) {
        Ok(_) => assert!(wfe_neural::available()),
        Err(e) => assert!(
            !wfe_neural::available() && e.to_string().contains("torch"),
            "{e}"
        ),
    }
}

#[cfg(feature = "torch")]
#[test]
fn the_lstm_method_embeds_every_window_and_finds_neighbours_after_a_snapshot() {
    // Three machines, their whole history (normalise releases each machine's steps in chunks,
    // so a few batches would hold one machine only).
    let norm = normalised(
        "smd",
        &["machine-1-6", "machine-1-7", "machine-2-1"],
        usize::MAX,
    );
    let mut cfg = FingerprintConfig {
        method: Method::Lstm,
        ..Default::default()
    };
    cfg.lstm.fit_windows = 24;
    cfg.lstm.model.epochs = 3;
    cfg.lstm.model.device = wfe_neural::DeviceChoice::Cpu;
    let half = norm.len() / 2;
    let mut first = Fingerprint::new(cfg.clone()).unwrap();
    let mut a = VecCollector::new();
    let mut ctx = Context::new("fingerprint");
    for b in &norm[..half] {
        first
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut a)
            .unwrap();
    }
    let snap = first.snapshot().unwrap().unwrap();
    let mut second = Fingerprint::new(cfg.clone()).unwrap();
    second.restore(&snap).unwrap();
    let b = run(&mut second, &norm[half..]);
    let whole = run(&mut Fingerprint::new(cfg.clone()).unwrap(), &norm);
    let (ra, rb, rw) = (vectors(&a), vectors(&b), vectors(&whole));
    assert_eq!(ra.len() + rb.len(), rw.len());
    let steps: usize = norm.iter().map(|b| b.num_rows()).sum::<usize>() / 38;
    assert!(
        rw.len() >= steps / 60,
        "{} rows for {steps} steps",
        rw.len()
    );
    for (_, _, v, _) in &rw {
        assert_eq!(v.len(), cfg.lstm.model.embedding);
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // The same vectors whether or not the stage was restored in between (up to libtorch's
    // order of floating-point sums, which is not fixed from one training to the next).
    for (x, y) in rb.iter().zip(&rw[ra.len()..]) {
        assert_eq!((&x.0, x.1, x.3), (&y.0, y.1, y.3));
        let gap =
            x.2.iter()
                .zip(&y.2)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
        assert!(gap < 0.02, "{gap}");
    }
    let batches = whole.of(Topic::Fingerprints);
    let last = batches.last().unwrap();
    assert_eq!(strings(last, "method").unwrap().value(0), "lstm");
    assert!(
        strings(last, "model_version")
            .unwrap()
            .value(0)
            .ends_with(".lstm1")
    );
    let nb = neighbour_rows(&whole);
    // Normalise releases a machine's training history at once, so the first machine's early
    // rows come before the others have a window; once all three are known, two peers each.
    for m in ["machine-1-6", "machine-1-7", "machine-2-1"] {
        let last = nb.iter().rev().find(|r| r.0 == m).unwrap();
        assert_eq!(last.2.len(), 2, "{m}: {last:?}");
    }
    assert!(
        nb.iter()
            .filter(|r| r.0 == "machine-2-1" && !r.1)
            .all(|r| r.2.len() == 2)
    );
}

#[test]
fn a_week_of_pod_churn_keeps_about_a_days_workloads() {
    let norm = wfe_normalise::testing::churn_norm(7);
    wfe_normalise::testing::assert_keeps_about_a_days_pods(|retire_after_s| {
        let mut st = Fingerprint::new(FingerprintConfig {
            retire_after_s,
            ..Default::default()
        })
        .unwrap();
        st.sweep.clock = wfe_domain::retire::test_clock::now;
        let retired = wfe_normalise::testing::run_as_live(&mut st, &norm);
        (
            st.state.workloads.items.len(),
            st.state.workloads.names.len(),
            retired,
        )
    });
}

#[test]
fn an_instance_sizes_a_new_machine_from_another_instances_profiles_and_forgets_retired_ones() {
    // Instance A owns three machines; instance B owns only the newcomer, and knows A's
    // machines from the `profiles` rows A wrote (what the Kafka table hands it).
    let mut a = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let known = normalised("smd", &["machine-2-1", "machine-2-7", "machine-3-3"], 12);
    let profiles = run(&mut a, &known).of(Topic::Profiles);
    assert!(!profiles.is_empty());
    let mut b = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let mut ctx = Context::new("fingerprint");
    assert_eq!(b.tables(), vec![Topic::Profiles]);
    for p in &profiles {
        b.process_table(Topic::Profiles, p.clone(), &mut ctx)
            .unwrap();
    }
    assert_eq!(b.fleet.len(), 3);
    let out = run(&mut b, &normalised("smd", &["machine-2-2"], 1));
    let cold: Vec<_> = neighbour_rows(&out)
        .into_iter()
        .filter(|r| r.0 == "machine-2-2" && r.1)
        .collect();
    assert!(!cold.is_empty());
    for (_, _, names, _, alloc) in &cold {
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].starts_with("machine-2-"), "{names:?}");
        assert_eq!(alloc.as_ref().map(Vec::len), Some(38));
    }
    // A retires machine-2-1: its row without features takes it out of B's fleet.
    let id = a.state.workloads.names.find("machine-2-1").unwrap() as usize;
    let gone = vec![(
        "machine-2-1".to_string(),
        a.state.workloads.items[id].clone(),
    )];
    let retired = Fingerprint::retired_rows(&gone).unwrap().unwrap();
    b.process_table(Topic::Profiles, retired, &mut ctx).unwrap();
    // B's view: A's other two and its own machine-2-2.
    assert!(b.fleet.get("machine-2-1").is_none());
    assert_eq!(b.fleet.len(), 3);
    assert!(b.fleet.get("machine-2-2").is_some());
}

/// The rows of `batch` whose workload is in `owned`, or None when there are none.
fn rows_of(batch: &RecordBatch, owned: &[&str]) -> Option<RecordBatch> {
    let w = wfe_contract::columns::DictStrings::new(batch, "workload").unwrap();
    let idx: Vec<u32> = (0..batch.num_rows() as u32)
        .filter(|&r| w.get(r as usize).is_some_and(|n| owned.contains(&n)))
        .collect();
    (!idx.is_empty()).then(|| {
        arrow_select::take::take_record_batch(batch, &arrow_array::UInt32Array::from(idx)).unwrap()
    })
}

#[test]
fn two_instances_that_share_their_profiles_find_the_neighbours_one_stage_finds() {
    // Three machines known, then machine-2-2 arrives. One stage sees them all; instances A
    // and B own two each (each its own PCA basis) and, between batches, read each other's
    // `profiles` rows as the Kafka table hands them over. Neighbours, weights and borrowed
    // allocations must be the same, cold rows included.
    let mut norm = normalised("smd", &["machine-2-1", "machine-2-7", "machine-3-3"], 12);
    norm.extend(normalised("smd", &["machine-2-2"], 1));
    let one = neighbour_rows(&run(
        &mut Fingerprint::new(FingerprintConfig::default()).unwrap(),
        &norm,
    ));
    let owners = [
        ["machine-2-1", "machine-2-7"],
        ["machine-3-3", "machine-2-2"],
    ];
    let mut stages = [0, 1].map(|_| Fingerprint::new(FingerprintConfig::default()).unwrap());
    let mut outs = [VecCollector::new(), VecCollector::new()];
    let mut ctx = Context::new("fingerprint");
    for b in &norm {
        let mut published = Vec::new();
        for i in 0..2 {
            let mut out = VecCollector::new();
            if let Some(part) = rows_of(b, &owners[i]) {
                stages[i]
                    .process_batch(Topic::MetricsNorm, part, &mut ctx, &mut out)
                    .unwrap();
            }
            published.push(out.of(Topic::Profiles));
            outs[i].batches.extend(out.batches);
        }
        // The table delivers each instance's rows to the other before the next batch.
        for (i, rows) in published.iter().enumerate() {
            for r in rows {
                stages[1 - i]
                    .process_table(Topic::Profiles, r.clone(), &mut ctx)
                    .unwrap();
            }
        }
    }
    for i in 0..2 {
        stages[i].flush(&mut ctx, &mut outs[i]).unwrap();
    }
    let mut split: Vec<NeighbourRow> = outs.iter().flat_map(neighbour_rows).collect();
    let mut one = one;
    // Rows of one workload keep their order; the order across workloads differs.
    split.sort_by(|a, b| a.0.cmp(&b.0));
    one.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(split.len(), one.len());
    for (i, (a, b)) in split.iter().zip(&one).enumerate() {
        let short = |r: &NeighbourRow| (r.0.clone(), r.1, r.2.clone(), r.3.clone());
        assert_eq!(
            a,
            b,
            "row {i}: instances {:?}, one stage {:?}",
            short(a),
            short(b)
        );
    }
    let cold_with_neighbours = one
        .iter()
        .filter(|r| r.0 == "machine-2-2" && r.1 && !r.2.is_empty())
        .count();
    assert!(cold_with_neighbours > 0, "{one:?}");
    // Machine-2-2's nearest live in the other instance.
    let first = one.iter().find(|r| r.0 == "machine-2-2").unwrap();
    assert!(
        first.2.iter().any(|n| owners[0].contains(&n.as_str())),
        "{first:?}"
    );
}

#[test]
fn a_workload_keeps_its_own_metric_set_in_a_batch_shared_with_other_sets() {
    // One batch holds an ASD server (19 metrics) and an SMD machine (38), as the embedded
    // run's batches do: each keeps its own set, as it has alone in a partition's batches.
    let asd = normalised("asd", &["omi-1"], 4);
    let smd = normalised("smd", &["machine-1-6"], 4);
    let mixed: Vec<RecordBatch> = asd
        .iter()
        .zip(&smd)
        .map(|(a, s)| arrow_select::concat::concat_batches(&a.schema(), [a, s]).unwrap())
        .collect();
    let out = run(
        &mut Fingerprint::new(FingerprintConfig::default()).unwrap(),
        &mixed,
    );
    let mut widths = std::collections::BTreeMap::new();
    for (w, _, _, _, alloc) in neighbour_rows(&out) {
        if let Some(a) = alloc {
            widths.insert(w, a.len());
        }
    }
    assert_eq!(widths.get("omi-1"), Some(&19), "{widths:?}");
    assert_eq!(widths.get("machine-1-6"), Some(&38), "{widths:?}");
}

/// A window held for its metric set's first basis keeps the answer it was cut with (its
/// neighbours as the view stood then, its allocation) through a restore in either form: a
/// restored one answered from when it was released, from a later view (over Kafka, after a
/// restart, a new workload borrowed a neighbour's later profile).
#[test]
fn held_windows_keep_their_answers_through_a_restore() {
    let norm = normalised("asd", &["omi-1", "omi-2", "omi-3"], 40);
    // Peers are known after a day; the basis waits for more windows than that.
    let cfg = FingerprintConfig {
        learning_steps: 288,
        fit_windows: 400,
        ..Default::default()
    };
    let mut first = Fingerprint::new(cfg.clone()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("fingerprint"));
    let answered = |f: &Fingerprint| {
        (f.state.held.iter()).any(|h| h.answer.as_ref().is_some_and(|a| !a.0.is_empty()))
    };
    for x in &norm {
        first
            .process_batch(Topic::MetricsNorm, x.clone(), &mut ctx, &mut out)
            .unwrap();
        if answered(&first) {
            break;
        }
    }
    assert!(answered(&first), "no held window with neighbours");
    let answers = first.state.answers();
    let mut split_form = Fingerprint::new(cfg.clone()).unwrap();
    split_form
        .restore_split(first.snapshot_split().unwrap().unwrap())
        .unwrap();
    assert_eq!(split_form.state.answers(), answers);
    let mut whole_form = Fingerprint::new(cfg.clone()).unwrap();
    whole_form
        .restore(&first.snapshot().unwrap().unwrap())
        .unwrap();
    assert_eq!(whole_form.state.answers(), answers);
    // A whole state written before the answers were kept still restores, without them.
    let older = wfe_contract::state::encode("fingerprint", &first.state).unwrap();
    let mut old_form = Fingerprint::new(cfg).unwrap();
    old_form.restore(&older.unwrap()).unwrap();
    assert!(old_form.state.answers().is_empty());
    assert_eq!(old_form.state.held.len(), first.state.held.len());
}

/// Batches as a runner hands them, each with the seq `seq` gives it; no flush.
fn run_at(
    stage: &mut Fingerprint,
    batches: &[RecordBatch],
    seq: impl Fn(usize) -> i64,
) -> VecCollector {
    let mut out = VecCollector::new();
    let mut ctx = Context::new("fingerprint");
    for (i, b) in batches.iter().enumerate() {
        ctx.set_seq(Some(seq(i)));
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    out
}

/// One seq can come as several batches (normalise releases a fitted workload's history in
/// chunks; a service's messages are cut by size, per partition): what is published in a seq
/// is searched from the next one on, so one process and a fleet of instances agree however
/// the seq was cut, and a stage restored half-way through a seq finds what the one that
/// never stopped finds.
#[test]
fn profiles_of_a_seq_are_searched_from_the_next_seq_on_even_after_a_restore() {
    let mut norm = normalised("smd", &["machine-2-1", "machine-2-7", "machine-3-3"], 12);
    norm.extend(normalised("smd", &["machine-2-2"], 4));
    let cold_rows = |out: &VecCollector| -> (usize, usize) {
        let rows = neighbour_rows(out);
        let cold: Vec<_> = rows
            .iter()
            .filter(|r| r.0 == "machine-2-2" && r.1)
            .collect();
        (cold.len(), cold.iter().filter(|r| !r.2.is_empty()).count())
    };
    // A seq per batch: machine-2-2 borrows from the machines seen in the batches before.
    let mut each = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let (cold, borrowed) = cold_rows(&run_at(&mut each, &norm, |i| i as i64));
    assert!(cold > 0 && borrowed == cold, "{borrowed} of {cold}");
    // One seq for all: nothing published in it is searched in it.
    let mut one = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let whole = run_at(&mut one, &norm, |_| 7);
    let (cold, borrowed) = cold_rows(&whole);
    assert!(cold > 0 && borrowed == 0, "{borrowed} of {cold}");
    // Stopped half-way through the seq and restored from its entries: the same rows.
    let half = norm.len() / 2;
    let mut first = Fingerprint::new(FingerprintConfig::default()).unwrap();
    let mut out = run_at(&mut first, &norm[..half], |_| 7);
    let mut restored = Fingerprint::new(FingerprintConfig::default()).unwrap();
    restored
        .restore_split(first.snapshot_split().unwrap().unwrap())
        .unwrap();
    let rest = run_at(&mut restored, &norm[half..], |_| 7);
    out.batches.extend(rest.batches);
    assert_eq!(neighbour_rows(&out), neighbour_rows(&whole));
}

mod changes;
