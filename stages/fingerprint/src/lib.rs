//! # wfe-fingerprint: `metrics.norm` in, `fingerprints` out
//!
//! A fingerprint is a short vector that says how a workload behaves over a window of steps.
//! The method `stats-pca`:
//! 1. every `hop` steps, the statistical features of the last `window` steps' raw values
//!    ([`features`]: level, spread, quantiles, trend, autocorrelation, period, cross-metric
//!    correlation per metric, each group weighted);
//! 2. reduced by PCA fitted on the fleet's history of such windows ([`reduce`]): a uniform
//!    sample of windows, refitted as the fleet grows. `model_version` names the metric set and
//!    the basis, so two vectors with the same version are comparable;
//! 3. each workload's **profile** is the mean of its window features; the nearest known
//!    profiles ([`knn`]; cosine or Euclidean, in the basis, measured from the mean of every
//!    window the fleet has shown) are a row's `neighbours`, with similarity weights that
//!    sum to 1.
//!
//! **Cold start**: a workload is `cold_start` while it has at most `learning_steps` observed
//! steps (with the defaults: its first hour, one window).
//! Its rows carry a `predicted_allocation`: per metric, the similarity-weighted mean of its
//! neighbours' allocations (the `allocation_quantile` of their raw values per window,
//! averaged over their history), so that a brand-new workload is sized from similar ones,
//! and the neighbours and weights say why. Known workloads carry their own allocation.
//!
//! Workloads with different metric sets have incomparable features: each metric set has its
//! own basis and neighbours are searched within it.
//!
//! The method `lstm` ([`embed`], needs libtorch) replaces steps 1 and 2 by a learned vector:
//! the bottleneck of an LSTM autoencoder trained on a sample of the fleet's windows; profiles
//! are the mean of a workload's window embeddings, compared the same way.
//!
//! **Environment**: `env.*` labels on a workload's samples (host metadata: instance type, CPU
//! model, kernel, software versions) are its `environment`, carried in its rows;
//! [`similar`] answers from the stored rows which known environment suits a workload best.

pub mod embed;
pub use wfe_contract::features;
pub mod knn;
pub mod reduce;
pub mod similar;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f32, list_f32_opt, list_f64_opt, list_str, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::stats::quantile;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub use features::FeatureWeights;
pub use knn::Distance;

/// How a window becomes a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Statistical features per metric, reduced by PCA.
    #[default]
    StatsPca,
    /// The bottleneck of an LSTM autoencoder over the window's steps (needs libtorch).
    Lstm,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::StatsPca => "stats-pca",
            Method::Lstm => "lstm",
        }
    }
}

/// Settings of the fingerprint stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// `stats-pca` (statistical features reduced by PCA) or `lstm` (a learned embedding).
    #[serde(default)]
    pub method: Method,
    /// The learned embedding of `method = "lstm"`.
    #[serde(default)]
    pub lstm: embed::LstmEmbedding,
    /// Steps per window.
    #[serde(default = "d_window")]
    pub window: usize,
    /// Steps between fingerprints (equal to `window`: tumbling windows).
    #[serde(default = "d_window")]
    pub hop: usize,
    /// A workload is `cold_start` while it has at most this many observed steps.
    #[serde(default = "d_window")]
    pub learning_steps: usize,
    /// Weight of each feature group.
    #[serde(default)]
    pub weights: FeatureWeights,
    /// Weight per metric name (default 1), e.g. `{ cpu = 2.0 }`.
    #[serde(default)]
    pub metric_weights: BTreeMap<String, f64>,
    /// Share of the window features' variance the PCA keeps.
    #[serde(default = "d_variance")]
    pub variance: f64,
    /// Most PCA components (fingerprint length).
    #[serde(default = "d_max_components")]
    pub max_components: usize,
    /// Windows seen before the first basis is fitted (rows wait until then); it is refitted
    /// after twice as many, four times, and so on.
    #[serde(default = "d_fit_windows")]
    pub fit_windows: usize,
    /// Windows kept (uniform sample) to fit the basis on.
    #[serde(default = "d_reservoir")]
    pub reservoir: usize,
    /// Neighbours per row (0: none).
    #[serde(default = "d_neighbours")]
    pub neighbours: usize,
    /// `cosine` or `euclidean`.
    #[serde(default)]
    pub distance: Distance,
    /// Known workloads of one metric set from which neighbours are searched with an HNSW
    /// index instead of exactly (0: always exact). The index is rebuilt when that set has
    /// grown by a quarter or the basis changed; its candidates (4 x `neighbours`) are
    /// re-ranked by current profiles.
    #[serde(default = "d_index_above")]
    pub index_above: usize,
    /// Quantile of a window's raw values that counts as the workload's allocation.
    #[serde(default = "d_alloc_q")]
    pub allocation_quantile: f64,
}

