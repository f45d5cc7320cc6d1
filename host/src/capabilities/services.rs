//! `wasmhost:plugin/services`: one service calling another through the
//! host's own routing, so the callee runs exactly as for an outside request
//! (its live version, a fresh instance, its own limits).
//!
//! A service may call only the services its manifest grants
//! (`[grants] services`); any other call returns `error::denied` and is
//! logged. Each hop increases the call depth; past the limit the whole
//! chain is cut (each instance in it traps), so a loop A→B→A ends with 508
//! instead of exhausting the host.

use super::HostState;
use crate::bindings::wasmhost::plugin::services::{Error, Host};
use crate::bindings::{Request, Response};
use crate::dispatch::{DispatchError, Failure};

impl Host for HostState {
    async fn call(
        &mut self,
        name: String,
        req: Request,
    ) -> wasmtime::Result<Result<Response, Error>> {
        let (service, version) = (&self.version.service, &self.version.version);
        if !self.version.sandbox.may_call(&name) {
            tracing::warn!(%service, %version, callee = %name, "service call refused: not granted");
            return Ok(Err(Error::Denied(format!(
                "calling `{name}` is not granted to `{service}` (add it to [grants] services in {service}.toml)"
            ))));
        }
        let depth = self.depth + 1;
        let max = self.version.sandbox.limits.max_call_depth;
        if depth > max {
            // A chain this deep is a loop (A→B→A…): the whole chain is cut,
            // so the outside caller gets 508 whatever the services do.
            tracing::warn!(%service, %version, callee = %name, depth, "service call refused: call depth limit reached");
            return Err(CallLoop { max }.into());
        }
        let dispatcher = self.dispatcher.clone();
        let result = dispatcher.call_service(name.clone(), req, depth).await;
        match result {
            Ok(resp) => Ok(Ok(resp)),
            Err(DispatchError::Failed {
                failure: Failure::CallLoop(max),
                ..
            }) => Err(CallLoop { max }.into()),
            Err(DispatchError::UnknownService(s)) => {
                Ok(Err(Error::NotFound(format!("no service named `{s}`"))))
            }
            Err(DispatchError::NoRoute { .. }) => {
                Ok(Err(Error::NotFound(format!("no service named `{name}`"))))
            }
            Err(other) => Ok(Err(Error::Failed(other.to_string()))),
        }
    }
}

/// Ends every instance of a `services.call` chain that went too deep.
#[derive(Debug, thiserror::Error)]
#[error("service call loop: the chain went deeper than {max} calls")]
pub struct CallLoop {
    /// The call-depth limit that was hit.
    pub max: u32,
}

/// The `types` interface has no functions; this marks it as provided.
impl crate::bindings::wasmhost::plugin::types::Host for HostState {}
