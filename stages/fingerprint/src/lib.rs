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
//!    profiles ([`knn`]; cosine or Euclidean) are a row's `neighbours`, with similarity
//!    weights that sum to 1. They are searched in the fleet's published view ([`fleet`]): every
//!    workload's profile as published when the batch before ended, compared in the feature
//!    space from the mean of the known profiles, so the answer is the same embedded and in
//!    every instance of a fleet of services, whichever instance owns which workload.
//!
//! **Cold start**: a workload is `cold_start` while it has at most `learning_steps` observed
//! steps (with the defaults: its first hour, one window).
//! Its rows carry an `allocation`: per metric, the similarity-weighted mean of its
//! neighbours' allocations (the `allocation_quantile` of their raw values per window,
//! averaged over their history), so that a brand-new workload is sized from similar ones,
//! and the neighbours and weights say why. Known workloads carry their own allocation.
//!
//! Workloads with different metric sets have incomparable features: each metric set has its
//! own basis and view, and neighbours are searched within it.
//!
//! The method `lstm` ([`embed`], needs libtorch) replaces steps 1 and 2 by a learned vector:
//! the bottleneck of an LSTM autoencoder trained on a sample of the fleet's windows (the
//! vectors and the `profile` column); neighbours are searched by features as above.
//!
//! **Environment**: `env.*` labels on a workload's samples (host metadata: instance type, CPU
//! model, kernel, software versions) are its `environment`, carried in its rows;
//! [`similar`] answers from the stored rows which known environment suits a workload best.

mod config;
pub mod embed;
mod fleet;
pub use wfe_domain::features;
pub mod knn;
mod neighbours;
mod profiles;
pub mod reduce;
mod retire;
mod rows;
pub mod similar;
mod space;
mod stage;
mod state;
mod window;

use wfe_contract::{Context, Result};

pub use config::{FingerprintConfig, Method};
pub use features::FeatureWeights;
pub use knn::Distance;
use rows::Rows;
use space::Space;
use state::{Held, State, signature};
use window::Cut;

pub use wfe_contract::schemas::labels::environment as environment_of;

/// The fingerprint stage.
pub struct Fingerprint {
    cfg: FingerprintConfig,
    state: State,
    /// When to retire idle workloads (`retire_after_s`; not in the snapshot).
    sweep: wfe_domain::retire::Sweep,
    /// The published profiles neighbours are searched among (not in the snapshot).
    fleet: fleet::Fleet,
    /// Which workloads changed since a snapshot: marked wherever a workload's entry is
    /// changed (its steps, its windows, a held window embedded, a retirement).
    changes: wfe_contract::state::Changes,
}

impl Fingerprint {
    pub fn new(cfg: FingerprintConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            state: State::default(),
            sweep: Default::default(),
            fleet: Default::default(),
            changes: Default::default(),
        })
    }

    /// Feeds a cut window to its workload's profile and its metric set's basis (or model); the
    /// row is emitted now, or held until the set's first basis.
    fn window(&mut self, id: usize, cut: Cut, rows: &mut Rows, ctx: &mut Context) {
        let cfg = &self.cfg;
        self.changes.mark(id);
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
        let sig = wk.signature;
        self.stage_profile(id);
        self.prepare_search(sig, ctx);
        let held = Held {
            start,
            end,
            workload: id,
            n,
            cold,
            features: feats,
            raw,
            embedding: None,
            answer: Some((
                self.neighbours(id),
                self.state.workloads.items[id].allocation(),
            )),
        };
        match self.cfg.method {
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
            self.changes.mark(id);
            let wk = &mut self.state.workloads.items[id];
            wk.projected = wk.profile().map(|p| (reducer.version, model.rotate(&p)));
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
            self.changes.mark(h.workload);
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
        let (found, own) = match &h.answer {
            Some((found, own)) => (found.clone(), own.clone()),
            None => (self.neighbours(h.workload), wk.allocation()),
        };
        let names = &wk.slots.names;
        if found.is_empty() {
            rows.neighbours.push(None);
            rows.weights.push(None);
        } else {
            let by_distance: Vec<(usize, f64)> = found
                .iter()
                .enumerate()
                .map(|(i, n)| (i, n.distance))
                .collect();
            let w = knn::weights(&by_distance, self.cfg.distance);
            rows.neighbours
                .push(Some(found.iter().map(|n| n.name.clone()).collect()));
            rows.weights
                .push(Some(w.iter().map(|x| *x as f32).collect()));
            if h.cold {
                // Borrowed: the neighbours' allocations, weighted by similarity.
                let mut pred = vec![0.0; names.len()];
                for (n, wi) in found.iter().zip(&w) {
                    for (p, a) in pred.iter_mut().zip(&n.allocation) {
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
            rows.alloc.push(Some(own));
        }
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

#[cfg(test)]
mod tests;
