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
use super::{CallError, ServiceId};
use crate::bindings::wasmhost::plugin::services::{Error, Host};
use crate::bindings::{Request, Response};
use crate::sandbox::Sandbox;
use tracing::Instrument;

impl Host for HostState {
    async fn call(
        &mut self,
        name: String,
        mut req: Request,
    ) -> wasmtime::Result<Result<Response, Error>> {
        match check_call(&self.id, &self.sandbox, &name, self.depth) {
            Ok(()) => {}
            Err(Refusal::NotGranted) => {
                let service = &self.id.service;
                return Ok(Err(Error::Denied(format!(
                    "calling `{name}` is not granted to `{service}` (add it to [grants] services in {service}.toml)"
                ))));
            }
            // A chain this deep is a loop (A→B→A…): the whole chain is cut,
            // so the outside caller gets 508 whatever the services do.
            Err(Refusal::TooDeep(max)) => return Err(CallLoop { max }.into()),
        }
        pass_request_id(&mut req.headers, &self.request_id);
        let depth = self.depth + 1;
        let span =
            tracing::debug_span!("call", callee = %name, depth, version = tracing::field::Empty);
        let call = self.calls.call(name.clone(), req, depth);
        let result = async {
            let result = call.await;
            log_call(&result);
            result
        }
        .instrument(span)
        .await;
        match result {
            Ok(resp) => Ok(Ok(resp)),
            Err(CallError::Loop(max)) => Err(CallLoop { max }.into()),
            Err(CallError::NotFound(s)) => {
                Ok(Err(Error::NotFound(format!("no service named `{s}`"))))
            }
            Err(CallError::Failed(message)) => Ok(Err(Error::Failed(message))),
        }
    }
}

/// Logs the outcome of a nested call, inside its span.
pub(crate) fn log_call(result: &Result<Response, CallError>) {
    match result {
        Ok(resp) => tracing::debug!(status = resp.status, "call answered"),
        Err(error) => tracing::debug!(%error, "call failed"),
    }
}

/// Header carrying the id of the outside request through nested calls.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Gives a nested request the id of the outside request it serves, unless
/// the guest set one itself.
pub(crate) fn pass_request_id(headers: &mut Vec<(String, String)>, id: &str) {
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(REQUEST_ID_HEADER))
    {
        headers.push((REQUEST_ID_HEADER.to_string(), id.to_string()));
    }
}

/// Why a call to another service may not go ahead.
pub(crate) enum Refusal {
    /// The caller's manifest does not grant the callee.
    NotGranted,
    /// The chain would go deeper than this call-depth limit.
    TooDeep(u32),
}

/// Checks a call from `caller`, itself `depth` calls deep, to `callee` —
/// through `services.call` or `http://CALLEE.internal` alike — and logs a
/// refusal.
pub(crate) fn check_call(
    caller: &ServiceId,
    sandbox: &Sandbox,
    callee: &str,
    depth: u32,
) -> Result<(), Refusal> {
    let (service, version) = (&caller.service, &caller.version);
    if !sandbox.may_call(callee) {
        tracing::warn!(%service, %version, %callee, "service call refused: not granted");
        return Err(Refusal::NotGranted);
    }
    let max = sandbox.limits.max_call_depth;
    if depth + 1 > max {
        tracing::warn!(%service, %version, %callee, depth = depth + 1, "service call refused: call depth limit reached");
        return Err(Refusal::TooDeep(max));
    }
    Ok(())
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
