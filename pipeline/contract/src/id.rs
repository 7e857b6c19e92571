//! Stable ids: the one way wfe names a row so that a replay names it the same.
//!
//! Decision, action, segment and interruption ids are keys other teams join on and the
//! actuator's no-double-action record is made of; a replay after a crash must give the
//! same id for the same input, on any machine and any version. So they hash their parts
//! (joined by the ASCII unit separator, which no name may hold in the middle of a part) with
//! xxh3-64, which is specified and stable across platforms, and print 16 hex digits.

/// The id of `parts`, e.g. `stable_id(&["decision", workload, &at.to_string()])`.
pub fn stable_id(parts: &[&str]) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(parts.join("\u{1f}").as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::stable_id;

    #[test]
    fn ids_are_the_ones_already_in_topics() {
        // Written by earlier versions (actuators' records, `decisions`): it must not change.
        // The value is xxh3-64 of "decision\x1fw-1\x1f60000" by Python's xxhash package.
        assert_eq!(stable_id(&["decision", "w-1", "60000"]), "29336f5d2957ac3c");
        assert_ne!(
            stable_id(&["decision", "w-1", "60000"]),
            stable_id(&["burst", "w-1", "60000"])
        );
    }
}