fn d_window() -> usize {
    60
}
fn d_variance() -> f64 {
    0.95
}
fn d_max_components() -> usize {
    16
}
fn d_fit_windows() -> usize {
    32
}
fn d_reservoir() -> usize {
    4096
}
fn d_neighbours() -> usize {
    3
}
fn d_index_above() -> usize {
    4096
}
fn d_alloc_q() -> f64 {
    0.95
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            method: Method::StatsPca,
            lstm: embed::LstmEmbedding::default(),
            window: 60,
            hop: 60,
            learning_steps: 60,
            weights: FeatureWeights::default(),
            metric_weights: BTreeMap::new(),
            variance: d_variance(),
            max_components: d_max_components(),
            fit_windows: d_fit_windows(),
            reservoir: d_reservoir(),
            neighbours: d_neighbours(),
            distance: Distance::default(),
            index_above: d_index_above(),
            allocation_quantile: d_alloc_q(),
        }
    }
}

impl FingerprintConfig {
    fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, why: String| Err(Error::config(format!("stages.fingerprint.{key}"), why));
        if self.window < 2 || self.hop == 0 {
            return bad(
                "window",
                "window must be at least 2 and hop at least 1".into(),
            );
        }
        if let Err(e) = self.weights.validate() {
            return bad("weights", e);
        }
        if let Some((k, w)) = self
            .metric_weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return bad(
                &format!("metric_weights.{k}"),
                format!("{w} is not a finite weight >= 0"),
            );
        }
        if !(0.0 < self.variance && self.variance <= 1.0) {
            return bad("variance", "must be in (0, 1]".into());
        }
        if self.max_components == 0 || self.fit_windows < 2 || self.reservoir < 2 {
            return bad(
                "max_components",
                "max_components must be at least 1, fit_windows and reservoir at least 2".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.allocation_quantile) {
            return bad("allocation_quantile", "must be in [0, 1]".into());
        }
        if self.method == Method::Lstm {
            if !wfe_neural::available() {
                return Err(wfe_neural::unavailable("stages.fingerprint.method (lstm)"));
            }
            if self.lstm.fit_windows < 2 || self.lstm.reservoir < 2 {
                return bad(
                    "lstm.fit_windows",
                    "fit_windows and reservoir must be at least 2".into(),
                );
            }
            self.lstm.model.validate("stages.fingerprint.lstm.model")?;
        }
        Ok(())
    }
}

/// One step of a workload's window: time, scaled values, raw values, observed count.
type WindowStep = (i64, Vec<f64>, Vec<f64>, usize);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Workload {
    slots: Slots,
    window: VecDeque<WindowStep>,
    since_emit: usize,
    observed_steps: usize,
    /// Counted in `State::known` under `signature` (past its learning period).
    counted_known: bool,
    /// Metric set this workload's features belong to (hash of its metric names).
    signature: u64,
    /// Sum of its window features, and how many windows.
    profile_sum: Vec<f64>,
    windows: u64,
    /// Sum of its per-window allocations (raw units, per metric).
    alloc_sum: Vec<f64>,
    /// Its profile rotated into basis `.0` of its metric set (uncentred, see [`Space`]):
    /// neighbour searches read this instead of projecting every known profile for every row.
    projected: Option<(u32, Vec<f64>)>,
    /// Sum and count of its window embeddings (`method = "lstm"`).
    embed_sum: Vec<f64>,
    embeds: u64,
    /// Its environment: the `env.*` labels last seen on its samples (see [`environment_of`]).
    environment: Option<String>,
    /// The last label set read, so that a workload's labels are parsed only when they change.
    #[serde(skip)]
    labels_seen: String,
}

impl HasSlots for Workload {
    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}

