//! Typed values of the host's vocabulary — service and version names,
//! version order, route prefixes, weights, stickiness, outbound host
//! patterns — each parsed and checked once, where it enters (a file name, a
//! manifest, an admin request), so nothing later parses a string again.
//!
//! Invariant: this module imports nothing from the crate; every other
//! module may use it.

use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Checks a service name: 1–64 of `a-z`, `0-9`, `-`, starting with a letter.
pub fn validate_service_name(name: &str) -> Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "service name `{name}` must be 1-64 lowercase letters, digits or `-`, starting with a letter"
        );
    }
    Ok(())
}

/// Checks a version: 1–64 of letters, digits, `.`, `-`, `+`, `_`.
pub fn validate_version(version: &str) -> Result<()> {
    let valid = (1..=64).contains(&version.len())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
    if !valid {
        bail!("version `{version}` must be 1-64 letters, digits, `.`, `-`, `+` or `_`");
    }
    Ok(())
}

/// A checked service name (see [`validate_service_name`]), as manifests
/// name the services a service may call.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(try_from = "String")]
pub struct ServiceName(String);

impl ServiceName {
    /// Checks `name`.
    pub fn parse(name: &str) -> Result<Self> {
        validate_service_name(name)?;
        Ok(Self(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceName {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Orders versions: semantic versions by precedence and above any other
/// name; other names alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// A route prefix: an absolute path without query, fragment or `..`, kept
/// without a trailing slash (`/` stays `/`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(try_from = "String")]
pub struct Route(String);

impl Route {
    /// Checks and normalises `route`.
    pub fn parse(route: &str) -> Result<Self> {
        if !route.starts_with('/') {
            bail!("route `{route}` must start with `/`");
        }
        if route.contains(['?', '#', ' ']) || route.split('/').any(|s| s == "..") {
            bail!("route `{route}` must be a plain path prefix");
        }
        let reserved = crate::health::RESERVED_PREFIX;
        if route.trim_end_matches('/') == reserved || route.starts_with(&format!("{reserved}/")) {
            bail!(
                "route `{route}` is under `{reserved}`, which the host keeps for its own endpoints"
            );
        }
        let trimmed = route.trim_end_matches('/');
        Ok(Self(if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        }))
    }

    /// The default route of a service: `/NAME`.
    pub fn of_service(service: &str) -> Self {
        Self(format!("/{service}"))
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` is this prefix or below it, segment by segment (the
    /// router's rule: `/a` covers `/a` and `/a/b`, not `/ab`).
    pub fn covers(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        self.0 == "/"
            || path == self.0
            || path
                .strip_prefix(self.0.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl TryFrom<String> for Route {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A size in a manifest: a string with its unit (`"32 MiB"`, `"16 KiB"`,
/// `"1000 B"`). A bare number is refused rather than read as bytes, since
/// `memory = 128` almost always means something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size with its unit, such as \"32 MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Size, E> {
                s.parse::<bytesize::ByteSize>()
                    .map(|b| Size(b.as_u64()))
                    .map_err(|e| {
                        E::custom(format!("`{s}` is not a size ({e}); write e.g. \"32 MiB\""))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "a size needs its unit: write \"{n} MiB\", \"{n} KiB\" or \"{n} B\", not {n}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "a size needs its unit: write \"{n} MiB\", \"{n} KiB\" or \"{n} B\", not {n}"
                )))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Where the sticky key of a request comes from: `header:NAME` or
/// `cookie:NAME` (as written in manifests, admin requests and state files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Sticky {
    /// A request header (lowercase name).
    Header(String),
    /// A cookie.
    Cookie(String),
}

impl Sticky {
    /// Parses `header:NAME` or `cookie:NAME`.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.split_once(':') {
            Some(("header", name)) if !name.is_empty() => {
                Ok(Sticky::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if !name.is_empty() => Ok(Sticky::Cookie(name.to_string())),
            _ => bail!("sticky must be `header:NAME` or `cookie:NAME`, not `{spec}`"),
        }
    }
}

impl TryFrom<String> for Sticky {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Sticky> for String {
    fn from(s: Sticky) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::Header(h) => write!(f, "header:{h}"),
            Sticky::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

/// A traffic split: version → percent, summing to exactly 100.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "BTreeMap<String, u32>", into = "BTreeMap<String, u32>")]
pub struct Weights(BTreeMap<String, u32>);

impl Weights {
    /// Checks `weights`.
    pub fn new(weights: BTreeMap<String, u32>) -> Result<Self> {
        validate_weights(&weights)?;
        Ok(Self(weights))
    }

    /// All traffic to `version`.
    pub fn all(version: &str) -> Self {
        Self([(version.to_string(), 100)].into())
    }

    /// The split as a map.
    pub fn as_map(&self) -> &BTreeMap<String, u32> {
        &self.0
    }

    /// `1.0.0=90,1.1.0=10`, as history entries and the CLI write it.
    pub fn summary(&self) -> String {
        self.0
            .iter()
            .map(|(v, w)| format!("{v}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl TryFrom<BTreeMap<String, u32>> for Weights {
    type Error = anyhow::Error;
    fn try_from(map: BTreeMap<String, u32>) -> Result<Self> {
        Self::new(map)
    }
}

impl From<Weights> for BTreeMap<String, u32> {
    fn from(w: Weights) -> Self {
        w.0
    }
}

/// Weights must be percentages summing to exactly 100.
pub fn validate_weights(weights: &BTreeMap<String, u32>) -> Result<()> {
    if let Some((version, weight)) = weights.iter().find(|(_, w)| **w > 100) {
        bail!("weight {weight} of `{version}` is over 100");
    }
    // Summed in u64: at most 100 each, so no overflow for any map size.
    let sum: u64 = weights.values().map(|w| u64::from(*w)).sum();
    if weights.is_empty() || sum != 100 {
        bail!("weights must sum to 100, not {sum}");
    }
    Ok(())
}

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
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HostPattern {
    host: HostMatch,
    port: PortMatch,
    /// The entry as written.
    text: String,
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
        Ok(Self {
            host,
            port,
            text: entry.trim().to_string(),
        })
    }

    /// Whether the pattern covers `host:port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
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
    pub fn is_exact(&self) -> bool {
        matches!(self.host, HostMatch::Exact(_))
    }
}

impl TryFrom<String> for HostPattern {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
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

/// A topic, or a pattern of topics: dot-separated segments of letters,
/// digits, `-` and `_`; in a pattern a segment `*` matches any one segment
/// and a last segment `>` matches one or more (NATS subjects).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct TopicPattern(String);

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

impl TopicPattern {
    /// Parses a topic or pattern.
    pub fn parse(text: &str) -> Result<Self> {
        check_topic(text, true)?;
        Ok(Self(text.to_string()))
    }

    /// Whether `topic` (a concrete topic) matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut want = self.0.split('.');
        let mut have = topic.split('.');
        loop {
            match (want.next(), have.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(w), Some(h)) if w == h => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TopicPattern {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

/// Where a subscription takes a message's key from, for per-key ordering
/// (`ordered-by`) or version stickiness (`sticky`): `key` (the key given
/// at publish, `publish-options.key`) or `header:NAME` (a message header).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum MessageKey {
    /// The publisher's `publish-options.key`.
    Key,
    /// A message header (lowercase name).
    Header(String),
}

impl MessageKey {
    /// Parses `key` or `header:NAME`.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.split_once(':') {
            None if spec == "key" => Ok(Self::Key),
            Some(("header", name)) if !name.is_empty() => {
                Ok(Self::Header(name.to_ascii_lowercase()))
            }
            _ => bail!("a message key must be `key` or `header:NAME`, not `{spec}`"),
        }
    }

    /// The value of this key in a message, if it has one.
    pub fn of<'a>(&self, key: Option<&'a str>, headers: &'a [(String, String)]) -> Option<&'a str> {
        match self {
            Self::Key => key,
            Self::Header(name) => header(headers, name),
        }
    }
}

/// The first value of header `name` (any case) in a header list.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl TryFrom<String> for MessageKey {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

/// Checks a topic (`pattern`: wildcards allowed); the error says what is wrong.
pub fn check_topic(text: &str, pattern: bool) -> Result<()> {
    if text.is_empty() || text.len() > MAX_TOPIC_LEN {
        bail!("a topic must be 1 to {MAX_TOPIC_LEN} bytes");
    }
    let segments: Vec<&str> = text.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let wildcard = *segment == "*" || (*segment == ">" && i + 1 == segments.len());
        if pattern && wildcard {
            continue;
        }
        let valid = !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            bail!(
                "`{text}` is not a topic: segments between dots are letters, digits, `-` and `_`{}",
                if pattern {
                    " (or `*`, and `>` last)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_need_their_unit() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            memory: Size,
        }
        let ok: T = toml::from_str("memory = \"32 MiB\"").unwrap();
        assert_eq!(ok.memory, Size(32 * 1024 * 1024));
        let err = toml::from_str::<T>("memory = 128").unwrap_err().to_string();
        assert!(
            err.contains("needs its unit") && err.contains("memory = 128"),
            "{err}"
        );
        assert!(toml::from_str::<T>("memory = \"lots\"").is_err());
    }

    #[test]
    fn semver_orders_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0-rc.1", "1.0.0"), Ordering::Less);
        assert_eq!(compare_versions("1.0.0", "a1b2c3"), Ordering::Greater);
        assert_eq!(compare_versions("abc", "abd"), Ordering::Less);
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
}
