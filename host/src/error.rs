//! Why a request got no response from a service: [`DispatchError`], which
//! knows its HTTP status and the limit it hit, and is turned into the JSON
//! error a client reads in one place (`crate::front`).

pub use crate::instance::Failure;
use crate::registry::Version;
use http::StatusCode;
use std::sync::Arc;

/// Why a request produced no response from a service.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No service owns the path.
    #[error("no service serves `{path}`")]
    NoRoute {
        /// The request path.
        path: String,
    },
    /// The service that owns the path is still compiling its first version.
    #[error("service `{service}` is still loading")]
    Loading {
        /// Service name.
        service: String,
    },
    /// No service has that name (for `services.call`).
    #[error("no service named `{0}`")]
    UnknownService(String),
    /// The service ran but failed.
    #[error("{service}@{version}: {failure}")]
    Failed {
        /// Service name.
        service: Arc<str>,
        /// Version name.
        version: Arc<str>,
        /// What went wrong.
        failure: Failure,
    },
}

impl DispatchError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            DispatchError::NoRoute { .. } | DispatchError::UnknownService(_) => {
                StatusCode::NOT_FOUND
            }
            DispatchError::Loading { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DispatchError::Failed { failure, .. } => match failure {
                Failure::CpuTime(_) | Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                Failure::Capacity | Failure::Saturated(_) | Failure::Uncommitted(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Failure::CallLoop(_) => StatusCode::LOOP_DETECTED,
                Failure::Trap(_)
                | Failure::OutOfMemory(_)
                | Failure::StackOverflow
                | Failure::ResponseTooLarge(_)
                | Failure::TooManyResources(_)
                | Failure::Malformed(_)
                | Failure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// `failure` of a request to `version`.
    pub fn failed(version: &Version, failure: Failure) -> Self {
        DispatchError::Failed {
            service: version.service.clone(),
            version: version.version.clone(),
            failure,
        }
    }

    /// The limit this error hit, named as in a manifest's `[limits]`.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            DispatchError::Failed { failure, .. } => failure.limit(),
            _ => None,
        }
    }

    /// The status and whether the guest failed while running, as a
    /// version's metrics count them.
    pub(crate) fn outcome(&self) -> (u16, bool) {
        let trapped = matches!(self, DispatchError::Failed { failure, .. } if failure.is_trap());
        (self.status().as_u16(), trapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_knows_its_status() {
        let failed = |failure| DispatchError::Failed {
            service: "s".into(),
            version: "1".into(),
            failure,
        };
        assert_eq!(
            DispatchError::Loading {
                service: "s".into()
            }
            .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            failed(Failure::CallLoop(8)).status(),
            StatusCode::LOOP_DETECTED
        );
        assert_eq!(failed(Failure::Saturated(2)).limit(), Some("concurrency"));
        assert_eq!(failed(Failure::Trap("x".into())).outcome(), (500, true));
        assert_eq!(failed(Failure::Capacity).outcome(), (503, false));
    }
}
