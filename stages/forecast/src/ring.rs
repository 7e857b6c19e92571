//! A bounded ring of a series' recent values: its history at full precision, its forecasts'
//! errors in single precision ([`Errors`]).

use std::collections::VecDeque;
use std::fmt::Debug;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use wfe_domain::stats::quantiles_select;

use crate::config::ForecastConfig;
use crate::times::Times;

/// How a ring holds its values: read and written as `f64`, stored as `Self`.
pub(crate) trait Value: Copy + Debug + Default + Send + Sync + 'static {
    fn wide(self) -> f64;
    fn narrow(v: f64) -> Self;
}

impl Value for f64 {
    fn wide(self) -> f64 {
        self
    }
    fn narrow(v: f64) -> Self {
        v
    }
}

impl Value for f32 {
    fn wide(self) -> f64 {
        f64::from(self)
    }
    fn narrow(v: f64) -> Self {
        v as f32
    }
}

/// A ring of forecast errors. Single precision: an error is read through its quantiles and
/// its mean (relative error 6e-8, far below any forecast's), and a default-job workload holds
/// a few thousand errors per series (its baselines' at every step, each fitted model's point
/// and level errors at every forecast): in `f64` they were a third of its memory at 10,000
/// workloads. The history, which the models read, stays `f64`.
pub(crate) type Errors = Ring<f32>;

/// A bounded series of recent values (NaN = missing), with the running sum of |value| over
/// its finite values so a mean absolute error costs nothing to read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Ring<V: Value = f64> {
    pub(crate) cap: usize,
    /// Written as `f64` whatever `V` is: a state's bytes are the same for both, so states
    /// written before the errors were single precision restore as they were.
    #[serde(serialize_with = "wide", deserialize_with = "narrow")]
    pub(crate) values: VecDeque<V>,
    /// Event time (ms) of each value: what anomaly masking matches. In runs of equal steps
    /// ([`Times`]): stored one by one they were half of the ring's memory.
    pub(crate) times: Times,
    pub(crate) abs_sum: f64,
    pub(crate) finite: usize,
    /// Quantiles of the values at the configured levels, and calls since they were computed.
    pub(crate) offsets: Vec<f64>,
    pub(crate) age: usize,
    /// Values ever dropped from the front: `values[i]` is the ring's value number `start + i`.
    /// A changelog keeps the ring in runs by that number ([`crate::runs`]), so a value keeps
    /// its run while the ring moves. Not in the ring's own bytes (their format stays).
    #[serde(skip)]
    pub(crate) start: u64,
}

fn wide<V: Value, S: Serializer>(values: &VecDeque<V>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| v.wide()))
}

fn narrow<'de, V: Value, D: Deserializer<'de>>(d: D) -> Result<VecDeque<V>, D::Error> {
    let wide = Vec::<f64>::deserialize(d)?;
    Ok(wide.into_iter().map(V::narrow).collect())
}

