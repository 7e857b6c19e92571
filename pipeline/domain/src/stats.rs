//! Small statistics the stages share.

/// Empirical quantile of sorted values, linearly interpolated between neighbours (numpy's
/// default); `q` is clamped to [0, 1]; 0 for no values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Of a forecast's quantile `levels` (ascending) and its `values` at them: the level at or
/// above `level` (the nearest such), else the highest, with its value. The tier-select stage
/// covers its SLA quantile this way, and the KEDA scaler reports what a decision would cover.
pub fn level_at(levels: &[f64], values: &[f64], level: f64) -> Option<(f64, f64)> {
    let i = levels
        .iter()
        .position(|l| *l >= level - 1e-9)
        .or_else(|| levels.len().checked_sub(1))?;
    Some((levels[i], *values.get(i)?))
}

/// [`quantile`] at several ascending levels of unsorted values, by successive selections on
/// the part not yet partitioned: about twice the length in comparisons instead of a sort's
/// n log n (a fleet's forecasts compute many of these). Reorders `values`.
pub fn quantiles_select(values: &mut [f64], levels: &[f64]) -> Vec<f64> {
    let n = values.len();
    if n == 0 {
        return vec![0.0; levels.len()];
    }
    let mut base = 0;
    levels
        .iter()
        .map(|&q| {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (
                (pos.floor() as usize).max(base),
                (pos.ceil() as usize).max(base),
            );
            // values[..base] are all <= values[base..], so the lo-th smallest is in values[base..].
            let (_, &mut a, right) =
                values[base..].select_nth_unstable_by(lo - base, f64::total_cmp);
            let b = if hi > lo {
                right.iter().copied().min_by(f64::total_cmp).unwrap_or(a)
            } else {
                a
            };
            base = lo;
            a + (b - a) * (pos - pos.floor())
        })
        .collect()
}

/// SplitMix64: a tiny seeded generator, for what must draw the same numbers for the same seed
/// (isolation forests, simulated interruptions).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Reservoir sampling (Algorithm R): offers the `seen`-th item (counting from 1) to a
    /// sample of at most `capacity`. While there is room it goes in (no draw); after that it
    /// replaces a uniform pick with probability `capacity / seen`. `make` is called only for
    /// an item that is kept. The same seed and input order keep the same items.
    pub fn sample_into<T>(
        &mut self,
        seen: u64,
        capacity: usize,
        sample: &mut Vec<T>,
        make: impl FnOnce() -> T,
    ) {
        if sample.len() < capacity {
            sample.push(make());
            return;
        }
        let k = self.next_u64() % seen.max(1);
        if let Some(slot) = sample.get_mut(k as usize) {
            *slot = make();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seed: u64, n: u64, capacity: usize) -> Vec<u64> {
        let (mut rng, mut kept) = (SplitMix(seed), Vec::new());
        for i in 1..=n {
            rng.sample_into(i, capacity, &mut kept, || i);
        }
        kept
    }

    #[test]
    fn a_reservoir_keeps_each_item_with_equal_chance_and_the_same_items_for_a_seed() {
        assert_eq!(sample(3, 5, 10), [1, 2, 3, 4, 5]);
        assert_eq!(sample(3, 1000, 10), sample(3, 1000, 10));
        // Over 2,000 seeds each of 100 items is kept about 2,000 x 10 / 100 = 200 times.
        let mut hits = [0u32; 100];
        for seed in 0..2000 {
            for i in sample(seed, 100, 10) {
                hits[i as usize - 1] += 1;
            }
        }
        let (lo, hi) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
        assert!(*lo > 140 && *hi < 260, "{lo}..{hi}");
        // The early items are not favoured: the first and the last ten are kept alike.
        let first: u32 = hits[..10].iter().sum();
        let last: u32 = hits[90..].iter().sum();
        assert!(
            (first as f64 / last as f64 - 1.0).abs() < 0.15,
            "{first} vs {last}"
        );
    }
}
