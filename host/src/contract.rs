//! The contract's records (`wasmhost:plugin/types`) beside HTTP: a request
//! record built from an HTTP head and body, a guest response checked and
//! turned into an HTTP response, headers in both directions — each built in
//! exactly one place, for the front, the wasi:http executor and the
//! `.internal` calls alike.
//!
//! (It sits with the runtime, below the request path, because capabilities
//! convert requests too: conversions live next to the types they convert.)

use crate::bindings::{Request, Response};
use axum::body::Body;
use http::{HeaderName, HeaderValue, StatusCode};

/// Header naming the service that answered.
pub const SERVICE_HEADER: &str = "x-wasmhost-service";
/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "x-wasmhost-version";
/// The two as header names, built at compile time (a `&str` name is parsed
/// again on every insert).
const SERVICE_HEADER_NAME: HeaderName = HeaderName::from_static(SERVICE_HEADER);
const VERSION_HEADER_NAME: HeaderName = HeaderName::from_static(VERSION_HEADER);

/// HTTP headers as the contract's list of pairs: names lowercase, values
/// that are not UTF-8 decoded lossily, repeated headers kept in order.
pub fn wit_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
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

/// The request record of an HTTP request head, its headers (as
/// [`wit_headers`] gives them) and its whole body.
pub fn request(
    parts: &http::request::Parts,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Request {
    Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    }
}

/// Checks that a guest response can be sent as HTTP.
pub fn validate(resp: &Response) -> Result<(), String> {
    if !(100..=599).contains(&resp.status) {
        return Err(format!("status {} is not between 100 and 599", resp.status));
    }
    for (name, value) in &resp.headers {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{}`", name.escape_debug()))?;
        HeaderValue::from_str(value).map_err(|_| format!("invalid value for header `{name}`"))?;
    }
    Ok(())
}

/// Builds the HTTP response from a validated guest response.
pub fn to_http(resp: Response, service: &str, version: &str) -> http::Response<Body> {
    let mut out = http::Response::new(Body::from(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    for (name, value) in resp.headers {
        // Validated by the dispatcher; anything else is skipped, not fatal.
        // The value's bytes move into the header (no copy).
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::try_from(value),
        ) {
            headers.append(n, v);
        }
    }
    tag(headers, service, version);
    out
}

/// Names the service and version that answered, in the response headers.
pub fn tag(headers: &mut http::HeaderMap, service: &str, version: &str) {
    if let Ok(v) = HeaderValue::from_str(service) {
        headers.insert(SERVICE_HEADER_NAME, v);
    }
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(VERSION_HEADER_NAME, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn validate_rejects_bad_status_and_headers() {
        assert!(validate(&resp(200, &[("content-type", "application/json")])).is_ok());
        assert!(validate(&resp(99, &[])).unwrap_err().contains("99"));
        assert!(validate(&resp(1000, &[])).is_err());
        assert!(validate(&resp(200, &[("bad header", "x")]))
            .unwrap_err()
            .contains("bad header"));
        assert!(validate(&resp(200, &[("x", "a\nb")])).is_err());
    }

    mod fuzz {
        //! Property tests of the translation between HTTP and the contract's
        //! records. `PROPTEST_CASES=100000 cargo test -p wasmhost --lib fuzz`
        //! runs a longer campaign.
        use super::super::*;
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
                let mut map = http::HeaderMap::new();
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
}
