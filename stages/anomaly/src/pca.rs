//! PCA reconstruction model: fitted with faer, applied with plain loops (a step is one short
//! vector, too small for a matrix library to help).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use serde::{Deserialize, Serialize};

/// Dot product with four independent sums, so the compiler can keep them in vector lanes
/// (a plain iterator sum must add in order and stays scalar).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The matrices [`PcaModel::score_block_in`] works in.
#[derive(Debug)]
pub struct Blocks {
    c: Mat<f64>,
    p: Mat<f64>,
    cp: Mat<f64>,
    recon: Mat<f64>,
}

impl Default for Blocks {
    fn default() -> Self {
        Self {
            c: Mat::new(),
            p: Mat::new(),
            cp: Mat::new(),
            recon: Mat::new(),
        }
    }
}

/// `m` as an `rows` x `cols` matrix of `f`, in the room it has.
fn refill(m: &mut Mat<f64>, rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f64) {
    m.resize_with(rows, cols, |_, _| 0.0);
    for j in 0..cols {
        for (i, v) in m.col_mut(j).iter_mut().enumerate() {
            *v = f(i, j);
        }
    }
}

/// A fitted detector for one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PcaModel {
    /// Per-metric mean of the history (also the value a missing metric is imputed with).
    pub mean: Vec<f64>,
    /// Kept principal directions, each of length `mean.len()`, largest variance first.
    pub components: Vec<Vec<f64>>,
    /// Per-metric mean and spread of the squared reconstruction error on the history.
    pub err_mean: Vec<f64>,
    pub err_std: Vec<f64>,
}

impl PcaModel {
    /// Fits on history rows (NaN = missing; rows may be shorter than the widest).
    pub fn fit(history: &[Vec<f64>], variance: f64) -> Result<Self, String> {
        let n = history.len();
        let d = history.iter().map(Vec::len).max().unwrap_or(0);
        if n < 2 || d == 0 {
            return Err(format!(
                "need at least 2 steps of at least 1 metric, have {n} x {d}"
            ));
        }
        let get = |r: usize, j: usize| history[r].get(j).copied().filter(|v| v.is_finite());
        let mut mean = vec![0.0; d];
        for (j, m) in mean.iter_mut().enumerate() {
            let (s, c) = (0..n)
                .filter_map(|r| get(r, j))
                .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
            *m = if c > 0 { s / c as f64 } else { 0.0 };
        }
        let x = Mat::<f64>::from_fn(n, d, |r, j| get(r, j).map(|v| v - mean[j]).unwrap_or(0.0));
        // History that does not vary has no direction: every step reconstructs exactly.
        let components = wfe_numeric::pca::principal_axes(&x, variance, usize::MAX, 0)?;
        let mut model = Self {
            mean,
            components,
            err_mean: vec![0.0; d],
            err_std: vec![1.0; d],
        };
        // History reconstruction errors, all rows at once: R = X - X P^T P.
        let k = model.components.len();
        let p = Mat::<f64>::from_fn(k, d, |a, j| model.components[a][j]);
        let r = if k > 0 {
            &x - (&x * p.transpose()) * &p
        } else {
            x.clone()
        };
        let mut errs = vec![0.0; n * d];
        for j in 0..d {
            let col = r.col(j);
            for i in 0..n {
                errs[i * d + j] = col[i] * col[i];
            }
        }
        let (mut sum, mut sq) = (vec![0.0; d], vec![0.0; d]);
        for e in errs.chunks_exact(d) {
            for j in 0..d {
                sum[j] += e[j];
                sq[j] += e[j] * e[j];
            }
        }
        for j in 0..d {
            let m = sum[j] / n as f64;
            model.err_mean[j] = m;
            model.err_std[j] = (sq[j] / n as f64 - m * m).max(0.0).sqrt() + 1e-6;
        }
        Ok(model)
    }

    /// Squared reconstruction error per metric, into `out` (length `mean.len()`); `y` is
    /// scratch for the projection.
    fn errors_into(&self, row: &[f64], out: &mut Vec<f64>, y: &mut Vec<f64>) {
        let d = self.mean.len();
        out.clear();
        out.extend((0..d).map(|j| {
            row.get(j)
                .copied()
                .filter(|v| v.is_finite())
                .map(|v| v - self.mean[j])
                .unwrap_or(0.0)
        }));
        // Residual of the projection: c - P^T P c, computed in place.
        y.clear();
        y.extend(self.components.iter().map(|p| dot(p, out)));
        for (yi, p) in y.iter().zip(&self.components) {
            for (o, a) in out.iter_mut().zip(p) {
                *o -= yi * a;
            }
        }
        for o in out.iter_mut() {
            *o *= *o;
        }
    }

    /// The step's score, and in `z` each metric's standardised error; `y` is scratch.
    pub fn score_into(&self, row: &[f64], z: &mut Vec<f64>, y: &mut Vec<f64>) -> f64 {
        self.errors_into(row, z, y);
        let mut score = 0.0;
        for (j, e) in z.iter_mut().enumerate() {
            *e = (*e - self.err_mean[j]) / self.err_std[j];
            score += *e;
        }
        score
    }

    /// Scores a block of steps at once (row-major `rows`, `width` values each, NaN =
    /// missing) with two matrix products, which is several times faster than step by step.
    /// Fills `scores` (one per row) and `z` (row-major, `mean.len()` per row).
    pub fn score_block(&self, rows: &[f64], width: usize, scores: &mut Vec<f64>, z: &mut Vec<f64>) {
        self.score_block_in(rows, width, scores, z, &mut Blocks::default());
    }

