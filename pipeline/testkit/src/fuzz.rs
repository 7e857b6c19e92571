//! Fuzz targets as proptest runs, bounded by time or by cases.
//!
//! cargo-fuzz needs a nightly compiler and sanitizer runtimes that wfe's CI machines do not
//! have, so the targets are proptest strategies: mostly mutations of a valid input (bytes
//! flipped, inserted, removed, the input cut short), which reach far deeper into a parser
//! than random bytes. A target passes when no input makes the code under test panic or
//! abort; returning an error is the right answer to bad input. proptest shrinks a failing
//! input to a small one and prints it.
//!
//! `FUZZ_SECONDS=N` runs each target for N seconds (`make fuzz`); without it a target runs
//! `FUZZ_CASES` cases (default 64: the smoke run of `make test`). Every run prints its
//! executions, and appends `target executions seconds` to `$FUZZ_REPORT` when set.

use std::fmt::Debug;
use std::io::Write;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `check` on inputs drawn from `strategy` until the time or case budget is spent;
/// panics (failing the test) with the shrunk input when `check` panics or returns `Err`.
pub fn run<S>(target: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: Debug,
{
    let seconds: f64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let cases: u32 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds.max(0.0));
    let executions = std::cell::Cell::new(0u64);
    loop {
        let config = Config {
            cases: if seconds > 0.0 { 256 } else { cases },
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |input| {
            executions.set(executions.get() + 1);
            check(input).map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("fuzz target `{target}` failed: {e}");
        }
        if seconds <= 0.0 || Instant::now() >= deadline {
            break;
        }
    }
    let took = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {target}: {} executions in {took:.1} s, no crash",
        executions.get()
    );
    if let Some(path) = std::env::var_os("FUZZ_REPORT")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{target} {} {took:.1}", executions.get());
    }
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    /// Cut the input at a fraction (per mille) of its length.
    Truncate(u16),
}

/// `valid` with up to `max_edits` edits; sometimes `valid` itself.
pub fn mutations(valid: Vec<u8>, max_edits: usize) -> impl Strategy<Value = Vec<u8>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => (0u16..1000).prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 0..=max_edits).prop_map(move |edits| apply(&valid, &edits))
}

/// `valid` with `edits` applied in order (positions wrap around the current length).
pub fn apply(valid: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = valid.to_vec();
    for e in edits {
        let n = v.len();
        match *e {
            Edit::Set(i, b) if n > 0 => v[i % n] = b,
            Edit::Insert(i, b) => v.insert(i % (n + 1), b),
            Edit::Remove(i) if n > 0 => {
                v.remove(i % n);
            }
            Edit::Truncate(pm) => v.truncate(n * pm as usize / 1000),
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order_and_wrap() {
        let v = b"abcdef".to_vec();
        assert_eq!(apply(&v, &[Edit::Set(7, b'X')]), b"aXcdef");
        assert_eq!(
            apply(&v, &[Edit::Insert(0, b'-'), Edit::Remove(6)]),
            b"-abcde"
        );
        assert_eq!(apply(&v, &[Edit::Truncate(500)]), b"abc");
        assert_eq!(apply(b"", &[Edit::Set(3, 1), Edit::Remove(1)]), b"");
    }

    #[test]
    #[should_panic(expected = "fuzz target `finds` failed")]
    fn a_panic_in_the_target_fails_with_the_input() {
        run("finds", mutations(b"0123456789".to_vec(), 4), |v| {
            assert!(v.len() == 10, "length changed");
            Ok(())
        });
    }
}
