//! The HTTP front: converts between HTTP and the contract's records.
//!
//! Every request goes through one fallback handler that asks the dispatcher
//! for the current route snapshot (an axum `Router` cannot change once
//! built). Errors reach the client as JSON naming the service and version,
//! never a host path; details go to the log.

pub use crate::contract::{SERVICE_HEADER, VERSION_HEADER};

use crate::contract::{tag, to_http, wit_headers};
use crate::dispatch::{DispatchError, Dispatcher, Failure, Served};
use crate::registry::Pre;
use crate::release::Pins;
use crate::resilience::{ATTEMPTS_HEADER, FALLBACK_HEADER, MAX_REPLAY_BODY};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::field::Empty;
use tracing::Instrument;

/// Header carrying a request's id: taken from the client or generated,
/// passed to the guest and to nested calls, and sent back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

use axum::http::HeaderName;

/// Header an outside request carries the pin token in (see
/// [`FrontOptions::pin_token`]); never passed to the service.
pub const PIN_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-wasmhost-pin-token");

/// How the front treats requests.
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// Time a request body has to arrive.
    pub body_timeout: Duration,
    /// When set, an outside pin is honoured only with [`PIN_TOKEN_HEADER`]
    /// carrying this value (and then reaches any loaded version).
    pub pin_token: Option<Arc<str>>,
    /// What `/.well-known/wasmhost/ready` reports.
    pub health: Arc<crate::health::Health>,
}

/// The axum app serving plugin traffic.
pub fn app(dispatcher: Arc<Dispatcher>, options: FrontOptions) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .with_state(Front {
            dispatcher,
            body_timeout: options.body_timeout,
            pin_token: options.pin_token,
            health: options.health,
        })
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
}

/// The state of the HTTP front.
#[derive(Clone)]
struct Front {
    dispatcher: Arc<Dispatcher>,
    body_timeout: Duration,
    pin_token: Option<Arc<str>>,
    health: Arc<crate::health::Health>,
}

/// Which pins an outside request may use: with a pin token configured,
/// only one that presents it (compared in constant time), and then any
/// loaded version; without one, any version that was not rolled back.
fn pins(parts: &mut http::request::Parts, token: Option<&str>) -> Pins {
    let presented = parts.headers.remove(PIN_TOKEN_HEADER);
    match token {
        None => Pins::Outside,
        Some(token) => match presented {
            Some(p) if bool::from(p.as_bytes().ct_eq(token.as_bytes())) => Pins::Trusted,
            _ => Pins::Ignored,
        },
    }
}

