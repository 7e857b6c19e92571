//! Retiring idle workloads, so that a stage running for months holds the workloads of its
//! recent past only.
//!
//! Workloads come and go (a pod's name carries a random suffix; a batch job runs once), and a
//! stage that keeps every one it has seen grows for ever. A workload that has brought no new
//! step for `retire_after_s` of **wall-clock** time is dropped with its name; if it comes back
//! it starts afresh. Wall clock, not event time: the event times of different sources need
//! not be aligned (two data sets recorded years apart, replayed together), so no workload's
//! silence can be read from another's clock; and a replay of recorded data, which runs fast,
//! retires nothing, so replays stay deterministic. The [`Sweep`] looks every eighth of the
//! window (at least a minute); its bookkeeping is not part of a snapshot (after a restart every
//! workload counts as seen then), so snapshots keep their format.

pub use wfe_contract::norm::Retired;
use wfe_contract::norm::{HasSlots, Keyed};

/// Seconds since the Unix epoch, the clock sweeps read by default.
pub fn wall_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When to look for idle workloads, and when each was last seen to move on.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The clock (seconds); tests drive their own.
    pub clock: fn() -> u64,
    swept: Option<u64>,
    /// Per workload index: its progress marker (newest step) at the last sweep that saw it
    /// change, and when that was.
    marks: Vec<(Option<i64>, u64)>,
}

impl Default for Sweep {
    fn default() -> Self {
        Self {
            clock: wall_s,
            swept: None,
            marks: Vec::new(),
        }
    }
}

impl Sweep {
    /// When a sweep is due (`retire_after_s` of 0: never), which workloads are idle: those
    /// whose progress marker (`progress`, per workload index: its newest step) has not moved
    /// for `retire_after_s`. `None` when no sweep is due or none is idle. After dropping the
    /// marked workloads, call [`Sweep::forget`] with the same marks.
    pub fn idle(
        &mut self,
        retire_after_s: u64,
        progress: impl Iterator<Item = Option<i64>>,
    ) -> Option<Vec<bool>> {
        if retire_after_s == 0 {
            return None;
        }
        let now = (self.clock)();
        let every = (retire_after_s / 8).max(60);
        if self.swept.is_some_and(|s| now < s.saturating_add(every)) {
            return None;
        }
        self.swept = Some(now);
        let mut idle = Vec::new();
        for (i, p) in progress.enumerate() {
            if i == self.marks.len() {
                self.marks.push((p, now));
            }
            let m = &mut self.marks[i];
            if m.0 != p {
                *m = (p, now);
            }
            idle.push(now.saturating_sub(m.1) >= retire_after_s);
        }
        idle.contains(&true).then_some(idle)
    }

    /// Drops the marks of the workloads `gone` says were dropped (the rest keep their order).
    pub fn forget(&mut self, gone: &[bool]) {
        let mut i = 0;
        self.marks.retain(|_| {
            i += 1;
            !gone.get(i - 1).copied().unwrap_or(false)
        });
    }
}

/// When a sweep is due, retires the workloads of `keyed` whose newest step
/// ([`wfe_contract::norm::Slots::last_step`]) has not moved for `retire_after_s`; what a stage after
/// normalise calls after each batch.
pub fn sweep_idle<T: HasSlots>(
    keyed: &mut Keyed<T>,
    sweep: &mut Sweep,
    retire_after_s: u64,
) -> Option<Retired<T>> {
    let progress = keyed.items.iter_mut().map(|w| w.slots_mut().last_step);
    let gone = sweep.idle(retire_after_s, progress)?;
    sweep.forget(&gone);
    Some(keyed.retire(&gone))
}

/// The documented default of every stage's `retire_after_s`: a week.
pub const RETIRE_AFTER_S: u64 = 7 * 86_400;

/// A clock tests set, per thread: to run recorded event time through a stage as if it were
/// live (`sweep.clock = test_clock::now`, then [`test_clock::set`] before each batch).
pub mod test_clock {
    use std::cell::Cell;

    thread_local!(static NOW: Cell<u64> = const { Cell::new(0) });

    pub fn now() -> u64 {
        NOW.with(Cell::get)
    }

    pub fn set(s: u64) {
        NOW.with(|n| n.set(s));
    }
}

#[cfg(test)]
mod tests {
    use super::test_clock::now;
    use super::*;

    #[test]
    fn a_workload_whose_progress_stops_for_the_window_is_idle_and_marks_follow_retirement() {
        let mut s = Sweep {
            clock: now,
            ..Default::default()
        };
        test_clock::set(1_000);
        // First sight: nobody idle.
        assert_eq!(s.idle(800, [Some(1), Some(1)].into_iter()), None);
        // Too soon for another sweep (every 100 s).
        test_clock::set(1_050);
        assert_eq!(s.idle(800, [Some(1), Some(1)].into_iter()), None);
        // Workload 1 moves on; 0 does not, and a third appears.
        test_clock::set(1_500);
        assert_eq!(s.idle(800, [Some(1), Some(2), None].into_iter()), None);
        test_clock::set(1_800);
        let idle = s.idle(800, [Some(1), Some(2), None].into_iter()).unwrap();
        assert_eq!(idle, [true, false, false]);
        s.forget(&idle);
        assert_eq!(s.marks, [(Some(2), 1_500), (None, 1_500)]);
        assert_eq!(s.idle(0, [Some(9)].into_iter()), None, "0: never");
    }
}
