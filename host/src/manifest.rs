//! Service manifests, `plugins/NAME.toml`: routes, config values, release
//! policy (weights, stickiness, canary steps), limits and grants.
//!
//! Invariant: a manifest is parsed and checked once, at load, into typed
//! values (`crate::spec`): an unknown key, a route that is not an absolute
//! path, a size without its unit or any malformed value is a load error
//! naming the file, and nothing later parses its strings again.

use crate::config::{format_size, Limits};
use crate::spec::{HostPattern, Route, ServiceName, Size, Sticky, TopicPattern, Weights};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest manifest read, in bytes (a manifest is a page of TOML).
pub const MAX_MANIFEST_SIZE: u64 = 256 * 1024;

impl Limits {
    /// These limits with a manifest's `[limits]` applied; `origin` names the
    /// manifest in errors.
    pub fn with_overrides(&self, o: &LimitOverrides, origin: &str) -> Result<Limits> {
        let bytes = |b: Option<Size>, default: usize| {
            b.map_or(default, |Size(b)| usize::try_from(b).unwrap_or(usize::MAX))
        };
        let limits = Limits {
            max_request_body: bytes(o.request_body, self.max_request_body),
            max_response_body: bytes(o.response_body, self.max_response_body),
            max_memory: bytes(o.memory, self.max_memory),
            cpu_time: o.cpu_time.unwrap_or(self.cpu_time),
            timeout: o.timeout.unwrap_or(self.timeout),
            concurrency: o.concurrency.unwrap_or(self.concurrency),
            max_call_depth: o.call_depth.unwrap_or(self.max_call_depth),
            log_bytes: bytes(o.log_bytes, self.log_bytes),
            resources: o.resources.unwrap_or(self.resources),
            requests_per_instance: o
                .requests_per_instance
                .unwrap_or(self.requests_per_instance),
            max_instances: self.max_instances,
            memory_ceiling: self.memory_ceiling,
        };
        if limits.max_memory > limits.memory_ceiling {
            bail!(
                "invalid manifest {origin}: `memory` = {} is above the host's ceiling of {} (raise it with `wasmhost serve --memory-ceiling`)",
                format_size(limits.max_memory as u64),
                format_size(limits.memory_ceiling as u64)
            );
        }
        Ok(limits)
    }
}

/// The `[limits]` table of a manifest: each key overrides one host default.
///
/// ```toml
/// [limits]
/// memory = "32 MiB"
/// cpu-time = "200ms"
/// timeout = "5s"
/// request-body = "256 KiB"
/// response-body = "4 MiB"
/// concurrency = 16
/// call-depth = 4
/// log-bytes = "16 KiB"
/// resources = 256
/// requests-per-instance = 1   # more reuses instances: faster, less isolated
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitOverrides {
    /// Linear memory of one instance.
    pub memory: Option<Size>,
    /// CPU time per request.
    #[serde(default, with = "humantime_serde")]
    pub cpu_time: Option<Duration>,
    /// Wall-clock time per request, nested calls included.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Largest request body.
    pub request_body: Option<Size>,
    /// Largest response body.
    pub response_body: Option<Size>,
    /// Requests run at once.
    pub concurrency: Option<u32>,
    /// Deepest `services.call` chain starting at this service.
    pub call_depth: Option<u32>,
    /// Guest output per request.
    pub log_bytes: Option<Size>,
    /// Resource-table entries per request.
    pub resources: Option<u32>,
    /// Requests one instance serves (1: a fresh instance per request).
    pub requests_per_instance: Option<u32>,
}

/// The `[grants]` table of a manifest: what a service may reach beyond its
/// own key-value namespace, its `[config]` values and logging. Everything
/// is denied unless listed here.
///
/// ```toml
/// [grants]
/// services = ["user"]                       # services.call targets
/// http = ["api.example.com", "10.0.0.7:8080", "*.example.org"]
/// env = { LOG_FORMAT = "json" }             # environment variables
/// dir = { host = "assets", guest = "/assets" }  # read-only directory
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Grants {
    /// Services this one may call through `services.call`.
    #[serde(default)]
    pub services: Vec<ServiceName>,
    /// Hosts reachable through `wasi:http/outgoing-handler`: `host` (ports 80
    /// and 443), `host:port`, `host:*`, `*.domain` or `*` (any public host).
    /// Private, loopback and link-local addresses are refused unless their
    /// IP (or `localhost`) is listed itself.
    #[serde(default)]
    pub http: Vec<HostPattern>,
    /// Topics the service may publish on (`orders.*`, `orders.>`).
    #[serde(default)]
    pub publish: Vec<TopicPattern>,
    /// Environment variables the service sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A host directory the service may read (never write).
    #[serde(default)]
    pub dir: Option<DirGrant>,
}

