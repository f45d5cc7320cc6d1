//! Standard `wasi:http/proxy` components (those that export
//! `wasi:http/incoming-handler`, as built for `wasmtime serve`): run through
//! the same routing, release policy, sandbox, limits and metrics as
//! wasmhost's own services.
//!
//! From outside, request and response bodies stream: the request body goes
//! to the guest as it arrives (bounded by `request-body`), and the response
//! body — trailers included — is sent while the guest writes it (bounded by
//! `response-body`; a guest writing past it has its response cut). The
//! instance runs in its own task, so it may keep writing after the head is
//! sent; the CPU and wall-clock limits cover it all. A `services.call` to
//! such a component gets the whole response, bounded the same way.

use crate::bindings::{Request, Response};
use crate::capabilities::HostState;
use crate::error::{DispatchError, Failure};
use crate::instance::classify;
use crate::registry::{Pre, Version};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::time::Instant;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// Runs `req` in `store`, a fresh store for the wasi:http component
/// `version`; the response body streams from the guest.
pub async fn handle<B>(
    store: Result<wasmtime::Store<HostState>, Failure>,
    version: Arc<Version>,
    req: http::Request<B>,
    pinned: bool,
) -> Result<http::Response<HyperOutgoingBody>, DispatchError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let fail = |failure| DispatchError::failed(&version, failure);
    let Pre::Proxy(pre) = &version.pre else {
        return Err(fail(Failure::Internal("not a wasi:http component".into())));
    };
    let pre = pre.clone();
    let limits = version.sandbox.limits.clone();
    let started = Instant::now();
    let in_flight = version.tally(pinned).start();
    let mut store = match store {
        Ok(store) => store,
        Err(failure) => {
            in_flight.finish(500, false, started.elapsed());
            return Err(fail(failure));
        }
    };
    // The guest reads at most `request-body` bytes; past that its stream fails.
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, limits.max_request_body).map_err(|e| {
        tracing::debug!(error = %e, "request body stopped");
        wasmtime_wasi_http::Error::HttpRequestBodySize(None)
    });
    let req = http::Request::from_parts(parts, body);
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let prepared = (|| -> wasmtime::Result<_> {
        let mut view = store.data_mut().http();
        let req = view.new_incoming_request(Scheme::Http, req)?;
        let out = view.new_response_outparam(sender)?;
        Ok((req, out))
    })();
    let (guest_req, out) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            let error = fail(Failure::Internal(format!("{e:#}")));
            let (status, trapped) = error.outcome();
            in_flight.finish(status, trapped, started.elapsed());
            return Err(error);
        }
    };
    let task_limits = limits.clone();
    let task = tokio::spawn(async move {
        let run = async {
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(e, &task_limits))?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, guest_req, out)
                .await
                .map_err(|e| classify(e, &task_limits))
        };
        let outcome = tokio::time::timeout(task_limits.timeout, run).await;
        match outcome {
            Ok(Ok(())) => {
                // With `transactional-kv` the writes commit once the
                // component has returned (its response may be out already).
                if let Some(pending) = store.data_mut().pending.take().filter(|p| !p.is_empty()) {
                    let kv = store.data().kv.clone();
                    let id = store.data().id.clone();
                    if let Err(e) = kv.commit(pending).await {
                        let error = format!("{e:#}");
                        tracing::error!(service = %id.service, version = %id.version, %error, "the key-value writes of a request could not be committed");
                        return Err(Failure::Uncommitted(error));
                    }
                }
                Ok(())
            }
            Ok(Err(failure)) => {
                let exhausted = store.data().limiter.memory_exhausted;
                Err(failure.explained(exhausted, &task_limits))
            }
            Err(_) => Err(Failure::Timeout(task_limits.timeout)),
        }
    });
    let result = match receiver.await {
        Ok(Ok(resp)) => {
            let max = limits.max_response_body;
            Ok(resp.map(|body| {
                Limited::new(body, max)
                    .map_err(move |e| {
                        tracing::warn!(error = %e, limit = max, "response body cut");
                        wasmtime_wasi_http::Error::HttpResponseBodySize(Some(max as u64))
                    })
                    .boxed_unsync()
            }))
        }
        Ok(Err(code)) => Err(fail(Failure::Malformed(format!(
            "the component answered with an error: {code:?}"
        )))),
        // The guest never set a response: the task says why.
        Err(_) => match task.await {
            Ok(Ok(())) => Err(fail(Failure::Malformed(
                "the component returned without setting a response".into(),
            ))),
            Ok(Err(failure)) => Err(fail(failure)),
            Err(e) => Err(fail(Failure::Internal(e.to_string()))),
        },
    };
    let (status, trapped) = match &result {
        Ok(resp) => (resp.status().as_u16(), false),
        Err(e) => e.outcome(),
    };
    in_flight.finish(status, trapped, started.elapsed());
    result
}

/// Runs a contract `Request` on a wasi:http component and collects its
/// response (for `services.call` and the buffered path).
pub async fn call_buffered(
    store: Result<wasmtime::Store<HostState>, Failure>,
    version: Arc<Version>,
    req: Request,
    pinned: bool,
) -> Result<Response, DispatchError> {
    let fail = |failure| DispatchError::failed(&version, failure);
    let uri = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("http://{}.internal{uri}", version.service));
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body)))
        .map_err(|e| fail(Failure::Internal(format!("invalid request: {e}"))))?;
    let limits = version.sandbox.limits.clone();
    let resp = handle(store, version.clone(), request, pinned).await?;
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(limits.timeout, body.collect())
        .await
        .map_err(|_| fail(Failure::Timeout(limits.timeout)))?
        .map_err(|e| match e {
            wasmtime_wasi_http::Error::HttpResponseBodySize(_) => {
                fail(Failure::ResponseTooLarge(limits.max_response_body))
            }
            other => fail(Failure::Malformed(format!(
                "response body failed: {other:?}"
            ))),
        })?;
    Ok(Response {
        status: parts.status.as_u16(),
        headers: crate::contract::wit_headers(&parts.headers),
        body: collected.to_bytes().to_vec(),
    })
}
