use super::*;

const BASE: &str = "g/metrics.raw/3";

/// What compaction leaves of a log: the newest record of each key, in offset order.
fn compacted(log: &[Record]) -> Vec<Record> {
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, r) in log.iter().enumerate() {
        newest.insert(&r.key, i);
    }
    log.iter()
        .enumerate()
        .filter(|(i, r)| newest[r.key.as_str()] == *i)
        .map(|(_, r)| r.clone())
        .collect()
}

fn restore(log: &[Record]) -> Result<Option<Restored>> {
    let mut r = Restore::new(BASE);
    for rec in log {
        r.offer(Some(rec.key.as_bytes()), &rec.headers, &rec.value);
    }
    r.finish("normalise")
}

/// A snapshot of `n` bytes that differs from every other one.
fn snapshot(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_snapshot_round_trips_through_its_chunks_and_manifest() {
    let bytes = snapshot(1, 2_500);
    let recs = records(BASE, "17", Slot::A, &bytes, 1_000);
    assert_eq!(recs.len(), 4, "three chunks and a manifest");
    assert_eq!(recs.last().unwrap().key, BASE);
    assert_eq!(restore(&recs).unwrap(), Some((bytes, Some(Slot::A))));
    // An empty state is a manifest of no chunks.
    let recs = records(BASE, "18", Slot::B, &[], 1_000);
    assert_eq!(restore(&recs).unwrap(), Some((Vec::new(), Some(Slot::B))));
    assert_eq!(restore(&[]).unwrap(), None);
}

/// The property compaction must not break: after a crash at any record of any write, the
/// compacted log restores the newest snapshot whose manifest was written. Sizes shrink and
/// grow, so stale chunks of a larger earlier snapshot stay in the slots.
#[test]
fn a_crash_at_any_record_then_compaction_restores_the_newest_whole_snapshot() {
    let sizes = [5_000, 900, 3_100, 3_000, 12, 4_100, 2_000];
    let mut log: Vec<Record> = Vec::new();
    let mut written: Vec<(usize, Vec<u8>)> = Vec::new(); // (log length at its manifest, bytes)
    let mut durable: Option<Slot> = None;
    for (k, n) in sizes.iter().enumerate() {
        let bytes = snapshot(k as u8, *n);
        let slot = durable.map_or(Slot::A, Slot::other);
        log.extend(records(BASE, &k.to_string(), slot, &bytes, 1_000));
        written.push((log.len(), bytes));
        durable = Some(slot);
    }
    for cut in 0..=log.len() {
        let expected = written
            .iter()
            .rev()
            .find(|(end, _)| *end <= cut)
            .map(|(_, b)| b.clone());
        for view in [log[..cut].to_vec(), compacted(&log[..cut])] {
            let got = restore(&view).unwrap().map(|(b, _)| b);
            assert_eq!(got, expected, "crash after {cut} records");
        }
    }
}

/// After a crash mid-write, the restarted writer uses the other slot than the restored one,
/// so a second crash still leaves the restored snapshot whole.
#[test]
fn a_restart_writes_to_the_slot_the_manifest_does_not_name() {
    let first = snapshot(1, 2_500);
    let mut log = records(BASE, "1", Slot::A, &first, 1_000);
    // The next write (slot B) dies after one chunk.
    let partial = records(BASE, "2", Slot::B, &snapshot(2, 2_500), 1_000);
    log.push(partial[0].clone());
    let (bytes, slot) = restore(&compacted(&log)).unwrap().unwrap();
    assert_eq!((bytes, slot), (first.clone(), Some(Slot::A)));
    // The restarted writer goes to B again and dies after two chunks: A is untouched.
    let again = records(BASE, "3", slot.unwrap().other(), &snapshot(3, 2_500), 1_000);
    log.extend(again[..2].iter().cloned());
    assert_eq!(restore(&compacted(&log)).unwrap().unwrap().0, first);
}

#[test]
fn a_manifest_without_its_chunks_is_an_error_not_an_empty_state() {
    let recs = records(BASE, "9", Slot::B, &snapshot(9, 2_500), 1_000);
    let mut missing = recs.clone();
    missing.remove(1);
    let e = restore(&missing).unwrap_err().to_string();
    assert!(e.contains("g/metrics.raw/3/b/1 is missing"), "{e}");
    let mut stale = recs.clone();
    stale[1].headers.set(SNAPSHOT, "8");
    let e = restore(&stale).unwrap_err().to_string();
    assert!(e.contains("holds snapshot 8"), "{e}");
    let mut corrupt = recs;
    corrupt[0].value[0] ^= 1;
    let e = restore(&corrupt).unwrap_err().to_string();
    assert!(e.contains("digest"), "{e}");
}

/// Snapshots of earlier versions (every chunk under the base key) still restore, and a newer
/// manifest supersedes them. Other keys (other partitions' snapshots) are passed over.
#[test]
fn an_earlier_versions_snapshot_still_restores() {
    let old = snapshot(4, 1_500);
    let legacy: Vec<Record> = old
        .chunks(1_000)
        .enumerate()
        .map(|(i, c)| {
            let mut h = HeaderMap::default();
            h.set(SNAPSHOT, "40");
            h.set(CHUNK, format!("{i}/2"));
            Record {
                key: BASE.into(),
                headers: h,
                value: c.to_vec(),
            }
        })
        .collect();
    let mut log = records("g/metrics.raw/4", "1", Slot::A, &snapshot(7, 10), 1_000);
    log.extend(legacy);
    assert_eq!(restore(&log).unwrap(), Some((old, None)));
    let new = snapshot(5, 700);
    log.extend(records(BASE, "41", Slot::A, &new, 1_000));
    assert_eq!(restore(&log).unwrap(), Some((new, Some(Slot::A))));
}
