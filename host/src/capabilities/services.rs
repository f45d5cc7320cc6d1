//! `wasmhost:plugin/services`: one service calling another through the
//! host's own routing, so the callee runs exactly as for an outside request
//! (its live version, a fresh instance, its own limits).
//!
//! Each hop increases the call depth; past the limit the call is refused, so
//! a loop A→B→A ends with an error instead of exhausting the host.

use super::HostState;
use crate::bindings::wasmhost::plugin::services::{Error, Host};
use crate::bindings::{Request, Response};
use crate::dispatch::DispatchError;

impl Host for HostState {
    async fn call(
        &mut self,
        name: String,
        req: Request,
    ) -> wasmtime::Result<Result<Response, Error>> {
        let depth = self.depth + 1;
        let max = self.dispatcher.limits().max_call_depth;
        if depth > max {
            tracing::warn!(
                service = %self.version.service,
                version = %self.version.version,
                callee = %name,
                depth,
                "service call refused: call depth limit reached"
            );
            return Ok(Err(Error::Denied(format!(
                "call depth limit of {max} reached"
            ))));
        }
        let dispatcher = self.dispatcher.clone();
        let result = dispatcher.call_service(name.clone(), req, depth).await;
        Ok(result.map_err(|e| match e {
            DispatchError::UnknownService(s) => Error::NotFound(format!("no service named `{s}`")),
            DispatchError::NoRoute { .. } => Error::NotFound(format!("no service named `{name}`")),
            other => Error::Failed(other.to_string()),
        }))
    }
}

/// The `types` interface has no functions; this marks it as provided.
impl crate::bindings::wasmhost::plugin::types::Host for HostState {}
