//! Range detector: how far each metric left the band its history stayed in.
//!
//! Per metric, the band is [`q`, `1 - q`] of the history's values (0.5 % and 99.5 % by
//! default); a step's deviation is the distance outside that band in band widths (at least
//! `min_width`, so a metric that never moved is not infinitely sensitive). The score is the
//! sum over metrics, and each metric's deviation is its contribution: experts name the metrics
//! that left their usual range, and so does this detector.

use serde::{Deserialize, Serialize};
use wfe_domain::stats::quantiles_select;

/// Smallest band width deviations are measured in (scaled units: 5 % of the history range).
pub const MIN_WIDTH: f64 = 0.05;

/// A fitted range model for one workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RangeModel {
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    pub width: Vec<f64>,
}

impl RangeModel {
    /// Fits on history rows (NaN = missing; rows may be shorter than `d`).
    pub fn fit(history: &[Vec<f64>], d: usize, q: f64) -> Result<Self, String> {
        if history.len() < 2 || d == 0 {
            return Err(format!(
                "need at least 2 steps of at least 1 metric, have {} x {d}",
                history.len()
            ));
        }
        let (mut lo, mut hi, mut width) = (vec![0.0; d], vec![0.0; d], vec![MIN_WIDTH; d]);
        let mut col = Vec::with_capacity(history.len());
        for j in 0..d {
            col.clear();
            col.extend(
                history
                    .iter()
                    .filter_map(|r| r.get(j).copied())
                    .filter(|v| v.is_finite()),
            );
            if col.is_empty() {
                // Never observed: no band, no deviation (see `deviations_into`).
                lo[j] = f64::NEG_INFINITY;
                hi[j] = f64::INFINITY;
                continue;
            }
            // By selection: the same order statistics as a sort, interpolated the same way.
            let (a, b) = (q.min(1.0 - q), q.max(1.0 - q));
            let got = quantiles_select(&mut col, &[a, b]);
            (lo[j], hi[j]) = if q <= 0.5 {
                (got[0], got[1])
            } else {
                (got[1], got[0])
            };
            width[j] = (hi[j] - lo[j]).max(MIN_WIDTH);
        }
        Ok(Self { lo, hi, width })
    }

    /// Deviation per metric into `out` (a missing value deviates by 0); returns their sum.
    pub fn deviations_into(&self, row: &[f64], out: &mut [f64]) -> f64 {
        let mut sum = 0.0;
        for (j, o) in out.iter_mut().enumerate().take(self.lo.len()) {
            let v = row.get(j).copied().unwrap_or(f64::NAN);
            *o = if v.is_finite() {
                ((v - self.hi[j]).max(0.0) + (self.lo[j] - v).max(0.0)) / self.width[j]
            } else {
                0.0
            };
            sum += *o;
        }
        sum
    }
}
