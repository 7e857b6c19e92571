//! What the `expected-cost` objective weighs (a leaf: the plan's options carry these, and
//! [`crate::expected`] computes them).

use serde::Serialize;

/// What falling short and changing the fleet cost (see [`crate::expected`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// USD per unit-minute of demand not served (vCPU-minute, GiB-minute, Gbps-minute).
    pub shortfall_price: f64,
    /// USD per instance launched or ended.
    pub churn_cost: f64,
    /// Seconds from a launch until the instance serves.
    pub lead_s: i64,
}

/// The fleet in place when a decision is made (none: a workload's first decision).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InPlace {
    pub instance_type: String,
    pub count: i64,
    pub spot_count: i64,
}

/// An option's expected cost over the decision's horizon (USD) and what it is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Expected {
    pub horizon_s: i64,
    pub instances: f64,
    pub shortfall: f64,
    pub churn: f64,
    /// Expected unit-minutes of demand not served, summed over the needs.
    pub short_unit_minutes: f64,
}

impl Expected {
    pub fn total(&self) -> f64 {
        self.instances + self.shortfall + self.churn
    }

    /// [`Expected::total`] per hour of the horizon: comparable with a price per hour.
    pub fn per_hour(&self) -> f64 {
        self.total() / (self.horizon_s.max(60) as f64 / 3600.0)
    }
}
