//! When an issuance can be planned: once every placed workload's forecasts of it have been
//! read. Workloads reach the stage out of step (a replay's learning period goes out workload
//! by workload; over Kafka each partition, and each input topic, at its own pace), so an
//! issuance one workload's forecasts reached may still be coming for another's.
//!
//! Issuance `t` is ready when (before the first planning) every workload of the configured
//! placement has been seen, and every workload (live: every one observed within `max_wait_s`
//! of the newest observation) has been observed at or after `t` and is done with it:
//! - it has been forecast at or after `t`; or
//! - in a replay (inputs numbered by the source batch they descend from: embedded, and the
//!   contention service of a Kafka replay, which merges every partition of its inputs in that
//!   order), its sample of `t` came in an earlier batch than its newest: every forecast made
//!   from that batch has been read before the next batch's samples; or
//! - live (no numbering), it was observed more than `max_wait_s` past `t` without one (its
//!   forecast is not coming: too little history yet, or a resource it does not have).
//!
//! An issuance is also planned when some workload holds [`PLAN_AFTER`] issuances waiting
//! (the bound on what waiting keeps), and at the end of the input.

use crate::config::{ContentionConfig, MAX_ISSUANCES};
use crate::state::{Entry, State};

/// Issuances a workload may hold waiting before the oldest is planned whatever the rest.
pub const PLAN_AFTER: usize = MAX_ISSUANCES / 2;

/// Whether issuance `t` can be planned (`end`: the input is over).
pub fn is_ready(state: &State, cfg: &ContentionConfig, t: i64, end: bool) -> bool {
    let ms = |s: i64| s.saturating_mul(1000);
    let full = || {
        state
            .workloads
            .values()
            .any(|e| e.issuances.range(t..).count() >= PLAN_AFTER)
    };
    let Some(newest) = state
        .workloads
        .values()
        .filter_map(Entry::last_observed)
        .max()
    else {
        return true;
    };
    if end || full() {
        return true;
    }
    // Before the first planning, every workload of the configured placement is waited for
    // until seen in metrics.norm at all (one whose resource it lacks is never observed, and
    // never forecast: it is not waited for); after it, one that appears is new, and one that
    // is gone (retired) is not waited for either.
    let seen = |w: &String| state.workloads.contains_key(w);
    let placed_seen = state.shared.planned.is_some() || cfg.placement.keys().all(seen);
    let live = state.workloads.values().all(|e| e.seq.is_none());
    let since = newest.saturating_sub(ms(cfg.max_wait_s));
    let done = |e: &Entry, l: i64| {
        e.newest().is_some_and(|n| n >= t)
            || e.seq.is_some_and(|(_, first)| t < first)
            || (live && l.saturating_sub(t) > ms(cfg.max_wait_s))
    };
    // In a replay every workload is waited for however far behind (a learning period may
    // come out days after another's, a source chunk cover days of one workload); one that
    // stopped holds issuances back until PLAN_AFTER forces them and planning retires it.
    placed_seen
        && state.workloads.values().all(|e| match e.last_observed() {
            Some(l) if !live || l >= since => t <= l && done(e, l),
            _ => true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wfe_kube::contention::hostsum::Demand;

    /// Observed and forecast at these seconds; in a replay, last observed in source batch 1
    /// from `seq_from` seconds.
    fn entry(observed: &[i64], forecast: &[i64], seq_from: Option<i64>) -> Entry {
        let mut e = Entry::default();
        for &t in observed {
            e.observe(t * 1000, 1.0);
        }
        for &t in forecast {
            e.forecast(t * 1000, 900, Demand { mean: 1.0, sd: 0.0 });
        }
        e.seq = seq_from.map(|s| (1, s * 1000));
        e
    }

    fn state(entries: Vec<Entry>) -> State {
        let mut s = State::default();
        for (i, e) in entries.into_iter().enumerate() {
            s.workloads.insert(format!("w{i}"), e);
        }
        s
    }

    fn cfg(wait_s: i64) -> ContentionConfig {
        ContentionConfig {
            max_wait_s: wait_s,
            ..Default::default()
        }
    }

    #[test]
    fn a_replay_waits_for_what_the_batch_of_a_sample_may_still_bring() {
        let c = cfg(100);
        // w1 observed to 50 s, not yet forecast: its sample of 40 s came in its newest batch
        // (from 30 s), whose forecasts may still come; from an earlier batch, they are in.
        let s = state(vec![
            entry(&[10, 40], &[40], Some(10)),
            entry(&[10, 50], &[], Some(30)),
        ]);
        assert!(!is_ready(&s, &c, 40_000, false));
        assert!(is_ready(&s, &c, 20_000, false));
        assert!(is_ready(&s, &c, 40_000, true));
        let s = state(vec![
            entry(&[10, 40], &[40], Some(10)),
            entry(&[10, 50], &[], Some(45)),
        ]);
        assert!(is_ready(&s, &c, 40_000, false));
        // Not observed at 41 s yet: w0's forecast of it may come.
        assert!(!is_ready(&s, &c, 41_000, false));
        // A workload of the configured placement not observed yet is waited for.
        let mut placed = c.clone();
        placed.placement.insert("w9".into(), "h1".into());
        assert!(!is_ready(&s, &placed, 20_000, false));
        // Seen, but without the resource (never observed, never forecast): not waited for.
        let mut lacking = s.clone();
        lacking.workloads.insert("w9".into(), Entry::default());
        assert!(is_ready(&lacking, &placed, 20_000, false));
        // Once planning has begun, a placed workload not seen (new, or gone) is not waited for.
        let mut begun = s.clone();
        begun.shared.planned = Some(10_000);
        assert!(is_ready(&begun, &placed, 20_000, false));
    }

    #[test]
    fn live_waits_for_a_forecast_until_the_workload_is_well_past_it() {
        let s = state(vec![
            entry(&[10, 40], &[40], None),
            entry(&[10, 50], &[], None),
        ]);
        assert!(!is_ready(&s, &cfg(100), 40_000, false));
        assert!(is_ready(&s, &cfg(5), 40_000, false));
    }

    #[test]
    fn live_a_workload_far_behind_is_not_waited_for_in_a_replay_it_is() {
        let s = state(vec![
            entry(&[10, 400], &[400], None),
            entry(&[10, 20], &[20], None),
        ]);
        assert!(is_ready(&s, &cfg(100), 300_000, false));
        assert!(!is_ready(&s, &cfg(1_000), 300_000, false));
        let s = state(vec![
            entry(&[10, 400], &[400], Some(10)),
            entry(&[10, 20], &[20], Some(10)),
        ]);
        assert!(!is_ready(&s, &cfg(100), 300_000, false));
        assert!(is_ready(&s, &cfg(100), 20_000, false));
    }

    #[test]
    fn a_workload_holding_too_many_issuances_forces_the_oldest() {
        let many: Vec<i64> = (0..PLAN_AFTER as i64).map(|k| 100 + k).collect();
        let s = state(vec![
            entry(&[10, 100], &many, Some(10)),
            entry(&[10, 20], &[20], Some(10)),
        ]);
        assert!(is_ready(&s, &cfg(1_000), 100_000, false));
        assert!(!is_ready(&s, &cfg(1_000), 101_000, false));
    }
}
