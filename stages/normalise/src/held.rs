//! The history a learning workload holds until its scaler is fitted, stored flat: a step's
//! time and label, and its cells as raw values (NaN: missing; a usable raw value is never
//! NaN) and filled flags in vectors shared by all steps. One small vector per step was most
//! of a large fleet's memory in normalise (`learn_steps` at 300 s is five days of steps).
//! Snapshots keep the form they had ([`DoneStep`]s), so states written before still restore.

use serde::{Deserialize, Serialize};
use wfe_domain::Ragged;

/// A step ready for output, held while the scaler learns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DoneStep {
    pub(crate) time: i64,
    pub(crate) label: Option<u32>,
    /// Per metric slot: (raw value, filled, missing).
    pub(crate) cells: Vec<(f64, bool, bool)>,
}

/// A workload's held steps, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<DoneStep>", into = "Vec<DoneStep>")]
pub(crate) struct Held {
    times: Vec<i64>,
    labels: Vec<Option<u32>>,
    /// Each step's cells' raw values.
    values: Ragged<f64>,
    /// Whether each cell was filled, cell by cell as in `values`.
    filled: Vec<bool>,
}

impl Held {
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    /// Room for `steps` more steps of `cells` cells each, exactly (a workload learning by
    /// count holds `learn_steps` of them: growth by doubling left up to half unused).
    /// Within [`wfe_domain::ragged::reservable`]'s bounds (`learn_steps` is the user's).
    pub(crate) fn reserve_exact(&mut self, steps: usize, cells: usize) {
        let (steps_room, cells_room) = wfe_domain::ragged::reservable(steps, cells);
        self.times.reserve_exact(steps_room);
        self.labels.reserve_exact(steps_room);
        self.values.reserve_exact(steps, cells);
        self.filled.reserve_exact(cells_room);
    }

    /// Holds one step; `cells` are (raw value, filled, missing) per metric slot.
    pub(crate) fn push(&mut self, time: i64, label: Option<u32>, cells: &[(f64, bool, bool)]) {
        self.times.push(time);
        self.labels.push(label);
        self.values.push_iter(
            cells
                .iter()
                .map(|&(v, _, missing)| if missing { f64::NAN } else { v }),
        );
        self.filled
            .extend(cells.iter().map(|&(_, filled, _)| filled));
    }

    /// Step `i` as a [`DoneStep`], its cells written into `cells` (cleared first).
    pub(crate) fn step(&self, i: usize, mut cells: Vec<(f64, bool, bool)>) -> DoneStep {
        cells.clear();
        let r = self.values.range(i);
        cells.extend(
            self.values.cells()[r.clone()]
                .iter()
                .zip(&self.filled[r])
                .map(|(&v, &f)| (v, f, v.is_nan())),
        );
        DoneStep {
            time: self.times[i],
            label: self.labels[i],
            cells,
        }
    }

    /// Every observed or filled cell: (metric slot, raw value).
    pub(crate) fn present(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.values.rows().flat_map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(slot, &v)| (slot, v))
        })
    }

    pub(crate) fn labels(&self) -> &[Option<u32>] {
        &self.labels
    }

    pub(crate) fn labels_mut(&mut self) -> &mut [Option<u32>] {
        &mut self.labels
    }

    /// The steps in runs of `n` (the changelog's entries).
    pub(crate) fn runs(&self, n: usize) -> Vec<Vec<DoneStep>> {
        let n = n.max(1);
        (0..self.len())
            .step_by(n)
            .map(|s| {
                (s..(s + n).min(self.len()))
                    .map(|i| self.step(i, Vec::new()))
                    .collect()
            })
            .collect()
    }
}

impl From<Vec<DoneStep>> for Held {
    fn from(steps: Vec<DoneStep>) -> Self {
        let mut held = Held::default();
        for s in &steps {
            held.push(s.time, s.label, &s.cells);
        }
        held
    }
}

impl From<Held> for Vec<DoneStep> {
    fn from(held: Held) -> Self {
        (0..held.len()).map(|i| held.step(i, Vec::new())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(time: i64, label: Option<u32>, cells: &[(f64, bool, bool)]) -> DoneStep {
        DoneStep {
            time,
            label,
            cells: cells.to_vec(),
        }
    }

    #[test]
    fn held_steps_come_back_as_they_went_in_and_encode_as_before() {
        let steps = vec![
            step(0, Some(1), &[(1.5, false, false), (f64::NAN, false, true)]),
            step(300, None, &[(2.0, true, false)]),
            step(
                600,
                Some(2),
                &[
                    (3.0, false, false),
                    (4.0, false, false),
                    (f64::NAN, false, true),
                ],
            ),
        ];
        let held = Held::from(steps.clone());
        assert_eq!(held.len(), 3);
        let back: Vec<DoneStep> = held.clone().into();
        let key = |s: &DoneStep| format!("{s:?}");
        assert_eq!(
            back.iter().map(key).collect::<Vec<_>>(),
            steps.iter().map(key).collect::<Vec<_>>()
        );
        assert_eq!(
            held.present().collect::<Vec<_>>(),
            [(0, 1.5), (0, 2.0), (0, 3.0), (1, 4.0)]
        );
        assert_eq!(
            held.runs(2).iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 1]
        );
        // The snapshot form is the list of steps it was before.
        use wfe_contract::state::{decode, encode};
        let as_list = encode("normalise", &steps).unwrap().unwrap();
        assert_eq!(encode("normalise", &held).unwrap().unwrap(), as_list);
        let read: Held = decode("normalise", &as_list).unwrap();
        assert_eq!(
            format!("{:?}", Vec::<DoneStep>::from(read)),
            format!("{steps:?}")
        );
    }
}
