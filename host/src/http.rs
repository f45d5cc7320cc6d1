//! The HTTP front: converts between HTTP and the contract's records.
//!
//! Every request goes through one fallback handler that asks the dispatcher
//! for the current route snapshot (an axum `Router` cannot change once
//! built). Errors reach the client as JSON naming the service and version,
//! never a host path; details go to the log.

use crate::bindings::{Request, Response};
use crate::dispatch::{DispatchError, Dispatcher, Failure};
use crate::registry::Pre;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header naming the service that answered.
pub const SERVICE_HEADER: &str = "x-wasmhost-service";
/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "x-wasmhost-version";

/// The axum app serving plugin traffic; a request body must arrive within
/// `body_timeout`.
pub fn app(dispatcher: Arc<Dispatcher>, body_timeout: Duration) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(Front {
        dispatcher,
        body_timeout,
    })
}

/// The state of the HTTP front.
#[derive(Clone)]
struct Front {
    dispatcher: Arc<Dispatcher>,
    body_timeout: Duration,
}

async fn handle(
    State(Front {
        dispatcher,
        body_timeout,
    }): State<Front>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let headers = wit_headers(&parts.headers);
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    // Route first: the body limit is the chosen service's own.
    let picked = match dispatcher.pick(&path, &headers) {
        Ok(picked) => picked,
        Err(e) => return failure_response(&e, &method, &path),
    };
    let version = picked.version.clone();
    let origin = Some((&*version.service, &*version.version));
    let limit = version.sandbox.limits.max_request_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        drain(body).await;
        return too_large(limit, origin);
    }
    // A wasi:http component gets the body as a stream and streams its answer.
    if matches!(version.pre, Pre::Proxy(_)) {
        let _permit = match picked.claim() {
            Ok((_, permit)) => permit,
            Err(e) => return failure_response(&e, &method, &path),
        };
        let req = axum::http::Request::from_parts(parts, body);
        return match crate::proxy::handle(&dispatcher, version.clone(), req, 0).await {
            Ok(resp) => {
                tracing::debug!(
                    service = %version.service, version = %version.version, %method, path,
                    status = resp.status().as_u16(), "request served (wasi:http)"
                );
                let mut out = resp.map(Body::new);
                tag(out.headers_mut(), &version.service, &version.version);
                out
            }
            Err(e) => failure_response(&e, &method, &path),
        };
    }
    // The body is read with a bound on its size and on the time it takes,
    // so neither a huge chunked body nor a slow client holds the slot.
    let read = axum::body::to_bytes(Body::new(body), limit);
    let body = match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                return too_large(limit, origin);
            }
            return error_response(
                StatusCode::BAD_REQUEST,
                "could not read the request body",
                origin,
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the request body did not arrive within {body_timeout:?}"),
                origin,
            )
        }
    };
    let request = Request {
        method: method.as_str().to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
    };
    // Only now, with the whole request at hand, does it take a slot.
    let _permit = match picked.claim() {
        Ok((_, permit)) => permit,
        Err(e) => return failure_response(&e, &method, &path),
    };
    match dispatcher.run(version.clone(), request, 0).await {
        Ok(resp) => {
            tracing::debug!(
                service = %version.service, version = %version.version, %method, path,
                status = resp.status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "request served"
            );
            to_http(resp, &version.service, &version.version)
        }
        Err(e) => failure_response(&e, &method, &path),
    }
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
/// limit that was hit is named, and a full service says when to retry.
fn failure_response(
    e: &DispatchError,
    method: &axum::http::Method,
    path: &str,
) -> axum::response::Response {
    let status = e.status();
    match e {
        DispatchError::Failed {
            service,
            version,
            failure,
        } => {
            tracing::warn!(%service, %version, %method, path, status = status.as_u16(), limit = failure.limit().unwrap_or("none"), "request failed: {failure}");
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
        other => {
            tracing::debug!(%method, path, status = status.as_u16(), "{other}");
            error_response(status, &other.to_string(), None)
        }
    }
}

/// HTTP headers as the contract's list of pairs: names lowercase, values
/// that are not UTF-8 decoded lossily, repeated headers kept in order.
pub fn wit_headers(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Builds the HTTP response from a validated guest response.
pub fn to_http(resp: Response, service: &str, version: &str) -> axum::response::Response {
    let mut out = axum::response::Response::new(Body::from(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    for (name, value) in resp.headers {
        // Validated by the dispatcher; anything else is skipped, not fatal.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(n, v);
        }
    }
    tag(headers, service, version);
    out
}

fn tag(headers: &mut axum::http::HeaderMap, service: &str, version: &str) {
    if let Ok(v) = HeaderValue::from_str(service) {
        headers.insert(SERVICE_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(VERSION_HEADER, v);
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

#[cfg(test)]
mod fuzz {
    //! Property tests of the translation between HTTP and the contract's
    //! records. `PROPTEST_CASES=100000 cargo test -p wasmhost --lib fuzz`
    //! runs a longer campaign.
    use super::*;
    use crate::dispatch::validate;
    use proptest::prelude::*;

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z][a-z0-9-]{0,20}", ".{0,12}"]
    }

    proptest! {
        #[test]
        fn any_guest_response_is_refused_or_sent_faithfully(
            status in any::<u16>(),
            headers in proptest::collection::vec((header_name(), ".{0,40}"), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let resp = Response { status, headers: headers.clone(), body: body.clone() };
            if validate(&resp).is_ok() {
                let out = to_http(resp, "svc", "1.0.0");
                prop_assert_eq!(out.status().as_u16(), status);
                for (name, value) in &headers {
                    let sent: Vec<_> = out.headers().get_all(name.as_str()).iter().collect();
                    prop_assert!(sent.iter().any(|v| v.as_bytes() == value.as_bytes()), "{name} lost");
                }
                prop_assert_eq!(out.headers().get(VERSION_HEADER).unwrap(), "1.0.0");
            }
        }

        #[test]
        fn any_request_head_reaches_the_guest_in_order(
            pairs in proptest::collection::vec(("[a-z][a-z0-9-]{0,16}", proptest::collection::vec(32u8..255, 0..24)), 0..10),
        ) {
            let mut map = axum::http::HeaderMap::new();
            for (name, value) in &pairs {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
                    map.append(n, v);
                }
            }
            let wit = wit_headers(&map);
            prop_assert_eq!(wit.len(), map.len());
            for (name, value) in &wit {
                let original: Vec<_> = map.get_all(name.as_str()).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
                prop_assert!(original.contains(value));
            }
        }
    }
}
