//! The gradient-boosted model in the stage: its versioned files and the versions in use.
//!
//! Layout under the model folder, beside the LSTM's: `forecast-gbm/<step>s/v<N>/model.json`
//! (the boosters) and `meta.json` ([`GbmMeta`]), written last by rename, so a version
//! without it is never loaded. The stage looks for a newer version every `reload_s` and
//! swaps to it between batches, as it does the LSTM's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wfe_contract::{Context, Error, Event, Result};

use crate::config::ForecastConfig;
use crate::gbm::{GbmModel, GbmReport};
use crate::models::Model;
use crate::store::{LocalDir, ModelRepo, Trained, newer_versions};

/// The model kind's folder.
pub const KIND: &str = "forecast-gbm";
/// Format of the files this code reads and writes.
pub const FORMAT: u32 = 1;

/// What a version was trained on and how it did on its held-out tails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmMeta {
    pub format: u32,
    pub version: u64,
    #[serde(flatten)]
    pub trained: Trained,
    pub report: GbmReport,
}

/// Saves a trained model as the next version; returns its number.
pub fn save(repo: &dyn ModelRepo, model: &GbmModel, mut meta: GbmMeta) -> Result<u64> {
    let step = meta.trained.step_s;
    let version = repo.claim(step)?;
    meta.version = version;
    meta.format = FORMAT;
    repo.write(step, version, "model.json", &model.to_bytes()?)?;
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::bad_input("gbm metadata", e.to_string()))?;
    repo.write(step, version, "meta.json", &json)?;
    Ok(version)
}

/// Loads a version, refused when its format is not this code's or its files disagree.
pub fn load(repo: &dyn ModelRepo, step_s: u64, version: u64) -> Result<(GbmModel, GbmMeta)> {
    let at = format!("{KIND} {step_s}s v{version}");
    let bytes = repo.read(step_s, version, "meta.json")?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_input(format!("{at} meta.json"), e.to_string()))?;
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format != u64::from(FORMAT) {
        return Err(Error::bad_input(
            at,
            format!(
                "model files of format {format}; this wfe reads format {FORMAT}: train again with `wfe train`"
            ),
        ));
    }
    let meta: GbmMeta = serde_json::from_value(value)
        .map_err(|e| Error::bad_input(format!("{at} meta.json"), e.to_string()))?;
    let model = GbmModel::from_bytes(&repo.read(step_s, version, "model.json")?)?;
    let want: Vec<usize> = meta
        .trained
        .horizons_s
        .iter()
        .map(|h| (h / step_s.max(1)).max(1) as usize)
        .collect();
    if model.horizons() != want {
        return Err(Error::bad_input(
            at,
            "model.json does not match meta.json (horizons differ)",
        ));
    }
    Ok((model, meta))
}

/// The versions in use, one per data step.
pub(crate) struct Boosted {
    repo: Option<LocalDir>,
    current: BTreeMap<u64, (GbmMeta, Arc<GbmModel>)>,
    checked: Option<Instant>,
    /// (step, version) that failed to load (not tried again).
    refused: Vec<(u64, u64)>,
}

impl Boosted {
    pub(crate) fn new(cfg: &ForecastConfig) -> Self {
        Self {
            repo: cfg.model_dir.as_ref().map(|d| LocalDir::of_kind(d, KIND)),
            current: BTreeMap::new(),
            checked: None,
            refused: Vec::new(),
        }
    }

    /// The model for series of `step_ms` and its version, if one is loaded.
    pub(crate) fn for_step(&self, step_ms: i64) -> Option<(u64, &Arc<GbmModel>)> {
        let (meta, model) = self.current.get(&u64::try_from(step_ms / 1000).ok()?)?;
        meta.trained.fits(step_ms).then_some((meta.version, model))
    }

    /// Loads the newest complete version of each step when it is newer than the one in use
    /// (at most every `reload_s`).
    pub(crate) fn refresh(&mut self, cfg: &ForecastConfig, ctx: &mut Context) {
        let Some(repo) = &self.repo else { return };
        if !cfg.models.contains(&Model::Gbm)
            || self
                .checked
                .is_some_and(|t| t.elapsed().as_secs_f64() < cfg.reload_s as f64)
        {
            return;
        }
        self.checked = Some(Instant::now());
        let in_use = |step| self.current.get(&step).map(|(m, _)| m.version);
        for (step, newest) in newer_versions(repo, KIND, &self.refused, in_use, ctx) {
            let loaded = load(repo, step, newest).and_then(|(m, meta)| {
                meta.trained.check(&format!("{KIND} v{newest}"), cfg)?;
                Ok((m, meta))
            });
            match loaded {
                Ok((model, meta)) => {
                    let msg = format!(
                        "{KIND} {step}s v{newest} from {} ({} series; held-out MAE {:?})",
                        meta.trained.source, meta.trained.series, meta.report.holdout_mae
                    );
                    ctx.event(Event::Model {
                        kind: "loaded",
                        message: &msg,
                    });
                    self.current.insert(step, (meta, Arc::new(model)));
                }
                Err(e) => {
                    self.refused.push((step, newest));
                    let msg = format!("{KIND} {step}s v{newest}: {e}");
                    ctx.event(Event::Model {
                        kind: "load_failed",
                        message: &msg,
                    });
                }
            }
        }
    }
}
