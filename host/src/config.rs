//! Configuration: the `serve` options and the per-service manifests.
//!
//! Everything here is parsed and validated once, at load: a manifest with an
//! unknown key, a route that is not an absolute path, or a malformed value is
//! a load error naming the file, and the request path never parses strings.

use crate::spec::{validate_service_name, HostPattern, Route, Size, Sticky, Weights};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default plugins directory.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins";
/// Default address of the HTTP listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default address of the admin API listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default state directory (key-value database, compiled-artifact cache).
pub const DEFAULT_STATE_DIR: &str = ".wasmhost";
/// Default cap on a request body.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Default cap on a guest's linear memory.
pub const DEFAULT_MAX_MEMORY: usize = 64 * 1024 * 1024;
/// Default CPU time a request may spend running guest code.
pub const DEFAULT_CPU_TIME: Duration = Duration::from_secs(1);
/// Default wall-clock time a request may take, including nested service calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of instances that may exist at once across all services.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Default depth of nested `services.call` chains (cuts A→B→A loops).
pub const DEFAULT_MAX_CALL_DEPTH: u32 = 8;
/// Default cap on a response body a service returns.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 8 * 1024 * 1024;
/// Default number of requests one service runs at once (excess → 503).
pub const DEFAULT_CONCURRENCY: u32 = 64;
/// Default bytes of stdout, stderr and `wasi:logging` one request may write.
pub const DEFAULT_LOG_BYTES: usize = 64 * 1024;
/// Default number of entries in one request's resource table (open handles).
pub const DEFAULT_RESOURCES: u32 = 1024;
/// Default number of requests one instance serves: 1, a fresh instance for
/// every request.
pub const DEFAULT_REQUESTS_PER_INSTANCE: u32 = 1;
/// Default ceiling of any service's linear memory (sizes the instance pool).
pub const DEFAULT_MEMORY_CEILING: usize = 1024 * 1024 * 1024;

/// Options of `wasmhost serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Directory watched for `*.wasm` components and `*.toml` manifests.
    pub plugins_dir: PathBuf,
    /// Address of the HTTP listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the admin API listener.
    pub admin_listen: SocketAddr,
    /// Directory for durable state: the key-value database and the cache of
    /// compiled artifacts.
    pub state_dir: PathBuf,
    /// The default limits of every service, and the host-wide ones.
    pub limits: Limits,
    /// Limits of the plugin-traffic listener.
    pub http: HttpLimits,
    /// Load symlinks that lead outside the plugins directory.
    pub follow_symlinks: bool,
    /// Where compiled artifacts are cached; default `STATE/cache`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from(DEFAULT_PLUGINS_DIR),
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 8080).into()),
            admin_listen: DEFAULT_ADMIN_LISTEN
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 9090).into()),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            limits: Limits::default(),
            http: HttpLimits::default(),
            follow_symlinks: false,
            cache_dir: None,
        }
    }
}

/// Default number of client connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default number of header fields in one request (more → 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default size of one request's head in bytes (more → 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default time a client has to send a request head (also the keep-alive idle timeout).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits of the plugin-traffic listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// Header fields in one request (more → 431).
    pub max_headers: usize,
    /// Bytes of one request's head (more → 431).
    pub max_header_bytes: usize,
    /// Time a client has to send a request head, counted from the end of
    /// the previous response on a keep-alive connection (so it is also the
    /// idle timeout).
    pub header_timeout: Duration,
    /// Time a client has to send a request body (over → 408).
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The options of `wasmhost serve`, as the command line takes them: each
/// default is the `DEFAULT_*` constant above, written nowhere else.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory of NAME@VERSION.wasm components and NAME.toml manifests.
    #[arg(long, default_value = DEFAULT_PLUGINS_DIR)]
    pub plugins: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address of the admin API (status, weights, promote, rollback, /metrics).
    /// Every call needs `Authorization: Bearer TOKEN`: the token comes from
    /// WASMHOST_ADMIN_TOKEN, else it is generated into STATE/admin-token.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// Directory for the key-value database, release state and compiled-artifact cache.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state: PathBuf,
    /// Instances alive at once across all services (sizes the instance
    /// pool; a request finding it full gets 503).
    #[arg(long, default_value_t = DEFAULT_MAX_INSTANCES)]
    pub max_instances: u32,
    /// The most linear memory any service may be given in its manifest.
    #[arg(long, default_value_t = bytesize::ByteSize(DEFAULT_MEMORY_CEILING as u64))]
    pub memory_ceiling: bytesize::ByteSize,
    /// Client connections open at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, default_value_t = DEFAULT_HEADER_TIMEOUT.into())]
    pub header_timeout: humantime::Duration,
    /// Time a client has to send a request body (over → 408).
    #[arg(long, default_value_t = DEFAULT_BODY_TIMEOUT.into())]
    pub body_timeout: humantime::Duration,
    /// Where compiled artifacts are cached (default: STATE/cache). Several
    /// hosts may share one.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Load components that are symlinks to files outside the plugins
    /// directory (refused by default).
    #[arg(long)]
    pub follow_symlinks: bool,
}

