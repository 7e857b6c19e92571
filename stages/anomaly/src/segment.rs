//! Segments: how scored steps become the events an operator sees. A step over the threshold
//! opens a segment, a new peak inside it updates it, and `close_after` steps in a row under
//! the threshold close it (its end is its last step over the threshold). The stage writes a
//! row per change; `wfe eval anomaly` replays the same rule to count alerts.

use serde::{Deserialize, Serialize};

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

/// The segments a run of scores opens, as (start, end) indices of their first and last step
/// over the threshold (`thresholds[i]` applies to `scores[i]`); one still open at the end ends
/// at its last step over the threshold.
pub fn segments_of(scores: &[f64], thresholds: &[f64], close_after: usize) -> Vec<(usize, usize)> {
    let mut open = None;
    let mut out = Vec::new();
    for (i, (&s, &t)) in scores.iter().zip(thresholds).enumerate() {
        if let Some((Change::Closed, Some(seg))) =
            advance(&mut open, i as i64, s, t, close_after, &[])
        {
            out.push((seg.start as usize, seg.last_anomalous as usize));
        }
    }
    if let Some(seg) = open {
        out.push((seg.start as usize, seg.last_anomalous as usize));
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
        // close_after 3: steps 1..=3 are one segment (one step under between), closed at 6;
        // step 7 opens another that is still open at the end.
        assert_eq!(segments_of(&s, &t, 3), [(1, 3), (7, 7)]);
        // close_after 1: every step under closes.
        assert_eq!(segments_of(&s, &t, 1), [(1, 1), (3, 3), (7, 7)]);
        // A raised threshold at step 3 keeps it under.
        let mut t2 = t;
        t2[3] = 4.0;
        assert_eq!(segments_of(&s, &t2, 1), [(1, 1), (7, 7)]);
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
