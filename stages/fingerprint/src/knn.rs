//! Nearest neighbours of a fingerprint among known workloads: exact search (every distance,
//! best for fleets up to a few thousand) and the similarity weights cold start borrows with.

use serde::{Deserialize, Serialize};

/// How fingerprints are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Distance {
    /// 1 - cosine similarity: the direction of behaviour, whatever its magnitude.
    #[default]
    Cosine,
    /// Euclidean distance.
    Euclidean,
}

impl Distance {
    pub fn between(self, a: &[f64], b: &[f64]) -> f64 {
        match self {
            Distance::Cosine => {
                let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
                for (x, y) in a.iter().zip(b) {
                    ab += x * y;
                    aa += x * x;
                    bb += y * y;
                }
                if aa <= 0.0 || bb <= 0.0 {
                    1.0
                } else {
                    1.0 - ab / (aa.sqrt() * bb.sqrt())
                }
            }
            Distance::Euclidean => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt(),
        }
    }

    /// Similarity weight of a neighbour at distance `d` (larger is nearer, never negative).
    pub fn weight(self, d: f64) -> f64 {
        match self {
            Distance::Cosine => (1.0 - d).max(0.0),
            Distance::Euclidean => 1.0 / (d + 1e-6),
        }
    }
}

/// The `k` nearest of `candidates` (id, vector) to `query`, nearest first, ties by id.
pub fn exact<'a, I>(query: &[f64], candidates: I, k: usize, distance: Distance) -> Vec<(usize, f64)>
where
    I: IntoIterator<Item = (usize, &'a [f64])>,
{
    let mut all: Vec<(usize, f64)> = candidates
        .into_iter()
        .map(|(id, v)| (id, distance.between(query, v)))
        .filter(|(_, d)| d.is_finite())
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Neighbours' similarity weights, summing to 1 (equal when all similarities are 0).
pub fn weights(found: &[(usize, f64)], distance: Distance) -> Vec<f64> {
    let w: Vec<f64> = found.iter().map(|(_, d)| distance.weight(*d)).collect();
    let total: f64 = w.iter().sum();
    if total > 0.0 {
        w.iter().map(|x| x / total).collect()
    } else {
        vec![1.0 / found.len().max(1) as f64; found.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first_with_weights_summing_to_one() {
        let vs = [
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.9, 0.1],
            vec![0.0, 0.0],
        ];
        let found = exact(
            &[1.0, 0.05],
            vs.iter().enumerate().map(|(i, v)| (i, v.as_slice())),
            2,
            Distance::Cosine,
        );
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 2]);
        let w = weights(&found, Distance::Cosine);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12 && w[0] >= w[1]);
        // A zero vector is as far as can be under cosine, not NaN.
        assert_eq!(Distance::Cosine.between(&[0.0, 0.0], &[1.0, 0.0]), 1.0);
        let e = exact(
            &[0.0, 0.0],
            vs.iter().enumerate().map(|(i, v)| (i, v.as_slice())),
            1,
            Distance::Euclidean,
        );
        assert_eq!(e[0].0, 3);
        assert!(exact(&[1.0], std::iter::empty(), 3, Distance::Cosine).is_empty());
    }
}