impl Workload {
    fn profile(&self) -> Option<Vec<f64>> {
        (self.windows > 0).then(|| {
            self.profile_sum
                .iter()
                .map(|v| v / self.windows as f64)
                .collect()
        })
    }
    fn allocation(&self) -> Vec<f64> {
        let n = self.windows.max(1) as f64;
        self.alloc_sum.iter().map(|v| v / n).collect()
    }
}

/// Label keys that describe where a workload runs (host metadata), e.g. `env.instance_type`.
pub const ENV_PREFIX: &str = "env.";

/// The environment in a canonical label set: its `env.*` labels without the prefix, as a
/// canonical set (`cpu_model=...,instance_type=...`); None when it has none.
pub fn environment_of(labels: &str) -> Option<String> {
    let env: Vec<(String, String)> = wfe_contract::schemas::labels::parse(labels)
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_string(), v)))
        .collect();
    (!env.is_empty()).then(|| {
        wfe_contract::schemas::labels::format(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    })
}

/// A window as cut at its due step.
struct Cut {
    start: i64,
    end: i64,
    /// The window's raw values, steps x metrics, for the learned embedding (else empty).
    raw: Vec<f32>,
    features: Vec<f64>,
    alloc: Vec<f64>,
    n: i64,
    cold: bool,
}

/// Features and allocation of the workload's current window (None when it is empty).
fn cut(cfg: &FingerprintConfig, wk: &Workload) -> Option<Cut> {
    let (first, last) = (wk.window.front()?, wk.window.back()?);
    let width = wk.slots.len();
    // Raw values, not the per-workload scaled ones: scaling each workload by its own range
    // erases the levels that tell workloads apart (`wfe eval fingerprint` on SMD: 3 of 8
    // machines nearest their service group on scaled values, 8 of 8 on raw ones).
    let raw: Vec<&[f64]> = wk.window.iter().map(|s| s.2.as_slice()).collect();
    let features = features::window_features(
        &raw,
        width,
        &wk.slots.names,
        &cfg.weights,
        &cfg.metric_weights,
    );
    // Allocation: the quantile of each metric's observed raw values in the window.
    let mut alloc = vec![0.0; width];
    for (j, a) in alloc.iter_mut().enumerate() {
        let mut v: Vec<f64> = wk
            .window
            .iter()
            .filter_map(|s| s.2.get(j).copied().filter(|x| x.is_finite()))
            .collect();
        if !v.is_empty() {
            v.sort_by(f64::total_cmp);
            *a = quantile(&v, cfg.allocation_quantile);
        }
    }
    // The learned embedding reads exactly `window` steps: a shorter window (the last one, at
    // the end of the input) repeats its first step in front.
    let raw_window = match cfg.method {
        Method::Lstm => std::iter::repeat_n(first, cfg.window.saturating_sub(wk.window.len()))
            .chain(wk.window.iter())
            .flat_map(|s| (0..width).map(|j| s.2.get(j).copied().unwrap_or(f64::NAN) as f32))
            .collect(),
        Method::StatsPca => Vec::new(),
    };
    Some(Cut {
        start: first.0,
        end: last.0,
        raw: raw_window,
        features,
        alloc,
        n: wk.window.iter().map(|s| (s.3 > 0) as i64).sum(),
        cold: wk.observed_steps <= cfg.learning_steps,
    })
}

/// A window waiting for the first basis (or model) of its metric set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    start: i64,
    end: i64,
    workload: usize,
    features: Vec<f64>,
    /// Raw window for the learned embedding, until it is embedded (then empty).
    raw: Vec<f32>,
    /// The learned embedding, once made.
    embedding: Option<Vec<f64>>,
    n: i64,
    cold: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    workloads: Keyed<Workload>,
    reducers: BTreeMap<u64, reduce::Reducer>,
    /// Per metric set, the learned embedding (`method = "lstm"`).
    embedders: BTreeMap<u64, embed::Embedder>,
    /// Per metric set, workloads past their learning period: kept as windows arrive, so a
    /// large fleet's index is checked for staleness without a scan of the fleet.
    known: BTreeMap<u64, usize>,
    held: Vec<Held>,
}

/// A metric set's HNSW index: built at basis `version` over `known` workloads.
struct Index {
    version: u32,
    known: usize,
    graph: knn::Approximate,
}

