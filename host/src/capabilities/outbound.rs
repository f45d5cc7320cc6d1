//! Outbound HTTP (`wasi:http/outgoing-handler`), allowed only to the hosts a
//! service's manifest grants in `[grants] http`.
//!
//! Every request is checked before a connection is made: its host and port
//! must match a granted pattern, and every address the host resolves to must
//! be public — a private, loopback, link-local or otherwise internal address
//! (127.0.0.1, 10.0.0.0/8, 169.254.169.254, ::1, fc00::/7…) is refused unless
//! that very IP, or `localhost`, is granted. Plain-HTTP requests are then
//! sent to the address that was checked, so a second DNS answer cannot move
//! them elsewhere. A refused request gets the interface's
//! `HTTP-request-denied` error (never a trap) and a log line.

use super::{CallError, Calls, ServiceId};
use crate::sandbox::Sandbox;
use crate::spec::{is_internal, HostPattern, INTERNAL_DOMAIN};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::Instrument;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound-HTTP policy of one request: the service's grants.
pub struct OutboundHttp {
    id: ServiceId,
    sandbox: Arc<Sandbox>,
    calls: Arc<dyn Calls>,
    request_id: Arc<str>,
    depth: u32,
    /// Whether a request that is not read-only was handed to this policy
    /// (sent, or refused before it left: marked either way).
    pub(crate) touched: bool,
}

impl OutboundHttp {
    /// The policy of one request to the service `id`, `depth` calls deep.
    pub fn new(
        id: ServiceId,
        sandbox: Arc<Sandbox>,
        calls: Arc<dyn Calls>,
        request_id: Arc<str>,
        depth: u32,
    ) -> Self {
        Self {
            id,
            sandbox,
            calls,
            request_id,
            depth,
            touched: false,
        }
    }
}