/// A read-only directory granted to a service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DirGrant {
    /// The host directory; relative paths start at the plugins directory.
    pub host: PathBuf,
    /// Where the guest sees it. Default: `/data`.
    #[serde(default = "default_guest_dir")]
    pub guest: String,
}

fn default_guest_dir() -> String {
    "/data".to_string()
}

impl Grants {
    fn validate(&self) -> Result<()> {
        for key in self.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                bail!(
                    "in [grants] env: `{}` is not a variable name",
                    key.escape_debug()
                );
            }
        }
        if let Some(dir) = &self.dir {
            if !dir.guest.starts_with('/') {
                bail!("in [grants] dir: `guest` must be an absolute path such as \"/data\"");
            }
        }
        Ok(())
    }
}

/// A service manifest, `plugins/NAME.toml`. Every key is optional.
///
/// ```toml
/// routes = ["/users", "/user"]
///
/// [config]
/// greeting = "hello"
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Path prefixes the service owns. Default: `["/NAME"]`.
    #[serde(default)]
    pub routes: Option<Vec<Route>>,
    /// Reachable only from other services (`services.call`,
    /// `http://NAME.internal`), never from outside: outside requests for
    /// its routes get the 404 of a path no service owns.
    #[serde(default)]
    pub private: bool,
    /// Path prefixes within its routes that only other services reach
    /// (e.g. an inventory's reservations), the rest staying public.
    #[serde(default)]
    pub private_routes: Vec<Route>,
    /// Values the service reads through `wasi:config/store`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Traffic split between loaded versions in percent, summing to 100,
    /// e.g. `{ "1.0.0" = 90, "1.1.0" = 10 }`. Default: the highest version
    /// takes everything.
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Keeps one client on one version: `header:NAME` or `cookie:NAME`.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// What a newly dropped version gets: `immediate` (all traffic at once,
    /// blue-green; the default) or `canary` (stepwise, with analysis).
    #[serde(default)]
    pub rollout: Rollout,
    /// Canary steps in percent, ascending, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// Seconds between canary steps (the analysis window).
    #[serde(default = "default_step_interval")]
    pub step_interval_secs: u64,
    /// How far the candidate's error rate (5xx and traps) may exceed the
    /// stable version's, as a fraction (0.05 = 5 points).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// How many times the stable version's p99 latency the candidate's may be.
    #[serde(default = "default_max_p99_ratio")]
    pub max_p99_ratio: f64,
    /// Requests the candidate must have served in a window before a step.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Overrides of the host's default limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Capabilities granted beyond the defaults.
    #[serde(default)]
    pub grants: Grants,
    /// Retries, fallback to the stable version, ejection, budgets.
    #[serde(default)]
    pub resilience: crate::resilience::ResiliencePolicy,
    /// Topics the service consumes (`[[subscribe]]` tables).
    #[serde(default)]
    pub subscribe: Vec<Subscription>,
}

