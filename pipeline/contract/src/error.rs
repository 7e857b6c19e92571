//! Errors of the stage contract. Each says whether retrying can help, so a runner knows
//! whether to back off and try again (I/O, a provider) or to report and move on (bad input).

use arrow_schema::ArrowError;
use wfe_schemas::SchemaMismatch;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A batch does not have the schema declared for its topic.
    #[error(transparent)]
    Schema(#[from] SchemaMismatch),
    /// Input that cannot be used: `location` names the file, line and column or the batch row.
    #[error("bad input at {location}: {message}")]
    BadInput { location: String, message: String },
    /// The configuration is wrong; `key` is the setting's path.
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },
    /// Saved stage state could not be read back.
    #[error("state of stage `{stage}`: {message}")]
    State { stage: String, message: String },
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// An external service (broker, cloud API) failed; `retryable` says whether a retry can help.
    #[error("{service}: {message}")]
    External {
        service: String,
        message: String,
        retryable: bool,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// Code panicked (a bug in wfe or a library it calls) and the panic was contained at an
    /// actor's boundary ([`crate::panic::contain`]); `at` names the stage or reader. Retrying
    /// the same input would panic again.
    #[error("{at} panicked: {message}")]
    Panicked { at: String, message: String },
}

impl Error {
    /// Whether the same call might succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            Error::External { retryable, .. } => *retryable,
            _ => false,
        }
    }

    pub fn bad_input(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            location: location.into(),
            message: message.into(),
        }
    }

    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A short name of the error's kind, for metric labels (`wfe_stage_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Schema(_) => "schema",
            Error::BadInput { .. } => "bad_input",
            Error::Config { .. } => "config",
            Error::State { .. } => "state",
            Error::Io { .. } => "io",
            Error::External { .. } => "external",
            Error::Arrow(_) => "arrow",
            Error::Panicked { .. } => "panic",
        }
    }

    pub fn state(stage: impl Into<String>, message: impl Into<String>) -> Self {
        Error::State {
            stage: stage.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_whether_a_retry_can_help() {
        let timeout = Error::io("broker", std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(timeout.is_retryable());
        assert!(
            !Error::io("f.csv", std::io::Error::from(std::io::ErrorKind::NotFound)).is_retryable()
        );
        assert!(!Error::bad_input("f.csv:3:2", "not a number").is_retryable());
        let throttled = Error::External {
            service: "ec2".into(),
            message: "throttled".into(),
            retryable: true,
        };
        assert!(throttled.is_retryable());
        assert_eq!(
            Error::config("run.speed", "bad").to_string(),
            "config `run.speed`: bad"
        );
    }
}
