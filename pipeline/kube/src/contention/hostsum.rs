//! A host's total demand at one horizon, and the chance it passes the host's capacity.
//!
//! Each workload's forecast is read as a normal distribution: the median as its mean, and a
//! spread that puts its lowest and highest quantiles where the forecast has them. The sum of
//! a host's workloads is then normal with the sum of the means and the variance
//! `sum_i sum_j rho_ij sd_i sd_j`, where `rho` is how the workloads' demand moved together in
//! their history (Pearson, over the times both were seen). A normal sum is an approximation
//! (a forecast's tail may be longer on one side), made so that correlation enters in closed
//! form; what it buys is that two workloads that peak together count with their peaks added.

use wfe_domain::stats::level_at;

use super::normal;

/// One workload's demand at one horizon (or a host's total), read as normal.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Demand {
    pub mean: f64,
    pub sd: f64,
}

impl Demand {
    /// From a forecast's quantile `levels` (ascending, in (0, 1)) and `values`: the value at
    /// the median as the mean; the spread from the lowest and highest levels (their values'
    /// distance over the standard normal's between the same levels). None for a forecast
    /// without levels, of another length, or with a value that is not finite.
    pub fn from_quantiles(levels: &[f64], values: &[f64]) -> Option<Self> {
        let n = levels.len();
        if n == 0 || values.len() != n || !values.iter().chain(levels).all(|v| v.is_finite()) {
            return None;
        }
        let (_, mean) = level_at(levels, values, 0.5)?;
        let z = normal::inverse_cdf(levels[n - 1]) - normal::inverse_cdf(levels[0]);
        let sd = if n >= 2 && z.is_finite() && z > 0.0 {
            ((values[n - 1] - values[0]) / z).max(0.0)
        } else {
            0.0
        };
        Some(Self { mean, sd })
    }
}

/// Pearson correlation of two series (each `(time, value)`, in time order) over the times
/// both have; None with fewer than `min_points` such times or a series that did not move.
pub fn correlation(a: &[(i64, f64)], b: &[(i64, f64)], min_points: usize) -> Option<f64> {
    let (mut i, mut j) = (0, 0);
    let mut pairs = Vec::new();
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if a[i].1.is_finite() && b[j].1.is_finite() {
                    pairs.push((a[i].1, b[j].1));
                }
                i += 1;
                j += 1;
            }
        }
    }
    let moved = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = pairs
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        hi > lo
    };
    if pairs.len() < min_points.max(2) || !moved(|p| p.0) || !moved(|p| p.1) {
        return None;
    }
    let n = pairs.len() as f64;
    let (sa, sb) = pairs
        .iter()
        .fold((0.0, 0.0), |(x, y), (p, q)| (x + p, y + q));
    let (ma, mb) = (sa / n, sb / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (p, q) in &pairs {
        sab += (p - ma) * (q - mb);
        saa += (p - ma) * (p - ma);
        sbb += (q - mb) * (q - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| (sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0))
}

/// The total of `members`, `rho(i, j)` the correlation of members `i` and `j` (`i != j`).
pub fn total(members: &[Demand], rho: impl Fn(usize, usize) -> f64) -> Demand {
    let mean = members.iter().map(|d| d.mean).sum();
    let mut var = 0.0;
    for (i, a) in members.iter().enumerate() {
        var += a.sd * a.sd;
        for (j, b) in members.iter().enumerate().skip(i + 1) {
            var += 2.0 * rho(i, j).clamp(-1.0, 1.0) * a.sd * b.sd;
        }
    }
    // Pairwise correlations from different windows need not form a valid matrix.
    Demand {
        mean,
        sd: var.max(0.0).sqrt(),
    }
}

/// The chance that `total` passes `capacity`.
pub fn exceed(total: Demand, capacity: f64) -> f64 {
    if total.sd > 0.0 {
        1.0 - normal::cdf((capacity - total.mean) / total.sd)
    } else if total.mean > capacity {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forecast_reads_as_its_median_and_the_spread_of_its_outer_quantiles() {
        let z = normal::inverse_cdf(0.9);
        let d = Demand::from_quantiles(&[0.1, 0.5, 0.9], &[10.0 - 2.0 * z, 10.0, 10.0 + 2.0 * z])
            .unwrap();
        assert!(
            (d.mean - 10.0).abs() < 1e-12 && (d.sd - 2.0).abs() < 1e-9,
            "{d:?}"
        );
        assert_eq!(
            Demand::from_quantiles(&[0.5], &[3.0]),
            Some(Demand { mean: 3.0, sd: 0.0 })
        );
        assert_eq!(Demand::from_quantiles(&[0.1, 0.9], &[1.0, f64::NAN]), None);
        assert_eq!(Demand::from_quantiles(&[0.1, 0.9], &[1.0]), None);
        assert_eq!(Demand::from_quantiles(&[], &[]), None);
    }

    #[test]
    fn a_sum_adds_spreads_as_its_members_move_together() {
        let d = [
            Demand {
                mean: 10.0,
                sd: 2.0,
            },
            Demand {
                mean: 10.0,
                sd: 2.0,
            },
        ];
        assert_eq!(
            total(&d, |_, _| 1.0),
            Demand {
                mean: 20.0,
                sd: 4.0
            }
        );
        assert!((total(&d, |_, _| 0.0).sd - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(total(&d, |_, _| -1.0).sd, 0.0);
        // Outside [-1, 1]: clamped; a spread never goes negative.
        assert_eq!(total(&d, |_, _| 5.0).sd, 4.0);
        let t = total(&d, |_, _| 0.0);
        assert!((exceed(t, 20.0) - 0.5).abs() < 1e-12);
        assert!((exceed(t, 20.0 + normal::inverse_cdf(0.9) * t.sd) - 0.1).abs() < 1e-9);
        assert_eq!(exceed(Demand { mean: 5.0, sd: 0.0 }, 4.0), 1.0);
        assert_eq!(exceed(Demand { mean: 5.0, sd: 0.0 }, 5.0), 0.0);
    }

    #[test]
    fn correlation_is_read_over_the_times_both_series_have() {
        let a: Vec<(i64, f64)> = (0..10).map(|t| (t, t as f64)).collect();
        let b: Vec<(i64, f64)> = (0..10).map(|t| (t, 2.0 * t as f64 + 1.0)).collect();
        let neg: Vec<(i64, f64)> = (5..20).map(|t| (t, -(t as f64))).collect();
        assert!((correlation(&a, &b, 3).unwrap() - 1.0).abs() < 1e-12);
        // Common times 5..9 only.
        assert!((correlation(&a, &neg, 5).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(correlation(&a, &neg, 6), None);
        let flat: Vec<(i64, f64)> = (0..10).map(|t| (t, 3.0)).collect();
        assert_eq!(correlation(&a, &flat, 3), None);
    }
}
