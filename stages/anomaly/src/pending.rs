//! One batch's steps to score, grouped per workload into contiguous blocks without an
//! allocation per workload.
//!
//! A wide fleet's batch holds a few steps of each of thousands of workloads: a pair of vectors
//! per workload per batch (and a hash of the workload per step to find them) was most of the
//! stage's time per value that grew from 1,000 to 10,000 workloads. Here the steps are
//! appended as they come, then laid out workload by workload with a counting sort (stable: a
//! workload's steps keep their order), in buffers the stage keeps from batch to batch.

/// No block yet for this workload.
const NONE: u32 = u32::MAX;

/// One workload's steps in a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Block {
    /// The workload's id in the stage's `Keyed` table.
    pub(crate) id: usize,
    /// Values per step (the model's fitted width).
    pub(crate) width: usize,
    /// Steps held.
    pub(crate) steps: usize,
    /// Where its steps (in `times`) and values start once [`Pending::group`] has run.
    first_step: usize,
    first_value: usize,
}

/// The steps of one batch, reused across batches.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Per workload id: its place in `blocks` ([`NONE`] when it has no steps in this batch).
    place: Vec<u32>,
    blocks: Vec<Block>,
    /// Per step as it came: its block and time; its values are appended to `raw`.
    arrived: Vec<(u32, i64)>,
    raw: Vec<f64>,
    /// After [`Pending::group`]: the steps' times and values, block by block.
    times: Vec<i64>,
    values: Vec<f64>,
}

impl Pending {
    /// Empties the buffers (keeping their room) for a new batch.
    pub(crate) fn clear(&mut self) {
        for b in &self.blocks {
            self.place[b.id] = NONE;
        }
        self.blocks.clear();
        self.arrived.clear();
        self.raw.clear();
        self.times.clear();
        self.values.clear();
    }

    /// Adds a step of workload `id` at `time` with `width` values from `values` (missing
    /// ones as NaN). A workload's width is the one its first step in the batch gave.
    pub(crate) fn push(&mut self, id: usize, time: i64, width: usize, values: &[f64]) {
        if self.place.len() <= id {
            self.place.resize(id + 1, NONE);
        }
        if self.place[id] == NONE {
            self.place[id] = self.blocks.len() as u32;
            self.blocks.push(Block {
                id,
                width,
                steps: 0,
                first_step: 0,
                first_value: 0,
            });
        }
        let at = self.place[id];
        let block = &mut self.blocks[at as usize];
        block.steps += 1;
        let width = block.width;
        self.arrived.push((at, time));
        self.raw
            .extend((0..width).map(|j| values.get(j).copied().unwrap_or(f64::NAN)));
    }

    /// Lays the steps out block by block (each workload's in the order they came).
    pub(crate) fn group(&mut self) {
        let (mut step, mut value) = (0, 0);
        for b in &mut self.blocks {
            (b.first_step, b.first_value) = (step, value);
            step += b.steps;
            value += b.steps * b.width;
        }
        self.times.clear();
        self.times.resize(step, 0);
        self.values.clear();
        self.values.resize(value, f64::NAN);
        // Each block's next free step, as the steps are placed.
        let mut filled: Vec<usize> = vec![0; self.blocks.len()];
        let mut from = 0;
        for &(at, time) in &self.arrived {
            let b = &self.blocks[at as usize];
            let k = filled[at as usize];
            filled[at as usize] += 1;
            self.times[b.first_step + k] = time;
            let to = b.first_value + k * b.width;
            self.values[to..to + b.width].copy_from_slice(&self.raw[from..from + b.width]);
            from += b.width;
        }
    }

    /// The blocks, in the order their workloads first came.
    pub(crate) fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// A block's times and values (row-major, `width` each), after [`Pending::group`].
    pub(crate) fn steps_of(&self, b: &Block) -> (&[i64], &[f64]) {
        (
            &self.times[b.first_step..b.first_step + b.steps],
            &self.values[b.first_value..b.first_value + b.steps * b.width],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_grouped_per_workload_in_the_order_they_came_and_the_room_is_reused() {
        let mut p = Pending::default();
        for round in 0..2 {
            p.clear();
            // Workload 7 (width 2) and 3 (width 1) interleaved; a short row is padded with
            // NaN, a long one cut to the block's width.
            p.push(7, 10, 2, &[1.0, 2.0]);
            p.push(3, 10, 1, &[5.0, 99.0]);
            p.push(7, 20, 2, &[3.0]);
            p.push(3, 20, 1, &[6.0]);
            p.push(7, 30, 2, &[4.0, 4.5]);
            if round == 1 {
                p.push(0, 40, 1, &[8.0]);
            }
            p.group();
            let ids: Vec<usize> = p.blocks().iter().map(|b| b.id).collect();
            assert_eq!(
                ids,
                if round == 0 {
                    vec![7, 3]
                } else {
                    vec![7, 3, 0]
                }
            );
            let (t, v) = p.steps_of(&p.blocks()[0]);
            assert_eq!(t, &[10, 20, 30]);
            assert_eq!(&v[..3], &[1.0, 2.0, 3.0]);
            assert!(v[3].is_nan());
            assert_eq!(&v[4..], &[4.0, 4.5]);
            let (t, v) = p.steps_of(&p.blocks()[1]);
            assert_eq!((t, v), (&[10, 20][..], &[5.0, 6.0][..]));
        }
        // Cleared: a workload of the last batch starts a block of its own again.
        p.clear();
        p.push(3, 50, 1, &[1.0]);
        p.group();
        assert_eq!(p.blocks().len(), 1);
        assert_eq!(p.steps_of(&p.blocks()[0]), (&[50][..], &[1.0][..]));
    }
}
