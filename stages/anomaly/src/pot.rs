//! Label-free thresholds: Peaks-Over-Threshold (the batch form of SPOT, Siffer et al., KDD
//! 2017). The excesses of the training scores over a high initial quantile follow a
//! generalised Pareto distribution (extreme value theory); its fit gives the score that is
//! exceeded with probability `risk`, even beyond the largest score seen in training.

use crate::quantile;

/// Threshold exceeded by a training-like score with probability `risk`.
///
/// `initial` is the quantile whose excesses are fitted (0.98 is the usual choice). The
/// generalised Pareto parameters come from the method of moments, which needs no iteration and
/// is stable on the few hundred excesses a workload's history gives. With too few distinct
/// excesses, the plain `1 - risk` quantile is returned.
pub fn pot_threshold(scores: &[f64], initial: f64, risk: f64) -> f64 {
    let mut s: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    if s.is_empty() {
        return f64::INFINITY;
    }
    // Unstable is the same order: values equal under `total_cmp` are the same bits.
    s.sort_unstable_by(f64::total_cmp);
    let n = s.len() as f64;
    let t = quantile(&s, initial);
    let excess: Vec<f64> = s.iter().filter(|&&v| v > t).map(|v| v - t).collect();
    let fallback = quantile(&s, (1.0 - risk).clamp(0.0, 1.0));
    if excess.len() < 10 {
        return fallback;
    }
    let k = excess.len() as f64;
    let m = excess.iter().sum::<f64>() / k;
    let v = excess.iter().map(|e| (e - m) * (e - m)).sum::<f64>() / (k - 1.0);
    if v <= 0.0 || m <= 0.0 {
        return fallback;
    }
    let gamma = 0.5 * (1.0 - m * m / v);
    let sigma = 0.5 * m * (m * m / v + 1.0);
    let r = risk * n / k;
    let z = if gamma.abs() < 1e-9 {
        t - sigma * r.ln()
    } else {
        t + sigma / gamma * (r.powf(-gamma) - 1.0)
    };
    if z.is_finite() { z.max(t) } else { fallback }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_tail_gives_the_analytic_quantile() {
        // Scores -ln(u) on a fine grid: an exponential distribution, whose 1e-4 tail is at
        // ln(1e4) = 9.21, beyond every one of the 10,000 scores but the largest.
        let n = 10_000;
        let scores: Vec<f64> = (1..=n)
            .map(|i| -((i as f64 - 0.5) / n as f64).ln())
            .collect();
        let z = pot_threshold(&scores, 0.98, 1e-4);
        assert!((z - 1e4f64.ln()).abs() < 0.5, "threshold {z}");
        assert!(
            pot_threshold(&[1.0; 50], 0.98, 1e-3) == 1.0,
            "constant scores: the quantile"
        );
        assert!(pot_threshold(&[], 0.98, 1e-3).is_infinite());
    }
}
