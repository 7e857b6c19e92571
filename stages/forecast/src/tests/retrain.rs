//! The stage's own retraining of the LSTM: on schedule into a new version it then uses, and
//! skipped (said, and the schedule restarted) while the stage holds fewer series than
//! `retrain_min_series`.

use super::*;

/// A one-epoch LSTM saved as version 1 of a fresh folder (its data "ended" at time 0), and a
/// stage config retraining it every 3 days of event time with `retrain_min_series`.
fn retraining_job(dir: &std::path::Path, retrain_min_series: usize) -> ForecastConfig {
    let (m1, lstm_cfg) = one_epoch_lstm(2, 3000, 150.0);
    let repo = store::LocalDir::new(dir);
    store::save(&repo, &m1, smd_meta(&m1, &LEVELS)).unwrap();
    ForecastConfig {
        models: vec![Model::Persistence, Model::Lstm],
        model_dir: Some(dir.to_path_buf()),
        reload_s: 0,
        retrain_every_s: 3 * 86_400,
        retrain_min_series,
        lstm: lstm_cfg,
        ..Default::default()
    }
}

fn counter(ctx: &Context, key: &str) -> u64 {
    ctx.counters().get(key).copied().unwrap_or(0)
}

#[test]
fn the_stage_retrains_the_lstm_on_schedule_into_a_new_version_and_uses_it() {
    use store::ModelRepo;
    let dir = tempfile::tempdir().unwrap();
    let repo = store::LocalDir::new(dir.path());
    let cfg = retraining_job(dir.path(), 1);
    let norm = normalised("smd", &["machine-1-6"], 80);
    let mut stage = Forecast::new(cfg, cpu()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
    let mut went_on = 0;
    for b in &norm {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
        // A retrain runs on its own thread while batches go on; its version is saved and
        // swapped in only at its event-time swap point, never when the thread happens to end.
        let n = |k: &str| counter(&ctx, k);
        let ended = n("model.retrained") + n("model.retrain_rejected") + n("model.retrain_failed");
        if n("model.retrain_started") > ended {
            went_on += 1;
            assert_eq!(
                repo.versions(60).unwrap().len() as u64,
                1 + n("model.retrained")
            );
        }
    }
    assert!(
        went_on > 0,
        "no batch was processed while a retrain was under way"
    );
    // Retrains run on their own thread; the end of the input applies those under way.
    stage.flush(&mut ctx, &mut out).unwrap();
    let started = ctx.counters()["model.retrain_started"];
    let retrained = counter(&ctx, "model.retrained");
    assert!(retrained >= 1, "{:?}", ctx.counters());
    assert!(retrained <= started, "{:?}", ctx.counters());
    assert_eq!(counter(&ctx, "model.retrain_skipped"), 0);
    assert_eq!(ctx.counters()["model.loaded"], 1 + retrained);
    let versions = repo.versions(60).unwrap();
    assert_eq!(versions.len() as u64, 1 + retrained);
    let meta = store::meta(&repo, 60, versions[1]).unwrap();
    let t = &meta.trained;
    assert!(t.source.contains("schedule"), "{}", t.source);
    assert_eq!(t.series, 1, "the stage trains on the histories it holds");
    assert!(t.to_ms > t.from_ms && meta.validation_mae.iter().all(|v| v.is_finite()));
}

/// The same job with `retrain_min_series` above the one series the stage holds: each due
/// retrain is skipped and said, nothing is trained or written, the schedule restarts from the
/// skip (one skip per 3 days of event time, not one per batch), and the forecasts are those
/// of version 1 throughout: equal to a stage that never retrains.
#[test]
fn a_stage_holding_fewer_series_than_retrain_min_series_skips_and_restarts_the_schedule() {
    use store::ModelRepo;
    let dir = tempfile::tempdir().unwrap();
    let repo = store::LocalDir::new(dir.path());
    let cfg = retraining_job(dir.path(), 2);
    let never = ForecastConfig {
        retrain_every_s: 0,
        drift_ratio: 1e9,
        ..cfg.clone()
    };
    let norm = normalised("smd", &["machine-1-6"], 80);
    let times: Vec<i64> = norm
        .iter()
        .flat_map(|b| timestamps(b, "event_time").unwrap().values().to_vec())
        .collect();
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    let mut stage = Forecast::new(cfg, cpu()).unwrap();
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
    for b in &norm {
        stage
            .process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    stage.flush(&mut ctx, &mut out).unwrap();
    let skipped = counter(&ctx, "model.retrain_skipped");
    // Version 1's data "ended" at time 0, so the first look is due; every later one 3 days
    // after the skip before it.
    let days = (last - first) as f64 / 86_400_000.0;
    let most = 1 + (days / 3.0).floor() as u64;
    assert!(
        (most - 1..=most).contains(&skipped),
        "{skipped} skips over {days:.1} days: {:?}",
        ctx.counters()
    );
    assert_eq!(counter(&ctx, "model.retrain_started"), 0);
    assert_eq!(counter(&ctx, "model.retrained"), 0);
    assert_eq!(ctx.counters()["model.loaded"], 1);
    assert_eq!(repo.versions(60).unwrap(), vec![1]);
    let without = run(&mut Forecast::new(never, cpu()).unwrap(), &norm);
    assert_eq!(row_keys(&out), row_keys(&without));
}