/// The fingerprint stage.
pub struct Fingerprint {
    cfg: FingerprintConfig,
    state: State,
    /// Per metric set, for fleets above `index_above` (rebuilt from state, never saved).
    indexes: BTreeMap<u64, Index>,
}

#[derive(Default)]
struct Rows {
    start: Vec<i64>,
    end: Vec<i64>,
    workload: Vec<String>,
    version: Vec<String>,
    method: Vec<&'static str>,
    vector: Vec<Vec<f32>>,
    n: Vec<i64>,
    cold: Vec<bool>,
    neighbours: Vec<Option<Vec<String>>>,
    weights: Vec<Option<Vec<f32>>>,
    alloc_metrics: Vec<Option<Vec<String>>>,
    alloc: Vec<Option<Vec<f64>>>,
    environment: Vec<Option<String>>,
    profile: Vec<Option<Vec<f32>>>,
}

fn signature(names: &[String]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(names.join("\u{1f}").as_bytes())
}

impl Fingerprint {
    pub fn new(cfg: FingerprintConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            state: State::default(),
            indexes: BTreeMap::new(),
        })
    }

    fn finish(rows: Rows) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(rows.start),
            timestamp_column(rows.end),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(rows.method)),
            Arc::new(StringArray::from(rows.version)),
            list_f32(rows.vector),
            Arc::new(Int64Array::from(rows.n)),
            Arc::new(BooleanArray::from(rows.cold)),
            list_str(rows.neighbours.into_iter()),
            list_f32_opt(rows.weights),
            list_str(rows.alloc_metrics.into_iter()),
            list_f64_opt(rows.alloc),
            Arc::new(StringArray::from(rows.environment)),
            list_f32_opt(rows.profile),
        ];
        Ok(RecordBatch::try_new(Topic::Fingerprints.schema(), columns)?)
    }

    /// Feeds a cut window to its workload's profile and its metric set's basis (or model); the
    /// row is emitted now, or held until the set's first basis.
    fn window(&mut self, id: usize, cut: Cut, rows: &mut Rows, ctx: &mut Context) {
        let cfg = &self.cfg;
        let wk = &mut self.state.workloads.items[id];
        let Cut {
            start,
            end,
            raw,
            features: feats,
            alloc,
            n,
            cold,
        } = cut;
        let width = alloc.len();
        if wk.signature == 0 || wk.profile_sum.len() != feats.len() {
            // First window, or the metric set grew: start the profile over.
            if wk.counted_known {
                if let Some(k) = self.state.known.get_mut(&wk.signature) {
                    *k = k.saturating_sub(1);
                }
                wk.counted_known = false;
            }
            wk.signature = signature(&wk.slots.names);
            wk.profile_sum = vec![0.0; feats.len()];
            wk.alloc_sum = vec![0.0; width];
            wk.windows = 0;
            wk.embed_sum.clear();
            wk.embeds = 0;
        }
        for (s, f) in wk.profile_sum.iter_mut().zip(&feats) {
            *s += f;
        }
        for (s, a) in wk.alloc_sum.iter_mut().zip(&alloc) {
            *s += a;
        }
        wk.windows += 1;
        if !wk.counted_known && wk.observed_steps > cfg.learning_steps {
            wk.counted_known = true;
            *self.state.known.entry(wk.signature).or_default() += 1;
        }
        let held = Held {
            start,
            end,
            workload: id,
            n,
            cold,
            features: feats,
            raw,
            embedding: None,
        };
        let sig = wk.signature;
        match cfg.method {
            Method::StatsPca => self.fit_basis(sig, id, held, rows, ctx),
            Method::Lstm => self.embed_window(sig, held, rows, ctx),
        }
    }

    /// `stats-pca`: the window's features join the metric set's sample (refitting the basis
    /// at its fit points) and the workload's cached rotation is renewed.
    fn fit_basis(&mut self, sig: u64, id: usize, held: Held, rows: &mut Rows, ctx: &mut Context) {
        let cfg = &self.cfg;
        let reducer = self.state.reducers.entry(sig).or_default();
        match reducer.add(
            &held.features,
            cfg.fit_windows,
            cfg.reservoir,
            cfg.variance,
            cfg.max_components,
        ) {
            Ok(true) => ctx.count("basis.refitted", 1),
            Ok(false) => {}
            Err(e) => {
                ctx.count("basis.fit_failed", 1);
                tracing::warn!(
                    metric_set = format!("{sig:016x}"),
                    "fingerprint basis fit failed: {e}"
                );
            }
        }
        if let Some(model) = &reducer.model {
            let wk = &mut self.state.workloads.items[id];
            wk.projected = wk.profile().map(|p| (reducer.version, model.rotate(&p)));
            self.refresh_index(sig, ctx);
            self.release(sig, rows);
            self.emit(&held, rows);
        } else {
            self.state.held.push(held);
        }
    }

    /// `lstm`: the window is embedded, or sampled and held until the metric set's model is
    /// trained (at its `fit_windows`-th window).
    fn embed_window(&mut self, sig: u64, mut held: Held, rows: &mut Rows, ctx: &mut Context) {
        let cfg = &self.cfg;
        let embedder = self.state.embedders.entry(sig).or_default();
        if embedder.model.is_none() && !embedder.failed {
            match embedder.add(&held.raw, cfg.window, &cfg.lstm) {
                Ok(Some(report)) => Self::trained(sig, &report, ctx),
                Ok(None) => {}
                Err(e) => Self::training_failed(embedder, sig, &e, ctx),
            }
        }
        if embedder.model.is_none() {
            if embedder.failed {
                ctx.count("rows.no_model", 1);
            } else {
                self.state.held.push(held);
            }
            return;
        }
        self.release(sig, rows);
        self.embed_held(sig, &mut held);
        self.refresh_index(sig, ctx);
        self.emit(&held, rows);
    }

    fn trained(sig: u64, report: &wfe_neural::TrainReport, ctx: &mut Context) {
        ctx.count("embedding.trained", 1);
        tracing::info!(
            metric_set = format!("{sig:016x}"),
            windows = report.windows,
            loss = format!("{:.5} -> {:.5}", report.first_loss, report.last_loss),
            seconds = format!("{:.1}", report.seconds),
            device = report.device,
            "fingerprint autoencoder trained"
        );
    }

    fn training_failed(embedder: &mut embed::Embedder, sig: u64, e: &str, ctx: &mut Context) {
        embedder.failed = true;
        ctx.count("embedding.train_failed", 1);
        tracing::warn!(
            metric_set = format!("{sig:016x}"),
            "fingerprint autoencoder training failed, its rows are dropped: {e}"
        );
    }

    /// Embeds a window whose model exists and adds it to its workload's profile.
    fn embed_held(&mut self, sig: u64, h: &mut Held) {
        let Some(embedder) = self.state.embedders.get_mut(&sig) else {
            return;
        };
        let raw = std::mem::take(&mut h.raw);
        if let Some(v) = embedder.embed(&raw) {
            let wk = &mut self.state.workloads.items[h.workload];
            if wk.embed_sum.len() != v.len() {
                wk.embed_sum = vec![0.0; v.len()];
                wk.embeds = 0;
            }
            wk.embed_sum.iter_mut().zip(&v).for_each(|(s, x)| *s += x);
            wk.embeds += 1;
            h.embedding = Some(v);
        }
    }

    /// Emits the held rows of a metric set whose basis (or model) now exists.
    fn release(&mut self, sig: u64, rows: &mut Rows) {
        let held = std::mem::take(&mut self.state.held);
        let (mut ready, wait): (Vec<Held>, Vec<Held>) = held
            .into_iter()
            .partition(|h| self.state.workloads.items[h.workload].signature == sig);
        self.state.held = wait;
        if self.cfg.method == Method::Lstm {
            // Every waiting window counts toward its profile before any row is answered.
            for h in &mut ready {
                self.embed_held(sig, h);
            }
        }
        for h in &ready {
            self.emit(h, rows);
        }
    }

    /// One row: the window's vector, and the nearest known workloads.
    fn emit(&self, h: &Held, rows: &mut Rows) {
        let wk = &self.state.workloads.items[h.workload];
        let Some(space) = Space::of(&self.state, wk.signature, self.cfg.method) else {
            return;
        };
        let vector: Vec<f32> = match (&space, &h.embedding) {
            (Space::Pca { model, .. }, _) => model
                .project(&h.features)
                .iter()
                .map(|v| *v as f32)
                .collect(),
            (Space::Learned { .. }, Some(z)) => z.iter().map(|v| *v as f32).collect(),
            (Space::Learned { .. }, None) => return,
        };
        let name = &self.state.workloads.names.names[h.workload];
        rows.start.push(h.start);
        rows.end.push(h.end);
        rows.workload.push(name.clone());
        rows.method.push(self.cfg.method.as_str());
        rows.version.push(space.label(wk.signature));
        rows.vector.push(vector);
        rows.n.push(h.n);
        rows.cold.push(h.cold);
        rows.environment.push(wk.environment.clone());
        rows.profile.push(
            space
                .place(wk)
                .map(|p| p.iter().map(|v| *v as f32).collect()),
        );
        let found = self.neighbours(h.workload, &space);
        let names = &wk.slots.names;
        if found.is_empty() {
            rows.neighbours.push(None);
            rows.weights.push(None);
        } else {
            let w = knn::weights(&found, self.cfg.distance);
            rows.neighbours.push(Some(
                found
                    .iter()
                    .map(|(i, _)| self.state.workloads.names.names[*i].clone())
                    .collect(),
            ));
            rows.weights
                .push(Some(w.iter().map(|x| *x as f32).collect()));
            if h.cold {
                // Borrowed: the neighbours' allocations, weighted by similarity.
                let mut pred = vec![0.0; names.len()];
                for ((i, _), wi) in found.iter().zip(&w) {
                    for (p, a) in pred
                        .iter_mut()
                        .zip(self.state.workloads.items[*i].allocation())
                    {
                        *p += wi * a;
                    }
                }
                rows.alloc_metrics.push(Some(names.clone()));
                rows.alloc.push(Some(pred));
                return;
            }
        }
        if h.cold {
            // Nobody to borrow from yet: say so with an empty allocation.
            rows.alloc_metrics.push(None);
            rows.alloc.push(None);
        } else {
            rows.alloc_metrics.push(Some(names.clone()));
            rows.alloc.push(Some(wk.allocation()));
        }
    }

    /// The nearest known (not cold) workloads of the same metric set, by profile.
    fn neighbours(&self, id: usize, space: &Space) -> Vec<(usize, f64)> {
        if self.cfg.neighbours == 0 {
            return Vec::new();
        }
        let items = &self.state.workloads.items;
        let me = &items[id];
        let Some(query) = space.place(me) else {
            return Vec::new();
        };
        let is_known = |i: usize, w: &Workload| {
            i != id && w.signature == me.signature && w.observed_steps > self.cfg.learning_steps
        };
        // A large fleet: the index proposes candidates, current profiles rank them.
        if let Some(index) = self.indexes.get(&me.signature) {
            let ids = index
                .graph
                .candidates(&query, knn::RERANK * self.cfg.neighbours, Some(id));
            let placed: Vec<(usize, Vec<f64>)> = ids
                .into_iter()
                .filter(|&i| is_known(i, &items[i]))
                .filter_map(|i| Some((i, space.place(&items[i])?)))
                .collect();
            return knn::exact(
                &query,
                placed.iter().map(|(i, v)| (*i, v.as_slice())),
                self.cfg.neighbours,
                self.cfg.distance,
            );
        }
        let known: Vec<(usize, Vec<f64>)> = items
            .iter()
            .enumerate()
            .filter(|(i, w)| is_known(*i, w))
            .filter_map(|(i, w)| Some((i, space.place(w)?)))
            .collect();
        knn::exact(
            &query,
            known.iter().map(|(i, v)| (*i, v.as_slice())),
            self.cfg.neighbours,
            self.cfg.distance,
        )
    }

    /// Builds or rebuilds metric set `sig`'s index when its known workloads are over
    /// `index_above` and have grown by a quarter since the last build, or the basis changed.
    fn refresh_index(&mut self, sig: u64, ctx: &mut Context) {
        if self.cfg.index_above == 0 || self.cfg.neighbours == 0 {
            return;
        }
        let count = self.state.known.get(&sig).copied().unwrap_or(0);
        if count < self.cfg.index_above {
            return;
        }
        let Some(space) = Space::of(&self.state, sig, self.cfg.method) else {
            return;
        };
        let stale = self
            .indexes
            .get(&sig)
            .is_none_or(|ix| ix.version != space.version() || count >= ix.known + ix.known / 4);
        if !stale {
            return;
        }
        // Only a rebuild scans the fleet: at most once per quarter of growth or new basis.
        let items = &self.state.workloads.items;
        let known: Vec<usize> = (0..items.len())
            .filter(|&i| {
                items[i].signature == sig && items[i].observed_steps > self.cfg.learning_steps
            })
            .collect();
        let placed: Vec<(usize, Vec<f64>)> = known
            .iter()
            .filter_map(|&i| Some((i, space.place(&items[i])?)))
            .collect();
        let graph = knn::Approximate::build(placed, self.cfg.distance);
        ctx.count("index.rebuilt", 1);
        let version = space.version();
        self.indexes.insert(
            sig,
            Index {
                version,
                known: count,
                graph,
            },
        );
    }

    /// A workload's metric names and its own allocation so far (raw units).
    pub fn allocation(&self, workload: &str) -> Option<(Vec<String>, Vec<f64>)> {
        let st = &self.state;
        let i = st
            .workloads
            .names
            .names
            .iter()
            .position(|n| n == workload)?;
        let w = &st.workloads.items[i];
        (w.windows > 0).then(|| (w.slots.names.clone(), w.allocation()))
    }

    /// The comparable profile of every workload: (name, model_version, profile placed in its
    /// metric set's space). What `wfe eval fingerprint` and similarity queries read.
    pub fn profiles(&self) -> Vec<(String, String, Vec<f64>)> {
        let st = &self.state;
        st.workloads
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let space = Space::of(st, w.signature, self.cfg.method)?;
                Some((
                    st.workloads.names.names[i].clone(),
                    space.label(w.signature),
                    space.place(w)?,
                ))
            })
            .collect()
    }
}

