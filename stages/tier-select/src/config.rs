//! The tier-select stage's settings: the SLA, the caps, private capacity, spot prices.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};

/// Settings of the tier-select stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierSelectConfig {
    /// Catalog file (TOML); default: the shipped snapshot (`pipeline/ec2/catalog/aws-us-east-1.toml`).
    #[serde(default)]
    pub catalog: Option<std::path::PathBuf>,
    /// How a count is chosen: `risk`, the cheapest mix that covers `sla_quantile` within
    /// `max_risk`; or `expected-cost`, the mix of least expected cost over the forecast
    /// distribution: instances, `shortfall_price` per unit-minute short, `churn_cost`.
    #[serde(default)]
    pub objective: Objective,
    /// `expected-cost`: USD per unit-minute of demand not served (a vCPU-, GiB- or
    /// Gbps-minute short): what the SLA says falling short costs.
    #[serde(default = "d_shortfall_price")]
    pub shortfall_price: f64,
    /// `expected-cost`: USD per instance launched or ended (billing minimums, start-up work).
    #[serde(default = "d_churn_cost")]
    pub churn_cost: f64,
    /// `expected-cost`: seconds from a launch until the instance serves; until then the
    /// fleet in place carries the demand.
    #[serde(default = "d_lead")]
    pub lead_s: i64,
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
    /// Hours the reactive floor remembers: no forecast takes the fleet below what the
    /// highest demand observed in the last `hold_h` hours needs at `burst_target` (Kubernetes'
    /// scale-down stabilisation, over hours of observed demand). A workload that jumped once
    /// keeps the capacity for the jump that long. 0 (the default): the demand last observed.
    #[serde(default)]
    pub hold_h: u32,
    /// With `hold_h`: headroom over the remembered peak that the objective buys itself. No
    /// forecast may say less than the highest demand of the last `hold_h` hours times this,
    /// so the capacity is chosen with the forecast's mix (spot where it pays), where the
    /// reactive floor adds on demand. For jumps past any seen before: 2 keeps twice the
    /// month's peak. 0 (the default): off, the floor alone holds the peak. At most
    /// [`MAX_HOLD_MARGIN`].
    #[serde(default)]
    pub hold_margin: f64,
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
    /// Tuning from realised cost (`expected-cost` only; needs `[[resources]]` to observe the
    /// demand that came): per workload, a learner over multipliers of `shortfall_price`
    /// (see the stage's `tuner` module). None (the default): the price as configured.
    #[serde(default)]
    pub tuning: Option<TuningConfig>,
}

/// The per-workload learner's settings (`[stages.tier-select.tuning]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TuningConfig {
    /// The multipliers of `shortfall_price` each workload chooses among (its arms),
    /// ascending; 1 (the configured price, where a workload starts) among them.
    #[serde(default = "d_arms")]
    pub arms: Vec<f64>,
    /// Reactive floors (`[burst_utilisation, burst_target]`) each workload chooses among
    /// too: every multiplier is an arm at every floor, and a workload's floor is its arm's.
    /// Empty (the default): the job's own floor only. When given, the job's own floor is
    /// among them (where a workload starts) and the floor is on (`burst_utilisation` > 0).
    #[serde(default)]
    pub floors: Vec<[f64; 2]>,
    /// Half-life of an arm's realised cost, in hours of event time: older steps count less
    /// (a workload's behaviour drifts).
    #[serde(default = "d_half_life")]
    pub half_life_h: f64,
    /// Hours of steps scored before a workload leaves the configured price.
    #[serde(default = "d_warmup")]
    pub warmup_h: f64,
    /// Exponential weights' rate: an arm's weight is `exp(-rate x cost / mean cost)` (the
    /// weights are reported; the arm of largest weight decides).
    #[serde(default = "d_rate")]
    pub learning_rate: f64,
}

/// One arm of the learner: a multiplier of `shortfall_price` at a reactive floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    pub multiplier: f64,
    /// `[burst_utilisation, burst_target]`.
    pub floor: [f64; 2],
}