impl From<ServeArgs> for ServeConfig {
    fn from(a: ServeArgs) -> Self {
        let mut config = ServeConfig {
            plugins_dir: a.plugins,
            listen: a.listen,
            admin_listen: a.admin_listen,
            state_dir: a.state,
            follow_symlinks: a.follow_symlinks,
            cache_dir: a.cache_dir,
            ..Default::default()
        };
        config.limits.max_instances = a.max_instances;
        config.limits.memory_ceiling =
            usize::try_from(a.memory_ceiling.as_u64()).unwrap_or(usize::MAX);
        config.http.max_connections = a.max_connections;
        config.http.header_timeout = a.header_timeout.into();
        config.http.body_timeout = a.body_timeout.into();
        config
    }
}

/// Resource limits: the host's defaults, and (after a manifest's
/// `[limits]` are applied) the effective limits of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body accepted, in bytes (larger → 413).
    pub max_request_body: usize,
    /// Largest response body a service may return, in bytes (larger → 500).
    pub max_response_body: usize,
    /// Largest linear memory of one instance, in bytes (growth past it fails).
    pub max_memory: usize,
    /// CPU time one request may spend in guest code (over → 504).
    pub cpu_time: Duration,
    /// Wall-clock time one request may take, nested calls included (over → 504).
    pub timeout: Duration,
    /// Requests one service runs at once; more are refused with 503.
    pub concurrency: u32,
    /// Deepest chain of nested `services.call` (deeper → 508).
    pub max_call_depth: u32,
    /// Bytes of stdout, stderr and `wasi:logging` one request may write.
    pub log_bytes: usize,
    /// Entries in one request's resource table (streams, handles…).
    pub resources: u32,
    /// Requests one instance serves before it is dropped. 1 (the default):
    /// every request gets a fresh instance. More trades isolation for speed:
    /// an instance's memory and globals carry over from one request to the
    /// next (see `SECURITY.md`). Applies to the wasmhost world, not wasi:http.
    pub requests_per_instance: u32,
    /// Host-wide: instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// Host-wide: the most memory any service may be given (sizes the pool).
    pub memory_ceiling: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            max_memory: DEFAULT_MAX_MEMORY,
            cpu_time: DEFAULT_CPU_TIME,
            timeout: DEFAULT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            max_call_depth: DEFAULT_MAX_CALL_DEPTH,
            log_bytes: DEFAULT_LOG_BYTES,
            resources: DEFAULT_RESOURCES,
            requests_per_instance: DEFAULT_REQUESTS_PER_INSTANCE,
            max_instances: DEFAULT_MAX_INSTANCES,
            memory_ceiling: DEFAULT_MEMORY_CEILING,
        }
    }
}

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

/// A byte count as a manifest would write it: `64 MiB`, `16 KiB` or `1000`.
pub fn format_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        0 => "0".to_string(),
        b if b % (KIB * KIB * KIB) == 0 => format!("{} GiB", b / (KIB * KIB * KIB)),
        b if b % (KIB * KIB) == 0 => format!("{} MiB", b / (KIB * KIB)),
        b if b % KIB == 0 => format!("{} KiB", b / KIB),
        b => b.to_string(),
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
    pub services: Vec<String>,
    /// Hosts reachable through `wasi:http/outgoing-handler`: `host` (ports 80
    /// and 443), `host:port`, `host:*`, `*.domain` or `*` (any public host).
    /// Private, loopback and link-local addresses are refused unless their
    /// IP (or `localhost`) is listed itself.
    #[serde(default)]
    pub http: Vec<HostPattern>,
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
        for service in &self.services {
            validate_service_name(service).context("in [grants] services")?;
        }
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

    /// Reads `DIR/NAME.toml` when it exists; a missing file is the default manifest.
    pub fn load(plugins_dir: &Path, service: &str) -> Result<Self> {
        let path = plugins_dir.join(format!("{service}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("failed to read manifest {}", path.display())),
        }
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