/// Where profiles of one metric set are compared, measured from the fleet's centre: the PCA
/// basis of `stats-pca`, or the embedding of `lstm`.
enum Space<'a> {
    Pca {
        model: &'a reduce::Pca,
        version: u32,
        /// The centre, rotated into the basis.
        centre: Vec<f64>,
    },
    Learned {
        version: u32,
        centre: Vec<f64>,
    },
}

impl<'a> Space<'a> {
    fn of(state: &'a State, sig: u64, method: Method) -> Option<Self> {
        match method {
            Method::StatsPca => {
                let r = state.reducers.get(&sig)?;
                let model = r.model.as_ref()?;
                Some(Space::Pca {
                    model,
                    version: r.version,
                    centre: model.rotate(&r.centre()),
                })
            }
            Method::Lstm => {
                let e = state.embedders.get(&sig)?;
                e.model.as_ref()?;
                Some(Space::Learned {
                    version: e.version,
                    centre: e.centre(),
                })
            }
        }
    }

    fn version(&self) -> u32 {
        match self {
            Space::Pca { version, .. } | Space::Learned { version, .. } => *version,
        }
    }

    /// The `model_version` of rows made in this space.
    fn label(&self, sig: u64) -> String {
        match self {
            Space::Pca { version, .. } => format!("{sig:016x}.{version}"),
            Space::Learned { version, .. } => format!("{sig:016x}.lstm{version}"),
        }
    }

