//! Which of a changelog's entries belong to which owner (a workload), so that a split of
//! changes can keep a workload's entries by naming the workload
//! ([`Split::keep`](wfe_contract::state::Split::keep)), and a commit finds the entries it
//! removes among the owners that changed or went, not by scanning every entry it holds.

use std::collections::{HashMap, HashSet};

use wfe_contract::state::Split;

/// The owners of the entries a changelog holds, as the last split it wrote gave them.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Owners {
    /// Whether the owners are known: from the first split written after a restore (or a
    /// start) on; a restore reads entries, not their owners.
    known: bool,
    /// Per owner, the keys of its entries.
    of: HashMap<String, HashSet<String>>,
    /// The keys of entries without an owner (what the workloads share, a stage's maps
    /// that are not per workload, a whole state).
    unowned: HashSet<String>,
}

impl Owners {
    /// Whether the changelog can take `split`: every owner it keeps has entries here, and
    /// none is both kept and given (its entries not given would be neither kept nor removed).
    pub(crate) fn check(&self, split: &Split) -> Result<(), String> {
        let kept = split.kept();
        if !kept.is_empty()
            && let Some(o) = split.owners().values().find(|o| kept.contains(*o))
        {
            return Err(format!("the entries of `{o}` are both kept and given"));
        }
        match kept.iter().find(|o| !self.of.contains_key(*o)) {
            Some(o) if self.known => Err(format!(
                "the entries of `{o}` are kept unchanged but none were written"
            )),
            Some(o) => Err(format!(
                "the entries of `{o}` are kept unchanged, before any split was written since the restore"
            )),
            None => Ok(()),
        }
    }

    /// Takes the owners of `split` (checked); returns the keys among `held` that the
    /// changelog no longer holds: entries of owners that went, entries an owner that changed
    /// no longer has, entries without an owner that the split does not give.
    pub(crate) fn update<'a>(
        &mut self,
        split: &Split,
        held: impl Iterator<Item = &'a String>,
    ) -> Vec<String> {
        let given = |k: &String| split.entries().contains_key(k);
        let mut gone: Vec<String> = Vec::new();
        if !self.known {
            // Nothing known of the entries held: the split is whole (nothing kept).
            gone.extend(held.filter(|k| !given(k)).cloned());
        } else {
            let went: Vec<String> = (self.of.keys())
                .filter(|o| !split.kept().contains(*o))
                .cloned()
                .collect();
            for o in went {
                gone.extend(self.of.remove(&o).unwrap_or_default());
            }
            gone.extend(self.unowned.drain());
        }
        let mut now: HashMap<&str, HashSet<String>> = HashMap::new();
        for (key, owner) in split.owners() {
            now.entry(owner).or_default().insert(key.clone());
        }
        for (owner, keys) in now {
            self.of.insert(owner.to_string(), keys);
        }
        self.unowned = (split.entries().keys())
            .filter(|k| !split.owners().contains_key(*k))
            .cloned()
            .collect();
        self.known = true;
        gone.retain(|k| !given(k));
        gone.sort();
        gone.dedup();
        gone
    }
}
