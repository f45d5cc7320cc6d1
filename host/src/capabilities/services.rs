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
        // A call that may change something marks this attempt, before it
        // is sent (a call cut off half-way may still have done its work).
        if !crate::resilience::is_read_only(&req.method) {
            self.touched = true;
        }
        let depth = self.depth + 1;
        let span = tracing::debug_span!(
            "call",
            callee = %name,
            depth,
            version = tracing::field::Empty,
            otel.name = %format_args!("call {name}"),
            otel.kind = "client",
        );
        // The callee sees the call's trace context, as an outside client's.
        span.in_scope(|| crate::traces::inject(&mut req.headers));
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

#[cfg(test)]
mod tests {
    //! `services.call` against a fake [`Calls`]: the capability is tested on
    //! its own, with no dispatcher, engine or registry behind it.
    use super::*;
    use crate::capabilities::Calls;
    use crate::manifest::Manifest;
    use futures::future::BoxFuture;
    use std::sync::{Arc, Mutex};

    /// One call the fake saw: callee, depth, request headers.
    type Seen = (String, u32, Vec<(String, String)>);

    /// Answers every call with `answer`, and remembers what it was asked.
    struct Fake {
        answer: Result<Response, CallError>,
        seen: Mutex<Vec<Seen>>,
    }

    impl Calls for Fake {
        fn call(
            &self,
            callee: String,
            req: Request,
            depth: u32,
        ) -> BoxFuture<'static, Result<Response, CallError>> {
            self.seen
                .lock()
                .unwrap()
                .push((callee, depth, req.headers.clone()));
            let answer = self.answer.clone();
            Box::pin(async move { answer })
        }
    }

    fn state(grants: &str, fake: Arc<Fake>, depth: u32) -> (HostState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = Manifest::parse(grants, "order.toml").unwrap();
        let sandbox =
            Sandbox::resolve(&manifest, &Default::default(), dir.path(), "order.toml").unwrap();
        let kv = crate::kv::KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let id = ServiceId {
            service: "order".into(),
            version: "1.0.0".into(),
        };
        let state = HostState::new(
            id,
            Arc::new(sandbox),
            crate::store::Store::Embedded(kv),
            fake,
            "req-7".into(),
            depth,
        )
        .unwrap();
        (state, dir)
    }

    fn request() -> Request {
        Request {
            method: "GET".into(),
            path: "/users/1".into(),
            query: String::new(),
            headers: vec![],
            body: vec![],
        }
    }

    fn ok() -> Result<Response, CallError> {
        Ok(Response {
            status: 200,
            headers: vec![],
            body: b"{}".to_vec(),
        })
    }

    #[tokio::test]
    async fn a_granted_call_goes_one_level_deeper_with_the_request_id() {
        let fake = Arc::new(Fake {
            answer: ok(),
            seen: Mutex::default(),
        });
        let (mut state, _dir) = state("[grants]\nservices = [\"user\"]\n", fake.clone(), 2);
        let resp = state.call("user".into(), request()).await.unwrap().unwrap();
        assert_eq!(resp.status, 200);
        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0.as_str(), seen[0].1), ("user", 3));
        assert_eq!(
            seen[0].2,
            [("x-request-id".to_string(), "req-7".to_string())]
        );
    }

    #[tokio::test]
    async fn an_ungranted_call_is_denied_without_reaching_the_callee() {
        let fake = Arc::new(Fake {
            answer: ok(),
            seen: Mutex::default(),
        });
        let (mut state, _dir) = state("", fake.clone(), 0);
        match state.call("user".into(), request()).await.unwrap() {
            Err(Error::Denied(m)) => assert!(m.contains("[grants] services"), "{m}"),
            other => panic!("expected a denial, got {other:?}"),
        }
        assert!(fake.seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failures_of_the_callee_become_the_interface_errors_or_a_loop_trap() {
        for (answer, expect) in [
            (CallError::NotFound("user".into()), "not-found"),
            (CallError::Failed("user@1.0.0: trapped".into()), "failed"),
            (CallError::Loop(8), "trap"),
        ] {
            let fake = Arc::new(Fake {
                answer: Err(answer),
                seen: Mutex::default(),
            });
            let (mut state, _dir) = state("[grants]\nservices = [\"user\"]\n", fake, 0);
            let got = match state.call("user".into(), request()).await {
                Ok(Err(Error::NotFound(_))) => "not-found",
                Ok(Err(Error::Failed(m))) => {
                    assert_eq!(m, "user@1.0.0: trapped");
                    "failed"
                }
                Err(e) if e.downcast_ref::<CallLoop>().is_some() => "trap",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, expect);
        }
        // Past the depth limit nothing is called: the chain is cut here.
        let fake = Arc::new(Fake {
            answer: ok(),
            seen: Mutex::default(),
        });
        let (mut state, _dir) = state("[grants]\nservices = [\"user\"]\n", fake.clone(), 8);
        let err = state.call("user".into(), request()).await.unwrap_err();
        assert!(err.downcast_ref::<CallLoop>().is_some(), "{err:?}");
        assert!(fake.seen.lock().unwrap().is_empty());
    }
}
