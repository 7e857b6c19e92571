//! Rows of varying length stored flat: one vector of cells and one of row starts.
//!
//! A stage that holds a workload's steps while it learns (normalise's raw steps, anomaly's
//! scaled rows) held one small vector per step: its header and its own allocation cost more
//! than the three or so values in it, and at 10,000 workloads learning at once those vectors
//! were the largest part of the process's memory. Serialised as the list of rows it stands
//! for, so a snapshot written from `Vec<Vec<T>>` restores into it and encodes the same bytes.

use serde::{Deserialize, Serialize};

/// Most rows reserved at once: 30 days at 300 s. A setting of more (`learn_steps` is the
/// user's) grows past it as vectors do, instead of asking for its whole size up front.
pub const RESERVE_ROWS: usize = 8_640;
/// Most cells reserved at once (2 MiB of `f64`), whatever the rows' width.
pub const RESERVE_CELLS: usize = 1 << 18;

/// What to reserve for `rows` rows of `per_row` cells: (rows, cells), each within its bound.
pub fn reservable(rows: usize, per_row: usize) -> (usize, usize) {
    let rows = rows.min(RESERVE_ROWS);
    (rows, rows.saturating_mul(per_row).min(RESERVE_CELLS))
}

/// Rows of `T`, oldest first, each of any length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    from = "Vec<Vec<T>>",
    into = "Vec<Vec<T>>",
    bound(
        serialize = "T: Clone + Serialize",
        deserialize = "T: Clone + Deserialize<'de>"
    )
)]
pub struct Ragged<T> {
    cells: Vec<T>,
    /// Where each row starts in `cells`.
    starts: Vec<usize>,
}

impl<T> Default for Ragged<T> {
    fn default() -> Self {
        Self {
            cells: Vec::new(),
            starts: Vec::new(),
        }
    }
}

impl<T: Clone> Ragged<T> {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Room for `rows` more rows of `per_row` cells each, exactly, within [`reservable`]'s
    /// bounds: a holder that knows how much it will hold (a learning history of
    /// `learn_steps`) saves the up to half of each vector that growth by doubling leaves
    /// unused.
    pub fn reserve_exact(&mut self, rows: usize, per_row: usize) {
        let (rows, cells) = reservable(rows, per_row);
        self.starts.reserve_exact(rows);
        self.cells.reserve_exact(cells);
    }

    /// Appends one row.
    pub fn push(&mut self, row: &[T]) {
        self.push_iter(row.iter().cloned());
    }

    /// Appends one row from its cells.
    pub fn push_iter(&mut self, row: impl IntoIterator<Item = T>) {
        self.starts.push(self.cells.len());
        self.cells.extend(row);
    }

    /// Where row `i`'s cells lie in [`Ragged::cells`].
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let end = self.starts.get(i + 1).map_or(self.cells.len(), |&e| e);
        self.starts[i]..end
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.cells[self.range(i)]
    }

    /// Every row's cells, end to end.
    pub fn cells(&self) -> &[T] {
        &self.cells
    }

    /// The rows, oldest first.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[T]> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// The rows as vectors (what a caller that fits on `&[Vec<T>]` reads, made when needed).
    pub fn to_vecs(&self) -> Vec<Vec<T>> {
        self.rows().map(<[T]>::to_vec).collect()
    }
}

impl<T: Clone> From<Vec<Vec<T>>> for Ragged<T> {
    fn from(rows: Vec<Vec<T>>) -> Self {
        let mut r = Ragged::default();
        r.cells.reserve(rows.iter().map(Vec::len).sum());
        for row in &rows {
            r.push(row);
        }
        r
    }
}

impl<T: Clone> From<Ragged<T>> for Vec<Vec<T>> {
    fn from(r: Ragged<T>) -> Self {
        r.to_vecs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_as_they_went_in_and_serialise_as_the_list() {
        let rows = vec![vec![1.5, f64::NAN], vec![], vec![2.0, 3.0, 4.0]];
        let r = Ragged::from(rows.clone());
        assert_eq!(r.len(), 3);
        assert!(r.row(1).is_empty());
        assert_eq!(r.row(2), [2.0, 3.0, 4.0]);
        assert_eq!(r.range(2), 2..5);
        assert_eq!(r.cells().len(), 5);
        let back = format!("{:?}", r.to_vecs());
        assert_eq!(back, format!("{rows:?}"));
        // The serialised form is the list of rows, either way.
        let ints: Ragged<i64> = vec![vec![1, 2], vec![3]].into();
        assert_eq!(serde_json::to_string(&ints).unwrap(), "[[1,2],[3]]");
        let read: Ragged<i64> = serde_json::from_str("[[1,2],[3]]").unwrap();
        assert_eq!(read, ints);
        let mut held = Ragged::<f64>::default();
        assert!(held.is_empty());
        held.reserve_exact(10, 3);
        held.push(&[1.0; 3]);
        assert_eq!((held.starts.capacity(), held.cells.capacity()), (10, 30));
        // An absurd setting reserves within the bounds, not its size.
        assert_eq!(
            reservable(usize::MAX, usize::MAX),
            (RESERVE_ROWS, RESERVE_CELLS)
        );
        assert_eq!(reservable(100, 1_000_000), (100, RESERVE_CELLS));
        let mut big = Ragged::<f64>::default();
        big.reserve_exact(1 << 40, 1 << 20);
        assert!(
            big.starts.capacity() < 2 * RESERVE_ROWS && big.cells.capacity() < 2 * RESERVE_CELLS
        );
    }
}
