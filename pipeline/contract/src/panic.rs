//! Panics contained at an actor's boundary.
//!
//! A stage, a file reader or a library they call may panic on input nobody foresaw. The
//! runners call every stage hook and reader through [`contain`], so such a panic becomes an
//! [`Error::Panicked`] naming where it happened: the embedded runner fails the run with it
//! (exit status 1, `/health` failing) and a Kafka service dead-letters the message that caused
//! it and goes on with the partition. Nothing is lost silently and no thread dies unseen.
//!
//! The process keeps the default panic hook, so the panic's location and (with
//! `RUST_BACKTRACE=1`) its backtrace still reach stderr.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{Error, Result};

/// Runs `f`, turning a panic inside it into [`Error::Panicked`] at `at`.
///
/// `AssertUnwindSafe` is sound here because a caller that gets `Panicked` treats the state
/// `f` touched as suspect: the embedded runner stops the actor, a Kafka service keeps the
/// partition's state as it was before the message only if the stage restores it, and says so
/// in the dead letter.
pub fn contain<T>(at: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panicked(at, payload)))
}

/// The error for a panic's payload, as `catch_unwind` or `JoinHandle::join` return it.
pub fn panicked(at: &str, payload: Box<dyn Any + Send>) -> Error {
    Error::Panicked {
        at: at.to_string(),
        message: message(payload.as_ref()),
    }
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_where() {
        let e = contain("stage normalise", || -> Result<()> {
            let v: Vec<u32> = Vec::new();
            let i = 3;
            let _ = v[i];
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.kind(), "panic");
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.starts_with("stage normalise panicked: "), "{text}");
        assert!(text.contains("index out of bounds"), "{text}");
    }

    #[test]
    fn formatted_and_plain_messages_are_kept() {
        let e = contain("reader a.csv", || -> Result<()> { panic!("bad {}", 7) }).unwrap_err();
        assert_eq!(e.to_string(), "reader a.csv panicked: bad 7");
        let e = contain("x", || -> Result<()> { std::panic::panic_any(42u8) }).unwrap_err();
        assert_eq!(e.to_string(), "x panicked: a panic without a message");
    }

    #[test]
    fn results_pass_through() {
        assert_eq!(contain("x", || Ok(5)).unwrap(), 5);
        let e = contain("x", || -> Result<()> { Err(Error::bad_input("f:1", "no")) });
        assert_eq!(e.unwrap_err().kind(), "bad_input");
    }
}