/// One `[[subscribe]]` table: a topic the service consumes, and how.
///
/// ```toml
/// [[subscribe]]
/// topic = "orders.created"      # or a pattern: orders.*, orders.>
/// group = "notify"              # competing consumers; default: the service name
/// max-deliver = 5               # deliveries before a dead letter
/// ack-wait = "35s"              # lease of one delivery; default: timeout + 5s
/// backoff = ["1s", "5s", "30s", "2m"]   # before attempt 2, 3…; the last repeats
/// max-in-flight = 16            # deliveries handled at once
/// dead-letter = true            # false: a message past max-deliver is dropped
/// ordered-by = "key"            # or "header:NAME": one at a time per key, in order
/// sticky = "header:x-user-id"   # or "key": a key's messages go to one version
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscription {
    /// The topic or pattern.
    pub topic: TopicPattern,
    /// The consumer group (default: the service name).
    #[serde(default)]
    pub group: Option<String>,
    /// Deliveries of one message before it is dead-lettered.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: u32,
    /// How long one delivery is leased (default: the service's timeout + 5 s).
    #[serde(default, with = "humantime_serde")]
    pub ack_wait: Option<Duration>,
    /// Waits before the second, third… attempt (±20% jitter); the last repeats.
    #[serde(default = "default_backoff")]
    pub backoff: Vec<humantime_serde::Serde<Duration>>,
    /// Deliveries of this subscription handled at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Whether a message past `max-deliver` (or rejected) is kept as a dead letter.
    #[serde(default = "default_true")]
    pub dead_letter: bool,
    /// Per-key ordering: messages with the same key are handled one at a
    /// time, in the order they were published (messages without one are
    /// not held back).
    #[serde(default)]
    pub ordered_by: Option<crate::spec::MessageKey>,
    /// Version stickiness: messages with the same key go to the same
    /// version under weights (the same version an HTTP request sticky on
    /// the same value gets); without it, the service's own `sticky` applies
    /// to the message's headers.
    #[serde(default)]
    pub sticky: Option<crate::spec::MessageKey>,
}

/// Default deliveries before a dead letter.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// Default deliveries handled at once per subscription.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
/// Default waits before the 2nd, 3rd, 4th and later attempts.
pub const DEFAULT_BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

fn default_max_deliver() -> u32 {
    DEFAULT_MAX_DELIVER
}
fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_backoff() -> Vec<humantime_serde::Serde<Duration>> {
    DEFAULT_BACKOFF.iter().map(|d| (*d).into()).collect()
}
fn default_true() -> bool {
    true
}

impl Subscription {
    /// The group's name: `group`, or the service's.
    pub fn group_name<'a>(&'a self, service: &'a str) -> &'a str {
        self.group.as_deref().unwrap_or(service)
    }

    /// The wait before attempt `next` (2 for the first retry), before jitter.
    pub fn backoff_before(&self, next: u32) -> Duration {
        let i = (next.saturating_sub(2) as usize).min(self.backoff.len().saturating_sub(1));
        self.backoff.get(i).map_or(Duration::from_secs(1), |d| **d)
    }

