use wfe_contract::VecCollector;
use wfe_contract::columns::{strings, timestamps};
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
        assert_eq!(v.len(), 38 * STATS.len());
        assert!(v.iter().all(|x| x.is_finite()));
        // min <= mean <= max for every metric
        for m in v.chunks(5) {
            assert!(m[2] <= m[0] + 1e-6 && m[0] <= m[3] + 1e-6, "{m:?}");
        }
    }
    // Windows are 60 steps of 60 s apart, the first one cold, later ones not.
    assert_eq!(rows[1].1 - rows[0].1, 60 * 60_000);
    assert!(rows[0].3 && !rows[2].3);
}

#[test]
fn machines_of_one_service_group_are_nearer_than_others() {
    let norm = normalised("smd", &["machine-2-1", "machine-2-2", "machine-3-3"], 60);
    let mut st = Fingerprint::new(FingerprintConfig {
        window: 1440,
        hop: 1440,
        learning_steps: 60,
    })
    .unwrap();
    let rows = vectors(&run(&mut st, &norm));
    let mean = |name: &str| {
        let vs: Vec<&Vec<f32>> = rows.iter().filter(|r| r.0 == name).map(|r| &r.2).collect();
        let mut m = vec![0f64; vs[0].len()];
        for v in &vs {
            for (a, b) in m.iter_mut().zip(v.iter()) {
                *a += *b as f64 / vs.len() as f64;
            }
        }
        m
    };
    let d = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (a, b, c) = (
        mean("machine-2-1"),
        mean("machine-2-2"),
        mean("machine-3-3"),
    );
    assert!(
        d(&a, &b) < d(&a, &c),
        "same group {} vs other {}",
        d(&a, &b),
        d(&a, &c)
    );
}

#[test]
fn state_survives_a_restart_and_bad_config_is_refused() {
    let norm = normalised("asd", &["omi-3"], 2);
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
    let mut second = Fingerprint::new(FingerprintConfig::default()).unwrap();
    second.restore(&snap).unwrap();
    let mut got = vectors(&out);
    got.extend(vectors(&run(&mut second, b)));
    assert_eq!(got, expected);
    assert!(
        Fingerprint::new(FingerprintConfig {
            window: 1,
            hop: 1,
            learning_steps: 1
        })
        .is_err()
    );
}
