//! Configuration of the host: the `serve` options (each default a
//! `DEFAULT_*` constant, written once), the HTTP listener's limits, and the
//! resource limits every service starts from (a manifest, see
//! [`crate::manifest`], overrides them per service).

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Longest a component may take to compile.
    pub compile_timeout: Duration,
    /// Requests of one version that may run guest code at once (0: no cap).
    pub cpu_lanes: Option<usize>,
    /// How long the host keeps serving after a drain begins (SIGTERM or
    /// `POST /admin/drain`), ready answering 503, before it stops accepting.
    pub drain_delay: Duration,
    /// When set, an outside request's pin (`x-wasmhost-version`) is honoured
    /// only with header `x-wasmhost-pin-token` carrying this value.
    pub pin_token: Option<String>,
    /// How freed instance memory is reset for the next instance.
    pub memory_reset: MemoryResetMode,
    /// Keep compiled functions in memory, so a recompile of a changed
    /// component compiles only the functions that changed (`wasmhost dev`
    /// turns it on; see `function_cache`).
    pub incremental_compile: bool,
    /// The cluster's Redis (`redis://HOST:PORT`): the services' key-value
    /// data lives there, shared by every replica, instead of in
    /// `STATE/kv.redb`.
    pub cluster: Option<String>,
    /// The cluster's NATS (`nats://HOST:PORT`, JetStream on): published
    /// messages wait there, one durable consumer per group shared by every
    /// replica, instead of in `STATE/kv.redb`.
    pub messaging: Option<String>,
    /// OCI repositories whose version tags are pulled into the plugins
    /// directory as `NAME@TAG.wasm`.
    pub sources: Vec<crate::oci_ref::Source>,
    /// How often each source is looked at.
    pub source_interval: Duration,
}

/// `--memory-reset`: how a freed instance slot's memory is cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryResetMode {
    /// Only the pages the guest wrote (the kernel's PAGEMAP_SCAN), unless
    /// swap is on; then everything, as `full`.
    #[default]
    Auto,
    /// Every kept-resident byte of every freed slot.
    Full,
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
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            cpu_lanes: None,
            drain_delay: DEFAULT_DRAIN_DELAY,
            pin_token: None,
            memory_reset: MemoryResetMode::Auto,
            incremental_compile: false,
            cluster: None,
            messaging: None,
            sources: Vec::new(),
            source_interval: crate::oci_ref::DEFAULT_INTERVAL,
        }
    }
}

/// Default number of client connections open at once (lowered at start to
/// fit the process's file-descriptor limit, see [`fit_to_fd_limit`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Connections the admin listener accepts at once.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// File descriptors kept for everything but client connections: component
/// and manifest files, the database, the cache, the watcher, the admin API.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files as far as the hard limit allows and
/// returns the connection cap that fits in it beside the admin listener and
/// [`RESERVED_FDS`]: `wanted` when there is room, less when not.
pub fn fit_to_fd_limit(wanted: usize) -> (usize, u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let room = limit.saturating_sub(RESERVED_FDS + DEFAULT_ADMIN_MAX_CONNECTIONS as u64);
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(16);
    (wanted.min(room), limit)
}
/// Default number of header fields in one request (more → 431).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default size of one request's head in bytes (more → 431).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default time a client has to send a request head (also the keep-alive idle timeout).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest time a component may take to compile (a compile bomb is
/// refused after it, and not compiled again until its bytes change).
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time the host keeps serving once a drain begins.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
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
    /// Connections one peer address may hold at once (0: no cap); more are
    /// closed as they arrive.
    pub max_connections_per_peer: usize,
}