    /// The wait before attempt `next` with its jitter: `roll` in `[0, 1)`
    /// spreads it over ±20%.
    pub fn retry_delay(&self, next: u32, roll: f64) -> Duration {
        self.backoff_before(next)
            .mul_f64(0.8 + 0.4 * roll.clamp(0.0, 1.0))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let group_ok = self.group.as_deref().is_none_or(|g| {
            !g.is_empty()
                && g.len() <= 64
                && g.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !group_ok {
            return Err("`subscribe.group` must be 1 to 64 letters, digits, `-` or `_`".into());
        }
        if !(1..=100).contains(&self.max_deliver) {
            return Err("`subscribe.max-deliver` must be between 1 and 100".into());
        }
        if !(1..=1024).contains(&self.max_in_flight) {
            return Err("`subscribe.max-in-flight` must be between 1 and 1024".into());
        }
        if self.backoff.is_empty() || self.backoff.iter().any(|d| d.is_zero()) {
            return Err("`subscribe.backoff` must list at least one wait above zero".into());
        }
        let day = Duration::from_secs(24 * 3600);
        if self
            .ack_wait
            .is_some_and(|d| d < Duration::from_secs(1) || d > day)
        {
            return Err("`subscribe.ack-wait` must be between 1s and 24h".into());
        }
        if self.backoff.iter().any(|d| **d > 7 * day) {
            return Err("`subscribe.backoff` waits must be at most 7 days".into());
        }
        Ok(())
    }
}

/// How a newly arrived version is released.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Rollout {
    /// It takes all traffic at once; the previous version stays warm.
    #[default]
    Immediate,
    /// It takes traffic in steps, each after an analysis against the stable version.
    Canary,
}

/// Default canary steps.
pub const DEFAULT_STEPS: [u32; 4] = [5, 25, 50, 100];
/// Default seconds between canary steps.
pub const DEFAULT_STEP_INTERVAL_SECS: u64 = 60;
/// Default allowed excess error rate of a candidate.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
/// Default allowed p99 latency ratio of a candidate.
pub const DEFAULT_MAX_P99_RATIO: f64 = 2.0;
/// Default minimum requests per analysis window.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;

fn default_steps() -> Vec<u32> {
    DEFAULT_STEPS.to_vec()
}
fn default_step_interval() -> u64 {
    DEFAULT_STEP_INTERVAL_SECS
}
fn default_max_error_rate() -> f64 {
    DEFAULT_MAX_ERROR_RATE
}
fn default_max_p99_ratio() -> f64 {
    DEFAULT_MAX_P99_RATIO
}
fn default_min_requests() -> u64 {
    DEFAULT_MIN_REQUESTS
}

impl Default for Manifest {
    fn default() -> Self {
        // The same defaults as an empty file.
        toml::from_str("").unwrap_or_else(|_| unreachable!("an empty manifest always parses"))
    }
}

impl Manifest {
    /// Parses and validates manifest text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let manifest: Manifest =
            toml::from_str(text).with_context(|| format!("invalid manifest {origin}"))?;
        if let Some(routes) = &manifest.routes {
            if routes.is_empty() {
                bail!("invalid manifest {origin}: `routes` must list at least one prefix");
            }
        }
        if let Some(routes) = &manifest.routes {
            for private in &manifest.private_routes {
                if !routes.iter().any(|r| r.covers(private.as_str())) {
                    bail!("invalid manifest {origin}: `private-routes` entry `{private}` is under none of the service's `routes`");
                }
            }
        }
        let steps = &manifest.steps;
        if steps.is_empty()
            || steps.last() != Some(&100)
            || steps.windows(2).any(|w| w[0] >= w[1])
            || steps.iter().any(|s| *s == 0 || *s > 100)
        {
            bail!(
                "invalid manifest {origin}: `steps` must rise from 1 to 100, e.g. [5, 25, 50, 100]"
            );
        }
        if manifest.step_interval_secs == 0
            || manifest.max_error_rate.is_nan()
            || manifest.max_error_rate < 0.0
            || manifest.max_p99_ratio.is_nan()
            || manifest.max_p99_ratio < 1.0
        {
            bail!("invalid manifest {origin}: `step-interval-secs` must be > 0, `max-error-rate` >= 0 and `max-p99-ratio` >= 1");
        }
        for sub in &manifest.subscribe {
            sub.validate().map_err(|e| {
                anyhow::anyhow!(
                    "invalid manifest {origin}: {e} (subscription to `{}`)",
                    sub.topic
                )
            })?;
        }
        manifest
            .resilience
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid manifest {origin}: {e}"))?;
        manifest
            .grants
            .validate()
            .with_context(|| format!("invalid manifest {origin}"))?;
        let l = &manifest.limits;
        if l.concurrency == Some(0)
            || l.requests_per_instance == Some(0)
            || l.cpu_time.is_some_and(|d| d.is_zero())
            || l.timeout.is_some_and(|d| d.is_zero())
        {
            bail!("invalid manifest {origin}: `concurrency`, `requests-per-instance`, `cpu-time` and `timeout` must be above zero");
        }
        Ok(manifest)
    }

