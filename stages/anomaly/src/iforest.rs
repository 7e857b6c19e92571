//! Isolation Forest (Liu, Ting and Zhou, 2008): a step that a few random axis-aligned cuts
//! isolate from the history is anomalous.
//!
//! Written here rather than taken from a crate: the Rust ports either fix the dimension at
//! compile time (`extended-isolation-forest` uses const generics, while a workload's metric
//! count is known only at run time) or key features by name in hash maps. The forest is a
//! flat node vector per tree, serialisable with the stage state, and deterministic for a seed.

use serde::{Deserialize, Serialize};
use wfe_domain::stats::SplitMix;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
enum Node {
    Leaf {
        size: u32,
    },
    Split {
        feature: u32,
        value: f64,
        left: u32,
        right: u32,
    },
}

/// A fitted forest for one workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IsolationForest {
    trees: Vec<Vec<Node>>,
    /// Per-metric history mean: the value a missing metric is imputed with.
    mean: Vec<f64>,
    sample: usize,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` points.
fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

impl IsolationForest {
    /// Fits `trees` trees on subsamples of `sample` history rows (NaN = missing).
    pub fn fit(
        history: &[Vec<f64>],
        d: usize,
        trees: usize,
        sample: usize,
        seed: u64,
    ) -> Result<Self, String> {
        let n = history.len();
        if n < 2 || d == 0 || trees == 0 || sample < 2 {
            return Err(format!(
                "need at least 2 steps of at least 1 metric, 1 tree and a sample of 2; have {n} x {d}, {trees} trees, sample {sample}"
            ));
        }
        let mut mean = vec![0.0; d];
        for (j, m) in mean.iter_mut().enumerate() {
            let (s, k) = history
                .iter()
                .filter_map(|r| r.get(j).copied().filter(|v| v.is_finite()))
                .fold((0.0, 0usize), |(s, k), v| (s + v, k + 1));
            *m = if k > 0 { s / k as f64 } else { 0.0 };
        }
        let row = |i: usize| -> Vec<f64> {
            (0..d)
                .map(|j| {
                    history[i]
                        .get(j)
                        .copied()
                        .filter(|v| v.is_finite())
                        .unwrap_or(mean[j])
                })
                .collect()
        };
        let sample = sample.min(n);
        let max_depth = (sample as f64).log2().ceil() as usize;
        let mut rng = SplitMix(seed);
        let mut forest = Vec::with_capacity(trees);
        for _ in 0..trees {
            // Sample without replacement (partial Fisher-Yates over indices).
            let mut idx: Vec<usize> = (0..n).collect();
            for i in 0..sample {
                let k = i + rng.below(n - i);
                idx.swap(i, k);
            }
            let points: Vec<Vec<f64>> = idx[..sample].iter().map(|&i| row(i)).collect();
            let mut nodes = Vec::new();
            let all: Vec<usize> = (0..sample).collect();
            grow(&points, all, 0, max_depth, &mut rng, &mut nodes);
            forest.push(nodes);
        }
        Ok(Self {
            trees: forest,
            mean,
            sample,
        })
    }

    /// Anomaly score in (0, 1]: about 0.5 or less for ordinary steps, towards 1 for outliers.
    pub fn score(&self, row: &[f64]) -> f64 {
        let value = |j: usize| {
            row.get(j)
                .copied()
                .filter(|v| v.is_finite())
                .unwrap_or_else(|| self.mean.get(j).copied().unwrap_or(0.0))
        };
        let mut total = 0.0;
        for nodes in &self.trees {
            let (mut at, mut depth) = (0usize, 0.0);
            loop {
                match &nodes[at] {
                    Node::Leaf { size } => {
                        total += depth + c(*size as usize);
                        break;
                    }
                    Node::Split {
                        feature,
                        value: cut,
                        left,
                        right,
                    } => {
                        depth += 1.0;
                        at = if value(*feature as usize) < *cut {
                            *left as usize
                        } else {
                            *right as usize
                        };
                    }
                }
            }
        }
        let mean_path = total / self.trees.len() as f64;
        2f64.powf(-mean_path / c(self.sample).max(1e-12))
    }
}

/// Grows one node (and its subtree) over `points[rows]`; returns its index.
fn grow(
    points: &[Vec<f64>],
    rows: Vec<usize>,
    depth: usize,
    max_depth: usize,
    rng: &mut SplitMix,
    nodes: &mut Vec<Node>,
) -> u32 {
    let here = nodes.len() as u32;
    nodes.push(Node::Leaf {
        size: rows.len() as u32,
    });
    if depth >= max_depth || rows.len() <= 1 {
        return here;
    }
    // Only features that vary among these rows can split them.
    let d = points[rows[0]].len();
    let spans: Vec<(usize, f64, f64)> = (0..d)
        .filter_map(|j| {
            let (lo, hi) = rows
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                    (lo.min(points[r][j]), hi.max(points[r][j]))
                });
            (hi > lo).then_some((j, lo, hi))
        })
        .collect();
    if spans.is_empty() {
        return here;
    }
    let (feature, lo, hi) = spans[rng.below(spans.len())];
    let value = lo + rng.unit() * (hi - lo);
    let (l, r): (Vec<usize>, Vec<usize>) =
        rows.into_iter().partition(|&i| points[i][feature] < value);
    let left = grow(points, l, depth + 1, max_depth, rng, nodes);
    let right = grow(points, r, depth + 1, max_depth, rng, nodes);
    nodes[here as usize] = Node::Split {
        feature: feature as u32,
        value,
        left,
        right,
    };
    here
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolates_an_outlier_and_is_deterministic() {
        let mut rng = SplitMix(7);
        let history: Vec<Vec<f64>> = (0..1000)
            .map(|_| vec![rng.unit(), rng.unit() * 0.1, 0.5])
            .collect();
        let f = IsolationForest::fit(&history, 3, 100, 256, 1).unwrap();
        let inlier = f.score(&[0.5, 0.05, 0.5]);
        let outlier = f.score(&[3.0, 0.05, 0.5]);
        assert!(
            outlier > 0.6 && inlier < 0.5,
            "outlier {outlier}, inlier {inlier}"
        );
        assert_eq!(f, IsolationForest::fit(&history, 3, 100, 256, 1).unwrap());
        // Missing values are imputed; a constant history is one leaf per tree.
        assert!(f.score(&[f64::NAN]).is_finite());
        let flat = IsolationForest::fit(&vec![vec![1.0, 1.0]; 50], 2, 10, 32, 1).unwrap();
        assert!(flat.score(&[5.0, 5.0]).is_finite());
        assert!(IsolationForest::fit(&[vec![1.0]], 1, 10, 32, 1).is_err());
    }
}
