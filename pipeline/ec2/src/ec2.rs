//! [`Cloud`] on EC2 through aws-sdk-ec2.
//!
//! Credentials and region come from the standard AWS chain (environment, profile, web
//! identity, instance metadata); `endpoint` overrides the URL for moto and private endpoints.
//! Calls are retried by the SDK's standard retry mode (exponential backoff with jitter) on
//! throttling (`RequestLimitExceeded`, `Throttling`) and transient failures, up to
//! `max_attempts`; what still fails is an [`Error::External`] that says whether a later retry
//! could help. Errors carry EC2's code and message only: never a credential.
//!
//! The stage is synchronous (one batch at a time on its own thread); the SDK is async. Each
//! call runs on this client's own single-thread runtime; inside another runtime (the Kafka
//! service's) the call is made from a short-lived helper thread, as a runtime cannot be
//! blocked on from within one.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceType, MarketType, ResourceType, SpotInstanceType, SpotMarketOptions, Tag,
    TagSpecification,
};
use wfe_contract::{Error, Result};

use crate::cloud::{Cloud, DRY_RUN_OK, Launch, Running};
use crate::sdk::{self, Caller, Ec2Settings, Static};

/// An EC2 client with its runtime and rate limit.
pub struct Ec2 {
    client: Client,
    caller: Caller,
}

impl Ec2 {
    /// Connects with the standard credential chain.
    pub fn connect(s: &Ec2Settings) -> Result<Self> {
        Self::build(s, None)
    }

    /// Connects with fixed credentials (tests against moto, which accepts any).
    pub fn with_credentials(s: &Ec2Settings, key: &str, secret: &str) -> Result<Self> {
        Self::build(s, Some(Static::new(key, secret, None, None, "wfe-static")))
    }

    fn build(s: &Ec2Settings, creds: Option<Static>) -> Result<Self> {
        let (caller, conf) = sdk::connect(s, creds)?;
        Ok(Self {
            client: Client::new(&conf),
            caller,
        })
    }

    fn call<F: std::future::Future + Send>(&mut self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        self.caller.call(fut)
    }
}

fn external<E, R>(call: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    sdk::external(&format!("ec2:{call}"), e)
}

/// True when the error is EC2's "the dry run would have succeeded".
fn dry_run_ok<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code() == Some(DRY_RUN_OK))
}

impl Cloud for Ec2 {
    fn launch(&mut self, req: &Launch, dry_run: bool) -> Result<Vec<String>> {
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(
                req.tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let market = req.spot.then(|| {
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .spot_options(
                    SpotMarketOptions::builder()
                        .spot_instance_type(SpotInstanceType::OneTime)
                        .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                        .build(),
                )
                .build()
        });
        let count = i32::try_from(req.count)
            .map_err(|_| Error::bad_input("launch", format!("count {} too large", req.count)))?;
        let op = self
            .client
            .run_instances()
            .image_id(&req.image_id)
            .instance_type(InstanceType::from(req.instance_type.as_str()))
            .min_count(count)
            .max_count(count)
            .client_token(&req.client_token)
            .set_subnet_id(req.subnet_id.clone())
            .set_security_group_ids(
                (!req.security_group_ids.is_empty()).then(|| req.security_group_ids.clone()),
            )
            .set_instance_market_options(market)
            .tag_specifications(tags)
            .dry_run(dry_run);
        match self.call(op.send()) {
            Ok(out) => Ok(out
                .instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect()),
            Err(e) if dry_run && dry_run_ok(&e) => Ok(Vec::new()),
            Err(e) => Err(external("RunInstances", e)),
        }
    }

    fn terminate(&mut self, ids: &[String], dry_run: bool) -> Result<Vec<String>> {
        let op = self
            .client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .dry_run(dry_run);
        match self.call(op.send()) {
            Ok(out) => Ok(out
                .terminating_instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect()),
            Err(e) if dry_run && dry_run_ok(&e) => Ok(Vec::new()),
            Err(e) => Err(external("TerminateInstances", e)),
        }
    }

    fn describe(&mut self, workload: &str) -> Result<Vec<Running>> {
        let op = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("tag:wfe:workload")
                    .values(workload)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            );
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call(op.clone().set_next_token(token.clone()).send())
                .map_err(|e| external("DescribeInstances", e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = i.instance_id() else { continue };
                out.push(Running {
                    id: id.to_string(),
                    instance_type: i
                        .instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    spot: i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
                    launched_ms: i
                        .launch_time()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0),
                });
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    fn spot_prices(&mut self, types: &[String]) -> Result<Vec<(String, f64)>> {
        let op = self
            .client
            .describe_spot_price_history()
            .set_instance_types(Some(
                types
                    .iter()
                    .map(|t| InstanceType::from(t.as_str()))
                    .collect(),
            ))
            .product_descriptions("Linux/UNIX")
            .start_time(aws_sdk_ec2::primitives::DateTime::from(
                std::time::SystemTime::now(),
            ));
        let out = self
            .call(op.send())
            .map_err(|e| external("DescribeSpotPriceHistory", e))?;
        // The lowest current price of each type over its availability zones.
        let mut best: Vec<(String, f64)> = Vec::new();
        for p in out.spot_price_history() {
            let (Some(t), Some(price)) = (
                p.instance_type(),
                p.spot_price().and_then(|s| s.parse::<f64>().ok()),
            ) else {
                continue;
            };
            if !(price.is_finite() && price > 0.0) {
                continue;
            }
            match best.iter_mut().find(|(n, _)| n == t.as_str()) {
                Some(b) => b.1 = b.1.min(price),
                None => best.push((t.as_str().to_string(), price)),
            }
        }
        Ok(best)
    }
}