    /// Reads `DIR/NAME.toml` when it exists; a missing file is the default
    /// manifest. Only a regular file of at most [`MAX_MANIFEST_SIZE`] bytes
    /// is read (see [`crate::files`]); a symlink must stay inside the
    /// directory unless `follow_outside`.
    pub fn load(plugins_dir: &Path, service: &str, follow_outside: bool) -> Result<Self> {
        let path = Self::path(plugins_dir, service);
        if let Err(e) = std::fs::symlink_metadata(&path) {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(Self::default());
            }
        }
        let bytes =
            crate::files::read_regular(plugins_dir, &path, MAX_MANIFEST_SIZE, follow_outside)
                .with_context(|| format!("failed to read manifest {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("invalid manifest {}: not UTF-8 text", path.display()))?;
        Self::parse(&text, &path.display().to_string())
            .map_err(|e| anyhow::anyhow!(crate::files::clip(&format!("{e:#}"), 600)))
    }

    /// Where the manifest of `service` lives.
    pub fn path(plugins_dir: &Path, service: &str) -> PathBuf {
        plugins_dir.join(format!("{service}.toml"))
    }

    /// The route prefixes of `service` (default: `/NAME`).
    pub fn routes_for(&self, service: &str) -> Vec<Route> {
        match &self.routes {
            Some(routes) => routes.clone(),
            None => vec![Route::of_service(service)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_and_config() {
        let m = Manifest::parse(
            "routes = [\"/users/\", \"/user\"]\n[config]\na = \"b\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            m.routes_for("user"),
            vec![
                Route::parse("/users").unwrap(),
                Route::parse("/user").unwrap()
            ]
        );
        assert_eq!(m.config.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn default_route_is_the_service_name() {
        assert_eq!(
            Manifest::default().routes_for("order"),
            vec![Route::of_service("order")]
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_routes() {
        let err = Manifest::parse("rutes = [\"/x\"]", "x.toml").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `rutes`"),
            "{err:#}"
        );
        let err = Manifest::parse("routes = [\"x\"]", "x.toml").unwrap_err();
        assert!(
            format!("{err:#}").contains("must start with `/`"),
            "{err:#}"
        );
        assert!(Manifest::parse("routes = []", "x.toml").is_err());
        assert!(Manifest::parse("routes = [\"/a/../b\"]", "x.toml").is_err());
        let err = Manifest::parse("weights = { \"1.0.0\" = 60 }", "x.toml").unwrap_err();
        assert!(format!("{err:#}").contains("sum to 100"), "{err:#}");
        assert!(Manifest::parse("sticky = \"ip\"", "x.toml").is_err());
        // `[resilience]`: checked at load, errors name the file and the key.
        let err = Manifest::parse("[resilience]\nretry-on = [404]", "x.toml").unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("x.toml") && err.contains("retry-on"), "{err}");
        let err = Manifest::parse("[resilience]\nretries = \"one\"", "x.toml").unwrap_err();
        assert!(format!("{err:#}").contains("retries"), "{err:#}");
        let ok = Manifest::parse("[resilience]\ntransactional-kv = true", "x.toml").unwrap();
        assert!(ok.resilience.transactional_kv);
        // `[[subscribe]]`: defaults, the back-off schedule, bad values.
        let m = Manifest::parse("[[subscribe]]\ntopic = \"orders.*\"", "x.toml").unwrap();
        let sub = &m.subscribe[0];
        assert_eq!(
            (sub.max_deliver, sub.max_in_flight, sub.dead_letter),
            (5, 16, true)
        );
        assert_eq!(sub.ack_wait, None, "default: the service's timeout + 5 s");
        assert_eq!(sub.group_name("notify"), "notify");
        let waits: Vec<u64> = (2..=7).map(|n| sub.backoff_before(n).as_secs()).collect();
        assert_eq!(waits, [1, 5, 30, 120, 120, 120]);
        // ±20% jitter around each: 0.8 s to 1.2 s before the second attempt.
        assert_eq!(sub.retry_delay(2, 0.0), Duration::from_millis(800));
        assert_eq!(sub.retry_delay(2, 1.0), Duration::from_millis(1200));
        assert_eq!(sub.retry_delay(3, 0.5), Duration::from_secs(5));
        assert_eq!(sub.retry_delay(3, 1.0), Duration::from_secs(6));
        assert!(sub.topic.matches("orders.created") && !sub.topic.matches("orders.a.b"));
        for (bad, key) in [
            ("max-deliver = 0", "max-deliver"),
            ("max-in-flight = 5000", "max-in-flight"),
            ("backoff = []", "backoff"),
            ("ack-wait = \"10ms\"", "ack-wait"),
            ("backoff = [\"1000000000years\"]", "backoff"),
            ("group = \"a b\"", "group"),
            ("ordered-by = \"customer\"", "ordered-by"),
            ("sticky = \"cookie:a\"", "sticky"),
        ] {
            let text = format!("[[subscribe]]\ntopic = \"t\"\n{bad}");
            let err = format!("{:#}", Manifest::parse(&text, "x.toml").unwrap_err());
            assert!(err.contains(key), "{bad}: {err}");
        }
        let keyed =
            "[[subscribe]]\ntopic = \"t\"\nordered-by = \"key\"\nsticky = \"header:X-User\"";
        let m = Manifest::parse(keyed, "x.toml").unwrap();
        assert_eq!(
            m.subscribe[0].ordered_by,
            Some(crate::spec::MessageKey::Key)
        );
        assert_eq!(
            m.subscribe[0].sticky,
            Some(crate::spec::MessageKey::Header("x-user".into()))
        );
        let err = Manifest::parse("[[subscribe]]\ntopic = \"a..b\"", "x.toml").unwrap_err();
        assert!(format!("{err:#}").contains("not a topic"), "{err:#}");
        let err = Manifest::parse("[grants]\npublish = [\"a.>.b\"]", "x.toml").unwrap_err();
        assert!(format!("{err:#}").contains("not a topic"), "{err:#}");
    }

    #[test]
    fn sizes_and_durations_need_their_unit() {
        for (text, key) in [
            ("[limits]\nmemory = 128\n", "memory = 128"),
            ("[limits]\nrequest-body = 1024\n", "request-body = 1024"),
            ("[limits]\ncpu-time = 200\n", "cpu-time = 200"),
            ("[limits]\ntimeout = 5\n", "timeout = 5"),
        ] {
            let err = format!("{:#}", Manifest::parse(text, "x.toml").unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
        let ok = Manifest::parse(
            "[limits]\nmemory = \"128 MiB\"\ncpu-time = \"200ms\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(ok.limits.memory, Some(Size(128 * 1024 * 1024)));
    }

    #[test]
    fn root_route_stays_root() {
        let m = Manifest::parse("routes = [\"/\"]", "t").unwrap();
        assert_eq!(m.routes_for("x")[0].as_str(), "/");
    }

    mod fuzz {
        //! `PROPTEST_CASES=100000 cargo test -p wasmhost --lib fuzz` for a longer run.
        use super::*;
        use proptest::prelude::*;

        fn toml_value() -> impl Strategy<Value = String> {
            prop_oneof![
                "-?[0-9]{1,12}".prop_map(|s| s),
                "\"[ -~]{0,16}\"".prop_map(|s| s),
                "\\[(\"/[a-z]{0,5}\", ?){0,3}\\]".prop_map(|s| s),
                Just("true".to_string()),
                Just("{ a = 1 }".to_string()),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("routes"),
                Just("weights"),
                Just("sticky"),
                Just("rollout"),
                Just("steps"),
                Just("step-interval-secs"),
                Just("max-error-rate"),
                Just("min-requests"),
                Just("limits.memory"),
                Just("limits.cpu-time"),
                Just("limits.timeout"),
                Just("limits.concurrency"),
                Just("limits.request-body"),
                Just("limits.resources"),
                Just("limits.requests-per-instance"),
                Just("grants.services"),
                Just("grants.http"),
                Just("grants.env"),
                Just("grants.dir"),
                Just("config.x"),
                Just("unknown"),
            ]
            .prop_map(str::to_string)
        }

        proptest! {
            #[test]
            fn any_text_parses_or_is_refused(text in ".{0,200}") {
                let _ = Manifest::parse(&text, "fuzz.toml");
            }

            #[test]
            fn manifest_shaped_text_parses_or_is_refused(
                entries in proptest::collection::vec((key(), toml_value()), 0..6)
            ) {
                let text: String = entries.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                if let Ok(m) = Manifest::parse(&text, "fuzz.toml") {
                    // Whatever parses yields valid limits or a clear error.
                    let _ = Limits::default().with_overrides(&m.limits, "fuzz.toml");
                    prop_assert!(m.steps.last() == Some(&100));
                }
            }

            #[test]
            fn host_patterns_parse_or_are_refused(entry in ".{0,40}") {
                let _ = crate::spec::HostPattern::parse(&entry);
            }
        }
    }
}
