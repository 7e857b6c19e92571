//! CPU time of a thread or of the process, for the run report and the bench table.
//!
//! From the kernel's CPU-time clocks (`clock_gettime` with `CLOCK_THREAD_CPUTIME_ID` and
//! `CLOCK_PROCESS_CPUTIME_ID`): nanoseconds rather than /proc's 10 ms ticks, nothing to parse,
//! and the same call on Linux and macOS.

use std::time::Duration;

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time (user + system) of the whole process so far.
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Zero if the clock cannot be read (it always can on Linux; a report is not worth an error).
fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and clock_gettime writes only into it.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_uses_cpu_and_the_process_at_least_as_much() {
        // The process window encloses the thread's: p0, t0 ... t1, p1.
        let p0 = process_cpu();
        let t0 = thread_cpu();
        // Spin until the thread clock shows 20 ms (a broken clock never does: 30 s bound).
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while thread_cpu() - t0 < Duration::from_millis(20) && start.elapsed().as_secs() < 30 {
            for _ in 0..1000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(std::hint::black_box(1));
            }
        }
        std::hint::black_box(x);
        let t = thread_cpu() - t0;
        let p = process_cpu() - p0;
        assert!(
            t >= Duration::from_millis(20),
            "the thread clock did not move in 30 s: {t:?}"
        );
        assert!(
            p >= t,
            "the process used less CPU ({p:?}) than one of its threads ({t:?})"
        );
    }
}
