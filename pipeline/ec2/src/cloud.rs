//! What the actuator needs of a cloud: launch, terminate, and describe a workload's
//! instances. [`crate::Ec2`] is the implementation (aws-sdk-ec2); the stage holds a
//! `Box<dyn Cloud>` so that its planning and guardrails never depend on the SDK's types.

use wfe_contract::Result;

/// A launch request: `count` instances of one type in one market.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub instance_type: String,
    pub count: i64,
    pub spot: bool,
    /// Idempotency key (EC2's ClientToken), derived from the decision.
    pub client_token: String,
    pub image_id: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    /// Tags put on the instances (`wfe:workload`, `wfe:decision`, `wfe:tier`).
    pub tags: Vec<(String, String)>,
}

/// One running (or pending) instance of a workload, as the cloud reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub id: String,
    pub instance_type: String,
    pub spot: bool,
    /// Launch time (ms), to terminate the newest first.
    pub launched_ms: i64,
}

/// The outcome of a call made with `dry_run`: EC2 checked it and would have done it.
pub const DRY_RUN_OK: &str = "DryRunOperation";

pub trait Cloud: Send {
    /// Launches the instances; with `dry_run`, asks EC2 whether it would (and returns none).
    fn launch(&mut self, req: &Launch, dry_run: bool) -> Result<Vec<String>>;
    /// Terminates the instances; with `dry_run`, asks EC2 whether it would.
    fn terminate(&mut self, ids: &[String], dry_run: bool) -> Result<Vec<String>>;
    /// The workload's pending and running instances (by its `wfe:workload` tag).
    fn describe(&mut self, workload: &str) -> Result<Vec<Running>>;
    /// The latest spot price per hour of each type (DescribeSpotPriceHistory).
    fn spot_prices(&mut self, types: &[String]) -> Result<Vec<(String, f64)>>;
}