impl TuningConfig {
    /// The floors the arms are made at: `floors`, or the job's own (`own`) alone.
    fn floors_or(&self, own: [f64; 2]) -> Vec<[f64; 2]> {
        if self.floors.is_empty() {
            vec![own]
        } else {
            self.floors.clone()
        }
    }

    /// Every arm, the multipliers varying fastest; `own`: the job's floor.
    pub fn arm_list(&self, own: [f64; 2]) -> Vec<Arm> {
        (self.floors_or(own).into_iter())
            .flat_map(|floor| (self.arms.iter()).map(move |&multiplier| Arm { multiplier, floor }))
            .collect()
    }

    /// How many arms [`Self::arm_list`] holds.
    pub fn arm_count(&self) -> usize {
        self.arms.len() * self.floors.len().max(1)
    }

    /// The floor of arm `k` (an index of [`Self::arm_list`]).
    pub fn floor_of_arm(&self, k: usize, own: [f64; 2]) -> [f64; 2] {
        let i = k / self.arms.len().max(1);
        self.floors.get(i).copied().unwrap_or(own)
    }

    /// The arm where a workload starts: the configured price (multiplier 1, else the
    /// nearest to it) at the job's own floor `own`.
    pub fn neutral_arm(&self, own: [f64; 2]) -> usize {
        let m = (0..self.arms.len())
            .min_by(|a, b| {
                let d = |i: usize| self.arms[i].ln().abs();
                d(*a).total_cmp(&d(*b))
            })
            .unwrap_or(0);
        let f = (self.floors_or(own).iter())
            .position(|f| *f == own)
            .unwrap_or(0);
        f * self.arms.len() + m
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| {
            Err(Error::config(
                format!("stages.tier-select.tuning.{key}"),
                why,
            ))
        };
        let ascending = self.arms.windows(2).all(|w| w[0] < w[1]);
        if self.arms.is_empty()
            || self.arms.len() > 32
            || !ascending
            || !self.arms.iter().all(|m| m.is_finite() && *m > 0.0)
            || !self.arms.contains(&1.0)
        {
            return bad(
                "arms",
                "must be 1 to 32 positive multipliers, ascending, 1 among them",
            );
        }
        let floor_ok = |[u, t]: [f64; 2]| 0.0 < t && t <= u && u <= 1.0;
        if self.floors.len() > 8 || !self.floors.iter().all(|f| floor_ok(*f)) {
            return bad(
                "floors",
                "must be up to 8 [burst_utilisation, burst_target] pairs, 0 < target <= utilisation <= 1",
            );
        }
        if self.half_life_h.is_nan() || self.half_life_h <= 0.0 {
            return bad("half_life_h", "must be a positive number of hours");
        }
        if !(self.warmup_h.is_finite() && self.warmup_h >= 0.0) {
            return bad("warmup_h", "must be 0 or more hours");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be positive");
        }
        Ok(())
    }
}

impl Default for TuningConfig {
    fn default() -> Self {
        Self {
            arms: d_arms(),
            floors: Vec::new(),
            half_life_h: d_half_life(),
            warmup_h: d_warmup(),
            learning_rate: d_rate(),
        }
    }
}

fn d_arms() -> Vec<f64> {
    vec![0.1, 0.3, 1.0, 3.0, 10.0]
}
fn d_half_life() -> f64 {
    // A week: long enough to hold a weekly cycle's spikes, short enough to follow a change.
    168.0
}
fn d_warmup() -> f64 {
    24.0
}
fn d_rate() -> f64 {
    5.0
}

/// What tier-select minimises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Cheapest mix within a risk of falling short.
    #[default]
    Risk,
    /// Least expected cost, shortfall and churn priced.
    ExpectedCost,
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

fn d_shortfall_price() -> f64 {
    // Dear on purpose (a vCPU-minute of m7i on demand is 0.00084 USD): capacity reaches far
    // into the forecast's tail, as an SLA with a real penalty asks.
    10.0
}
fn d_churn_cost() -> f64 {
    0.01
}
fn d_lead() -> i64 {
    180
}

