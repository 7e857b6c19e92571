//! A workload's rings in a changelog: in runs of [`RUN`] values, numbered by each value's place
//! in its ring since the ring began ([`Ring::start`]), so that a value keeps its run while the
//! ring moves and a commit writes the runs that changed (the newest, the oldest while the ring
//! drops values, any a mask touched) and the rings' tails, not every ring whole again. With
//! whole rings in each workload's entry, a replay's commits rewrote every workload's history
//! and error rings at every commit: at 1,000 workloads over two days the forecast service's
//! changelog took 152 MB of the broker's 450 MB, for 49 MB of input.
//!
//! **Entries.** `runs/<workload>:<k>`: for every ring with values numbered in
//! `[k * RUN, (k + 1) * RUN)` before its tail, those values and their times.
//! `pos/<workload>`: per ring kept in runs (or moved since it began), its start and how many
//! of its values the runs hold; a restore checks the runs against it. The workload's own
//! entries (`w/`, and `pairs/` for its paired errors) hold each ring's tail: its values from
//! the end of its last whole run on, with the ring's running sums, which are of the whole
//! ring. A state written before the runs (no `pos/` entry) has its rings whole in its entries.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use wfe_contract::norm::Keyed;
use wfe_contract::state::Split;
use wfe_contract::{Error, Result};

use crate::ring::{Ring, Value};
use crate::series::{Series, Track, Workload};
use crate::times::Iter;

/// Values per run: a run holds a few hours of a series at 5-minute steps, so a commit's newest
/// runs are small, and a two-week history is a few dozen entries.
pub(crate) const RUN: u64 = 64;

/// A ring's place in its workload: series, kind (history, the baselines' errors, a fitted
/// model's point and level errors, the paired errors), model, horizon, level.
type RingId = (usize, u8, usize, usize, usize);

/// One ring's values in one run: the ring, its values' times, the values.
type Part = (RingId, Vec<i64>, Vec<f64>);

/// What the runs read and write of a ring, whatever the precision it stores (values are
/// written as `f64` either way, as [`Ring`]'s own bytes are).
trait Held {
    /// The ring's value number of its first value ([`Ring::start`]).
    fn start(&self) -> u64;
    fn len(&self) -> usize;
    fn times(&self, from: usize, to: usize) -> Iter<'_>;
    fn value(&self, i: usize) -> f64;
    /// Puts a restored ring's runs (`times`, `values`, from value number `start` on) before
    /// the tail it holds.
    fn prepend(&mut self, times: Vec<i64>, values: Vec<f64>, start: u64);
    /// The running sums (what a restore must give back).
    #[cfg(test)]
    fn sums(&self) -> (f64, usize);
}

impl<V: Value> Held for Ring<V> {
    fn start(&self) -> u64 {
        self.start
    }
    fn len(&self) -> usize {
        self.values.len()
    }
    fn times(&self, from: usize, to: usize) -> Iter<'_> {
        self.times.range(from, to)
    }
    fn value(&self, i: usize) -> f64 {
        Ring::value(self, i)
    }
    fn prepend(&mut self, mut times: Vec<i64>, values: Vec<f64>, start: u64) {
        times.extend(self.times.iter());
        let mut all = std::collections::VecDeque::with_capacity(values.len() + self.values.len());
        all.extend(values.into_iter().map(V::narrow));
        all.extend(self.values.drain(..));
        (self.times, self.values) = (times.into_iter().collect(), all);
        self.start = start;
    }
    #[cfg(test)]
    fn sums(&self) -> (f64, usize) {
        (self.abs_sum, self.finite)
    }
}

/// A [`Part`] as written: the ring's values `from..to` in place, encoded as the vectors a
/// [`Part`] decodes (a commit copies no value into a vector of its own first).
struct PartOut<'a>(RingId, &'a dyn Held, usize, usize);

impl Serialize for PartOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let PartOut(id, r, from, to) = *self;
        let times = Seq(r.times(from, to));
        let values = Seq((from..to).map(|i| r.value(i)));
        (id, times, values).serialize(s)
    }
}

/// A sequence written from an iterator of known length.
struct Seq<I>(I);

