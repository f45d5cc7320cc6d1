//! The seam between capabilities and the request path: a service's calls to
//! other services (`services.call` and `http://NAME.internal`) go through
//! [`Calls`], which the dispatcher implements. A capability knows whom it
//! serves ([`ServiceId`]) and how to reach others, never the dispatcher.

use crate::bindings::{Request, Response};
use futures::future::BoxFuture;
use std::sync::Arc;

/// Who a store serves: a service and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceId {
    /// Service name.
    pub service: Arc<str>,
    /// Version name.
    pub version: Arc<str>,
}

/// Why a call to another service produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No service of that name is loaded.
    #[error("no service named `{0}`")]
    NotFound(String),
    /// The chain went past its depth limit somewhere below (a loop).
    #[error("service call loop: the chain went deeper than {0} calls")]
    Loop(u32),
    /// The callee failed (trap, limit, capacity…), as its error says.
    #[error("{0}")]
    Failed(String),
}

/// Runs a request on another service, as the host routes it.
pub trait Calls: Send + Sync {
    /// Runs `req` on the live version of `callee`, `depth` calls deep.
    fn call(
        &self,
        callee: String,
        req: Request,
        depth: u32,
    ) -> BoxFuture<'static, Result<Response, CallError>>;
}
