//! Liveness and readiness of a running pipeline or stage service, as `/health` and `/ready`
//! report them (Kubernetes' liveness and readiness probes).
//!
//! - **Ready**: the runner set it once its stages started (a service: once subscribed to its
//!   input) and cleared it when it began to drain; a load balancer or a rollout waits for it.
//! - **Live**: no actor failed, and the runner's loop beat within `stale_after` (a service's
//!   consumer loop beats on every pass, at least once a second); a loop stuck in a call that
//!   never returns stops beating, and the probe restarts the pod.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Health {
    start: Instant,
    ready: AtomicBool,
    /// Milliseconds since `start` of the last beat; 0: never beaten (beats are optional).
    beat_ms: AtomicU64,
    stale_after: Duration,
    failed: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl Health {
    pub fn new(stale_after: Duration) -> Self {
        Self {
            start: Instant::now(),
            ready: AtomicBool::new(false),
            beat_ms: AtomicU64::new(0),
            stale_after,
            failed: Mutex::new(None),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.live().is_ok()
    }

    /// The runner's loop is alive.
    pub fn beat(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.beat_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// An actor failed: the process is not healthy (it is stopping).
    pub fn fail(&self, why: &str) {
        if let Ok(mut f) = self.failed.lock()
            && f.is_none()
        {
            *f = Some(why.to_string());
        }
        self.set_ready(false);
    }

    /// Ok, or why not.
    pub fn live(&self) -> Result<(), String> {
        if let Some(why) = self.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(format!("failed: {why}"));
        }
        let beat = self.beat_ms.load(Ordering::Relaxed);
        if beat > 0 {
            let since = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(beat));
            if since > self.stale_after {
                return Err(format!(
                    "the runner's loop has not beaten for {:.0} s",
                    since.as_secs_f64()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_live() {
        let h = Health::new(Duration::from_millis(50));
        assert!(!h.is_ready());
        assert!(h.live().is_ok(), "no beats yet is not a stale loop");
        h.set_ready(true);
        h.beat();
        assert!(h.is_ready());
        std::thread::sleep(Duration::from_millis(80));
        assert!(h.live().unwrap_err().contains("not beaten"));
        assert!(!h.is_ready(), "a stale loop is not ready either");
        h.beat();
        assert!(h.is_ready());
        h.fail("stage forecast: boom");
        assert_eq!(h.live().unwrap_err(), "failed: stage forecast: boom");
        assert!(!h.is_ready());
    }
}