impl<I: ExactSizeIterator + Clone> Serialize for Seq<I>
where
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// Per ring: its start and the number of its values held in runs.
type Pos = Vec<(RingId, u64, u64)>;

/// Calls `f` with every ring of the workload and its id, in a fixed order.
fn each_ring<'a>(wk: &'a Workload, mut f: impl FnMut(RingId, &'a dyn Held)) {
    for (s, series) in wk.series.iter().enumerate() {
        f((s, 0, 0, 0, 0), &series.history);
        for (h, r) in series.err_persist.iter().enumerate() {
            f((s, 1, 0, h, 0), r);
        }
        for (h, r) in series.err_seasonal.iter().enumerate() {
            f((s, 2, 0, h, 0), r);
        }
        for (m, per_horizon) in series.tracks.iter().enumerate() {
            for (h, t) in per_horizon.iter().enumerate() {
                f((s, 3, m, h, 0), &t.point);
                for (l, r) in t.levels.iter().enumerate() {
                    f((s, 4, m, h, l), r);
                }
            }
        }
        for (h, p) in series.paired.iter().enumerate() {
            f((s, 5, 0, h, 0), &p.persistence);
            f((s, 6, 0, h, 0), &p.seasonal);
        }
    }
}

/// The ring an id names, if the workload has it.
fn ring_mut(wk: &mut Workload, (s, kind, m, h, l): RingId) -> Option<&mut dyn Held> {
    let series = wk.series.get_mut(s)?;
    fn held(r: &mut Ring<f32>) -> &mut dyn Held {
        r
    }
    match kind {
        0 => Some(&mut series.history),
        1 => series.err_persist.get_mut(h).map(held),
        2 => series.err_seasonal.get_mut(h).map(held),
        3 | 4 => {
            let track = series.tracks.get_mut(m)?.get_mut(h)?;
            match kind {
                3 => Some(held(&mut track.point)),
                _ => track.levels.get_mut(l).map(held),
            }
        }
        5 => series.paired.get_mut(h).map(|p| held(&mut p.persistence)),
        6 => series.paired.get_mut(h).map(|p| held(&mut p.seasonal)),
        _ => None,
    }
}

/// How many of the ring's values are in runs: those before the end of its last whole run.
fn in_runs(r: &dyn Held) -> u64 {
    let end = r.start() + r.len() as u64;
    (end / RUN * RUN).saturating_sub(r.start())
}

/// The ring cut to its tail (what [`in_runs`] leaves out).
fn tail<V: Value>(r: &Ring<V>) -> Ring<V> {
    r.tail(in_runs(r) as usize)
}

/// Puts the workload's runs and positions into `split`; returns the workload with each ring
/// cut to its tail (for its own entry).
pub(crate) fn cut(split: &mut Split, stage: &str, name: &str, wk: &Workload) -> Result<Workload> {
    let mut runs: BTreeMap<u64, Vec<PartOut<'_>>> = BTreeMap::new();
    let mut pos = Pos::new();
    each_ring(wk, |id, r| {
        let (n, start) = (in_runs(r), r.start());
        if n > 0 || start > 0 {
            pos.push((id, start, n));
        }
        let (mut at, end) = (start, start + n);
        while at < end {
            let to = ((at / RUN + 1) * RUN).min(end);
            let (i, j) = ((at - start) as usize, (to - start) as usize);
            runs.entry(at / RUN).or_default().push(PartOut(id, r, i, j));
            at = to;
        }
    });
    let keys: Vec<String> = runs.keys().map(|k| format!("{name}:{k}")).collect();
    split.put_unordered(
        stage,
        "runs",
        keys.iter().map(String::as_str).zip(runs.values()),
    )?;
    if !pos.is_empty() {
        split.put_unordered(stage, "pos", [(name, &pos)])?;
    }
    Ok(tail_of(wk))
}

