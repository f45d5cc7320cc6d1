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

use crate::dispatch::Dispatcher;
use crate::registry::Version;
use anyhow::{bail, Result};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Which hosts a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// `*`: any host.
    Any,
    /// `*.example.org`: any subdomain (the suffix keeps its leading dot).
    Suffix(String),
    /// One host name or IP literal.
    Exact(String),
}

/// Which ports a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    /// No port given: 80 and 443.
    Default,
    /// `:*`.
    Any,
    /// `:8080`.
    Exact(u16),
}

/// One entry of `[grants] http`: `host`, `host:port`, `host:*`,
/// `*.domain` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: PortMatch,
}

impl HostPattern {
    /// Parses one allow-list entry.
    pub fn parse(entry: &str) -> Result<Self> {
        let lower = entry.trim().to_ascii_lowercase();
        if lower.contains("://") || lower.contains('/') {
            bail!("`{entry}` must be a host such as `api.example.com` or `api.example.com:8443`, without scheme or path");
        }
        let (host, port) = split_host_port(&lower)
            .ok_or_else(|| anyhow::anyhow!("`{entry}` is not a host or host:port"))?;
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(p) => PortMatch::Exact(
                p.parse()
                    .map_err(|_| anyhow::anyhow!("`{entry}`: `{p}` is not a port"))?,
            ),
        };
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            check_name(domain, entry)?;
            HostMatch::Suffix(format!(".{domain}"))
        } else if host.parse::<IpAddr>().is_ok() {
            HostMatch::Exact(host.to_string())
        } else {
            check_name(host, entry)?;
            HostMatch::Exact(host.to_string())
        };
        Ok(Self { host, port })
    }

    /// Whether the pattern covers `host:port`.
    fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = match self.port {
            PortMatch::Default => port == 80 || port == 443,
            PortMatch::Any => true,
            PortMatch::Exact(p) => p == port,
        };
        port_ok
            && match &self.host {
                HostMatch::Any => true,
                HostMatch::Suffix(s) => host.ends_with(s.as_str()),
                HostMatch::Exact(h) => h == host,
            }
    }

    /// Whether the pattern names this host itself (not through a wildcard).
    fn is_exact(&self) -> bool {
        matches!(self.host, HostMatch::Exact(_))
    }
}

/// Splits `host[:port]`, with IPv6 literals in brackets or bare.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.matches(':').count() {
        0 => Some((s, None)),
        1 => s.split_once(':').map(|(h, p)| (h, Some(p))),
        _ => s.parse::<IpAddr>().ok().map(|_| (s, None)),
    }
}

fn check_name(name: &str, entry: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        bail!("`{entry}` is not a valid host name");
    }
    Ok(())
}

/// Whether `ip` is an address a sandboxed service must not reach by default:
/// loopback, private, link-local (cloud metadata), carrier-grade NAT,
/// unspecified, broadcast, multicast, documentation or unique-local.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0xdb8
        }
    }
}

/// Host names under this domain are services of this host: a request to
/// `http://user.internal/users/1` goes to the `user` service in-process,
/// through the release policy, if `[grants] services` lists it.
pub const INTERNAL_DOMAIN: &str = ".internal";

/// The outbound-HTTP policy of one request: the service's grants.
pub struct OutboundHttp {
    version: Arc<Version>,
    dispatcher: Arc<Dispatcher>,
    depth: u32,
}

impl OutboundHttp {
    /// The policy of one request to `version`, `depth` calls deep.
    pub fn new(version: Arc<Version>, dispatcher: Arc<Dispatcher>, depth: u32) -> Self {
        Self {
            version,
            dispatcher,
            depth,
        }
    }
}

/// Sends a request for `http://NAME.internal/…` to the service NAME.
async fn call_internal(
    caller: Arc<Version>,
    dispatcher: Arc<Dispatcher>,
    depth: u32,
    name: String,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error> {
    use super::services::{check_call, Refusal};
    use http_body_util::BodyExt;
    let (service, version) = (&caller.service, &caller.version);
    match check_call(&caller, &name, depth) {
        Ok(()) => {}
        Err(Refusal::NotGranted) => return Err(Error::HttpRequestDenied),
        Err(Refusal::TooDeep(_)) => return Err(Error::LoopDetected),
    }
    let limits = &caller.sandbox.limits;
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, limits.max_request_body)
        .collect()
        .await
        .map_err(|_| Error::HttpRequestBodySize(Some(limits.max_request_body as u64)))?
        .to_bytes();
    let req = crate::bindings::Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: crate::http::wit_headers(&parts.headers),
        body: body.to_vec(),
    };
    let resp = dispatcher
        .call_service(name.clone(), req, depth + 1)
        .await
        .map_err(|e| {
            tracing::debug!(%service, %version, callee = %name, "internal call failed: {e}");
            match e {
                crate::dispatch::DispatchError::UnknownService(_) => Error::DestinationNotFound,
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
        let allowed = self.version.sandbox.http.clone();
        let (service, version) = (self.version.service.clone(), self.version.version.clone());
        let internal = request
            .uri()
            .host()
            .and_then(|h| h.strip_suffix(INTERNAL_DOMAIN))
            .map(str::to_string);
        if let Some(name) = internal {
            let (caller, dispatcher, depth) =
                (self.version.clone(), self.dispatcher.clone(), self.depth);
            return Box::new(async move {
                let resp = call_internal(caller, dispatcher, depth, name, request).await?;
                let done: Box<dyn std::future::Future<Output = Result<(), Error>> + Send> =
                    Box::new(async { Ok(()) });
                Ok((resp, done))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let uri = request.uri().clone();
            match check(&allowed, &uri).await {
                Err(reason) => {
                    tracing::warn!(%service, %version, uri = %uri, "outbound HTTP refused: {reason}");
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
        })
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

    #[test]
    fn patterns_parse_and_refuse_nonsense() {
        for good in [
            "api.example.com",
            "a.b:8080",
            "x.org:*",
            "*.example.org",
            "*",
            "10.0.0.7:9000",
            "[::1]:80",
            "::1",
        ] {
            assert!(HostPattern::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "http://x.org",
            "x.org/path",
            "x.org:http",
            "",
            "a..b",
            "*x.org",
            "x.org:99999",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
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