/// Makes the id of a request that came without one: 16 random hex digits
/// (64 bits; a UUID costs several times as many instructions, and a request
/// id need only be unique enough to find one request in a log).
#[derive(Clone, Copy, Debug, Default)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}", fastrand::u64(..));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Serves one request and logs its failure, once, as fields: method,
/// path, request id, service, version, status and the limit it hit.
///
/// With `RUST_LOG=wasmhost=debug` the request also runs under a span with
/// those fields, and each nested call under a child span, so a chain of
/// calls reads as one tree. The span is debug-level because creating and
/// filling it costs about a tenth of a request's instructions
/// (callgrind); at the default level a failure's event carries the fields
/// itself.
async fn handle(
    State(front): State<Front>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let request_id = req.headers().get(&REQUEST_ID).cloned();
    let id = || {
        request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    let (method, uri) = (req.method().clone(), req.uri().clone());
    // The `otel.*` fields name the span in an exported trace (see traces).
    let span = tracing::debug_span!(
        "request",
        %method,
        path = uri.path(),
        request_id = id(),
        service = Empty,
        version = Empty,
        status = Empty,
        limit = Empty,
        attempts = Empty,
        fallback_from = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
    );
    crate::traces::continue_from(&span, crate::traces::Http(req.headers()));
    let started = Instant::now();
    let (resp, failure) = serve(front, req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.record("status", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let _entered = span.enter();
    match failure {
        Some(e @ DispatchError::Loading { .. }) => {
            tracing::debug!(error = %e, elapsed_ms, "request refused");
        }
        Some(e) if e.status().is_server_error() => {
            let limit = e.limit();
            if let Some(limit) = limit {
                span.record("limit", limit);
            }
            // Only the exporter may see the span (with --otlp, at the
            // default level): the event then names everything itself.
            if span.is_disabled() || crate::traces::enabled() {
                let (service, version) = match &e {
                    DispatchError::Failed {
                        service, version, ..
                    } => (Some(&**service), Some(&**version)),
                    _ => (None, None),
                };
                tracing::warn!(
                    %method,
                    path = uri.path(),
                    request_id = id(),
                    service,
                    version,
                    status,
                    limit,
                    error = %e,
                    elapsed_ms,
                    "request failed"
                );
            } else {
                tracing::warn!(error = %e, elapsed_ms, "request failed");
            }
        }
        Some(e) => tracing::debug!(error = %e, elapsed_ms, "request refused"),
        None => tracing::debug!(elapsed_ms, "request served"),
    }
    resp
}

/// The response to one request, and the failure behind it if there was one.
async fn serve(
    Front {
        dispatcher,
        body_timeout,
        pin_token,
        health,
    }: Front,
    req: axum::extract::Request,
) -> (axum::response::Response, Option<DispatchError>) {
    if let Some(resp) = probe(&req, &health, &dispatcher) {
        return (resp, None);
    }
    let (mut parts, body) = req.into_parts();
    let pins = pins(&mut parts, pin_token.as_deref());
    let headers = wit_headers(&parts.headers);
    let path = parts.uri.path().to_string();
    // Route first: the body limit is the chosen service's own.
    let picked = match dispatcher.pick(&path, &headers, pins) {
        Ok(picked) => picked,
        Err(e) => return failed(e),
    };
    let version = picked.version.clone();
    let pinned = picked.pinned;
    let span = tracing::Span::current();
    span.record("service", &*version.service);
    span.record("version", &*version.version);
    if !span.is_disabled() {
        crate::traces::rename(&span, format!("{} {}", parts.method, version.service));
    }
    tracing::debug!("request routed; reading its body");
    let origin = Some((&*version.service, &*version.version));
    let limit = version.sandbox.limits.max_request_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        // A client waiting for `100 Continue` is refused before it sends
        // the body (reading it would make hyper send the 100); the
        // connection closes, since the body was never read.
        let expects_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            let mut resp = too_large(limit, origin);
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return (resp, None);
        }
        drain(body).await;
        return (too_large(limit, origin), None);
    }
    // A wasi:http component streams its answer. A body small enough to
    // replay (none, or a declared length up to 64 KiB) is read first, so a
    // failed attempt can be tried again; a larger one streams in, once.
    let no_body = declared.is_none() && !parts.headers.contains_key(header::TRANSFER_ENCODING);
    let replayable = no_body || declared.is_some_and(|len| len <= MAX_REPLAY_BODY);
    if matches!(version.pre, Pre::Proxy(_)) && replayable {
        let body = match read_body(body, limit, body_timeout, origin).await {
            Ok(b) => b,
            Err(resp) => return (resp, None),
        };
        let served = dispatcher.serve_proxy(picked, &parts, &headers, body).await;
        let Served {
            result,
            version,
            fallback_from,
            attempts,
        } = served;
        let (mut resp, failure) = proxied(result, &version);
        mark(
            &mut resp,
            fallback_from.as_deref(),
            attempts,
            &version.version,
        );
        return (resp, failure);
    }
    if matches!(version.pre, Pre::Proxy(_)) {
        let _permit = match picked.claim() {
            Ok((_, permit)) => permit,
            Err(e) => return failed(e),
        };
        let req = axum::http::Request::from_parts(parts, body);
        let request_id = crate::dispatch::request_id(&headers);
        let store = dispatcher.new_store(&version, 0, request_id);
        let result = crate::proxy::handle(store, version.clone(), req, pinned).await;
        return proxied(result, &version);
    }
    let body = match read_body(body, limit, body_timeout, origin).await {
        Ok(b) => b,
        Err(resp) => return (resp, None),
    };
    let request = crate::contract::request(&parts, headers, body.to_vec());
    // Only now, with the whole request at hand, does it take a slot (in
    // `serve`, which also retries and falls back).
    // A request that may change something (any method but the safe ones of
    // RFC 9110) runs on a task of its own: a client that hangs up does not
    // cut it off half-way (between reserving stock and recording the order,
    // say); it ends as it would have, within its limits, holding its slot
    // until then. A safe request is simply dropped with its client (the
    // task would cost 3% of a GET's instructions).
    let safe = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    let run = async move { dispatcher.serve(picked, &request, 0).await };
    let served = if safe {
        run.await
    } else {
        tokio::spawn(run.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|e| Served {
                result: Err(DispatchError::failed(
                    &version,
                    Failure::Internal(format!("the request task failed: {e}")),
                )),
                version: version.clone(),
                fallback_from: None,
                attempts: 1,
            })
    };
    let Served {
        result,
        version,
        fallback_from,
        attempts,
    } = served;
    let (mut resp, failure) = match result {
        Ok(resp) => (to_http(resp, &version.service, &version.version), None),
        Err(e) => failed(e),
    };
    mark(
        &mut resp,
        fallback_from.as_deref(),
        attempts,
        &version.version,
    );
    (resp, failure)
}

/// Reads a whole request body with a bound on its size and on the time it
/// takes, so neither a huge chunked body nor a slow client holds a slot;
/// the error response (413, 400, 408) otherwise.
async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
    origin: Option<(&str, &str)>,
) -> Result<bytes::Bytes, axum::response::Response> {
    // A bodiless request (a GET, mostly) needs no read and no timer.
    if axum::body::HttpBody::is_end_stream(&body) {
        return Ok(bytes::Bytes::new());
    }
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                return Err(too_large(limit, origin));
            }
            Err(error_response(
                StatusCode::BAD_REQUEST,
                "could not read the request body",
                origin,
            ))
        }
        Err(_) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the request body did not arrive within {timeout:?}"),
            origin,
        )),
    }
}

