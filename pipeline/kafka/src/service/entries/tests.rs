use super::*;

const BASE: &str = "g/metrics.norm/1";
const CHUNK: usize = 100;

/// A state of the given entries, each `(key, seed, length)`.
fn split(entries: &[(&str, u8, usize)]) -> Split {
    Split::from_entries(
        entries
            .iter()
            .map(|(k, seed, n)| {
                let v = (0..*n).map(|i| (i as u8).wrapping_mul(7).wrapping_add(*seed));
                (k.to_string(), v.collect())
            })
            .collect(),
    )
}

/// A log record: an entry write, or a snapshot manifest `(epoch, count, digest)`.
#[derive(Debug, Clone)]
enum Rec {
    Entry(Write),
    Manifest(u64, u64, u64),
}

/// The changelog of one partition as the service writes it, commit after commit.
#[derive(Default)]
struct Log {
    recs: Vec<Rec>,
    log: Changelog,
}

impl Log {
    fn commit(&mut self, s: &Split) -> Plan {
        let plan = self.log.plan(BASE, s, CHUNK).unwrap();
        self.recs
            .extend(plan.before.iter().cloned().map(Rec::Entry));
        self.recs
            .push(Rec::Manifest(self.log.epoch, plan.count, plan.digest));
        self.recs.extend(plan.after.iter().cloned().map(Rec::Entry));
        plan
    }
}

/// What compaction leaves: the newest record of each entry key, in offset order (the
/// manifest is the chunked snapshot's business: its newest is kept).
fn compacted(recs: &[Rec]) -> Vec<Rec> {
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, r) in recs.iter().enumerate() {
        if let Rec::Entry(w) = r {
            newest.insert(&w.key, i);
        }
    }
    recs.iter()
        .enumerate()
        .filter(|(i, r)| match r {
            Rec::Entry(w) => newest[w.key.as_str()] == *i,
            Rec::Manifest(..) => true,
        })
        .map(|(_, r)| r.clone())
        .collect()
}

/// Restores from `recs` the way the service does: the newest manifest, then its entries.
fn restore(recs: &[Rec]) -> Result<Option<Restored>> {
    let mut r = EntryRestore::new(BASE);
    let mut manifest = None;
    for rec in recs {
        match rec {
            Rec::Entry(w) => r.offer(Some(w.key.as_bytes()), &w.headers, w.value.as_deref()),
            Rec::Manifest(e, n, d) => manifest = Some((*e, *n, *d)),
        }
    }
    manifest
        .map(|(e, n, d)| r.finish("forecast", e, n, d))
        .transpose()
}

#[test]
fn a_commit_writes_only_the_entries_that_changed() {
    let mut log = Log::default();
    let first = split(&[("shared", 1, 10), ("w/a", 2, 30), ("w/b", 3, 250)]);
    let p = log.commit(&first);
    assert_eq!(
        (p.changed, p.removed, p.before.len()),
        (3, 0, 5),
        "b in three parts"
    );
    let p = log.commit(&first);
    assert_eq!((p.changed, p.before.len(), p.after.len()), (0, 0, 0));
    let second = split(&[("shared", 1, 10), ("w/a", 9, 30), ("w/b", 3, 250)]);
    let p = log.commit(&second);
    assert_eq!((p.changed, p.before.len()), (1, 1), "only a");
    let third = split(&[("shared", 1, 10), ("w/b", 3, 250)]);
    let p = log.commit(&third);
    assert_eq!(
        (p.changed, p.removed, p.before.len()),
        (0, 1, 1),
        "a's marker"
    );
    assert_eq!(p.after.len(), 2, "a's key in both slots tombstoned");
    let back = restore(&log.recs).unwrap().unwrap();
    assert_eq!(back.split, third);
    assert_eq!(back.log.marks, log.log.marks);
    assert_eq!(
        restore(&compacted(&log.recs)).unwrap().unwrap().split,
        third
    );
}

