//! Versioned model files: `wfe train` writes, the stage reads the newest and swaps to each
//! new one while it runs.
//!
//! Layout under the model folder, one line of versions per data step (a model's windows and
//! horizons are counted in steps): `forecast-lstm/<step>s/v<N>/model.bin` (the network) and
//! `forecast-lstm/<step>s/v<N>/meta.json` ([`ModelMeta`]: what the model was trained on, its
//! validation scores, its classes, the code that made it), and a `class-<id>.bin` per kept
//! class variant. `meta.json` is written last, by rename, so a
//! version without it is incomplete and is never loaded. Storage goes through [`ModelRepo`];
//! [`LocalDir`] is the local-path one (object storage fits the same three calls).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wfe_contract::{Context, Error, Event, Result};
use wfe_neural::{DeviceChoice, QuantileForecaster, TrainReport};

use crate::lstm::{Classes, Cut, LstmModel};

mod trained;
pub use trained::Trained;

/// Format of the model files this code reads and writes; a file of another format is
/// refused with an error that says so.
pub const FORMAT: u32 = 1;
/// The model kind's folder.
pub const KIND: &str = "forecast-lstm";

/// What a model version was trained on and how well it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: u32,
    pub version: u64,
    #[serde(flatten)]
    pub trained: Trained,
    pub cut: Cut,
    pub levels: Vec<f64>,
    /// Validation MAE per horizon on held-out tails: the model's and persistence's.
    pub validation_mae: Vec<f64>,
    pub persistence_mae: Vec<f64>,
    pub train: TrainReport,
    /// The classes of similar fingerprints and how their variants did (none in models
    /// trained without classes).
    #[serde(default)]
    pub classes: Classes,
}

/// Where versions are kept: per data step (seconds), numbered versions of files.
pub trait ModelRepo: Send {
    /// The steps that have versions.
    fn steps(&self) -> Result<Vec<u64>>;
    /// Complete versions (those with their metadata), ascending.
    fn versions(&self, step_s: u64) -> Result<Vec<u64>>;
    fn read(&self, step_s: u64, version: u64, file: &str) -> Result<Vec<u8>>;
    /// Writes a file of a version; `meta.json` last.
    fn write(&self, step_s: u64, version: u64, file: &str, bytes: &[u8]) -> Result<()>;
    /// Claims the next version number for a new model, atomically: two writers (`wfe train`
    /// and a stage's own retrain, or two stage instances) never get the same number, and a
    /// number claimed by a writer that then died (no `meta.json`) is never loaded nor reused.
    fn claim(&self, step_s: u64) -> Result<u64>;
}

/// A local folder: one model kind's versions under `<root>/<kind>/`.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
    kind: &'static str,
}

impl LocalDir {
    /// The LSTM's versions under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::of_kind(root, KIND)
    }

    /// The versions of model kind `kind` (its folder under `root`).
    pub fn of_kind(root: impl Into<PathBuf>, kind: &'static str) -> Self {
        Self {
            root: root.into(),
            kind,
        }
    }

    fn dir(&self, step_s: u64, version: u64) -> PathBuf {
        self.root
            .join(self.kind)
            .join(format!("{step_s}s"))
            .join(format!("v{version}"))
    }

    /// Names under `dir` that are `<prefix><number><suffix>`, as numbers, ascending.
    fn numbered(dir: &Path, prefix: &str, suffix: &str, complete: bool) -> Result<Vec<u64>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(dir, e)),
        };
        let mut v: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let n = name
                    .strip_prefix(prefix)?
                    .strip_suffix(suffix)?
                    .parse()
                    .ok()?;
                (!complete || e.path().join("meta.json").is_file()).then_some(n)
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl ModelRepo for LocalDir {
    fn steps(&self) -> Result<Vec<u64>> {
        Self::numbered(&self.root.join(self.kind), "", "s", false)
    }

    fn versions(&self, step_s: u64) -> Result<Vec<u64>> {
        Self::numbered(
            &self.root.join(self.kind).join(format!("{step_s}s")),
            "v",
            "",
            true,
        )
    }

    fn read(&self, step_s: u64, version: u64, file: &str) -> Result<Vec<u8>> {
        let p = self.dir(step_s, version).join(file);
        std::fs::read(&p).map_err(|e| io(&p, e))
    }

    fn claim(&self, step_s: u64) -> Result<u64> {
        let base = self.root.join(self.kind).join(format!("{step_s}s"));
        std::fs::create_dir_all(&base).map_err(|e| io(&base, e))?;
        // Past every folder, complete or not; `create_dir` fails if another writer got the
        // same number first (an atomic claim on local and network file systems alike).
        let mut n = Self::numbered(&base, "v", "", false)?
            .last()
            .copied()
            .unwrap_or(0)
            + 1;
        loop {
            let dir = base.join(format!("v{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io(&dir, e)),
            }
        }
    }

    fn write(&self, step_s: u64, version: u64, file: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir(step_s, version);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
        let p = dir.join(file);
        std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))
    }
}

