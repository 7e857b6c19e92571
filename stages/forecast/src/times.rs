//! A ring's event times, kept as runs of equal steps.
//!
//! A series arrives at a fixed step and a model's errors at its forecast cadence, so almost
//! every ring's times are one arithmetic run: stored one by one they were half of a ring's
//! memory (8 bytes a value beside the value's 8), and at `residual_window` = 2,016 values a
//! ring, a fleet's week of rings was the largest part of a workload's memory. A run is 32
//! bytes whatever its length; a gap or a late value filed in its place starts at most two more
//! (a masked value keeps its time).
//!
//! The sequence reads and writes like the `VecDeque<i64>` it replaces, serialized the same
//! way (a sequence of `i64`), so states written before it restore unchanged.

use std::collections::VecDeque;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `len` times from `first`, `step` apart. Times are computed with wrapping arithmetic: each
/// is a time that was pushed, so the true value fits in an `i64` and wrapping gives it back.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    first: i64,
    step: i64,
    len: u64,
    /// The index of the run's first time counted from the sequence's first push (a drop from
    /// the front does not move it), so a run is found by binary search.
    at: u64,
}

impl Run {
    fn time(&self, k: u64) -> i64 {
        self.first.wrapping_add(self.step.wrapping_mul(k as i64))
    }
    fn last(&self) -> i64 {
        self.time(self.len - 1)
    }
    /// Whether `t` continues the run (a run of one takes any step that fits).
    fn extends(&self, t: i64) -> bool {
        match self.len {
            0 => false,
            1 => t.checked_sub(self.first).is_some(),
            _ => self.last().checked_add(self.step) == Some(t),
        }
    }
}

/// Event times in the order they were pushed (a ring keeps them sorted), as runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Times {
    runs: VecDeque<Run>,
    /// Times dropped from the front: index `i` is the run index `dropped + i`, and the
    /// length is where the last run ends less this.
    dropped: u64,
}

impl Times {
    pub(crate) fn len(&self) -> usize {
        self.runs
            .back()
            .map_or(0, |r| (r.at + r.len - self.dropped) as usize)
    }
    pub(crate) fn front(&self) -> Option<i64> {
        self.runs.front().map(|r| r.first)
    }
    pub(crate) fn back(&self) -> Option<i64> {
        self.runs.back().map(Run::last)
    }
    /// The time at index `i`.
    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        let (r, k) = self.locate(i)?;
        Some(self.runs[r].time(k))
    }
    pub(crate) fn push_back(&mut self, t: i64) {
        if let Some(run) = self.runs.back_mut().filter(|r| r.extends(t)) {
            if run.len == 1 {
                run.step = t.wrapping_sub(run.first);
            }
            run.len += 1;
            return;
        }
        let at = self.dropped + self.len() as u64;
        // Room by half again, from one: most rings hold one run or two, and a workload has a
        // hundred rings in the default job (the deque's own first growth is to four).
        if self.runs.len() == self.runs.capacity() {
            self.runs.reserve_exact(self.runs.len() / 2 + 1);
        }
        self.runs.push_back(Run {
            first: t,
            step: 0,
            len: 1,
            at,
        });
    }
    pub(crate) fn pop_front(&mut self) -> Option<i64> {
        let run = self.runs.front_mut()?;
        let t = run.first;
        run.first = run.time(1);
        run.len -= 1;
        run.at += 1;
        if run.len == 0 {
            self.runs.pop_front();
        }
        self.dropped += 1;
        Some(t)
    }
    /// Puts `t` at index `at` (a late value filed in its place): the run there splits in two
    /// around a run of one.
    pub(crate) fn insert(&mut self, at: usize, t: i64) {
        if at >= self.len() {
            self.push_back(t);
            return;
        }
        let Some((r, k)) = self.locate(at) else {
            return;
        };
        let run = self.runs[r];
        let one = Run {
            first: t,
            step: 0,
            len: 1,
            at: run.at + k,
        };
        // Every later time moves one place on.
        for later in self.runs.range_mut(r..) {
            later.at += 1;
        }
        if k == 0 {
            self.runs.insert(r, one);
            return;
        }
        let head = Run { len: k, ..run };
        let tail = Run {
            first: run.time(k),
            step: run.step,
            len: run.len - k,
            at: run.at + k + 1,
        };
        self.runs[r] = head;
        self.runs.insert(r + 1, one);
        self.runs.insert(r + 2, tail);
    }
    /// The index of the first time for which `pred` is false (the times are sorted and `pred`
    /// holds for a prefix), as `VecDeque::partition_point`.
    pub(crate) fn partition_point(&self, pred: impl Fn(i64) -> bool) -> usize {
        let r = self.runs.partition_point(|run| pred(run.last()));
        let Some(run) = self.runs.get(r) else {
            return self.len();
        };
        let before = run.at - self.dropped;
        // Within the run: the first k whose time fails `pred` (it fails at the last).
        let (mut lo, mut hi) = (0, run.len - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(run.time(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (before + lo) as usize
    }
    /// The times from index `from` to `to` (exclusive), in order.
    pub(crate) fn range(&self, from: usize, to: usize) -> Iter<'_> {
        let to = to.min(self.len());
        let from = from.min(to);
        let (run, k) = self.locate(from).unwrap_or((self.runs.len(), 0));
        Iter {
            times: self,
            run,
            k,
            left: to - from,
        }
    }
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range(0, self.len())
    }
    /// The run holding index `i` and the index within it.
    fn locate(&self, i: usize) -> Option<(usize, u64)> {
        if i >= self.len() {
            return None;
        }
        let at = self.dropped + i as u64;
        let r = self.runs.partition_point(|run| run.at + run.len <= at);
        Some((r, at - self.runs[r].at))
    }
    /// How many runs hold the times (what their memory follows).
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }
}

