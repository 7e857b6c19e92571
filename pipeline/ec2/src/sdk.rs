//! What every AWS client of this crate shares: the SDK configuration (credential chain,
//! region, endpoint override, standard retries), a runtime to block on from the stages'
//! synchronous threads, a rate limit, and SDK errors turned into stage errors.

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use wfe_contract::{Error, Result};

/// Where and how to reach an AWS service.
#[derive(Debug, Clone)]
pub struct Ec2Settings {
    pub region: String,
    pub endpoint: Option<String>,
    pub max_attempts: u32,
    /// Most calls per second (the stage's own rate limit, before the service's).
    pub max_calls_per_s: f64,
}

/// A client's runtime and rate limit.
pub(crate) struct Caller {
    rt: tokio::runtime::Runtime,
    min_gap: Duration,
    last_call: Option<Instant>,
}

/// Fixed credentials (tests against moto, which accepts any).
pub(crate) type Static = aws_sdk_ec2::config::Credentials;

/// Loads the SDK configuration: the standard chain, or `creds` when given.
pub(crate) fn connect(
    s: &Ec2Settings,
    creds: Option<Static>,
) -> Result<(Caller, aws_config::SdkConfig)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("AWS client runtime", e))?;
    let retry = RetryConfig::standard()
        .with_max_attempts(s.max_attempts.max(1))
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(10));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(s.region.clone()))
        .retry_config(retry);
    if let Some(url) = &s.endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some(c) = creds {
        loader = loader.credentials_provider(c);
    }
    let conf = on_runtime(&rt, loader.load());
    let caller = Caller {
        rt,
        min_gap: if s.max_calls_per_s > 0.0 {
            Duration::from_secs_f64(1.0 / s.max_calls_per_s)
        } else {
            Duration::ZERO
        },
        last_call: None,
    };
    Ok((caller, conf))
}

impl Caller {
    /// Waits for the rate limit, then runs `fut` to completion.
    pub(crate) fn call<F: std::future::Future + Send>(&mut self, fut: F) -> F::Output
    where
        F::Output: Send,
    {
        if let Some(last) = self.last_call {
            let wait = self.min_gap.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let out = on_runtime(&self.rt, fut);
        self.last_call = Some(Instant::now());
        out
    }
}

/// Blocks on `fut` on `rt`, from a helper thread when called inside another runtime (the
/// Kafka service's): a runtime cannot be blocked on from within one.
fn on_runtime<F: std::future::Future + Send>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        rt.block_on(fut)
    }
}

/// An SDK error as a stage error: the service's code and message (never a credential),
/// retryable for throttling, capacity, timeouts and connection failures (those the SDK gave
/// up retrying). `call` names it, e.g. `ec2:RunInstances`.
pub(crate) fn external<E, R>(call: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (message, retryable) = match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("unknown");
            let retryable = matches!(
                code,
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "InsufficientInstanceCapacity"
                    | "InternalError"
                    | "Unavailable"
                    | "ServiceUnavailable"
            );
            (
                format!("{code}: {}", err.message().unwrap_or("no message")),
                retryable,
            )
        }
        SdkError::TimeoutError(_) => ("timed out".to_string(), true),
        SdkError::DispatchFailure(d) => (
            format!("could not reach the endpoint: {:?}", d.as_connector_error()),
            true,
        ),
        SdkError::ResponseError(_) => ("unreadable response".to_string(), true),
        other => (format!("{other}"), false),
    };
    Error::External {
        service: call.to_string(),
        message,
        retryable,
    }
}
