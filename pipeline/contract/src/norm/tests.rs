use super::*;

fn dict(names: &[&str]) -> StringArray {
    StringArray::from_iter_values(names)
}

fn slots(names: &[&str]) -> Slots {
    let mut s = Slots::default();
    for n in names {
        s.slot(n);
    }
    s
}

#[test]
fn a_memo_keeps_slots_while_the_dictionary_and_the_numbering_stand() {
    let mut s = slots(&["a", "b", "c"]);
    let mut memo = DictMemo::default();
    let d = dict(&["c", "a", "new"]);
    memo.start(&d, &s);
    assert_eq!(memo.slots(&mut s), [2, 0, 3]);
    // The same names in another array: the same slots; another order: resolved anew.
    memo.start(&dict(&["c", "a", "new"]), &s);
    assert_eq!(memo.slots(&mut s), [2, 0, 3]);
    memo.start(&dict(&["new", "b"]), &s);
    assert_eq!(memo.slots(&mut s), [3, 1]);
    // Renumbered (a retired name): what was remembered is not trusted.
    memo.start(&d, &s);
    let map = s.retain(|i| i != 0);
    assert_eq!(map, [None, Some(0), Some(1), Some(2)]);
    memo.start(&d, &s);
    assert_eq!(
        memo.slots(&mut s),
        [1, 3, 2],
        "c moved to 1, a came back as 3"
    );
    assert_eq!(s.names, ["b", "c", "new", "a"]);
}

#[test]
fn a_copy_of_slots_is_numbered_on_its_own() {
    let mut s = slots(&["a"]);
    let mut copy = s.clone();
    let mut memo = DictMemo::default();
    let d = dict(&["x"]);
    memo.start(&d, &s);
    assert_eq!(memo.slots(&mut s), [1]);
    // In the copy, slot 1 is another name: the memo of the original must not answer.
    copy.slot("y");
    memo.start(&d, &copy);
    assert_eq!(memo.slots(&mut copy), [2]);
    assert_eq!(copy.names, ["a", "y", "x"]);
}

#[test]
fn the_names_array_is_shared_until_names_change() {
    let mut s = slots(&["a", "b"]);
    let a1 = s.array();
    assert!(Arc::ptr_eq(&a1, &s.array()));
    s.slot("c");
    let a2 = s.array();
    assert!(!Arc::ptr_eq(&a1, &a2));
    assert_eq!(a2.len(), 3);
    s.retain(|i| i != 0);
    let a3 = s.array();
    assert!(!Arc::ptr_eq(&a2, &a3));
    assert_eq!(a3.as_ref(), &dict(&["b", "c"]) as &dyn Array);
}

#[test]
fn arrays_on_the_same_buffers_with_other_nulls_are_other_dictionaries() {
    use arrow_buffer::NullBuffer;
    let base = dict(&["a", "b"]);
    let with = |valid: Vec<bool>| {
        StringArray::new(
            base.offsets().clone(),
            base.values().clone(),
            Some(NullBuffer::from(valid)),
        )
    };
    let mut s = slots(&["x"]);
    let mut memo = DictMemo::default();
    memo.start(&with(vec![false, true]), &s);
    assert_eq!(memo.slots(&mut s), [1, 2], "a null name is the empty one");
    memo.start(&with(vec![true, false]), &s);
    assert_eq!(memo.slots(&mut s), [3, 1]);
    assert_eq!(s.names, ["x", "", "b", "a"]);
}