/// The times of a [`Times`] from one index on, a known number of them.
#[derive(Clone)]
pub(crate) struct Iter<'a> {
    times: &'a Times,
    run: usize,
    k: u64,
    left: usize,
}

impl Iterator for Iter<'_> {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        if self.left == 0 {
            return None;
        }
        let run = self.times.runs.get(self.run)?;
        let t = run.time(self.k);
        self.k += 1;
        if self.k == run.len {
            (self.run, self.k) = (self.run + 1, 0);
        }
        self.left -= 1;
        Some(t)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl FromIterator<i64> for Times {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        let mut out = Times::default();
        for t in iter {
            out.push_back(t);
        }
        out
    }
}

impl PartialEq for Times {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Serialize for Times {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Times {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq;
        impl<'de> Visitor<'de> for Seq {
            type Value = Times;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of event times (ms)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Times, A::Error> {
                let mut out = Times::default();
                while let Some(t) = seq.next_element::<i64>()? {
                    out.push_back(t);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use wfe_domain::stats::SplitMix;

    use super::Times;

    /// Every operation agrees with a `VecDeque<i64>` doing the same, over a long mix of steps,
    /// gaps, repeats, late inserts and drops from the front.
    #[test]
    fn runs_read_and_write_as_the_plain_sequence() {
        let (mut runs, mut plain) = (Times::default(), VecDeque::<i64>::new());
        let mut rng = SplitMix(7);
        let mut t = -1_000_000i64;
        for i in 0..20_000 {
            let r = rng.below(100) as u64;
            t += match r {
                0..=79 => 300_000,
                80..=84 => 0,
                85..=92 => 300_000 * (1 + r as i64 % 5),
                _ => 7,
            };
            if r % 17 == 3 && !plain.is_empty() {
                let late = t - rng.below(2_000_000) as i64;
                let at = plain.partition_point(|&x| x <= late);
                assert_eq!(runs.partition_point(|x| x <= late), at);
                plain.insert(at, late);
                runs.insert(at, late);
            } else {
                plain.push_back(t);
                runs.push_back(t);
            }
            if plain.len() > 2_016 {
                assert_eq!(runs.pop_front(), plain.pop_front());
            }
            if i % 97 == 0 {
                assert_eq!(runs.len(), plain.len());
                assert!(runs.iter().eq(plain.iter().copied()), "at {i}");
                let probe = t - rng.below(900_000_000) as i64;
                assert_eq!(
                    runs.partition_point(|x| x < probe),
                    plain.partition_point(|&x| x < probe)
                );
                let (a, b) = (plain.len() / 3, plain.len() / 2);
                assert!(runs.range(a, b).eq(plain.range(a..b).copied()));
                assert_eq!(runs.range(a, b).len(), b - a);
                assert_eq!(runs.get(a), plain.get(a).copied());
                assert_eq!(runs.get(plain.len()), None);
            }
            assert_eq!(
                (runs.front(), runs.back()),
                (plain.front().copied(), plain.back().copied())
            );
        }
        while let Some(x) = plain.pop_front() {
            assert_eq!(runs.pop_front(), Some(x));
        }
        assert_eq!((runs.pop_front(), runs.len()), (None, 0));
    }

    /// A regular series is one run whatever its length, held in room for one; a gap starts
    /// one more.
    #[test]
    fn a_regular_series_is_one_run() {
        let mut times: Times = (0..5_000).map(|i| i * 300_000).collect();
        assert_eq!((times.runs(), times.runs.capacity()), (1, 1));
        times.push_back(10_000_000_000);
        times.push_back(10_000_300_000);
        assert_eq!(times.runs(), 2);
        for _ in 0..5_000 {
            times.pop_front();
        }
        assert_eq!((times.runs(), times.len()), (1, 2));
    }

    /// Times at the ends of `i64` (a hostile state's) are held and read back exactly.
    #[test]
    fn extreme_times_come_back_exactly() {
        let xs = [
            i64::MIN,
            -5,
            i64::MAX,
            i64::MAX,
            0,
            i64::MIN + 1,
            i64::MAX - 1,
        ];
        let times: Times = xs.iter().copied().collect();
        assert!(times.iter().eq(xs.iter().copied()));
        let wide: Times = [i64::MIN / 2 - 7, 0, i64::MAX / 2 + 7]
            .into_iter()
            .collect();
        assert_eq!(wide.back(), Some(i64::MAX / 2 + 7));
        assert_eq!(wide.get(1), Some(0));
    }

    /// Written as the sequence of times the ring kept before, so old states read the same.
    #[test]
    fn serialized_as_a_plain_sequence() {
        let plain: Vec<i64> = vec![0, 300, 600, 5, 5, 9];
        let times: Times = plain.iter().copied().collect();
        let json = serde_json::to_string(&times).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        let back: Times = serde_json::from_str(&json).unwrap();
        assert_eq!(back, times);
    }
}