/// Saves a trained model as the next version; returns its number.
pub fn save(repo: &dyn ModelRepo, model: &LstmModel, mut meta: ModelMeta) -> Result<u64> {
    let step = meta.trained.step_s;
    let version = repo.claim(step)?;
    meta.version = version;
    meta.format = FORMAT;
    // How the model reads its windows and its classes are the model's own, whatever the
    // caller started from.
    meta.cut = model.cut.clone();
    meta.classes = model.classes.clone();
    repo.write(step, version, "model.bin", &model.net.to_bytes()?)?;
    for (id, net) in &model.variants {
        repo.write(step, version, &class_file(*id), &net.to_bytes()?)?;
    }
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::bad_input("model metadata", e.to_string()))?;
    repo.write(step, version, "meta.json", &json)?;
    Ok(version)
}

fn class_file(id: u32) -> String {
    format!("class-{id}.bin")
}

/// The metadata of a version, refused when its format is not this code's.
pub fn meta(repo: &dyn ModelRepo, step_s: u64, version: u64) -> Result<ModelMeta> {
    let bytes = repo.read(step_s, version, "meta.json")?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_input(format!("{KIND} v{version} meta.json"), e.to_string()))?;
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format != u64::from(FORMAT) {
        return Err(Error::bad_input(
            format!("{KIND} v{version}"),
            format!(
                "model files of format {format}; this wfe reads format {FORMAT}: train again with `wfe train`"
            ),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::bad_input(format!("{KIND} v{version} meta.json"), e.to_string()))
}

/// Loads a version on `device` (default: as trained, the CPU when that is not here).
pub fn load(
    repo: &dyn ModelRepo,
    step_s: u64,
    version: u64,
    device: Option<DeviceChoice>,
) -> Result<(LstmModel, ModelMeta)> {
    let m = meta(repo, step_s, version)?;
    let bytes = repo.read(step_s, version, "model.bin")?;
    let net = QuantileForecaster::from_bytes(&bytes, device)
        .map_err(|e| Error::bad_input(format!("{KIND} v{version} model.bin"), e.to_string()))?;
    if net.shape() != &m.cut.shape(&m.levels) {
        return Err(Error::bad_input(
            format!("{KIND} v{version}"),
            "model.bin does not match meta.json (shape differs)",
        ));
    }
    let mut variants = std::collections::BTreeMap::new();
    for c in m.classes.classes.iter().filter(|c| c.kept) {
        let file = class_file(c.id);
        let bytes = repo.read(step_s, version, &file)?;
        let v = QuantileForecaster::from_bytes(&bytes, device)
            .map_err(|e| Error::bad_input(format!("{KIND} v{version} {file}"), e.to_string()))?;
        if v.shape() != net.shape() {
            return Err(Error::bad_input(
                format!("{KIND} v{version}"),
                format!("{file} does not match model.bin (shape differs)"),
            ));
        }
        variants.insert(c.id, v);
    }
    Ok((
        LstmModel {
            net,
            cut: m.cut.clone(),
            classes: m.classes.clone(),
            variants,
        },
        m,
    ))
}

/// Per data step in `repo`, the newest complete version that is not `refused` and is newer
/// than the one `in_use` (step -> version): what a stage loads next. A folder that cannot be
/// read is a `model.load_failed` event naming `kind`, and the other steps go on.
pub(crate) fn newer_versions(
    repo: &dyn ModelRepo,
    kind: &str,
    refused: &[(u64, u64)],
    in_use: impl Fn(u64) -> Option<u64>,
    ctx: &mut Context,
) -> Vec<(u64, u64)> {
    let failed = |ctx: &mut Context, msg: String| {
        ctx.event(Event::Model {
            kind: "load_failed",
            message: &msg,
        })
    };
    let steps = match repo.steps() {
        Ok(v) => v,
        Err(e) => {
            failed(ctx, format!("reading the {kind} folder: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for step in steps {
        match repo.versions(step) {
            Ok(v) => {
                let newest = v
                    .into_iter()
                    .filter(|v| !refused.contains(&(step, *v)))
                    .max();
                if let Some(n) = newest.filter(|n| Some(*n) > in_use(step)) {
                    out.push((step, n));
                }
            }
            Err(e) => failed(ctx, format!("listing the {step} s {kind} models: {e}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_claim_distinct_versions_past_incomplete_ones() {
        let dir = tempfile::tempdir().unwrap();
        let repo = LocalDir::new(dir.path());
        // A writer that died after claiming v1: incomplete, never loaded, never reused.
        assert_eq!(repo.claim(60).unwrap(), 1);
        repo.write(60, 1, "model.bin", b"partial").unwrap();
        assert_eq!(repo.versions(60).unwrap(), Vec::<u64>::new());
        let claimed: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let repo = repo.clone();
                    s.spawn(move || repo.claim(60).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = claimed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (2..=9).collect::<Vec<u64>>(), "{claimed:?}");
        // Another step has its own line of versions.
        assert_eq!(repo.claim(300).unwrap(), 1);
        // Only versions with meta.json count as complete.
        repo.write(60, 5, "meta.json", b"{}").unwrap();
        assert_eq!(repo.versions(60).unwrap(), vec![5]);
    }
}