fn d_switch() -> f64 {
    0.15
}
fn d_burst() -> f64 {
    // Off unless configured (the default job turns it on): the stage alone reads forecasts.
    0.0
}
/// The longest `hold_h`: it bounds what a workload's floor remembers (an hour's maximum is
/// 16 bytes).
pub const MAX_HOLD_H: u32 = 2_160;
/// The largest `hold_margin`: ten times a workload's peak is past any allocation sizing.
pub const MAX_HOLD_MARGIN: f64 = 10.0;

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
            objective: Objective::default(),
            shortfall_price: d_shortfall_price(),
            churn_cost: d_churn_cost(),
            lead_s: d_lead(),
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
            hold_h: 0,
            hold_margin: 0.0,
            spot_prices: None,
            cold_start: false,
            tuning: None,
        }
    }
}

impl TierSelectConfig {
    /// Every setting in its range; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, why: &str| Err(Error::config(format!("stages.tier-select.{key}"), why));
        if !(0.0 < self.sla_quantile && self.sla_quantile < 1.0) {
            return bad("sla_quantile", "must be in (0, 1)");
        }
        if !(0.0..=1.0).contains(&self.max_risk) {
            return bad("max_risk", "must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.max_spot_share) {
            return bad("max_spot_share", "must be in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.scale_in_margin) {
            return bad("scale_in_margin", "must be in [0, 1)");
        }
        // Written so that NaN fails (a comparison with NaN is false).
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.transfer_cost_per_gb)
            || self
                .private
                .iter()
                .any(|p| !(ok(p.vcpu) && ok(p.memory_gib) && ok(p.network_gbps)))
        {
            return bad(
                "private",
                "private capacities and transfer_cost_per_gb must be 0 or more",
            );
        }
        if !ok(self.switch_margin) {
            return bad("switch_margin", "must be 0 or more");
        }
        let utilisation_ok = (0.0..=1.0).contains(&self.burst_utilisation);
        let target_ok = self.burst_target > 0.0 && self.burst_target <= 1.0;
        if !(utilisation_ok && target_ok) {
            return bad(
                "burst_utilisation",
                "burst_utilisation must be in [0, 1] and burst_target in (0, 1]",
            );
        }
        if self.hold_h > MAX_HOLD_H {
            return bad(
                "hold_h",
                &format!(
                    "must be at most {MAX_HOLD_H} hours (90 days): each workload keeps up to one value per hour of it and resource"
                ),
            );
        }
        if !(0.0..=MAX_HOLD_MARGIN).contains(&self.hold_margin) {
            return bad(
                "hold_margin",
                &format!("must be 0 (off) to {MAX_HOLD_MARGIN} times the held peak"),
            );
        }
        if self.hold_margin > 0.0 && (self.hold_h == 0 || self.burst_utilisation <= 0.0) {
            return bad(
                "hold_margin",
                "is headroom over the reactive floor's memory: set hold_h and burst_utilisation too",
            );
        }
        if self
            .budget_per_hour
            .is_some_and(|b| !(b.is_finite() && b > 0.0))
        {
            return bad(
                "budget_per_hour",
                "must be a positive number of USD per hour",
            );
        }
        if !ok(self.shortfall_price) {
            return bad("shortfall_price", "must be 0 or more USD per unit-minute");
        }
        if !ok(self.churn_cost) {
            return bad("churn_cost", "must be 0 or more USD per instance");
        }
        if !(0..=86_400).contains(&self.lead_s) {
            return bad("lead_s", "must be 0 to 86400 seconds");
        }
        if let Some(t) = &self.tuning {
            if self.objective != Objective::ExpectedCost {
                return bad(
                    "tuning",
                    "tunes the expected-cost objective's shortfall_price: set objective = \"expected-cost\"",
                );
            }
            t.validate()?;
            let own = [self.burst_utilisation, self.burst_target];
            if !t.floors.is_empty() && (self.burst_utilisation <= 0.0 || !t.floors.contains(&own)) {
                return bad(
                    "tuning.floors",
                    "hold the job's own floor [burst_utilisation, burst_target], which must be on",
                );
            }
        }
        Ok(())
    }
}
