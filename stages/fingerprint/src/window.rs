//! A workload's window cut at its due step: its features, allocation and (for the learned
//! embedding) raw values.

use wfe_domain::features;
use wfe_domain::stats::quantiles_select;

use crate::config::{FingerprintConfig, Method};
use crate::state::Workload;

/// A window as cut at its due step.
pub(crate) struct Cut {
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// The window's raw values, steps x metrics, for the learned embedding (else empty).
    pub(crate) raw: Vec<f32>,
    pub(crate) features: Vec<f64>,
    pub(crate) alloc: Vec<f64>,
    pub(crate) n: i64,
    pub(crate) cold: bool,
}

/// Features and allocation of the workload's current window (None when it is empty).
pub(crate) fn cut(cfg: &FingerprintConfig, wk: &Workload) -> Option<Cut> {
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
    // (By selection, not a sort: the same value, interpolated between the same neighbours.)
    let mut alloc = vec![0.0; width];
    let mut v = Vec::with_capacity(wk.window.len());
    for (j, a) in alloc.iter_mut().enumerate() {
        v.clear();
        v.extend((wk.window.iter()).filter_map(|s| s.2.get(j).copied().filter(|x| x.is_finite())));
        if !v.is_empty() {
            *a = quantiles_select(&mut v, &[cfg.allocation_quantile])[0];
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
