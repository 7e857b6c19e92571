//! Nearest neighbours of a fingerprint among known workloads: exact search (every distance,
//! best for fleets up to a few thousand), an approximate HNSW index ([`Approximate`], from
//! `hnsw_rs`) for large fleets, and the similarity weights cold start borrows with.
//! `wfe bench knn` compares the two at 1k, 100k and 1M fingerprints.

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
        measure(self, a.iter().zip(b).map(|(x, y)| (*x, *y)))
    }

    /// [`Distance::between`] `a` and `b - centre` (`a` already measured from `centre`),
    /// without making `b - centre`: a search measures every candidate from the fleet's centre.
    pub fn between_centred(self, a: &[f64], b: &[f64], centre: &[f64]) -> f64 {
        let pairs = a.iter().zip(b).zip(centre).map(|((x, y), c)| (*x, y - c));
        measure(self, pairs)
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
    keep_nearest(&mut all, k, |a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all
}

/// Keeps the `k` least of `found` by `order`, sorted: the `k`-th is selected first, so only
/// `k` are sorted, not every candidate (sorting a fleet of a thousand for five neighbours was
/// as costly as measuring them). With a strict total order (ties broken by a unique key, as
/// every caller does) the result is what sorting everything and truncating gives.
pub fn keep_nearest<T>(found: &mut Vec<T>, k: usize, order: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if k == 0 {
        found.clear();
        return;
    }
    if found.len() > k {
        found.select_nth_unstable_by(k - 1, &order);
        found.truncate(k);
    }
    found.sort_by(order);
}

/// The HNSW graph's distance: the same [`Distance`] on `f32` vectors.
#[derive(Debug, Clone, Copy)]
struct GraphDistance(Distance);

impl hnsw_rs::anndists::dist::Distance<f32> for GraphDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let d = measure(self.0, a.iter().zip(b).map(|(x, y)| (*x, *y)));
        match self.0 {
            // Rounding in `f32` can take it a hair under zero, which the graph must not see.
            Distance::Cosine => d.max(0.0),
            Distance::Euclidean => d,
        }
    }
}

/// The float types distances are measured in: `f64` exactly, `f32` in the HNSW graph.
trait Real:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn sqrt(self) -> Self;
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

/// `distance` over the pairs of coordinates, summing only what the metric reads (the
/// searches spend most of their time here): one definition for the exact search, the
/// centred search and the graph.
fn measure<T: Real>(distance: Distance, pairs: impl Iterator<Item = (T, T)>) -> T {
    match distance {
        Distance::Cosine => {
            let (mut ab, mut aa, mut bb) = (T::ZERO, T::ZERO, T::ZERO);
            for (x, y) in pairs {
                ab = ab + x * y;
                aa = aa + x * x;
                bb = bb + y * y;
            }
            if aa <= T::ZERO || bb <= T::ZERO {
                T::ONE
            } else {
                T::ONE - ab / (aa.sqrt() * bb.sqrt())
            }
        }
        Distance::Euclidean => pairs
            .fold(T::ZERO, |l2, (x, y)| l2 + (x - y) * (x - y))
            .sqrt(),
    }
}

/// Candidates per wanted neighbour taken from the graph and re-ranked by exact distance.
pub const RERANK: usize = 4;

/// Candidates a search examines (HNSW's `ef`) when `fingerprint.index_ef` is 0 (auto), by the
/// number of profiles indexed: [`EF_SMALL`] below [`EF_LARGE_FROM`], [`EF_LARGE`] from there.
/// On the 10,000-workload synthetic fleet, 32 against 128 took the fingerprint stage from 13.3
/// to 7.8 CPU seconds while the share of neighbours of a workload's own source shape moved
/// from 0.3954 to 0.3943; at 100,000 dense synthetic fingerprints 32 finds 0.845 of the true
/// five nearest and 128 finds 0.925 (docs/performance.md; `wfe bench --knn` prints both).
pub fn auto_ef(indexed: usize) -> usize {
    if indexed < EF_LARGE_FROM {
        EF_SMALL
    } else {
        EF_LARGE
    }
}
pub const EF_SMALL: usize = 32;
pub const EF_LARGE: usize = 128;
pub const EF_LARGE_FROM: usize = 50_000;