impl<V: Value> Ring<V> {
    /// An empty ring of at most `cap` values. Its memory grows with what it holds (by half again,
    /// then exactly to `cap`), not with `cap`: a fleet's new workloads hold little for days,
    /// and a few rings of 2,016 residuals preallocated were most of a workload's memory.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            values: VecDeque::new(),
            times: Times::default(),
            abs_sum: 0.0,
            finite: 0,
            offsets: Vec::new(),
            age: 0,
            start: 0,
        }
    }
    /// The ring without its first `skip` values (a changelog's tail), its running sums kept:
    /// they are of the whole ring, which a restore puts back together.
    pub(crate) fn tail(&self, skip: usize) -> Ring<V> {
        Ring {
            cap: self.cap,
            values: self.values.range(skip..).copied().collect(),
            times: self.times.range(skip, self.times.len()).collect(),
            abs_sum: self.abs_sum,
            finite: self.finite,
            offsets: self.offsets.clone(),
            age: self.age,
            start: self.start + skip as u64,
        }
    }
    /// Adds a value; returns the one it pushed out, if the ring was full.
    pub(crate) fn push(&mut self, t: i64, v: f64) -> Option<(i64, f64)> {
        let mut evicted = None;
        if self.values.len() == self.cap {
            let old_t = self.times.pop_front();
            let old = self.values.pop_front().map(V::wide);
            self.start += u64::from(old.is_some());
            if let Some(o) = old.filter(|o| o.is_finite()) {
                self.abs_sum -= o.abs();
                self.finite -= 1;
            }
            evicted = old_t.zip(old);
        }
        // The sums count the value as stored, so that dropping it takes back what it added.
        let v = V::narrow(v);
        let wide = v.wide();
        if wide.is_finite() {
            self.abs_sum += wide.abs();
            self.finite += 1;
        }
        self.room_for_one();
        // Kept in time order: a fitted model's errors can be filed out of order (a forecast
        // whose target passed before it was registered is resolved at once).
        if self.times.back().is_none_or(|b| b <= t) {
            self.values.push_back(v);
            self.times.push_back(t);
        } else {
            let at = self.times.partition_point(|x| x <= t);
            self.values.insert(at, v);
            self.times.insert(at, t);
        }
        evicted
    }
    /// Capacity for one more value: doubled while under `cap`, never past it.
    fn room_for_one(&mut self) {
        let (len, have) = (self.values.len(), self.values.capacity());
        if len < have {
            return;
        }
        // By half again, not double: a workload's dozen rings hold most of its memory, and
        // doubling left up to half of each unused (576 residuals in room for 1,024).
        let want = (have.max(4) * 3 / 2).min(self.cap.max(len + 1));
        self.values.reserve_exact(want - len);
    }

    /// Count and mean absolute value of the finite entries at or before `until`.
    pub(crate) fn stats_until(&self, until: i64) -> (usize, f64) {
        let end = self.times.partition_point(|x| x <= until);
        let (mut n, mut sum) = (0, 0.0);
        for v in self.values.range(..end).map(|v| v.wide()) {
            if v.is_finite() {
                n += 1;
                sum += v.abs();
            }
        }
        (n, sum / n.max(1) as f64)
    }
    /// The quantile at `level` of the entries at or before `until` (a sample of at most
    /// `quantile_sample`), or None with fewer than `min_residuals` of them.
    pub(crate) fn level_offset_until(
        &self,
        level: f64,
        until: i64,
        cfg: &ForecastConfig,
        scratch: &mut Vec<f64>,
    ) -> Option<f64> {
        let end = self.times.partition_point(|x| x <= until);
        let stride = end.div_ceil(cfg.quantile_sample.max(1)).max(1);
        scratch.clear();
        scratch.extend(
            self.values
                .range(..end)
                .rev()
                .step_by(stride)
                .map(|v| v.wide())
                .filter(|v| v.is_finite()),
        );
        (scratch.len() >= cfg.min_residuals.max(1)).then(|| quantiles_select(scratch, &[level])[0])
    }
    /// Drops the entries at or before `t`.
    pub(crate) fn clear_until(&mut self, t: i64) {
        while self.times.front().is_some_and(|x| x <= t) {
            self.times.pop_front();
            self.start += 1;
            if let Some(v) = self
                .values
                .pop_front()
                .map(V::wide)
                .filter(|v| v.is_finite())
            {
                self.abs_sum -= v.abs();
                self.finite -= 1;
            }
        }
    }
    /// Drops (sets missing) the values whose time is in `[start, end]`; returns how many.
    pub(crate) fn mask(&mut self, start: i64, end: i64) -> u64 {
        let from = self.times.partition_point(|t| t < start);
        let mut n = 0;
        let times = self.times.range(from, self.times.len());
        for (v, _) in (self.values.range_mut(from..)).zip(times.take_while(|&t| t <= end)) {
            let wide = v.wide();
            if wide.is_finite() {
                self.abs_sum -= wide.abs();
                self.finite -= 1;
                *v = V::narrow(f64::NAN);
                n += 1;
            }
        }
        if n > 0 {
            // The error quantiles are stale: recompute at the next forecast.
            self.offsets.clear();
        }
        n
    }
    /// Mean absolute value of the finite entries.
    pub(crate) fn mae(&self) -> f64 {
        self.abs_sum.max(0.0) / self.finite.max(1) as f64
    }
    /// The value at event time `t`, if held and observed.
    pub(crate) fn at(&self, t: i64) -> Option<f64> {
        let i = self.times.partition_point(|x| x < t);
        (self.times.get(i) == Some(t))
            .then(|| self.values[i].wide())
            .filter(|v| v.is_finite())
    }
    /// The value `back` steps before the latest (0 = latest).
    pub(crate) fn ago(&self, back: usize) -> Option<f64> {
        let n = self.values.len();
        (back < n)
            .then(|| self.values[n - 1 - back].wide())
            .filter(|v| v.is_finite())
    }
    /// The quantiles of the errors at the configured levels, recomputed every
    /// `quantile_refresh` calls (the window moves little between two issuances).
    pub(crate) fn quantiles(&mut self, cfg: &ForecastConfig, scratch: &mut Vec<f64>) -> &[f64] {
        if self.offsets.len() != cfg.quantiles.len() || self.age >= cfg.quantile_refresh.max(1) {
            self.finite_into(scratch, cfg.quantile_sample);
            self.offsets = quantiles_select(scratch, &cfg.quantiles);
            self.age = 0;
        }
        self.age += 1;
        &self.offsets
    }

    /// Copies the finite entries into `out` (reused between calls), every `stride`-th one
    /// counted back from the newest, so the quantiles of a long window cost a bounded sample.
    pub(crate) fn finite_into(&self, out: &mut Vec<f64>, max_sample: usize) {
        out.clear();
        let stride = self.values.len().div_ceil(max_sample.max(1)).max(1);
        out.extend(
            self.values
                .iter()
                .rev()
                .step_by(stride)
                .map(|v| v.wide())
                .filter(|v| v.is_finite()),
        );
    }
    /// The value at index `i` (NaN = missing).
    pub(crate) fn value(&self, i: usize) -> f64 {
        self.values[i].wide()
    }
}

