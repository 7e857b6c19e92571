//! The gradient-boosted model in the stage: loaded from the model folder, forecasting and
//! chosen like any fitted model, its version in the rows; missing or mismatched files said.

use super::*;
use crate::boosted::{self, GbmMeta};
use crate::gbm::{GbmConfig, GbmModel};
use crate::store::{LocalDir, ModelRepo};

/// machine-1-6's CPU metric (m00, utilisation: the raw value), in time order.
fn utilisation(norm: &[RecordBatch]) -> Vec<f64> {
    let mut by_time = std::collections::BTreeMap::new();
    for b in norm {
        let nb = NormBatch::new(b).unwrap();
        for r in 0..b.num_rows() {
            if nb.metric.get(r) == Some("m00") {
                by_time.insert(nb.time[r], nb.raw(r).unwrap_or(f64::NAN));
            }
        }
    }
    by_time.into_values().collect()
}

fn meta(horizons_s: Vec<u64>) -> GbmMeta {
    GbmMeta {
        format: boosted::FORMAT,
        version: 0,
        trained: crate::store::Trained {
            code_version: "test".into(),
            created_unix: 0,
            source: "machine-1-6".into(),
            series: 1,
            from_ms: 0,
            to_ms: 0,
            step_s: 60,
            horizons_s,
            season_s: 86_400,
        },
        report: Default::default(),
    }
}

fn stage(dir: &std::path::Path) -> Forecast {
    let cfg = ForecastConfig {
        models: vec![Model::Persistence, Model::Gbm],
        model_dir: Some(dir.to_path_buf()),
        reload_s: 0,
        ..Default::default()
    };
    Forecast::new(cfg, cpu()).unwrap()
}

#[test]
fn the_stage_forecasts_with_the_newest_gbm_and_says_when_it_has_none() {
    let norm = normalised("smd", &["machine-1-6"], 40);
    let dir = tempfile::tempdir().unwrap();
    // No version yet: persistence serves, and the rows of the issuances that tried gbm (a
    // model not chosen runs every `challenge_every`) say why it did not.
    let out = run(&mut stage(dir.path()), &norm);
    let rows_before = rows(&out);
    assert!(!rows_before.is_empty());
    assert!(rows_before.iter().all(|r| r.model != "gbm"));
    assert!(
        rows_before.iter().any(|r| r
            .fallback
            .as_deref()
            .is_some_and(|f| f.contains("gbm: no usable trained model"))),
        "{:?}",
        rows_before[0].fallback
    );

    // A version trained on the same machine's history (one budget, fewer rows: quicker), and
    // a newer one for other horizons, which the stage refuses and says so.
    let cfg = GbmConfig {
        budgets: vec![0.5],
        max_rows: 2_000,
        ..Default::default()
    };
    let (model, _) = GbmModel::train(&[utilisation(&norm)], &[15, 60], 1440, &cfg).unwrap();
    let repo = LocalDir::of_kind(dir.path(), boosted::KIND);
    assert_eq!(
        boosted::save(&repo, &model, meta(vec![900, 3600])).unwrap(),
        1
    );
    let mut s = stage(dir.path());
    let (mut out, mut ctx) = (VecCollector::new(), Context::new("forecast"));
    let half = norm.len() / 2;
    for b in &norm[..half] {
        s.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    assert_eq!(ctx.counters()["model.loaded"], 1);
    let (short, _) = GbmModel::train(&[utilisation(&norm)], &[15], 1440, &cfg).unwrap();
    assert_eq!(boosted::save(&repo, &short, meta(vec![900])).unwrap(), 2);
    for b in &norm[half..] {
        s.process_batch(Topic::MetricsNorm, b.clone(), &mut ctx, &mut out)
            .unwrap();
    }
    s.flush(&mut ctx, &mut out).unwrap();
    assert_eq!(
        ctx.counters()["model.load_failed"],
        1,
        "v2's horizons differ"
    );

    // Forecasts made: gbm is chosen where its errors are the lowest, named with its version.
    let mut versions = std::collections::BTreeSet::new();
    for b in out.of(Topic::Forecasts) {
        let model = strings(&b, "model").unwrap();
        let version = strings(&b, "model_version").unwrap();
        for r in 0..b.num_rows() {
            if model.value(r) == "gbm" {
                versions.insert(version.value(r).to_string());
            }
        }
    }
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        vec!["gbm v1".to_string()]
    );
    assert!(
        rows(&out)
            .iter()
            .all(|r| !r.fallback.as_deref().unwrap_or("").contains("no usable"))
    );
    // A version whose boosters do not match its metadata is refused when loaded.
    repo.write(60, 3, "model.json", &short.to_bytes().unwrap())
        .unwrap();
    let m = serde_json::to_vec(&meta(vec![900, 3600])).unwrap();
    repo.write(60, 3, "meta.json", &m).unwrap();
    let err = boosted::load(&repo, 60, 3).unwrap_err().to_string();
    assert!(err.contains("horizons differ"), "{err}");
}
