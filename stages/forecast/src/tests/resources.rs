//! A resource that does not apply to a workload (another prefix's) holds no rings for it, and
//! every path that walks a workload's series (masking, a snapshot and its restore) takes such
//! a series as it is.

use super::*;

/// CPU for `machine-` workloads, and a second CPU mapping for `omi-` ones.
fn two_prefixes() -> Vec<ResourceMap> {
    let mut machine = cpu();
    machine[0].workload_prefix = Some("machine-".into());
    let omi = ResourceMap {
        capacity: 32.0,
        workload_prefix: Some("omi-".into()),
        ..machine[0].clone()
    };
    vec![machine.remove(0), omi]
}

#[test]
fn a_resource_of_another_prefix_holds_no_rings_and_is_masked_and_restored_as_it_is() {
    let norm = normalised("smd", &["machine-1-6"], 2000);
    let cfg = ForecastConfig::default();
    let feed = |resources: Vec<ResourceMap>| {
        let mut stage = Forecast::new(cfg.clone(), resources).unwrap();
        let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
        let t0 = NormBatch::new(&norm[1]).unwrap().time[0];
        for (i, b) in norm.iter().enumerate() {
            if i == 2 {
                let span = anomaly("machine-1-6", t0, t0 + 3_600_000);
                stage
                    .process_batch(Topic::Anomalies, span, &mut ctx, &mut out)
                    .unwrap();
            }
            stage
                .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
                .unwrap();
        }
        let masked = ctx.counters().get("errors.masked").copied().unwrap_or(0);
        (stage, out, masked)
    };
    let (stage, out, masked) = feed(two_prefixes());
    let wk = &stage.workloads.items[0];
    assert_eq!(wk.applies, vec![true, false]);
    assert!(!wk.series[0].is_unused() && wk.series[1].is_unused());
    assert!(masked > 0, "the span masked nothing");
    // The same forecasts as with the one resource that applies.
    let (_, alone, masked_alone) = feed(cpu());
    assert_eq!(masked, masked_alone);
    let key = |o: &VecCollector| -> Vec<(i64, i64, Vec<u64>)> {
        let r = rows(o);
        r.iter()
            .map(|r| {
                (
                    r.target,
                    r.horizon,
                    r.values.iter().map(|v| v.to_bits()).collect(),
                )
            })
            .collect()
    };
    assert!(!key(&out).is_empty());
    assert_eq!(key(&out), key(&alone));
    // Through a snapshot and back, the unused series stays unused.
    let split = stage.snapshot_split().unwrap().unwrap();
    let mut back = Forecast::new(cfg.clone(), two_prefixes()).unwrap();
    back.restore_split(split).unwrap();
    assert!(back.workloads.items[0].series[1].is_unused());
}

/// A state that says a resource applies but holds no rings for it (damaged, or written under
/// other prefixes) starts that series afresh instead of failing on its missing rings.
#[test]
fn a_state_whose_applying_series_has_no_rings_starts_it_afresh() {
    let norm = normalised("smd", &["machine-1-6"], 2000);
    let mut stage = Forecast::new(ForecastConfig::default(), two_prefixes()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
    stage
        .process_batch(Topic::MetricsNorm, norm[0].clone(), &mut ctx, &mut out)
        .unwrap();
    stage.workloads.items[0].applies[1] = true;
    for b in &norm[1..3] {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    let s = &stage.workloads.items[0].series[1];
    assert!(!s.is_unused());
    assert!(s.history.values.len() > 100, "{}", s.history.values.len());
}