/// The workload with each ring cut to its tail (what [`in_runs`] leaves out); the rest is
/// copied as it is.
fn tail_of(wk: &Workload) -> Workload {
    let series = wk.series.iter().map(|s| Series {
        history: tail(&s.history),
        err_persist: s.err_persist.iter().map(tail).collect(),
        err_seasonal: s.err_seasonal.iter().map(tail).collect(),
        tracks: (s.tracks.iter())
            .map(|per_horizon| {
                (per_horizon.iter())
                    .map(|tr| Track {
                        point: tail(&tr.point),
                        levels: tr.levels.iter().map(tail).collect(),
                    })
                    .collect()
            })
            .collect(),
        pending: s.pending.clone(),
        validated: s.validated,
        issued: s.issued,
        chosen: s.chosen.clone(),
        hold_from: s.hold_from,
        spill: s.spill.clone(),
        memos: s.memos.clone(),
        paired: s.paired.iter().map(|p| p.map_rings(tail)).collect(),
    });
    Workload {
        slots: wk.slots.clone(),
        step_ms: wk.step_ms,
        series: series.collect(),
        res_slots: wk.res_slots.clone(),
        res_slots_at: wk.res_slots_at,
        applies: wk.applies.clone(),
        horizons: wk.horizons.clone(),
        last_issue: wk.last_issue,
    }
}