#[cfg(test)]
mod tests {
    use super::{Errors, Ring};
    use wfe_contract::state::{decode, encode};

    /// A ring's memory follows what it holds, up to its bound, and it keeps the newest `cap`.
    #[test]
    fn memory_grows_with_the_values_up_to_the_bound() {
        let mut r: Ring = Ring::new(2016);
        for t in 0..3 {
            r.push(t, t as f64);
        }
        assert!(r.values.capacity() < 64, "{}", r.values.capacity());
        for t in 3..5000 {
            r.push(t, t as f64);
        }
        assert_eq!(r.values.len(), 2016);
        assert_eq!(r.times.front(), Some(5000 - 2016));
        assert!(r.values.capacity() < 2 * 2016, "{}", r.values.capacity());
        assert_eq!(r.finite, 2016);
    }

    /// An error ring's state is the bytes of the same ring in `f64` (the format states were
    /// written in before), and each reads the other's.
    #[test]
    fn error_rings_write_and_read_the_format_of_full_precision_ones() {
        let (mut wide, mut narrow): (Ring, Errors) = (Ring::new(8), Ring::new(8));
        for (t, v) in [(0, 0.5), (300, f64::NAN), (600, -0.25), (900, 1.0 / 1024.0)] {
            wide.push(t, v);
            narrow.push(t, v);
        }
        let bytes = encode("forecast", &wide).unwrap().unwrap();
        let same = encode("forecast", &narrow).unwrap().unwrap();
        assert_eq!(bytes, same);
        let back: Errors = decode("forecast", &bytes).unwrap();
        assert_eq!(back.value(2), -0.25);
        assert!(back.value(1).is_nan());
        assert_eq!((back.finite, back.abs_sum), (3, narrow.abs_sum));
    }

    /// The running sums count a value as the ring stores it: a value that single precision
    /// rounds is taken back exactly when it leaves, so the sums do not drift.
    #[test]
    fn sums_count_the_stored_value() {
        let mut r: Errors = Ring::new(4);
        for t in 0..1000 {
            r.push(t, 0.1 + t as f64 * 1e-9);
        }
        r.mask(0, 1000);
        // What rounding of the sum itself leaves (counting the value before it was stored
        // left about 1e-7).
        assert!(r.abs_sum.abs() < 1e-12 && r.finite == 0, "{}", r.abs_sum);
        r.push(1000, 0.1);
        assert!((r.mae() - f64::from(0.1f32)).abs() < 1e-12, "{}", r.mae());
    }
}