    /// [`PcaModel::score_block`] in the matrices of `work`, which keep their room from one
    /// call to the next: a wide fleet scores a block of a few steps per workload and batch,
    /// where allocating five matrices a block cost more than the products. The products are
    /// faer's own, called as its operators call them, so the scores are the same.
    pub fn score_block_in(
        &self,
        rows: &[f64],
        width: usize,
        scores: &mut Vec<f64>,
        z: &mut Vec<f64>,
        work: &mut Blocks,
    ) {
        let d = self.mean.len();
        let m = rows.len().checked_div(width).unwrap_or(0);
        let Blocks { c, p, cp, recon } = work;
        refill(c, m, d, |i, j| {
            let v = if j < width {
                rows[i * width + j]
            } else {
                f64::NAN
            };
            if v.is_finite() { v - self.mean[j] } else { 0.0 }
        });
        let k = self.components.len();
        if k > 0 {
            refill(p, k, d, |a, j| self.components[a][j]);
            let par = faer::get_global_parallelism();
            cp.resize_with(m, k, |_, _| 0.0);
            matmul(
                cp.as_mut(),
                Accum::Replace,
                c.as_ref(),
                p.transpose(),
                1.0,
                par,
            );
            recon.resize_with(m, d, |_, _| 0.0);
            matmul(
                recon.as_mut(),
                Accum::Replace,
                cp.as_ref(),
                p.as_ref(),
                1.0,
                par,
            );
        }
        // faer matrices are column-major: walk each column down.
        scores.clear();
        scores.resize(m, 0.0);
        z.clear();
        z.resize(m * d, 0.0);
        for j in 0..d {
            let (col, (mu, sd)) = (c.col(j), (self.err_mean[j], self.err_std[j]));
            for i in 0..m {
                let e = if k > 0 {
                    col[i] - recon[(i, j)]
                } else {
                    col[i]
                };
                let zj = (e * e - mu) / sd;
                z[i * d + j] = zj;
                scores[i] += zj;
            }
        }
    }

    /// Each metric's share of the positive part of standardised errors `z`.
    pub fn contributions(z: &[f64]) -> Vec<f64> {
        let pos: f64 = z.iter().map(|v| v.max(0.0)).sum();
        z.iter()
            .map(|v| if pos > 0.0 { v.max(0.0) / pos } else { 0.0 })
            .collect()
    }

    /// The step's score and each metric's share of its positive part.
    pub fn score(&self, row: &[f64]) -> (f64, Vec<f64>) {
        let (mut z, mut y) = (Vec::new(), Vec::new());
        let score = self.score_into(row, &mut z, &mut y);
        (score, Self::contributions(&z))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f64> = (0..39).map(|i| i as f64 * 0.25).collect();
        let b: Vec<f64> = (0..39).map(|i| 1.0 - i as f64 * 0.5).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((super::dot(&a, &b) - plain).abs() < 1e-9);
        assert_eq!(
            super::dot(&a[..3], &b),
            a[..3].iter().zip(&b).map(|(x, y)| x * y).sum::<f64>()
        );
    }

    /// The block scores in reused matrices are those of faer's operators on fresh ones, bit
    /// for bit, whatever sizes came before (a wide fleet's blocks of 1-3 rows after a long
    /// one; a row with a missing metric; a narrow row).
    #[test]
    fn blocks_in_reused_matrices_score_as_the_operators_do() {
        use faer::Mat;
        use wfe_domain::stats::SplitMix;
        let mut rng = SplitMix(11);
        let d = 7;
        let history: Vec<Vec<f64>> = (0..300)
            .map(|i| {
                let t = i as f64 / 10.0;
                (0..d)
                    .map(|j| (t + j as f64).sin() * (j + 1) as f64 + rng.unit())
                    .collect()
            })
            .collect();
        let model = super::PcaModel::fit(&history, 0.9).unwrap();
        assert!(!model.components.is_empty());
        // The former block scoring, with faer's operators on fresh matrices.
        let operators = |rows: &[f64], width: usize| -> Vec<f64> {
            let m = rows.len() / width;
            let c = Mat::<f64>::from_fn(m, d, |i, j| {
                let v = if j < width {
                    rows[i * width + j]
                } else {
                    f64::NAN
                };
                if v.is_finite() {
                    v - model.mean[j]
                } else {
                    0.0
                }
            });
            let k = model.components.len();
            let p = Mat::<f64>::from_fn(k, d, |a, j| model.components[a][j]);
            let r = &c - (&c * p.transpose()) * &p;
            (0..m)
                .map(|i| {
                    (0..d)
                        .map(|j| (r[(i, j)] * r[(i, j)] - model.err_mean[j]) / model.err_std[j])
                        .sum()
                })
                .collect()
        };
        let mut work = super::Blocks::default();
        let (mut scores, mut z) = (Vec::new(), Vec::new());
        for (m, width) in [(64, d), (1, d), (3, d), (2, d - 2), (40, d), (2, d), (1, d)] {
            let mut rows: Vec<f64> = (0..m * width).map(|_| rng.unit() * 4.0 - 2.0).collect();
            rows[0] = f64::NAN;
            model.score_block_in(&rows, width, &mut scores, &mut z, &mut work);
            let want = operators(&rows, width);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&scores), bits(&want), "{m} rows of {width}");
            assert_eq!(z.len(), m * d);
        }
    }
}
