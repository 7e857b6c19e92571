//! The normalise stage's settings and the bounds on what it accepts.

use serde::{Deserialize, Serialize};

/// Settings of the normalise stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NormaliseConfig {
    /// Fixed step in seconds for every workload; default: inferred per workload.
    #[serde(default)]
    pub step_s: Option<u64>,
    /// Steps a sample may arrive late and still be placed in its step.
    #[serde(default = "d_lateness")]
    pub lateness_steps: usize,
    /// A gap of up to this many steps is filled with the last value; longer gaps are missing.
    #[serde(default = "d_fill")]
    pub fill_steps: usize,
    /// A gap longer than this many steps restarts the workload's series instead of emitting
    /// every missing step.
    #[serde(default = "d_max_gap")]
    pub max_gap_steps: usize,
    /// Steps of history to learn the scaler from when the data has no `split` label.
    #[serde(default = "d_learn")]
    pub learn_steps: usize,
    /// Scaled values are clipped to [-clip, 1 + clip] so one wild sample cannot dominate.
    #[serde(default = "d_clip")]
    pub clip: f64,
    /// Samples stamped more than this many seconds ahead of the wall clock are rejected
    /// (`rejected.time`): one far-future sample would otherwise restart its workload's series
    /// and make every later sample late.
    #[serde(default = "d_max_future")]
    pub max_future_s: u64,
    /// Samples stamped before this Unix time in seconds (at least 0, the epoch) are rejected
    /// (`rejected.time`).
    #[serde(default)]
    pub earliest_s: i64,
    /// A workload with no new sample for this many seconds (wall clock: a replay of recorded
    /// data retires nothing) is retired: what it holds is emitted, its state and names are
    /// dropped, and if it comes back it starts afresh (step, scaler). Pods come and go with
    /// new names, so without this the state of a long-running stage would grow for ever.
    /// 0: never.
    #[serde(default = "d_retire")]
    pub retire_after_s: u64,
}

/// The longest configurable step, in seconds.
pub(crate) const MAX_STEP_S: u64 = 366 * 86_400;

/// Largest magnitude of a value accepted: beyond it, a range or a square (in the scaler and
/// the detectors downstream) could overflow to infinity.
pub const MAX_ABS_VALUE: f64 = 1e150;

/// Samples a workload holds while its step is not yet known (at most three timestamps' worth
/// of its metrics); past this, further ones are rejected as `rejected.no_step`.
pub const MAX_EARLY_SAMPLES: usize = 65_536;

fn d_lateness() -> usize {
    2
}
fn d_fill() -> usize {
    5
}
fn d_max_gap() -> usize {
    10_080
}
fn d_learn() -> usize {
    1440
}
fn d_clip() -> f64 {
    5.0
}
fn d_max_future() -> u64 {
    86_400
}
fn d_retire() -> u64 {
    7 * 86_400
}

impl Default for NormaliseConfig {
    fn default() -> Self {
        Self {
            step_s: None,
            lateness_steps: d_lateness(),
            fill_steps: d_fill(),
            max_gap_steps: d_max_gap(),
            learn_steps: d_learn(),
            clip: d_clip(),
            max_future_s: d_max_future(),
            earliest_s: 0,
            retire_after_s: d_retire(),
        }
    }
}
