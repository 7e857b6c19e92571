//! PCA fitted on history: the fleet's window features, kept as a uniform reservoir sample and
//! refitted as the fleet grows (after 1x, 2x, 4x ... `fit_windows` windows), so early
//! fingerprints do not freeze a basis learned from the first workloads alone.

use faer::Mat;
use serde::{Deserialize, Serialize};
use wfe_domain::stats::SplitMix;

/// A fitted basis: vectors are `(x - mean) · components`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// Kept directions, largest variance first, each of `mean.len()`.
    pub components: Vec<Vec<f64>>,
}

impl Pca {
    /// Fits on rows of equal length, keeping `variance` of the variance, at most `max` and at
    /// least one component.
    pub fn fit(rows: &[Vec<f64>], variance: f64, max: usize) -> Result<Self, String> {
        let n = rows.len();
        let d = rows.first().map(Vec::len).unwrap_or(0);
        if n < 2 || d == 0 || rows.iter().any(|r| r.len() != d) {
            return Err(format!(
                "need at least 2 feature rows of one length, have {n}"
            ));
        }
        let mut mean = vec![0.0; d];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n as f64;
            }
        }
        let x = Mat::<f64>::from_fn(n, d, |i, j| rows[i][j] - mean[j]);
        // A fingerprint needs coordinates even when the fleet's windows do not vary yet.
        let max = max.max(1);
        let components = wfe_numeric::pca::principal_axes(&x, variance, max, max)?;
        Ok(Self { mean, components })
    }

    pub fn project(&self, x: &[f64]) -> Vec<f64> {
        self.components
            .iter()
            .map(|c| {
                c.iter()
                    .zip(x.iter().zip(&self.mean))
                    .map(|(a, (v, m))| a * (v - m))
                    .sum()
            })
            .collect()
    }

    /// `x · components`, uncentred: a centred projection from any centre `m` is
    /// `rotate(x) - rotate(m)`, so a cached rotation stays valid when the centre moves.
    pub fn rotate(&self, x: &[f64]) -> Vec<f64> {
        self.components
            .iter()
            .map(|c| c.iter().zip(x).map(|(a, v)| a * v).sum())
            .collect()
    }
}

/// The reservoir and the current basis of one metric set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reducer {
    reservoir: Vec<Vec<f64>>,
    /// Sum of every window's features, for the fleet's centre (see [`Reducer::centre`]).
    sum: Vec<f64>,
    seen: u64,
    next_fit: u64,
    rng: u64,
    pub model: Option<Pca>,
    /// Bumped at every refit: vectors of one version are comparable.
    pub version: u32,
}

/// Rows of the reservoir per changelog entry: a window that replaces a row rewrites that
/// row's run, not the whole reservoir (megabytes for a wide metric set).
pub const RESERVOIR_RUN: usize = 64;

impl Reducer {
    /// The reducer without its reservoir (see [`Reducer::runs`]).
    pub fn head(&self) -> Reducer {
        Reducer {
            reservoir: Vec::new(),
            sum: self.sum.clone(),
            seen: self.seen,
            next_fit: self.next_fit,
            rng: self.rng,
            model: self.model.clone(),
            version: self.version,
        }
    }