/// Sends a request for `http://NAME.internal/…` to the service NAME.
async fn call_internal(
    caller: ServiceId,
    sandbox: Arc<Sandbox>,
    calls: Arc<dyn Calls>,
    request_id: Arc<str>,
    depth: u32,
    name: String,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error> {
    use super::services::{check_call, pass_request_id, Refusal};
    use http_body_util::BodyExt;
    let (service, version) = (&caller.service, &caller.version);
    match check_call(&caller, &sandbox, &name, depth) {
        Ok(()) => {}
        Err(Refusal::NotGranted) => return Err(Error::HttpRequestDenied),
        Err(Refusal::TooDeep(_)) => return Err(Error::LoopDetected),
    }
    let limits = &sandbox.limits;
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, limits.max_request_body)
        .collect()
        .await
        .map_err(|_| Error::HttpRequestBodySize(Some(limits.max_request_body as u64)))?
        .to_bytes();
    let headers = crate::contract::wit_headers(&parts.headers);
    let mut req = crate::contract::request(&parts, headers, body.to_vec());
    pass_request_id(&mut req.headers, &request_id);
    let span = tracing::debug_span!(
        "call",
        callee = %name,
        depth = depth + 1,
        internal = true,
        version = tracing::field::Empty,
        otel.name = %format_args!("call {name}"),
        otel.kind = "client",
    );
    span.in_scope(|| crate::traces::inject(&mut req.headers));
    let call = calls.call(name.clone(), req, depth + 1);
    let resp = async {
        let result = call.await;
        super::services::log_call(&result);
        result
    }
    .instrument(span)
    .await
    .map_err(|e| {
        tracing::debug!(%service, %version, callee = %name, error = %e, "internal call failed");
        match e {
            CallError::NotFound(_) => Error::DestinationNotFound,
            _ => Error::DestinationUnavailable,
        }
    })?;
    let mut out = http::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        out = out.header(k.as_str(), v.as_str());
    }
    out.body(
        http_body_util::Full::new(bytes::Bytes::from(resp.body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
    .map_err(|_| Error::HttpProtocolError)
}

/// Why an outbound request was refused, or where to send it.
async fn check(allowed: &[HostPattern], uri: &http::Uri) -> Result<Option<SocketAddr>, String> {
    let host = uri
        .host()
        .ok_or("the request has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let Some(pattern) = allowed.iter().find(|p| p.matches(&host, port)) else {
        return Err(format!(
            "{host}:{port} is not granted (add it to [grants] http)"
        ));
    };
    let literal = host.parse::<IpAddr>().ok();
    let addrs: Vec<SocketAddr> = match literal {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect(),
    };
    let explicit = pattern.is_exact() && (literal.is_some() || host == "localhost");
    if let Some(internal) = addrs.iter().find(|a| is_internal(a.ip())) {
        if !explicit {
            return Err(format!(
                "{host}:{port} resolves to the internal address {}, which is refused unless that IP is granted itself",
                internal.ip()
            ));
        }
    }
    Ok(if https { None } else { addrs.first().copied() })
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        drop(fut);
        if !crate::resilience::is_read_only(request.method().as_str()) {
            self.touched = true;
        }
        let allowed = self.sandbox.http.clone();
        let (service, version) = (self.id.service.clone(), self.id.version.clone());
        let internal = request
            .uri()
            .host()
            .and_then(|h| h.strip_suffix(INTERNAL_DOMAIN))
            .map(str::to_string);
        if let Some(name) = internal {
            let (caller, sandbox, calls, request_id, depth) = (
                self.id.clone(),
                self.sandbox.clone(),
                self.calls.clone(),
                self.request_id.clone(),
                self.depth,
            );
            return Box::new(async move {
                let resp =
                    call_internal(caller, sandbox, calls, request_id, depth, name, request).await?;
                let done: Box<dyn std::future::Future<Output = Result<(), Error>> + Send> =
                    Box::new(async { Ok(()) });
                Ok((resp, done))
            });
        }
        // The request carries the trace context of its own span.
        let span = tracing::debug_span!(
            "outbound",
            host = request.uri().host().unwrap_or("-"),
            path = request.uri().path(),
            otel.name = %format_args!("{} {}", request.method(), request.uri().host().unwrap_or("-")),
            otel.kind = "client",
        );
        span.in_scope(|| crate::traces::inject_http(request.headers_mut()));
        let send = async move {
            use http_body_util::BodyExt;
            let uri = request.uri().clone();
            match check(&allowed, &uri).await {
                Err(reason) => {
                    tracing::warn!(%service, %version, uri = %uri, %reason, "outbound HTTP refused");
                    return Err(Error::HttpRequestDenied);
                }
                Ok(Some(addr)) => {
                    // Send plain HTTP to the address that was checked.
                    let mut parts = uri.into_parts();
                    parts.authority = addr.to_string().parse().ok();
                    if let Ok(pinned) = http::Uri::from_parts(parts) {
                        *request.uri_mut() = pinned;
                    }
                }
                Ok(None) => {}
            }
            tracing::debug!(%service, %version, uri = %request.uri(), "outbound HTTP");
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        };
        Box::new(send.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> Vec<HostPattern> {
        entries
            .iter()
            .map(|e| HostPattern::parse(e).unwrap())
            .collect()
    }

    async fn verdict(entries: &[&str], uri: &str) -> Result<Option<SocketAddr>, String> {
        check(&allowed(entries), &uri.parse().unwrap()).await
    }

    #[tokio::test]
    async fn only_granted_public_hosts_pass() {
        let err = verdict(&[], "http://93.184.216.34/").await.unwrap_err();
        assert!(err.contains("not granted"), "{err}");
        assert!(verdict(&["*"], "http://93.184.216.34/").await.is_ok());
        // Wildcards never reach internal addresses; a listed IP does.
        let err = verdict(&["*:*"], "http://127.0.0.1:9000/")
            .await
            .unwrap_err();
        assert!(err.contains("internal address 127.0.0.1"), "{err}");
        let err = verdict(&["*"], "http://169.254.169.254/latest/meta-data")
            .await
            .unwrap_err();
        assert!(err.contains("169.254.169.254"), "{err}");
        assert_eq!(
            verdict(&["127.0.0.1:9000"], "http://127.0.0.1:9000/x")
                .await
                .unwrap(),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert!(verdict(&["127.0.0.1:9000"], "http://127.0.0.1:9001/")
            .await
            .is_err());
        assert!(verdict(&["localhost:*"], "http://localhost:7/")
            .await
            .is_ok());
        // HTTPS keeps its host name for TLS.
        assert_eq!(
            verdict(&["*"], "https://93.184.216.34/").await.unwrap(),
            None
        );
    }
}