/// The response of a wasi:http component, tagged with the version that
/// gave it, or its failure's JSON error.
fn proxied(
    result: Result<http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>, DispatchError>,
    version: &crate::registry::Version,
) -> (axum::response::Response, Option<DispatchError>) {
    match result {
        Ok(resp) => {
            let mut out = resp.map(Body::new);
            tag(out.headers_mut(), &version.service, &version.version);
            (out, None)
        }
        Err(e) => failed(e),
    }
}

/// Says on a response that the stable version answered for `from`, and how
/// many attempts it took when more than one (and logs the answering version).
fn mark(
    resp: &mut axum::response::Response,
    fallback_from: Option<&str>,
    attempts: u32,
    version: &str,
) {
    if let Some(from) = fallback_from {
        if let Ok(v) = HeaderValue::from_str(from) {
            resp.headers_mut().insert(FALLBACK_HEADER, v);
        }
        let span = tracing::Span::current();
        span.record("version", version);
        span.record("fallback_from", from);
    }
    tracing::Span::current().record("attempts", attempts);
    if attempts > 1 {
        resp.headers_mut()
            .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    }
}

/// The host's own probes, which no manifest can claim: live (200 while the
/// runtime answers) and ready (200 once the first scan is done, the store
/// writes and the host is not draining; else 503 naming what fails).
fn probe(
    req: &axum::extract::Request,
    health: &crate::health::Health,
    dispatcher: &Dispatcher,
) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    if path == crate::health::LIVE_PATH {
        return Some(axum::Json(serde_json::json!({"live": true})).into_response());
    }
    if path != crate::health::READY_PATH {
        return None;
    }
    let failing = health.failing(dispatcher.store_failing());
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"ready": failing.is_empty(), "failing": failing});
    Some((status, axum::Json(body)).into_response())
}

/// The answer to a request that got no response from a service.
fn failed(e: DispatchError) -> (axum::response::Response, Option<DispatchError>) {
    (failure_response(&e), Some(e))
}

/// Bytes of a refused request body read and thrown away before answering.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;
/// Longest time spent on that.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards what the client is still sending of a refused body
/// (at most [`DRAIN_BYTES`], for at most [`DRAIN_TIME`]), so that it reads
/// the error instead of a connection reset; anything beyond is cut.
async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// The JSON error for a request that got no response from a service; a
/// limit that was hit is named, and a full or loading service says when to
/// retry. (No side effect: the caller logs.)
fn failure_response(e: &DispatchError) -> axum::response::Response {
    let status = e.status();
    match e {
        DispatchError::Loading { service } => {
            let mut out = error_response(
                status,
                &format!("service `{service}` is still loading; retry shortly"),
                None,
            );
            out.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            out
        }
        DispatchError::Failed {
            service,
            version,
            failure,
        } => {
            let message = match failure {
                Failure::Internal(_) => "the service could not be run".to_string(),
                other => other.to_string(),
            };
            let mut out =
                limit_response(status, &message, Some((service, version)), failure.limit());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                out.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            out
        }
        other => error_response(status, &other.to_string(), None),
    }
}

fn too_large(limit: usize, origin: Option<(&str, &str)>) -> axum::response::Response {
    limit_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body is larger than the {limit}-byte limit"),
        origin,
        Some("request-body"),
    )
}

/// A JSON error: `{"error": …, "service": …, "version": …}`.
pub fn error_response(
    status: StatusCode,
    message: &str,
    origin: Option<(&str, &str)>,
) -> axum::response::Response {
    limit_response(status, message, origin, None)
}

/// A JSON error that also names the limit that was hit:
/// `{"error": …, "service": …, "version": …, "limit": "cpu-time"}`.
fn limit_response(
    status: StatusCode,
    message: &str,
    origin: Option<(&str, &str)>,
    limit: Option<&str>,
) -> axum::response::Response {
    let mut body = serde_json::json!({ "error": message });
    if let Some((service, version)) = origin {
        body["service"] = service.into();
        body["version"] = version.into();
    }
    if let Some(limit) = limit {
        body["limit"] = limit.into();
    }
    let mut out = axum::response::Response::new(Body::from(body.to_string()));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some((service, version)) = origin {
        tag(out.headers_mut(), service, version);
    }
    out
}