impl HttpLimits {
    /// The limits of the admin listener: a small connection cap of its own
    /// (an operator needs a few connections, never hundreds) and the same
    /// head limits and timeouts.
    pub fn admin() -> Self {
        Self {
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            ..Self::default()
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections_per_peer: 0,
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
    /// Client connections open at once (at most what the open-file limit
    /// leaves room for; the host raises its soft limit to the hard one). At
    /// the cap the connection idle the longest is closed for a new client.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections one client address may hold at once (0: no cap).
    #[arg(long, default_value_t = 0)]
    pub max_connections_per_peer: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    #[arg(long, default_value_t = DEFAULT_HEADER_TIMEOUT.into())]
    pub header_timeout: humantime::Duration,
    /// Time a client has to send a request body (over → 408).
    #[arg(long, default_value_t = DEFAULT_BODY_TIMEOUT.into())]
    pub body_timeout: humantime::Duration,
    /// Requests of one version that may run guest code at once; the others
    /// wait their turn at each 10 ms tick, so one service flooded with
    /// CPU-bound requests leaves the others their share of the cores.
    /// Default: all cores but one (at least 1); 0 turns the cap off.
    #[arg(long)]
    pub cpu_lanes: Option<usize>,
    /// On SIGTERM, Ctrl-C or `POST /admin/drain`: how long the host keeps
    /// serving with `/.well-known/wasmhost/ready` answering 503 (so load
    /// balancers stop sending), before it stops accepting and finishes the
    /// requests in flight.
    #[arg(long, default_value_t = DEFAULT_DRAIN_DELAY.into())]
    pub drain_delay: humantime::Duration,
    /// Longest a component may take to compile; one that takes longer is
    /// refused, and not compiled again until its file changes.
    #[arg(long, default_value_t = DEFAULT_COMPILE_TIMEOUT.into())]
    pub compile_timeout: humantime::Duration,
    /// Where compiled artifacts are cached (default: STATE/cache). Its
    /// entries run as native code: it must belong to this user and not be
    /// writable by others (checked at start), and every entry is checked
    /// against a MAC before it loads. Hosts of one user may share one.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Load components that are symlinks to files outside the plugins
    /// directory (refused by default).
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Honour version pins (`x-wasmhost-version` header or cookie) from
    /// outside only with header `x-wasmhost-pin-token: TOKEN`; without it
    /// such requests are routed like any other. Unset, anyone may pin to a
    /// loaded version that was not rolled back (pinned requests never count
    /// in canary analysis either way).
    #[arg(long, env = "WASMHOST_PIN_TOKEN", hide_env_values = true)]
    pub pin_token: Option<String>,
    /// How a freed instance slot's memory is cleared before the next
    /// request's instance gets it. `auto`: only the pages the guest wrote,
    /// found with the kernel's PAGEMAP_SCAN (Linux 6.7+), unless swap is on
    /// at start: a written page that was swapped out escapes the scan, so
    /// then everything is cleared, with a warning. `full`: always
    /// everything (slower; for hosts where swap may be turned on later).
    #[arg(long, value_enum, default_value_t = MemoryResetMode::Auto)]
    pub memory_reset: MemoryResetMode,
    /// Keep every compiled function in memory (up to 512 MiB), so a new
    /// build of a component compiles only the functions that changed: a
    /// rebuilt Python or JavaScript service is an interpreter whose code
    /// is nearly all the same. `wasmhost dev` keeps them unless this says
    /// `off`; `serve` only when it says `on`.
    #[arg(long, value_enum)]
    pub incremental_compile: Option<Toggle>,
    /// Export traces (OpenTelemetry, OTLP/HTTP protobuf) to this collector,
    /// e.g. http://127.0.0.1:4318 (`/v1/traces` is added). A client's
    /// `traceparent` is continued; nested calls, outbound requests and
    /// messages carry it on. Export never holds up a request: spans beyond
    /// a 4,096-span queue are dropped and counted in /metrics. The SDK's
    /// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose a sampler.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp: Option<String>,
    /// Run as one replica of a cluster on this Redis
    /// (redis://[:PASSWORD@]HOST:PORT[/DB]): the services' key-value data
    /// lives there, shared by every replica (increments stay exact),
    /// instead of in STATE/kv.redb. `wasmhost kv export|import` moves it.
    #[arg(long, env = "WASMHOST_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Keep published messages on this NATS server with JetStream on
    /// (nats://[USER:PASSWORD@]HOST:PORT) instead of in STATE/kv.redb:
    /// every replica shares one durable consumer per consumer group, so
    /// each message is handled once across them, with the same
    /// max-deliver, back-off and dead letters.
    #[arg(long, env = "WASMHOST_MESSAGING", value_name = "URL")]
    pub messaging: Option<String>,
    /// Pull components from an OCI registry into the plugins directory:
    /// oci://REGISTRY/PATH/NAME (oci+http:// for a registry without TLS).
    /// Every tag that is a version lands as NAME@TAG.wasm once its digest
    /// checks, and is served like a file dropped in; :TAG pins one tag,
    /// @sha256:DIGEST its manifest. Repeatable (WASMHOST_SOURCE: comma
    /// separated); credentials from WASMHOST_REGISTRY_AUTH=USER:PASSWORD.
    #[arg(
        long = "source",
        env = "WASMHOST_SOURCE",
        value_name = "OCI",
        value_delimiter = ','
    )]
    pub sources: Vec<crate::oci_ref::Source>,
    /// How often each --source is looked at for new tags.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub source_interval: humantime::Duration,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    /// On.
    On,
    /// Off.
    Off,
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
            pin_token: a.pin_token.filter(|t| !t.is_empty()),
            compile_timeout: a.compile_timeout.into(),
            cpu_lanes: a.cpu_lanes,
            drain_delay: a.drain_delay.into(),
            memory_reset: a.memory_reset,
            incremental_compile: a.incremental_compile == Some(Toggle::On),
            cluster: a.cluster.filter(|u| !u.is_empty()),
            messaging: a.messaging.filter(|u| !u.is_empty()),
            sources: a.sources,
            source_interval: a.source_interval.into(),
            ..Default::default()
        };
        config.limits.max_instances = a.max_instances;
        config.limits.memory_ceiling =
            usize::try_from(a.memory_ceiling.as_u64()).unwrap_or(usize::MAX);
        config.http.max_connections = a.max_connections;
        config.http.max_connections_per_peer = a.max_connections_per_peer;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_in_the_manifest_units() {
        assert_eq!(format_size(64 * 1024 * 1024), "64 MiB");
        assert_eq!(format_size(16 * 1024), "16 KiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }
}
