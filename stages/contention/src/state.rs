//! What the contention stage keeps per workload: where it runs, its forecasts by issuance
//! (the one in force and those waiting to be planned), and its observed demand over the
//! history correlations are read from. One changelog entry per workload, and one for what
//! they share (the newest issuance planned).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use wfe_contract::Result;
use wfe_contract::state::{Split, StageState};
use wfe_kube::contention::hostsum::Demand;

use crate::config::{ContentionConfig, MAX_ISSUANCES, MAX_POINTS};

/// One workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The host its `host_label` label last named.
    pub label_host: Option<String>,
    /// A move planned for it: the destination, and the label its host had then. The move
    /// stands until the label changes (the workload was placed anew, by whoever runs it).
    pub moved: Option<(String, Option<String>)>,
    /// Its `env.*` labels (see `wfe_contract::schemas::labels::environment`).
    pub environment: Option<String>,
    /// Its issuances read: time -> demand per horizon (s). The newest at or before the last
    /// planned time, and every later one (waiting for the other workloads to reach it).
    pub issuances: BTreeMap<i64, BTreeMap<i64, Demand>>,
    /// Observed demand `(time, value)`, in time order.
    pub history: VecDeque<(i64, f64)>,
    /// In a replay: the source batch (sequence number) it was last observed in, and its
    /// first time observed there. Forecasts made from an earlier batch have all been read.
    pub seq: Option<(i64, i64)>,
    /// The label set its host and environment were last read from (not kept: a restored
    /// stage reads them again from the next sample).
    #[serde(skip)]
    pub seen_labels: Option<String>,
}

impl Entry {
    /// The host it runs on: a planned move while its label stands, else the configured
    /// placement, else its label.
    pub fn host<'a>(&'a self, workload: &str, cfg: &'a ContentionConfig) -> Option<&'a str> {
        if let Some((to, then)) = &self.moved
            && *then == self.label_host
        {
            return Some(to);
        }
        cfg.placement
            .get(workload)
            .or(self.label_host.as_ref())
            .map(String::as_str)
    }

    /// Its host label as last seen; a new one ends a planned move.
    pub fn set_label(&mut self, host: Option<&str>) {
        if self.label_host.as_deref() != host {
            self.label_host = host.map(str::to_string);
            self.moved = None;
        }
    }

    /// The newest time observed.
    pub fn last_observed(&self) -> Option<i64> {
        self.history.back().map(|(t, _)| *t)
    }

    /// An observation; one not after the newest is a repeat (an at-least-once redelivery)
    /// and is dropped. Past [`MAX_POINTS`] the oldest goes ([`Entry::planned`] trims what
    /// planning no longer reads).
    pub fn observe(&mut self, time: i64, value: f64) {
        if self.history.back().is_some_and(|(t, _)| *t >= time) || !value.is_finite() {
            return;
        }
        self.history.push_back((time, value));
        if self.history.len() > MAX_POINTS {
            self.history.pop_front();
        }
    }

    /// A forecast row. Past [`MAX_ISSUANCES`] waiting, the oldest goes (a workload holding
    /// half as many forces planning, see `ready::PLAN_AFTER`, so this is the last bound).
    pub fn forecast(&mut self, at: i64, horizon_s: i64, demand: Demand) {
        self.issuances
            .entry(at)
            .or_default()
            .insert(horizon_s, demand);
        while self.issuances.len() > MAX_ISSUANCES {
            self.issuances.pop_first();
        }
    }

    /// Its newest issuance read.
    pub fn newest(&self) -> Option<i64> {
        self.issuances.last_key_value().map(|(t, _)| *t)
    }

    /// Its newest issuance at or before `t`: when, and its demand per horizon.
    pub fn demand_at(&self, t: i64) -> Option<(i64, &BTreeMap<i64, Demand>)> {
        self.issuances.range(..=t).next_back().map(|(k, d)| (*k, d))
    }

    /// Forgets what planning at `t` made old: the issuances before the newest at or before
    /// `t`, and the observations before `from` (a later issuance reads none of them).
    pub fn planned(&mut self, t: i64, from: i64) {
        if let Some(&keep) = self.issuances.range(..=t).next_back().map(|(k, _)| k) {
            self.issuances = self.issuances.split_off(&keep);
        }
        while self.history.front().is_some_and(|(x, _)| *x < from) {
            self.history.pop_front();
        }
    }

    /// The history in `[from, to)`, contiguous (the ring's two halves made one when split).
    pub fn window(&mut self, from: i64, to: i64) -> &[(i64, f64)] {
        let all = self.history.make_contiguous();
        let lo = all.partition_point(|(t, _)| *t < from);
        let hi = all.partition_point(|(t, _)| *t < to);
        &all[lo..hi]
    }
}

/// The stage's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub workloads: BTreeMap<String, Entry>,
    pub shared: Shared,
}

/// What the workloads share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    /// The newest issuance planned at: a row issued at or before it comes late and plans
    /// nothing of its own.
    pub planned: Option<i64>,
}

impl StageState for State {
    fn split(&self, stage: &str) -> Result<Split> {
        let mut s = Split::new();
        s.put_shared(stage, &self.shared)?;
        s.put_unordered(
            stage,
            "w",
            self.workloads.iter().map(|(w, e)| (w.as_str(), e)),
        )?;
        Ok(s)
    }

    fn from_split(stage: &str, split: Split) -> Result<Self> {
        Ok(Self {
            shared: split.shared(stage)?,
            workloads: split.items(stage, "w")?.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_stands_until_the_label_changes() {
        let cfg = ContentionConfig::default();
        let mut e = Entry::default();
        e.set_label(Some("h1"));
        e.moved = Some(("h2".into(), Some("h1".into())));
        assert_eq!(e.host("w", &cfg), Some("h2"));
        e.set_label(Some("h1"));
        assert_eq!(e.host("w", &cfg), Some("h2"));
        e.set_label(Some("h3"));
        assert_eq!((e.host("w", &cfg), &e.moved), (Some("h3"), &None));
    }

    #[test]
    fn history_drops_repeats_and_what_planning_made_old() {
        let mut e = Entry::default();
        for t in [10, 20, 20, 15, 30, 40] {
            e.observe(t, t as f64);
        }
        e.observe(50, f64::NAN);
        assert_eq!(e.history, [(10, 10.0), (20, 20.0), (30, 30.0), (40, 40.0)]);
        assert_eq!(e.window(11, 31), [(20, 20.0), (30, 30.0)]);
        e.planned(40, 25);
        assert_eq!(e.history, [(30, 30.0), (40, 40.0)]);
    }

    #[test]
    fn split_and_back_is_the_same_state() {
        let mut st = State::default();
        st.shared.planned = Some(7);
        let mut e = Entry::default();
        e.observe(1, 2.0);
        e.forecast(3, 900, Demand { mean: 1.0, sd: 0.5 });
        e.forecast(5, 900, Demand { mean: 2.0, sd: 0.5 });
        e.forecast(9, 900, Demand { mean: 3.0, sd: 0.5 });
        assert_eq!(e.demand_at(8).unwrap().1[&900].mean, 2.0);
        assert_eq!(e.demand_at(2), None);
        e.planned(8, 0);
        assert_eq!(e.issuances.keys().copied().collect::<Vec<_>>(), [5, 9]);
        st.workloads.insert("b".into(), e);
        st.workloads.insert("a".into(), Entry::default());
        let back = State::from_split("contention", st.split("contention").unwrap()).unwrap();
        assert_eq!(back, st);
    }
}