/// An approximate nearest-neighbour index (HNSW: a layered proximity graph searched
/// greedily). Candidates it finds are re-ranked by the exact `f64` distance, so the only
/// approximation is which candidates are found.
pub struct Approximate {
    graph: hnsw_rs::hnsw::Hnsw<'static, f32, GraphDistance>,
    vectors: Vec<Vec<f64>>,
    ids: Vec<usize>,
    distance: Distance,
    /// Candidates examined per search (HNSW's `ef`).
    pub ef: usize,
}

impl Approximate {
    /// Builds the index over `(id, vector)` pairs, inserted one by one in their order.
    ///
    /// Not `parallel_insert`: threads racing to link a node change the graph from run to
    /// run (hnsw_rs says so), so two instances that index the same profiles, or one run and
    /// its replay after a crash, found other neighbours (179 of 100,000 fingerprint rows
    /// between two runs of the same 10,000-workload job). In order, the graph is a function
    /// of the input: hnsw_rs draws node levels from a generator of fixed seed.
    pub fn build(items: Vec<(usize, Vec<f64>)>, distance: Distance) -> Self {
        let n = items.len().max(1);
        // 16 links per node and a construction beam of 100: hnswlib's defaults.
        let graph = hnsw_rs::hnsw::Hnsw::new(16, n, 16, 100, GraphDistance(distance));
        let as_f32: Vec<Vec<f32>> = items
            .iter()
            .map(|(_, v)| v.iter().map(|x| *x as f32).collect())
            .collect();
        for (i, v) in as_f32.iter().enumerate() {
            graph.insert((v.as_slice(), i));
        }
        let (ids, vectors) = items.into_iter().unzip();
        Self {
            graph,
            vectors,
            ids,
            distance,
            ef: auto_ef(n),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Positions (in build order) of about `n` nearest to `query`, skipping id `exclude`.
    fn found(&self, query: &[f64], n: usize, exclude: Option<usize>) -> Vec<usize> {
        if n == 0 || self.ids.is_empty() {
            return Vec::new();
        }
        let q: Vec<f32> = query.iter().map(|x| *x as f32).collect();
        // One more than asked, in case the query itself is indexed and excluded.
        let want = n + usize::from(exclude.is_some());
        self.graph
            .search(&q, want, self.ef.max(want))
            .iter()
            .map(|nb| nb.d_id)
            .filter(|&p| Some(self.ids[p]) != exclude)
            .collect()
    }

    /// Ids of about `n` nearest to `query` by the indexed vectors, skipping `exclude`: for a
    /// caller that re-ranks them by vectors that moved since the index was built.
    pub fn candidates(&self, query: &[f64], n: usize, exclude: Option<usize>) -> Vec<usize> {
        self.found(query, n, exclude)
            .into_iter()
            .map(|p| self.ids[p])
            .collect()
    }

    /// The `k` nearest to `query` (nearest first, exact distances), skipping `exclude`: the
    /// graph's [`RERANK`] x `k` nearest by `f32` distance, re-ranked exactly, as the stage
    /// searches.
    pub fn search(&self, query: &[f64], k: usize, exclude: Option<usize>) -> Vec<(usize, f64)> {
        let found = self.found(query, RERANK * k, exclude);
        exact(
            query,
            found
                .iter()
                .map(|&p| (self.ids[p], self.vectors[p].as_slice())),
            k,
            self.distance,
        )
    }
}

/// `n` deterministic pseudo-random vectors around 32 centres, like fingerprints of service
/// groups: what `wfe bench knn` and the tests search when no fleet that large exists.
pub fn synthetic_fleet(n: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = wfe_domain::stats::SplitMix(seed);
    let mut next = move || rng.unit() - 0.5;
    let centres: Vec<Vec<f64>> = (0..32)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|i| centres[i % 32].iter().map(|c| c + 0.2 * next()).collect())
        .collect()
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
    fn keeping_the_nearest_equals_sorting_everything_and_truncating() {
        let mut rng = wfe_domain::stats::SplitMix(7);
        for n in [0, 1, 5, 40] {
            // Few distinct distances, so ties are common and the id must break them.
            let all: Vec<(usize, f64)> = (0..n)
                .map(|i| (i, (rng.unit() * 4.0).floor()))
                .rev()
                .collect();
            let order =
                |a: &(usize, f64), b: &(usize, f64)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
            for k in 0..n + 2 {
                let mut sorted = all.clone();
                sorted.sort_by(order);
                sorted.truncate(k);
                let mut kept = all.clone();
                keep_nearest(&mut kept, k, order);
                assert_eq!(kept, sorted, "n {n}, k {k}");
            }
        }
    }

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

    #[test]
    fn a_centred_distance_is_the_distance_of_the_centred_vectors() {
        let centre = [0.5, -1.0, 2.0];
        let (a, b) = ([1.0, 2.0, -0.5], [0.25, 3.0, 1.0]);
        let b_c: Vec<f64> = b.iter().zip(&centre).map(|(x, c)| x - c).collect();
        for d in [Distance::Cosine, Distance::Euclidean] {
            let want = d.between(&a, &b_c);
            assert!(
                (d.between_centred(&a, &b, &centre) - want).abs() < 1e-12,
                "{d:?}"
            );
        }
        // At the centre, as far as can be under cosine.
        assert_eq!(Distance::Cosine.between_centred(&a, &centre, &centre), 1.0);
    }

    #[test]
    fn the_beam_widens_for_large_indexes() {
        assert_eq!(auto_ef(1), EF_SMALL);
        assert_eq!(auto_ef(EF_LARGE_FROM - 1), EF_SMALL);
        assert_eq!(auto_ef(EF_LARGE_FROM), EF_LARGE);
        let vs = synthetic_fleet(50, 4, 9);
        let index = Approximate::build(vs.into_iter().enumerate().collect(), Distance::Cosine);
        assert_eq!(index.ef, EF_SMALL);
    }

    #[test]
    fn the_approximate_index_finds_what_exact_search_finds() {
        for distance in [Distance::Cosine, Distance::Euclidean] {
            let vs = synthetic_fleet(3000, 12, 7);
            let index = Approximate::build(vs.iter().cloned().enumerate().collect(), distance);
            assert_eq!(index.len(), 3000);
            let (mut hits, mut total) = (0, 0);
            for q in (0..3000).step_by(37) {
                let want = exact(
                    &vs[q],
                    vs.iter()
                        .enumerate()
                        .filter(|(i, _)| *i != q)
                        .map(|(i, v)| (i, v.as_slice())),
                    5,
                    distance,
                );
                let got = index.search(&vs[q], 5, Some(q));
                assert_eq!(got.len(), 5);
                assert!(got.iter().all(|(i, _)| *i != q), "the query is excluded");
                assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
                hits += got
                    .iter()
                    .filter(|g| want.iter().any(|w| w.0 == g.0))
                    .count();
                total += 5;
            }
            let recall = hits as f64 / total as f64;
            assert!(recall >= 0.95, "{distance:?}: recall@5 {recall:.3}");
        }
        let empty = Approximate::build(vec![], Distance::Cosine);
        assert!(empty.is_empty() && empty.search(&[1.0], 3, None).is_empty());
    }

    /// Two instances (or a run and its replay) that index the same profiles must find the
    /// same neighbours: the graph is a function of its input, ties included.
    #[test]
    fn an_index_of_the_same_vectors_finds_the_same_candidates() {
        // Some vectors twice: ties, which a race or a hash order would break differently.
        let mut vs = synthetic_fleet(2500, 12, 11);
        vs.extend(vs[..500].to_vec());
        let build =
            || Approximate::build(vs.iter().cloned().enumerate().collect(), Distance::Cosine);
        let (a, b) = (build(), build());
        for q in (0..vs.len()).step_by(7) {
            assert_eq!(
                a.candidates(&vs[q], 20, Some(q)),
                b.candidates(&vs[q], 20, Some(q)),
                "query {q}"
            );
        }
    }
}
