//! Segments: how scored steps become the events an operator sees. A step over the threshold
//! opens a segment, a new peak inside it updates it, and `close_after` steps in a row under
//! the threshold close it (its end is its last step over the threshold). The stage writes a
//! row per change; `wfe eval anomaly` replays the same rule to count alerts.

use serde::{Deserialize, Serialize};

use crate::budget::Budget;

/// An open segment of one workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    pub start: i64,
    pub last_anomalous: i64,
    pub peak: f64,
    pub below: usize,
    /// Per-metric contributions summed over the segment's anomalous steps.
    pub sum: Vec<f64>,
    /// The metrics with the largest sums and their shares, as last ranked.
    pub top: Vec<(String, f64)>,
}

impl Segment {
    /// Ranks the metrics by summed contribution; shares of the total are reported.
    pub fn rank(&mut self, names: &[String], k: usize) {
        let total: f64 = self.sum.iter().filter(|v| **v > 0.0).sum();
        let mut idx: Vec<usize> = (0..self.sum.len()).filter(|&i| self.sum[i] > 0.0).collect();
        idx.sort_by(|&a, &b| self.sum[b].total_cmp(&self.sum[a]).then(a.cmp(&b)));
        self.top = idx
            .into_iter()
            .take(k)
            .filter_map(|i| Some((names.get(i)?.clone(), self.sum[i] / total)))
            .collect();
    }
}

/// What a step did to a workload's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    /// A new peak in the open segment.
    Peak,
    /// Closed: the segment is handed back, the workload has none open.
    Closed,
}

/// Advances `open` by one step at `time` whose score is `score` against `threshold`, adding
/// the step's per-metric `contrib` to an open segment's sums. Returns the change, if any;
/// on [`Change::Closed`] the closed segment is returned too.
pub fn advance(
    open: &mut Option<Segment>,
    time: i64,
    score: f64,
    threshold: f64,
    close_after: usize,
    contrib: &[f64],
) -> Option<(Change, Option<Segment>)> {
    if score > threshold {
        match open {
            None => {
                *open = Some(Segment {
                    start: time,
                    last_anomalous: time,
                    peak: score,
                    below: 0,
                    sum: contrib.to_vec(),
                    top: Vec::new(),
                });
                Some((Change::Opened, None))
            }
            Some(seg) => {
                seg.last_anomalous = time;
                seg.below = 0;
                for (s, c) in seg.sum.iter_mut().zip(contrib) {
                    *s += c;
                }
                (score > seg.peak).then(|| {
                    seg.peak = score;
                    (Change::Peak, None)
                })
            }
        }
    } else {
        let seg = open.as_mut()?;
        seg.below += 1;
        (seg.below >= close_after).then(|| (Change::Closed, open.take()))
    }
}

/// A workload's alerting at one step: a new segment must also pass the alert budget's bar
/// (`per_day` alerts a day, 0: none; see [`Budget`]), then [`advance`]; the budget learns
/// what opened and peaked.
#[allow(clippy::too_many_arguments)]
pub fn alert(
    open: &mut Option<Segment>,
    budget: &mut Budget,
    per_day: usize,
    time: i64,
    score: f64,
    threshold: f64,
    close_after: usize,
    contrib: &[f64],
) -> Option<(Change, Option<Segment>)> {
    // The bar only matters for a step that would open a segment.
    let bar = if open.is_none() && score > threshold {
        threshold.max(budget.bar(time, per_day))
    } else {
        threshold
    };
    let change = advance(open, time, score, bar, close_after, contrib);
    match change {
        Some((Change::Opened, _)) => budget.opened(time, score, per_day),
        Some((Change::Peak, _)) => budget.peak(score),
        _ => {}
    }
    change
}

/// The segments a run of scores opens, as (start, end) indices of their first and last step
/// over the threshold (`thresholds[i]` applies to `scores[i]`, at event time `times[i]`, in
/// order), with an alert budget of `per_day` (0: none); one still open at the end ends at its
/// last step over the threshold.
pub fn segments_of(
    scores: &[f64],
    thresholds: &[f64],
    times: &[i64],
    close_after: usize,
    per_day: usize,
) -> Vec<(usize, usize)> {
    let (mut open, mut budget) = (None, Budget::default());
    let mut out = Vec::new();
    let index = |t: i64| times.partition_point(|&x| x < t);
    for ((&s, &limit), &t) in scores.iter().zip(thresholds).zip(times) {
        let change = alert(
            &mut open,
            &mut budget,
            per_day,
            t,
            s,
            limit,
            close_after,
            &[],
        );
        if let Some((Change::Closed, Some(seg))) = change {
            out.push((index(seg.start), index(seg.last_anomalous)));
        }
    }
    if let Some(seg) = open {
        out.push((index(seg.start), index(seg.last_anomalous)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_open_on_a_step_over_and_close_after_enough_steps_under() {
        let s = [0.0, 2.0, 0.0, 3.0, 0.0, 0.0, 0.0, 5.0, 0.0];
        let t = [1.0; 9];
        let times: Vec<i64> = (0..9).map(|i| i * 60_000).collect();
        // close_after 3: steps 1..=3 are one segment (one step under between), closed at 6;
        // step 7 opens another that is still open at the end.
        assert_eq!(segments_of(&s, &t, &times, 3, 0), [(1, 3), (7, 7)]);
        // close_after 1: every step under closes.
        assert_eq!(segments_of(&s, &t, &times, 1, 0), [(1, 1), (3, 3), (7, 7)]);
        // A raised threshold at step 3 keeps it under.
        let mut t2 = t;
        t2[3] = 4.0;
        assert_eq!(segments_of(&s, &t2, &times, 1, 0), [(1, 1), (7, 7)]);
        // A budget of one alert a day: each later alert here is stronger than the day's
        // strongest (2, then 3), so all three still open.
        assert_eq!(segments_of(&s, &t, &times, 1, 1), [(1, 1), (3, 3), (7, 7)]);
        // A budget of two: peaks 5 and 4 fill it; 1.5 and 2 do not pass the weaker of them
        // (4) and are held back; 6 does.
        let s2 = [5.0, 0.0, 4.0, 0.0, 1.5, 0.0, 2.0, 0.0, 6.0];
        let times2: Vec<i64> = (0..9).map(|i| i * 60_000).collect();
        let limits = [1.0; 9];
        assert_eq!(
            segments_of(&s2, &limits, &times2, 1, 2),
            [(0, 0), (2, 2), (8, 8)]
        );
        assert_eq!(
            segments_of(&s2, &limits, &times2, 1, 0).len(),
            5,
            "no budget"
        );
    }

    #[test]
    fn a_peak_is_reported_once_per_new_high_and_contributions_add_up() {
        let mut open = None;
        let c = [1.0, 2.0];
        assert_eq!(
            advance(&mut open, 0, 2.0, 1.0, 2, &c).unwrap().0,
            Change::Opened
        );
        assert!(advance(&mut open, 1, 1.5, 1.0, 2, &c).is_none());
        assert_eq!(
            advance(&mut open, 2, 3.0, 1.0, 2, &c).unwrap().0,
            Change::Peak
        );
        assert!(advance(&mut open, 3, 0.0, 1.0, 2, &c).is_none());
        let (change, seg) = advance(&mut open, 4, 0.0, 1.0, 2, &c).unwrap();
        let seg = seg.unwrap();
        assert_eq!(change, Change::Closed);
        assert!(open.is_none());
        assert_eq!((seg.start, seg.last_anomalous, seg.peak), (0, 2, 3.0));
        assert_eq!(seg.sum, [3.0, 6.0]);
    }
}