    /// The reservoir in runs of [`RESERVOIR_RUN`] rows.
    pub fn runs(&self) -> std::slice::Chunks<'_, Vec<f64>> {
        self.reservoir.chunks(RESERVOIR_RUN)
    }

    /// A [`Reducer::head`] given its reservoir back.
    pub fn with_reservoir(mut self, rows: Vec<Vec<f64>>) -> Reducer {
        self.reservoir = rows;
        self
    }

    /// Adds a window's features; refits when the count reaches the next fit point. Returns
    /// true when the basis changed.
    pub fn add(
        &mut self,
        x: &[f64],
        fit_windows: usize,
        capacity: usize,
        variance: f64,
        max: usize,
    ) -> Result<bool, String> {
        self.seen += 1;
        if self.sum.len() != x.len() {
            self.sum = vec![0.0; x.len()];
        }
        for (s, v) in self.sum.iter_mut().zip(x) {
            *s += v;
        }
        // Deterministic for a given input order (the generator's state is part of the
        // stage state).
        let mut rng = SplitMix(self.rng);
        rng.sample_into(self.seen, capacity, &mut self.reservoir, || x.to_vec());
        self.rng = rng.0;
        if self.next_fit == 0 {
            self.next_fit = fit_windows.max(2) as u64;
        }
        if self.seen >= self.next_fit {
            self.next_fit = self.next_fit.saturating_mul(2);
            return self.refit(variance, max).map(|()| true);
        }
        Ok(false)
    }

    /// Fits on what the reservoir holds now (also used at flush for a fleet smaller than
    /// `fit_windows`).
    pub fn refit(&mut self, variance: f64, max: usize) -> Result<(), String> {
        self.model = Some(Pca::fit(&self.reservoir, variance, max)?);
        self.version += 1;
        Ok(())
    }

    pub fn windows(&self) -> u64 {
        self.seen
    }

    /// The mean of every window seen so far, exact (not the reservoir's): similarity is
    /// measured from here. The basis lags the fleet by up to one refit interval; a centre that
    /// lagged too would measure every profile from where the fleet was when the basis was
    /// fitted, and a service group that joined since would look like the others' opposite
    /// (`wfe eval fingerprint` on SMD: 7 of 8 with the fit-time centre, 8 of 8 with this one).
    pub fn centre(&self) -> Vec<f64> {
        let n = self.seen.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reducer_comes_back_whole_from_its_head_and_runs_and_a_window_moves_few_runs() {
        let mut r = Reducer::default();
        let rows: Vec<Vec<f64>> = (0..400).map(|i| vec![i as f64, (i % 7) as f64]).collect();
        for x in &rows[..300] {
            r.add(x, 50, 200, 0.9, 2).unwrap();
        }
        let runs: Vec<Vec<Vec<f64>>> = r.runs().map(<[_]>::to_vec).collect();
        assert_eq!(runs.len(), 200_usize.div_ceil(RESERVOIR_RUN));
        let back = r.head().with_reservoir(runs.concat());
        let bytes = |r: &Reducer| wfe_contract::state::encode("t", r).unwrap();
        assert_eq!(bytes(&back), bytes(&r));
        // Past its capacity a window replaces one row at most: one run moves, not all.
        let (mut before, mut moved) = (runs, 0);
        for x in &rows[300..] {
            r.add(x, 50, 200, 0.9, 2).unwrap();
            let now: Vec<Vec<Vec<f64>>> = r.runs().map(<[_]>::to_vec).collect();
            let n = now.iter().zip(&before).filter(|(a, b)| a != b).count();
            assert!(n <= 1, "{n} runs moved with one window");
            moved += n;
            before = now;
        }
        assert!(moved > 0);
    }

    #[test]
    fn pca_finds_the_direction_of_variance_and_refits_on_a_schedule() {
        // Points along (1, 1, 0) with a little noise in z.
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|i| {
                let t = i as f64 / 10.0;
                vec![t, t, (i % 3) as f64 * 1e-3]
            })
            .collect();
        let p = Pca::fit(&rows, 0.9, 8).unwrap();
        assert_eq!(p.components.len(), 1);
        let c = &p.components[0];
        assert!(
            (c[0].abs() - 0.5f64.sqrt()).abs() < 1e-6 && c[2].abs() < 1e-3,
            "{c:?}"
        );
        let a = p.project(&[1.0, 1.0, 0.0]);
        let b = p.project(&[2.0, 2.0, 0.0]);
        assert!(((b[0] - a[0]).abs() - 2f64.sqrt()).abs() < 1e-6);
        // A centred projection is the difference of rotations.
        let (ra, rm) = (p.rotate(&[1.0, 1.0, 0.0]), p.rotate(&p.mean));
        assert!((ra[0] - rm[0] - a[0]).abs() < 1e-9);
        assert!(Pca::fit(&rows[..1], 0.9, 8).is_err());
        let mut r = Reducer::default();
        let fits: Vec<u64> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, x)| r.add(x, 4, 16, 0.9, 8).unwrap().then_some(i as u64 + 1))
            .collect();
        assert_eq!(fits, vec![4, 8, 16, 32]);
        assert_eq!((r.version, r.windows(), r.reservoir.len()), (4, 50, 16));
        // The centre is the mean of all 50 windows, not of the 16 the reservoir kept.
        let c = r.centre();
        assert!(
            (c[0] - 2.45).abs() < 1e-9 && (c[1] - 2.45).abs() < 1e-9,
            "{c:?}"
        );
        // Constant features: a basis is still returned (zero variance, one direction).
        assert!(Pca::fit(&vec![vec![1.0, 1.0]; 5], 0.9, 4).is_ok());
    }
}
