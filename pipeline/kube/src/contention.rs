//! Contention between co-located workloads, and the moves that avoid it.
//!
//! With workloads placed on hosts, a host is contended when its workloads together may ask
//! for more than it has. Each workload's forecast gives a distribution of its demand at each
//! horizon; a host's total is their sum, whose spread depends on how the workloads move
//! together: two that peak at the same hour add their peaks, two that do not partly cancel.
//! - [`normal`]: the standard normal distribution (Φ and its inverse), from libm's erf.
//! - [`hostsum`]: a workload's forecast read as a normal distribution (mean: the median;
//!   spread: from its outermost quantiles), correlations from the workloads' history, and the
//!   chance that a host's total passes its capacity.
//! - [`issued`]: `forecasts` rows read as demands.
//! - [`plan`]: which hosts are contended (that chance above a bound at some horizon), and the
//!   fewest moves that bring each under it, each to a host of the same environment that
//!   stays under the bound with the workload added.
//! - [`replay`]: a placement replayed over observed demand with and without the planned
//!   moves: the minutes hosts were over capacity, and the moves made.

pub mod hostsum;
pub mod issued;
pub mod normal;
pub mod plan;
pub mod replay;