/// One owner's entries: `(key in map w or runs, seed)`.
type Entries<'a> = &'a [(&'a str, u8)];

/// A state of owned entries, per owner; plus `shared`.
fn owned(owners: &[(&str, Entries)]) -> Split {
    let mut s = Split::new();
    s.put_shared("forecast", &7u8).unwrap();
    for (owner, entries) in owners {
        s.put_for(owner, |s| {
            for (key, seed) in *entries {
                let (map, name) = key.split_once('/').unwrap();
                s.put_unordered("forecast", map, [(name, &vec![*seed; 40])])?;
            }
            Ok(())
        })
        .unwrap();
    }
    s
}

/// A split of changes: the entries of a kept owner stay as written (no record), an owner
/// that changed has exactly the entries it gives now, one neither given nor kept is
/// removed; the log restores the whole state. A kept owner the log holds nothing of is
/// refused before anything moves, and so is any kept owner before a whole split is written.
#[test]
fn a_split_of_changes_keeps_the_owners_it_names_and_removes_the_rest() {
    let mut log = Log::default();
    let first = owned(&[
        ("a", &[("w/a", 1), ("runs/a:0", 1)]),
        ("b", &[("w/b", 2), ("runs/b:0", 2), ("runs/b:1", 2)]),
        ("c", &[("w/c", 3)]),
    ]);
    log.commit(&first);
    let mut changes = owned(&[("a", &[("w/a", 4), ("runs/a:1", 4)])]);
    changes.keep("b");
    let p = log.commit(&changes);
    assert_eq!(
        (p.changed, p.removed),
        (2, 2),
        "a's two written; a:0 and c removed"
    );
    let whole = owned(&[
        ("a", &[("w/a", 4), ("runs/a:1", 4)]),
        ("b", &[("w/b", 2), ("runs/b:0", 2), ("runs/b:1", 2)]),
    ]);
    assert_eq!(changes.merged_onto("forecast", &first).unwrap(), whole);
    let back = restore(&compacted(&log.recs)).unwrap().unwrap();
    assert_eq!(back.split.entries(), whole.entries());

    let before = log.log.clone();
    let mut wrong = owned(&[]);
    wrong.keep("c");
    let err = log.log.plan(BASE, &wrong, CHUNK).unwrap_err();
    assert!(err.contains("`c`"), "{err}");
    assert_eq!(log.log, before, "nothing moved");
    assert!(wrong.merged_onto("forecast", &whole).is_err());
    let mut both = owned(&[("a", &[("w/a", 9)])]);
    both.keep("a");
    let err = log.log.plan(BASE, &both, CHUNK).unwrap_err();
    assert!(err.contains("both kept and given"), "{err}");
    assert_eq!(log.log, before, "nothing moved");
    // Restored, the log knows entries, not owners: only a whole split is taken.
    let mut restored = back.log;
    let mut kept = owned(&[]);
    kept.keep("b");
    assert!(restored.plan(BASE, &kept, CHUNK).is_err());
    let p = restored.plan(BASE, &whole, CHUNK).unwrap();
    assert_eq!((p.changed, p.removed), (0, 0));
    assert!(restored.plan(BASE, &kept, CHUNK).is_ok());
}

/// The property compaction must not break: after a crash at any record of any commit, the
/// whole log and its compacted view restore the state of the newest manifest written, and a
/// service that goes on from there (new epochs above every one seen) keeps that true.
#[test]
fn a_crash_at_any_record_then_compaction_restores_the_newest_completed_commit() {
    let states = [
        split(&[("shared", 1, 5), ("w/a", 1, 40), ("w/b", 1, 320)]),
        split(&[
            ("shared", 2, 5),
            ("w/a", 1, 40),
            ("w/b", 2, 90),
            ("w/c", 1, 0),
        ]),
        split(&[("shared", 2, 5), ("w/b", 3, 410), ("w/c", 1, 0)]),
        split(&[("shared", 3, 5), ("w/a", 4, 40), ("w/b", 3, 410)]),
        split(&[
            ("shared", 3, 5),
            ("w/a", 5, 140),
            ("w/c", 6, 20),
            ("w/d", 1, 1),
        ]),
        split(&[("shared", 4, 5)]),
    ];
    let mut full = Log::default();
    for s in &states {
        full.commit(s);
    }
    for cut in 0..=full.recs.len() {
        let crashed = &full.recs[..cut];
        let expected = crashed.iter().rev().find_map(|r| match r {
            Rec::Manifest(e, ..) => Some(states[*e as usize - 1].clone()),
            _ => None,
        });
        for view in [crashed.to_vec(), compacted(crashed)] {
            let got = restore(&view).unwrap().map(|r| r.split);
            assert_eq!(got, expected, "crash after record {cut}");
        }
        // The restarted service goes on, writing every state again from the restored one
        // (or from nothing, when no manifest was written: all it finds is stale).
        let log = match restore(crashed).unwrap() {
            Some(back) => back.log,
            None => {
                let mut r = EntryRestore::new(BASE);
                for rec in crashed {
                    if let Rec::Entry(w) = rec {
                        r.offer(Some(w.key.as_bytes()), &w.headers, w.value.as_deref());
                    }
                }
                r.abandon()
            }
        };
        let mut log = Log {
            recs: crashed.to_vec(),
            log,
        };
        for s in states.iter().rev() {
            log.commit(s);
            let view = compacted(&log.recs);
            assert_eq!(&restore(&view).unwrap().unwrap().split, s, "crash at {cut}");
        }
    }
}

#[test]
fn a_lost_record_is_an_error_not_a_smaller_state() {
    let mut log = Log::default();
    log.commit(&split(&[("w/a", 1, 30), ("w/b", 2, 250)]));
    for i in 0..log.recs.len() - 1 {
        let mut damaged = log.recs.clone();
        damaged.remove(i);
        let err = restore(&damaged).err().unwrap().to_string();
        assert!(err.contains("cannot be restored"), "{err}");
    }
}

#[test]
fn records_of_other_keys_and_stray_headers_are_passed_over() {
    let mut log = Log::default();
    log.commit(&split(&[("w/a", 1, 30)]));
    let mut r = EntryRestore::new(BASE);
    let h = HeaderMap::default();
    r.offer(Some(b"g/metrics.norm/10/e/a/0/w/a"), &h, Some(b"x"));
    r.offer(
        Some(format!("{BASE}/e/a/0/w/z").as_bytes()),
        &h,
        Some(b"no header"),
    );
    r.offer(Some(&[0xff, 0xfe]), &h, Some(b"not utf-8"));
    r.offer(None, &h, Some(b"no key"));
    for rec in &log.recs {
        if let Rec::Entry(w) = rec {
            r.offer(Some(w.key.as_bytes()), &w.headers, w.value.as_deref());
        }
    }
    let Rec::Manifest(e, n, d) = log.recs.last().unwrap().clone() else {
        panic!()
    };
    assert_eq!(
        r.finish("t", e, n, d).unwrap().split,
        split(&[("w/a", 1, 30)])
    );
}

/// The same property for splits of changes: owners kept over several commits keep entries
/// written epochs before the manifest that a crash leaves newest.
#[test]
fn a_crash_at_any_record_of_splits_of_changes_restores_the_newest_completed_commit() {
    let kept = |mut s: Split, owners: &[&str]| {
        owners.iter().for_each(|o| s.keep(o));
        s
    };
    let a1: Entries = &[("w/a", 1), ("runs/a:0", 1)];
    let a4: Entries = &[("w/a", 4), ("runs/a:1", 4)];
    let b2: Entries = &[("w/b", 2), ("runs/b:0", 2)];
    let (b5, c3, d6): (Entries, Entries, Entries) = (&[("w/b", 5)], &[("w/c", 3)], &[("w/d", 6)]);
    // Each commit's split, and the whole state it brings the changelog to.
    let steps = [
        (
            owned(&[("a", a1), ("b", b2), ("c", c3)]),
            owned(&[("a", a1), ("b", b2), ("c", c3)]),
        ),
        (
            kept(owned(&[("a", a4)]), &["b", "c"]),
            owned(&[("a", a4), ("b", b2), ("c", c3)]),
        ),
        (
            kept(owned(&[("b", b5)]), &["a"]),
            owned(&[("a", a4), ("b", b5)]),
        ),
        (
            kept(owned(&[("d", d6)]), &["a", "b"]),
            owned(&[("a", a4), ("b", b5), ("d", d6)]),
        ),
    ];
    let mut full = Log::default();
    for (changes, _) in &steps {
        full.commit(changes);
    }
    for cut in 0..=full.recs.len() {
        let crashed = &full.recs[..cut];
        let expected = crashed.iter().rev().find_map(|r| match r {
            Rec::Manifest(e, ..) => Some(steps[*e as usize - 1].1.entries().clone()),
            _ => None,
        });
        for view in [crashed.to_vec(), compacted(crashed)] {
            let got = restore(&view).unwrap().map(|r| r.split.into_entries());
            assert_eq!(got, expected, "crash after record {cut}");
        }
    }
}
