//! Calls to other services through the host (`services.call`).
//!
//! Invariant: a call that produced an answer is `Ok` whatever its status (a
//! 404 from the callee is the caller's to read); only a call that produced
//! none is an `Err`, a 502 naming the callee, so `?` answers the client the
//! way a gateway would.

use crate::wasmhost::plugin::services;
use crate::{Error, Request, Response, Result};

/// Sends `req` to the service `name` (routed as an outside request would
/// be; the manifest must grant it: `[grants] services`).
pub fn call(name: &str, req: &Request) -> Result<Response> {
    services::call(name, req).map_err(|e| {
        let detail = match e {
            services::Error::NotFound(m)
            | services::Error::Denied(m)
            | services::Error::Failed(m) => m,
        };
        Error::bad_gateway(format!("{name} service unavailable: {detail}"))
    })
}
