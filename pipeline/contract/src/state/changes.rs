//! Which items of a per-workload map changed since a snapshot: what lets a stage's snapshot
//! encode only those ([`Stage::snapshot_changes`](crate::Stage::snapshot_changes)).
//!
//! Serialising every workload's state at every commit to find the few that moved cost the
//! forecast service 3.6 s a commit at 10,000 workloads in one partition (`wfe bench --state`),
//! for the 4 entries that had changed. A stage marks an item where it changes it; a snapshot
//! returns a token, and the next one asks what changed after it.

/// Marks of change per item index (an item's place in its map), against a counter that
/// moves at every mark, so a mark made after a snapshot is always after its token.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Marks made so far: the token a snapshot taken now returns.
    count: u64,
    /// Per item: the count at its last mark (0: never marked on its own).
    at: Vec<u64>,
    /// The count at the last mark of every item (a map whose places moved, a restore).
    all_at: u64,
}

impl Changes {
    /// Item `i` changed.
    pub fn mark(&mut self, i: usize) {
        self.count += 1;
        if self.at.len() <= i {
            self.at.resize(i + 1, 0);
        }
        self.at[i] = self.count;
    }

    /// Every item changed (items removed, so the places of the rest moved; a restore).
    pub fn mark_all(&mut self) {
        self.count += 1;
        self.all_at = self.count;
        self.at.clear();
    }

    /// The token of a snapshot taken now.
    pub fn token(&self) -> u64 {
        self.count
    }

    /// Whether item `i` changed after the snapshot of token `since` (every item did where
    /// there is none).
    pub fn since(&self, i: usize, since: Option<u64>) -> bool {
        let last = self.at.get(i).copied().unwrap_or(0).max(self.all_at);
        since.is_none_or(|s| last > s)
    }
}

#[cfg(test)]
mod tests {
    use super::Changes;

    #[test]
    fn an_item_changed_after_a_token_only_if_marked_after_it() {
        let mut c = Changes::default();
        assert!(c.since(3, None));
        assert!(!c.since(3, Some(c.token())));
        c.mark(1);
        let t = c.token();
        c.mark(2);
        assert!(!c.since(1, Some(t)));
        assert!(c.since(2, Some(t)));
        assert!(!c.since(7, Some(t)), "an item never marked did not change");
        c.mark_all();
        assert!((0..9).all(|i| c.since(i, Some(t))));
        let t = c.token();
        assert!(!c.since(2, Some(t)));
        c.mark(5);
        assert!(c.since(5, Some(t)) && !c.since(4, Some(t)));
    }
}
