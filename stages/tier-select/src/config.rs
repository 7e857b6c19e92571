//! The tier-select stage's settings: the SLA, the caps, private capacity, spot prices.

use serde::{Deserialize, Serialize};

/// Settings of the tier-select stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierSelectConfig {
    /// Catalog file (TOML); default: the shipped snapshot (`pipeline/ec2/catalog/aws-us-east-1.toml`).
    #[serde(default)]
    pub catalog: Option<std::path::PathBuf>,
    /// Forecast quantile level the capacity must cover.
    #[serde(default = "d_q")]
    pub sla_quantile: f64,
    /// Highest acceptable risk of not having enough capacity.
    #[serde(default = "d_risk")]
    pub max_risk: f64,
    /// Fewest instances a workload keeps.
    #[serde(default = "d_min")]
    pub min_instances: i64,
    /// Seconds after a change before the count may go down.
    #[serde(default = "d_cooldown")]
    pub cooldown_s: i64,
    /// Largest share of a workload's instances bought as spot (the rest on demand).
    #[serde(default = "d_spot_share")]
    pub max_spot_share: f64,
    /// Most a workload may cost per hour (USD); none: no budget.
    #[serde(default)]
    pub budget_per_hour: Option<f64>,
    /// Scale-in only when the demand at the SLA quantile is this share below what the
    /// smaller fleet gives (hysteresis).
    #[serde(default = "d_margin")]
    pub scale_in_margin: f64,
    /// Stay on the current instance type unless another is cheaper by more than this share
    /// (a change of type replaces every instance).
    #[serde(default = "d_switch")]
    pub switch_margin: f64,
    /// Reactive floor: when the demand observed in `metrics.norm` (through `[[resources]]`)
    /// passes this share of the capacity decided, scale up at once, on demand, without
    /// waiting for the next forecast; and no forecast takes the fleet below what the demand
    /// observed needs at `burst_target`. 0 (the stage's default) turns it off.
    #[serde(default = "d_burst")]
    pub burst_utilisation: f64,
    /// Utilisation a burst scales up to.
    #[serde(default = "d_burst_target")]
    pub burst_target: f64,
    /// Private capacity (on premises) that workloads use before public cloud: only the
    /// demand above it is provisioned from the catalog (hybrid burst). The first entry whose
    /// prefix matches a workload applies; each such workload has that much of its own.
    #[serde(default)]
    pub private: Vec<PrivateCapacity>,
    /// USD per GB of traffic to and from public instances when a workload bursts out of
    /// private capacity (its network demand x the public share of its capacity).
    #[serde(default)]
    pub transfer_cost_per_gb: f64,
    /// Refresh the catalog's spot prices from EC2 (DescribeSpotPriceHistory); none: the
    /// catalog's prices, and every decision says they are the snapshot's.
    #[serde(default)]
    pub spot_prices: Option<SpotPriceSource>,
    /// Cold start: also read `fingerprints`; a workload still `cold_start` there is sized
    /// from its nearest fingerprints' allocation (their typical peak, through
    /// `[[resources]]`): at once when it has no decision yet, and no forecast of it goes
    /// below that until the fingerprint stage knows it. Off in the stage's default (the
    /// stage alone reads forecasts); the default job turns it on.
    #[serde(default)]
    pub cold_start: bool,
}

/// Capacity a workload has on premises.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrivateCapacity {
    /// Workloads whose id starts with this; default: every workload.
    #[serde(default)]
    pub workload_prefix: Option<String>,
    #[serde(default)]
    pub vcpu: f64,
    #[serde(default)]
    pub memory_gib: f64,
    #[serde(default)]
    pub network_gbps: f64,
}

impl PrivateCapacity {
    pub(crate) fn applies_to(&self, workload: &str) -> bool {
        self.workload_prefix
            .as_deref()
            .is_none_or(|p| workload.starts_with(p))
    }

    pub(crate) fn of(&self, unit: &str) -> f64 {
        match unit {
            "vcpu" => self.vcpu,
            "gib" => self.memory_gib,
            "gbps" => self.network_gbps,
            _ => 0.0,
        }
    }
}

/// Where spot prices come from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpotPriceSource {
    /// Region to ask; default: the catalog's.
    #[serde(default)]
    pub region: Option<String>,
    /// EC2 endpoint URL instead of AWS's (moto, private endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Wall seconds between refreshes.
    #[serde(default = "d_refresh")]
    pub refresh_s: u64,
}

fn d_switch() -> f64 {
    0.15
}
fn d_burst() -> f64 {
    // Off unless configured (the default job turns it on): the stage alone reads forecasts.
    0.0
}
fn d_burst_target() -> f64 {
    0.7
}

fn d_refresh() -> u64 {
    3600
}

fn d_spot_share() -> f64 {
    0.8
}
fn d_margin() -> f64 {
    0.1
}

fn d_q() -> f64 {
    0.9
}
fn d_risk() -> f64 {
    0.15
}
fn d_min() -> i64 {
    1
}
fn d_cooldown() -> i64 {
    3 * 3600
}

impl Default for TierSelectConfig {
    fn default() -> Self {
        Self {
            catalog: None,
            sla_quantile: d_q(),
            max_risk: d_risk(),
            min_instances: d_min(),
            cooldown_s: d_cooldown(),
            max_spot_share: d_spot_share(),
            budget_per_hour: None,
            scale_in_margin: d_margin(),
            switch_margin: d_switch(),
            private: Vec::new(),
            transfer_cost_per_gb: 0.0,
            burst_utilisation: d_burst(),
            burst_target: d_burst_target(),
            spot_prices: None,
            cold_start: false,
        }
    }
}
