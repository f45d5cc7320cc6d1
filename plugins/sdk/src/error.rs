//! [`Error`]: why a request fails, as an HTTP status and a message.
//!
//! Invariant: an error becomes exactly one response, `{"error": message}`
//! with its status and `content-type: application/json`, the shape of the
//! host's own errors, so a client parses a service's errors and the host's
//! the same way.

use crate::Response;
use std::fmt;

/// What a helper, and so a handler, returns.
pub type Result<T = Response, E = Error> = std::result::Result<T, E>;

/// A failed request: the status to answer and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The HTTP status, 400 to 599.
    pub status: u16,
    /// What went wrong, for the client (lowercase, naming the thing).
    pub message: String,
}

impl Error {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404: no such resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 405: the resource exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "method not allowed")
    }

    /// 409: the request conflicts with the resource's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    /// 422: well-formed, but refers to something that does not exist.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, message)
    }

    /// 500: the service itself failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// 502: a service this one depends on failed.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for Response {
    fn from(e: Error) -> Self {
        Response::error(e.status, &e.message)
    }
}

/// The response of a handler's result: the response itself, or its error's.
pub fn respond(result: Result) -> Response {
    result.unwrap_or_else(Response::from)
}