/// Gives the restored workloads (rings holding their tails) the values their runs hold.
pub(crate) fn put_back(stage: &str, workloads: &mut Keyed<Workload>, split: &Split) -> Result<()> {
    let mut runs: BTreeMap<String, BTreeMap<u64, Vec<Part>>> = BTreeMap::new();
    for (key, parts) in split.items::<Vec<Part>>(stage, "runs")? {
        let parsed = key
            .rsplit_once(':')
            .and_then(|(name, k)| Some((name, k.parse::<u64>().ok()?)));
        let Some((name, k)) = parsed else {
            return Err(Error::state(
                stage,
                format!("ring run `{key}` is not `<workload>:<run>`"),
            ));
        };
        runs.entry(name.to_string()).or_default().insert(k, parts);
    }
    for (name, pos) in split.items::<Pos>(stage, "pos")? {
        let lost = |what: String| Error::state(stage, format!("rings of `{name}`: {what}"));
        let Some(slot) = workloads.names.find(&name) else {
            return Err(lost("a workload the state does not have".into()));
        };
        let wk = &mut workloads.items[slot as usize];
        // Each ring's values from its runs, in run order.
        let mut held: BTreeMap<RingId, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
        for (_, parts) in runs.remove(&name).unwrap_or_default() {
            for (id, t, v) in parts {
                let (times, values) = held.entry(id).or_default();
                times.extend(t);
                values.extend(v);
            }
        }
        for (id, start, n) in pos {
            let (times, values) = held.remove(&id).unwrap_or_default();
            let ring = ring_mut(wk, id).ok_or_else(|| lost(format!("no ring {id:?}")))?;
            if values.len() as u64 != n || times.len() != values.len() {
                return Err(lost(format!(
                    "ring {id:?} has {} values in runs where {n} were written (records lost)",
                    values.len()
                )));
            }
            ring.prepend(times, values, start);
        }
        if let Some(id) = held.keys().next() {
            return Err(lost(format!(
                "runs hold ring {id:?}, which its positions do not name"
            )));
        }
    }
    if let Some(name) = runs.keys().next() {
        return Err(Error::state(
            stage,
            format!("ring runs of `{name}`, which has no positions in the state"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ForecastConfig;
    use crate::series::new_series;

    /// Every ring as (id, start, times, value bits).
    type Seen = Vec<(RingId, u64, Vec<i64>, Vec<u64>, u64, usize)>;

    fn seen(wk: &Workload) -> Seen {
        let mut out = Vec::new();
        each_ring(wk, |id, r| {
            let bits = (0..r.len()).map(|i| r.value(i).to_bits()).collect();
            let times = r.times(0, r.len()).collect();
            let (sum, finite) = r.sums();
            out.push((id, r.start(), times, bits, sum.to_bits(), finite));
        });
        out
    }

    /// A workload whose rings moved as a live one's do: a short history that drops values,
    /// errors with gaps, one filed late (inserted), some masked, some cleared.
    fn fleet(steps: i64) -> Keyed<Workload> {
        let cfg = ForecastConfig::default();
        let mut wk = Workload {
            series: vec![new_series(&cfg, 300_000)],
            ..Default::default()
        };
        let s = &mut wk.series[0];
        s.history = Ring::new(150);
        for t in 0..steps {
            s.history.push(t, (t as f64 / 9.0).sin());
            let e = if t % 7 == 0 {
                f64::NAN
            } else {
                t as f64 / 100.0
            };
            if t % 50 == 49 {
                s.err_persist[0].push(t - 3, e);
            }
            s.err_persist[0].push(t, e);
            s.err_seasonal[0].push(t, -e);
        }
        s.err_persist[0].mask(10, 20);
        s.err_seasonal[0].clear_until(70);
        Keyed::from_items(vec![("machine-1-1".into(), wk)])
    }

    fn split_of(w: &Keyed<Workload>) -> (Split, Keyed<Workload>) {
        let mut split = Split::new();
        let tails = (w.iter())
            .map(|(n, wk)| (n.to_string(), cut(&mut split, "forecast", n, wk).unwrap()))
            .collect();
        (split, Keyed::from_items(tails))
    }

    /// Runs and tails give back every ring as it was: values, times, running sums, start.
    #[test]
    fn a_workload_comes_back_whole_from_its_tails_and_runs() {
        let w = fleet(500);
        let (split, mut tails) = split_of(&w);
        let keys: Vec<&String> = split.entries().keys().collect();
        assert!(
            keys.iter().any(|k| k.starts_with("runs/machine-1-1:")),
            "{keys:?}"
        );
        assert!(keys.iter().any(|k| *k == "pos/machine-1-1"), "{keys:?}");
        // The tails hold less than a run per ring.
        each_ring(&tails.items[0], |id, r| {
            assert!((r.len() as u64) < RUN, "{id:?}")
        });
        assert_ne!(seen(&tails.items[0]), seen(&w.items[0]));
        put_back("forecast", &mut tails, &split).unwrap();
        assert_eq!(seen(&tails.items[0]), seen(&w.items[0]));
        assert_eq!(w.items[0].series[0].history.start, 350);
    }

    /// One more step rewrites a ring's newest run and tail, not its history: a commit's bytes
    /// follow what changed.
    #[test]
    fn a_step_changes_few_of_the_entries_bytes() {
        let cfg = ForecastConfig::default();
        let mut wk = Workload {
            series: vec![new_series(&cfg, 300_000)],
            ..Default::default()
        };
        let mut w = Keyed::default();
        let s = &mut wk.series[0];
        for t in 0..1000 {
            s.history.push(t, (t as f64 / 9.0).sin());
            s.err_persist[0].push(t, t as f64);
        }
        w.items.push(wk);
        w.names.slot("machine-1-1");
        let before = split_of(&w).0;
        w.items[0].series[0].history.push(1000, 0.5);
        w.items[0].series[0].err_persist[0].push(1000, 0.5);
        let after = split_of(&w).0;
        let total: usize = after.entries().values().map(Vec::len).sum();
        let changed: Vec<(&String, usize)> = (after.entries().iter())
            .filter(|(k, v)| before.entries().get(*k) != Some(*v))
            .map(|(k, v)| (k, v.len()))
            .collect();
        let bytes: usize = changed.iter().map(|c| c.1).sum();
        assert!(
            bytes * 10 < total,
            "{bytes} of {total} bytes changed: {changed:?}"
        );
    }

    /// A run the changelog lost, or runs of a workload without positions, fail the restore.
    #[test]
    fn a_restore_missing_a_run_says_so() {
        let w = fleet(500);
        let (split, tails) = split_of(&w);
        let mut entries = split.into_entries();
        let run = entries
            .keys()
            .find(|k| k.starts_with("runs/"))
            .unwrap()
            .clone();
        let removed = entries.remove(&run).unwrap();
        let mut t = tails.clone();
        let e = put_back("forecast", &mut t, &Split::from_entries(entries.clone())).unwrap_err();
        assert!(e.to_string().contains("records lost"), "{e}");
        entries.insert(run, removed);
        entries.remove("pos/machine-1-1");
        let mut t = tails.clone();
        let e = put_back("forecast", &mut t, &Split::from_entries(entries)).unwrap_err();
        assert!(e.to_string().contains("no positions"), "{e}");
    }
}
