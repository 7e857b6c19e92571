//! The actuator's settings: its mode, caps, catalog and the spot notice queue.

use serde::{Deserialize, Serialize};
use wfe_contract::{Error, Result};
use wfe_ec2::Ec2Settings;

/// How the actuator acts.
#[derive(
    Debug,
    Clone,
    Copy,
    Deserialize,
    Serialize,
    PartialEq,
    Eq,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Mode {
    /// Write the calls it would make to `actions`, send nothing.
    RecordOnly,
    /// Send the calls with EC2's DryRun flag: checked, nothing launched.
    DryRun,
    /// Launch and terminate.
    Apply,
}

impl Mode {
    /// Its name in config, rows and the API (the same as serde's).
    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn from_name(name: &str) -> Option<Mode> {
        name.parse().ok()
    }
}

/// The run-time setting of the mode (changed through the HTTP API with its token): between
/// `dry-run` and `apply` when the stage has an EC2 client, from the next batch on. A restart
/// goes back to the configured mode. Switching to `apply` is safe after a dry run: `apply`
/// asks EC2 what runs before every decision, so it launches what the dry run only checked.
pub const MODE_SETTING: &str = "actuate.mode";

/// Settings of the actuate stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActuateConfig {
    /// `record-only`, `dry-run` or `apply`. Unset: `dry-run` when `image_id` is set (the
    /// actuator can ask EC2), else `record-only`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Region the calls are for.
    #[serde(default = "d_region")]
    pub region: String,
    /// EC2 endpoint URL instead of AWS's for the region (moto, private endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// AMI the instances boot; `dry-run` and `apply` need it.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Subnet to launch in; default: the account's default VPC.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Security groups of launched instances.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Most instances a workload may have.
    #[serde(default = "d_max")]
    pub max_instances: i64,
    /// Most instances one decision may add.
    #[serde(default = "d_step")]
    pub max_step: i64,
    /// Most instances all workloads may have together.
    #[serde(default = "d_fleet_max")]
    pub max_fleet_instances: i64,
    /// Most all workloads' instances may cost per hour together (USD), priced at the
    /// catalog's prices at least. Set it to what the account may spend.
    #[serde(default = "d_spend")]
    pub max_spend_per_hour: Option<f64>,
    /// Seconds of event time the ids of decisions acted on are remembered (a replay within
    /// it never acts twice); a decision older than this behind the newest one is stale and
    /// dropped unacted (`dropped.stale_decision`). Bounds the actuator's state.
    #[serde(default = "d_remember")]
    pub remember_s: u64,
    /// Catalog file (TOML) the actuator prices instances by; default: the shipped snapshot
    /// (`wfe` passes tier-select's `catalog` when this is unset, so both read one file).
    #[serde(default)]
    pub catalog: Option<std::path::PathBuf>,
    /// Most EC2 calls per second.
    #[serde(default = "d_rate")]
    pub max_calls_per_s: f64,
    /// Attempts per call on throttling and transient errors (backoff between them).
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Where spot interruption notices come from (`apply` mode); none: no notices, lost
    /// spot capacity is found by describe at the next decision.
    #[serde(default)]
    pub interruptions: Option<InterruptionSource>,
}

/// An SQS queue of EC2's spot events.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterruptionSource {
    /// URL of the SQS queue an EventBridge rule forwards "EC2 Spot Instance Interruption
    /// Warning" (and optionally rebalance) events to.
    pub queue_url: String,
    /// SQS endpoint URL instead of AWS's for the region (moto, private endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Wall seconds between polls of the queue.
    #[serde(default = "d_poll")]
    pub poll_s: f64,
    /// Spot of a type is scarce after this many interruption warnings for it within
    /// `scarce_window_s`: replacements are then on demand.
    #[serde(default = "d_scarce")]
    pub scarce_after: usize,
    #[serde(default = "d_scarce_window")]
    pub scarce_window_s: i64,
    /// Also replace on "EC2 Instance Rebalance Recommendation" (before a warning).
    #[serde(default)]
    pub on_rebalance: bool,
    /// A message naming no instance of this actuator's is left for other readers (another
    /// partition's actuator) for this many deliveries, then deleted and reported; so is a
    /// notice whose replacement kept failing.
    #[serde(default = "d_receives")]
    pub max_receives: u32,
}