    /// A workload's profile in this space. A PCA rotation is cached at each of its windows;
    /// one not updated since a refit is rotated here (refits are a handful in a fleet's life).
    fn place(&self, w: &Workload) -> Option<Vec<f64>> {
        let (mut v, centre) = match self {
            Space::Pca {
                model,
                version,
                centre,
            } => {
                let v = match &w.projected {
                    Some((v, p)) if v == version => p.clone(),
                    _ => model.rotate(&w.profile()?),
                };
                (v, centre)
            }
            Space::Learned { centre, .. } => {
                if w.embeds == 0 {
                    return None;
                }
                let n = w.embeds as f64;
                (w.embed_sum.iter().map(|s| s / n).collect(), centre)
            }
        };
        for (x, c) in v.iter_mut().zip(centre) {
            *x -= c;
        }
        Some(v)
    }
}

impl Stage for Fingerprint {
    fn name(&self) -> &'static str {
        "fingerprint"
    }

    fn inputs(&self) -> Vec<Topic> {
        vec![Topic::MetricsNorm]
    }

    fn outputs(&self) -> Vec<Topic> {
        vec![Topic::Fingerprints]
    }

    fn process_batch(
        &mut self,
        _t: Topic,
        batch: RecordBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let nb = NormBatch::new(&batch)?;
        let mut rows = Rows::default();
        let mut due = Vec::new();
        let cfg = &self.cfg;
        let (window, hop) = (cfg.window, cfg.hop);
        let mut workloads = std::mem::take(&mut self.state.workloads);
        let walked = nb.for_each_dense(&mut workloads, |d| {
            let wk = d.state;
            if let Some(labels) = d.step.label.filter(|l| *l != wk.labels_seen) {
                wk.labels_seen = labels.to_string();
                // Samples without host metadata (another source) leave the environment as is.
                if let Some(env) = environment_of(labels) {
                    wk.environment = Some(env);
                }
            }
            // Reuse the oldest step's buffers for the newest.
            let (mut values, mut raw) = match wk.window.len() == window {
                true => wk
                    .window
                    .pop_front()
                    .map(|(_, v, r, _)| (v, r))
                    .unwrap_or_default(),
                false => Default::default(),
            };
            values.clear();
            values.extend_from_slice(d.scaled);
            raw.clear();
            raw.extend_from_slice(d.raw);
            wk.window.push_back((d.step.time, values, raw, d.observed));
            wk.observed_steps += usize::from(d.observed > 0);
            wk.since_emit += 1;
            if wk.since_emit >= hop && wk.window.len() == window {
                wk.since_emit = 0;
                if let Some(c) = cut(cfg, wk) {
                    due.push((d.id, c));
                }
            }
            Ok(())
        });
        self.state.workloads = workloads;
        let replayed = walked?;
        ctx.event(Event::Dropped {
            kind: "replayed_step",
            count: replayed,
        });
        // Windows were cut at their due steps; profiles, bases and neighbours follow in
        // step order.
        for (id, c) in due {
            self.window(id, c, &mut rows, ctx);
        }
        if !rows.start.is_empty() {
            out.emit(Topic::Fingerprints, Self::finish(rows)?)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        let mut rows = Rows::default();
        // A fleet smaller than `fit_windows`: fit on what there is and release the rows.
        let waiting: Vec<u64> = self
            .state
            .reducers
            .iter()
            .filter(|(_, r)| r.model.is_none())
            .map(|(s, _)| *s)
            .collect();
        for sig in waiting {
            let r = self.state.reducers.get_mut(&sig).expect("listed above");
            if r.windows() >= 2 {
                if let Err(e) = r.refit(self.cfg.variance, self.cfg.max_components) {
                    ctx.count("basis.fit_failed", 1);
                    tracing::warn!("fingerprint basis fit failed: {e}");
                    continue;
                }
                self.release(sig, &mut rows);
            }
        }
        // Likewise a learned embedding whose model waits for more windows.
        let untrained: Vec<u64> = self
            .state
            .embedders
            .iter()
            .filter(|(_, e)| e.model.is_none() && !e.failed)
            .map(|(s, _)| *s)
            .collect();
        for sig in untrained {
            let e = self.state.embedders.get_mut(&sig).expect("listed above");
            match e.train_now(&self.cfg.lstm) {
                Ok(Some(report)) => {
                    Self::trained(sig, &report, ctx);
                    self.release(sig, &mut rows);
                }
                Ok(None) => {}
                Err(err) => Self::training_failed(e, sig, &err, ctx),
            }
        }
        // The steps since the last fingerprint are not lost: one more over the latest window.
        let mut ids: Vec<usize> = (0..self.state.workloads.items.len())
            .filter(|&i| {
                let w = &self.state.workloads.items[i];
                w.since_emit > 0 && w.window.len() >= 2
            })
            .collect();
        ids.sort_by(|a, b| {
            self.state.workloads.names.names[*a].cmp(&self.state.workloads.names.names[*b])
        });
        for id in ids {
            self.state.workloads.items[id].since_emit = 0;
            if let Some(c) = cut(&self.cfg, &self.state.workloads.items[id]) {
                self.window(id, c, &mut rows, ctx);
            }
        }
        if !rows.start.is_empty() {
            out.emit(Topic::Fingerprints, Self::finish(rows)?)?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>> {
        wfe_contract::state::encode(self.name(), &self.state)
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.state = wfe_contract::state::decode(self.name(), state)?;
        // Indexes are rebuilt from the restored profiles at the next window.
        self.indexes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
