//! Configuration: the `serve` options and the per-service manifests.
//!
//! Everything here is parsed and validated once, at load: a manifest with an
//! unknown key, a route that is not an absolute path, or a malformed value is
//! a load error naming the file, and the request path never parses strings.

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
    /// Limits applied to every request.
    pub limits: Limits,
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
        }
    }
}

/// Resource limits applied to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted, in bytes (larger → 413).
    pub max_request_body: usize,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory: usize,
    /// CPU time one request may spend in guest code (over → 504).
    pub cpu_time: Duration,
    /// Wall-clock time one request may take (over → 504).
    pub timeout: Duration,
    /// Instances alive at once across the host (sizes the pooling allocator).
    pub max_instances: u32,
    /// Deepest chain of nested `services.call`.
    pub max_call_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_memory: DEFAULT_MAX_MEMORY,
            cpu_time: DEFAULT_CPU_TIME,
            timeout: DEFAULT_TIMEOUT,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_call_depth: DEFAULT_MAX_CALL_DEPTH,
        }
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
    pub routes: Option<Vec<String>>,
    /// Values the service reads through `wasi:config/store`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Traffic split between loaded versions in percent, summing to 100,
    /// e.g. `{ "1.0.0" = 90, "1.1.0" = 10 }`. Default: the highest version
    /// takes everything.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, u32>>,
    /// Keeps one client on one version: `header:NAME` or `cookie:NAME`.
    #[serde(default)]
    pub sticky: Option<String>,
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
            for route in routes {
                validate_route(route).with_context(|| format!("invalid manifest {origin}"))?;
            }
        }
        if let Some(weights) = &manifest.weights {
            crate::release::validate_weights(weights)
                .with_context(|| format!("invalid manifest {origin}"))?;
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
        if let Some(sticky) = &manifest.sticky {
            crate::release::Sticky::parse(sticky)
                .with_context(|| format!("invalid manifest {origin}"))?;
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

    /// The route prefixes of `service`, normalised (no trailing slash).
    pub fn routes_for(&self, service: &str) -> Vec<String> {
        match &self.routes {
            Some(routes) => routes.iter().map(|r| normalize_route(r)).collect(),
            None => vec![format!("/{service}")],
        }
    }
}

/// A route is an absolute path prefix without query, fragment or `..`.
fn validate_route(route: &str) -> Result<()> {
    if !route.starts_with('/') {
        bail!("route `{route}` must start with `/`");
    }
    if route.contains(['?', '#', ' ']) || route.split('/').any(|s| s == "..") {
        bail!("route `{route}` must be a plain path prefix");
    }
    Ok(())
}

fn normalize_route(route: &str) -> String {
    let trimmed = route.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
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
        assert_eq!(m.routes_for("user"), vec!["/users", "/user"]);
        assert_eq!(m.config.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn default_route_is_the_service_name() {
        assert_eq!(Manifest::default().routes_for("order"), vec!["/order"]);
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
        assert_eq!(m.routes_for("x"), vec!["/"]);
    }
}
