//! The standard normal distribution: its distribution function from libm's `erf`, and the
//! inverse by bisection (a quantile level is read a few times per forecast, never in a loop
//! over data, so 64 halvings cost nothing that matters).

/// P(Z <= x) for a standard normal Z.
pub fn cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The x with `cdf(x) = p`, for `p` in (0, 1); ±infinity at 0 and 1, NaN outside.
pub fn inverse_cdf(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    // cdf(±40) is 0 or 1 in f64: the answer lies within.
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    for _ in 0..64 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_textbook_values() {
        assert!((cdf(0.0) - 0.5).abs() < 1e-15);
        assert!((cdf(1.959963984540054) - 0.975).abs() < 1e-12);
        assert!((inverse_cdf(0.9) - 1.2815515655446004).abs() < 1e-9);
        assert!((inverse_cdf(0.1) + 1.2815515655446004).abs() < 1e-9);
        assert!(inverse_cdf(1.5).is_nan());
        assert_eq!(inverse_cdf(0.0), f64::NEG_INFINITY);
    }
}
