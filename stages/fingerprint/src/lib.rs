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

pub mod features;
pub mod knn;
pub mod reduce;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use serde::{Deserialize, Serialize};
use wfe_contract::columns::{list_f32, list_f64_opt, list_str, timestamp_column};
use wfe_contract::norm::{HasSlots, Keyed, NormBatch, Slots};
use wfe_contract::stats::quantile;
use wfe_contract::{Collector, Context, Error, Event, Result, Stage, Topic};

pub use features::FeatureWeights;
pub use knn::Distance;

pub const METHOD: &str = "stats-pca";

/// Settings of the fingerprint stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
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

/// A window as cut at its due step.
struct Cut {
    start: i64,
    end: i64,
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
    Some(Cut {
        start: first.0,
        end: last.0,
        features,
        alloc,
        n: wk.window.iter().map(|s| (s.3 > 0) as i64).sum(),
        cold: wk.observed_steps <= cfg.learning_steps,
    })
}

/// A window waiting for the first basis of its metric set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    start: i64,
    end: i64,
    workload: usize,
    features: Vec<f64>,
    n: i64,
    cold: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    workloads: Keyed<Workload>,
    reducers: BTreeMap<u64, reduce::Reducer>,
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
    vector: Vec<Vec<f32>>,
    n: Vec<i64>,
    cold: Vec<bool>,
    neighbours: Vec<Option<Vec<String>>>,
    weights: Vec<Option<Vec<f32>>>,
    alloc_metrics: Vec<Option<Vec<String>>>,
    alloc: Vec<Option<Vec<f64>>>,
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
        let n = rows.start.len();
        let columns: Vec<ArrayRef> = vec![
            timestamp_column(rows.start),
            timestamp_column(rows.end),
            Arc::new(StringArray::from(rows.workload)),
            Arc::new(StringArray::from(vec![METHOD; n])),
            Arc::new(StringArray::from(rows.version)),
            list_f32(rows.vector),
            Arc::new(Int64Array::from(rows.n)),
            Arc::new(BooleanArray::from(rows.cold)),
            list_str(rows.neighbours.into_iter()),
            Arc::new(arrow_array::ListArray::from_iter_primitive::<
                arrow_array::types::Float32Type,
                _,
                _,
            >(
                rows.weights
                    .into_iter()
                    .map(|w| w.map(|v| v.into_iter().map(Some).collect::<Vec<_>>())),
            )),
            list_str(rows.alloc_metrics.into_iter()),
            list_f64_opt(rows.alloc),
        ];
        Ok(RecordBatch::try_new(Topic::Fingerprints.schema(), columns)?)
    }

    /// Feeds a cut window to its workload's profile and its metric set's reducer; the row is
    /// emitted now, or held until the set's first basis.
    fn window(&mut self, id: usize, cut: Cut, rows: &mut Rows, ctx: &mut Context) {
        let cfg = &self.cfg;
        let wk = &mut self.state.workloads.items[id];
        let Cut {
            start,
            end,
            features: feats,
            alloc,
            n,
            cold,
        } = cut;
        let width = alloc.len();
        if wk.signature == 0 || wk.profile_sum.len() != feats.len() {
            // First window, or the metric set grew: start the profile over.
            wk.signature = signature(&wk.slots.names);
            wk.profile_sum = vec![0.0; feats.len()];
            wk.alloc_sum = vec![0.0; width];
            wk.windows = 0;
        }
        for (s, f) in wk.profile_sum.iter_mut().zip(&feats) {
            *s += f;
        }
        for (s, a) in wk.alloc_sum.iter_mut().zip(&alloc) {
            *s += a;
        }
        wk.windows += 1;
        let held = Held {
            start,
            end,
            workload: id,
            n,
            cold,
            features: feats,
        };
        let sig = wk.signature;
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

    /// Emits the held rows of a metric set whose basis now exists.
    fn release(&mut self, sig: u64, rows: &mut Rows) {
        let held = std::mem::take(&mut self.state.held);
        let (ready, wait): (Vec<Held>, Vec<Held>) = held
            .into_iter()
            .partition(|h| self.state.workloads.items[h.workload].signature == sig);
        self.state.held = wait;
        for h in &ready {
            self.emit(h, rows);
        }
    }

    /// One row: the window's projection, and the nearest known workloads.
    fn emit(&self, h: &Held, rows: &mut Rows) {
        let wk = &self.state.workloads.items[h.workload];
        let Some(reducer) = self.state.reducers.get(&wk.signature) else {
            return;
        };
        let Some(model) = &reducer.model else { return };
        let name = &self.state.workloads.names.names[h.workload];
        rows.start.push(h.start);
        rows.end.push(h.end);
        rows.workload.push(name.clone());
        rows.version
            .push(format!("{:016x}.{}", wk.signature, reducer.version));
        rows.vector.push(
            model
                .project(&h.features)
                .iter()
                .map(|v| *v as f32)
                .collect(),
        );
        rows.n.push(h.n);
        rows.cold.push(h.cold);
        let found = self.neighbours(h.workload, reducer);
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
    fn neighbours(&self, id: usize, reducer: &reduce::Reducer) -> Vec<(usize, f64)> {
        if self.cfg.neighbours == 0 {
            return Vec::new();
        }
        let items = &self.state.workloads.items;
        let me = &items[id];
        let Some(space) = Space::of(reducer) else {
            return Vec::new();
        };
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
                .candidates(&query, 4 * self.cfg.neighbours, Some(id));
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
        // Fewer workloads of any kind than the bound: no scan for the known ones.
        if self.cfg.index_above == 0
            || self.cfg.neighbours == 0
            || self.state.workloads.items.len() < self.cfg.index_above
        {
            return;
        }
        let Some(reducer) = self.state.reducers.get(&sig) else {
            return;
        };
        let items = &self.state.workloads.items;
        let known: Vec<usize> = (0..items.len())
            .filter(|&i| {
                items[i].signature == sig && items[i].observed_steps > self.cfg.learning_steps
            })
            .collect();
        if known.len() < self.cfg.index_above {
            return;
        }
        let stale = self.indexes.get(&sig).is_none_or(|ix| {
            ix.version != reducer.version || known.len() >= ix.known + ix.known / 4
        });
        if !stale {
            return;
        }
        let Some(space) = Space::of(reducer) else {
            return;
        };
        let placed: Vec<(usize, Vec<f64>)> = known
            .iter()
            .filter_map(|&i| Some((i, space.place(&items[i])?)))
            .collect();
        let graph = knn::Approximate::build(placed, self.cfg.distance);
        ctx.count("index.rebuilt", 1);
        self.indexes.insert(
            sig,
            Index {
                version: reducer.version,
                known: known.len(),
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
                let r = st.reducers.get(&w.signature)?;
                Some((
                    st.workloads.names.names[i].clone(),
                    format!("{:016x}.{}", w.signature, r.version),
                    Space::of(r)?.place(w)?,
                ))
            })
            .collect()
    }
}

/// Where profiles are compared: one metric set's basis, measured from the fleet's centre.
struct Space<'a> {
    model: &'a reduce::Pca,
    version: u32,
    /// The centre, rotated into the basis.
    centre: Vec<f64>,
}

impl<'a> Space<'a> {
    fn of(r: &'a reduce::Reducer) -> Option<Self> {
        let model = r.model.as_ref()?;
        Some(Self {
            model,
            version: r.version,
            centre: model.rotate(&r.centre()),
        })
    }

    /// A workload's profile in this space. Its rotation is cached at each of its windows;
    /// one not updated since a refit is rotated here (refits are a handful in a fleet's life).
    fn place(&self, w: &Workload) -> Option<Vec<f64>> {
        let mut v = match &w.projected {
            Some((v, p)) if *v == self.version => p.clone(),
            _ => self.model.rotate(&w.profile()?),
        };
        for (x, c) in v.iter_mut().zip(&self.centre) {
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
