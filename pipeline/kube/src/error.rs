//! What can go wrong answering KEDA, and the gRPC status each becomes. Each error says whether
//! asking again can help: KEDA retries every polling interval, and a user reading its events
//! should know whether to wait or to fix the trigger.

use tonic::{Code, Status};

/// An answer the scaler cannot give.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScalerError {
    /// The trigger's metadata is wrong: fix the ScaledObject (a retry never helps).
    #[error("trigger metadata `{key}`: {why}")]
    Metadata { key: String, why: String },
    /// No such workload in the run's state (yet): it may appear once its first rows arrive.
    #[error("workload `{workload}`: not in this run's state ({known} workloads known)")]
    UnknownWorkload { workload: String, known: usize },
    /// The workload has no such resource (the job's `[[resources]]` name them).
    #[error("workload `{workload}`: no resource `{resource}` (it has: {known})")]
    UnknownResource {
        workload: String,
        resource: String,
        known: String,
    },
    /// The resource has no forecast yet: the first comes once enough history has been seen.
    #[error("workload `{workload}`, resource `{resource}`: no forecast yet")]
    NoForecast { workload: String, resource: String },
    /// A `GetMetrics` call named a metric this trigger does not produce.
    #[error("metric `{asked}`: this trigger's metric is `{expected}`")]
    WrongMetric { asked: String, expected: String },
    /// Every stream the server allows is open: close one, or ask again later.
    #[error("{open} IsActive streams are open, the most this server keeps")]
    TooManyStreams { open: usize },
}

impl ScalerError {
    pub(crate) fn metadata(key: &str, why: impl Into<String>) -> Self {
        Self::Metadata {
            key: key.to_string(),
            why: why.into(),
        }
    }

    /// Whether the same call can succeed later without anyone changing anything.
    pub fn retry_helps(&self) -> bool {
        matches!(
            self,
            Self::UnknownWorkload { .. } | Self::NoForecast { .. } | Self::TooManyStreams { .. }
        )
    }

    /// A short name of the cause (the `outcome` label of `wfe_keda_calls_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Metadata { .. } => "bad_metadata",
            Self::UnknownWorkload { .. } => "unknown_workload",
            Self::UnknownResource { .. } => "unknown_resource",
            Self::NoForecast { .. } => "no_forecast",
            Self::WrongMetric { .. } => "wrong_metric",
            Self::TooManyStreams { .. } => "too_many_streams",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::Metadata { .. } | Self::WrongMetric { .. } => Code::InvalidArgument,
            Self::UnknownWorkload { .. } | Self::UnknownResource { .. } => Code::NotFound,
            Self::NoForecast { .. } => Code::Unavailable,
            Self::TooManyStreams { .. } => Code::ResourceExhausted,
        }
    }
}

impl From<ScalerError> for Status {
    fn from(e: ScalerError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_names_the_cause_and_its_code_says_whether_to_wait() {
        let e = ScalerError::NoForecast {
            workload: "omi-1".into(),
            resource: "cpu".into(),
        };
        assert!(e.retry_helps());
        let s = Status::from(e);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("omi-1") && s.message().contains("cpu"));
        let bad = ScalerError::metadata("quantile", "must be in (0, 1), got 1.5");
        assert!(!bad.retry_helps());
        assert_eq!(Status::from(bad).code(), Code::InvalidArgument);
    }
}