fn d_poll() -> f64 {
    5.0
}
fn d_scarce() -> usize {
    2
}
fn d_scarce_window() -> i64 {
    3600
}
fn d_receives() -> u32 {
    5
}

fn d_region() -> String {
    "us-east-1".into()
}
fn d_max() -> i64 {
    100
}
fn d_step() -> i64 {
    20
}
fn d_remember() -> u64 {
    7 * 86_400
}
fn d_fleet_max() -> i64 {
    1000
}
fn d_spend() -> Option<f64> {
    Some(1000.0)
}
fn d_rate() -> f64 {
    5.0
}
fn d_attempts() -> u32 {
    4
}

impl Default for ActuateConfig {
    fn default() -> Self {
        Self {
            mode: None,
            region: d_region(),
            endpoint: None,
            image_id: None,
            subnet_id: None,
            security_group_ids: Vec::new(),
            max_instances: d_max(),
            max_step: d_step(),
            max_fleet_instances: d_fleet_max(),
            max_spend_per_hour: d_spend(),
            catalog: None,
            remember_s: d_remember(),
            max_calls_per_s: d_rate(),
            max_attempts: d_attempts(),
            interruptions: None,
        }
    }
}

impl ActuateConfig {
    /// The mode in force: as set, else `dry-run` with an AMI to launch and `record-only`
    /// without one.
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(if self.image_id.is_some() {
            Mode::DryRun
        } else {
            Mode::RecordOnly
        })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_instances < 0 || self.max_step <= 0 || self.max_fleet_instances < 0 {
            return Err(Error::config(
                "stages.actuate.max_instances",
                "caps must be positive",
            ));
        }
        if self
            .max_spend_per_hour
            .is_some_and(|s| !(s.is_finite() && s >= 0.0))
        {
            return Err(Error::config(
                "stages.actuate.max_spend_per_hour",
                "must be a number of USD per hour, 0 or more",
            ));
        }
        if !(self.max_calls_per_s.is_finite() && self.max_calls_per_s > 0.0) {
            return Err(Error::config(
                "stages.actuate.max_calls_per_s",
                "must be positive",
            ));
        }
        if let Some(src) = &self.interruptions {
            if self.mode() != Mode::Apply {
                return Err(Error::config(
                    "stages.actuate.interruptions",
                    format!(
                        "mode `{}` launches nothing, so no notice can name its instances: use mode = \"apply\" or leave interruptions out",
                        self.mode().name()
                    ),
                ));
            }
            if src.queue_url.is_empty()
                || !(src.poll_s.is_finite() && src.poll_s > 0.0)
                || src.scarce_after == 0
                || src.scarce_window_s <= 0
                || src.max_receives == 0
            {
                return Err(Error::config(
                    "stages.actuate.interruptions",
                    "queue_url must be set; poll_s, scarce_after, scarce_window_s and max_receives must be positive",
                ));
            }
        }
        if self.mode() != Mode::RecordOnly && self.image_id.as_deref().is_none_or(str::is_empty) {
            return Err(Error::config(
                "stages.actuate.image_id",
                format!(
                    "mode `{}` launches instances and needs the AMI they boot; or use mode = \"record-only\"",
                    self.mode().name()
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn ec2_settings(&self) -> Ec2Settings {
        Ec2Settings {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            max_attempts: self.max_attempts,
            max_calls_per_s: self.max_calls_per_s,
        }
    }

    /// The SQS settings of the notice queue: the actuator's region and retries.
    pub fn sqs_settings(&self, src: &InterruptionSource) -> Ec2Settings {
        Ec2Settings {
            endpoint: src.endpoint.clone(),
            ..self.ec2_settings()
        }
    }
}
