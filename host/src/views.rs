//! What the admin API shows, as typed values: the admin handlers serialize
//! them, `wasmhost status` and the tests deserialize them. One definition,
//! so the API, the CLI and the tests cannot disagree on a field.
//!
//! Invariant: only plain data here (serde structs, and conversions from the
//! data layer); building a view from a loaded service is the admin API's.

use crate::config::{format_size, Limits};
use crate::metrics::Snapshot;
use crate::release_state::{Canary, HistoryEntry};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `GET /admin/services`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicesView {
    /// Every loaded service, by name.
    pub services: Vec<ServiceView>,
    /// Versions compiling now.
    #[serde(default)]
    pub loading: Vec<LoadingView>,
    /// Files and manifests that did not load, then weights that could not apply.
    pub load_errors: Vec<LoadErrorView>,
    /// Files that load but can never take traffic by default.
    #[serde(default)]
    pub warnings: Vec<LoadErrorView>,
    /// Scans of the plugins directory finished since the host started.
    #[serde(default)]
    pub scans: u64,
    /// Changes of the plugins directory the watcher acted on (reads and
    /// temporary files are not changes).
    #[serde(default)]
    pub watch_events: u64,
    /// On a cluster: the replicas reporting now, the epoch each applied and
    /// what each has loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<crate::cluster_metrics::Report>,
}

/// One service: `GET /admin/services/NAME`, an element of the list, and
/// the answer to a release change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Route prefixes it owns.
    pub routes: Vec<String>,
    /// Route prefixes only other services reach (all of them when the
    /// service is private).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_routes: Vec<String>,
    /// `header:NAME` or `cookie:NAME`, when requests stick to a version.
    pub sticky: Option<String>,
    /// Loaded versions, newest first.
    pub versions: Vec<VersionView>,
    /// Requests running now.
    pub running: usize,
    /// Effective limits (every version of a service shares its manifest).
    pub limits: Option<LimitsView>,
    /// What it may reach beyond its own namespace, config and logging.
    pub grants: Option<GrantsView>,
    /// Versions of it compiling now (`GET /admin/services/NAME` only).
    #[serde(default)]
    pub loading: Vec<LoadingView>,
    /// The version the release treats as stable: the last promoted
    /// (`GET /admin/services/NAME` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// The epoch of the release state in effect on this host: on a
    /// cluster, of the release document it applied last. Send it back as
    /// `If-Match` to change the release only if nobody changed it since.
    #[serde(default)]
    pub release_epoch: u64,
    /// On a cluster: the replicas reporting now (see each version's
    /// `loaded_on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// A canary in progress (`GET /admin/services/NAME` only).
    #[serde(default)]
    pub canary: Option<Canary>,
    /// Release history, oldest first (`GET /admin/services/NAME` only).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Its files that did not load (`GET /admin/services/NAME` only).
    #[serde(default)]
    pub load_errors: Vec<LoadErrorView>,
}

impl ServiceView {
    /// The version named `name`.
    pub fn version(&self, name: &str) -> Option<&VersionView> {
        self.versions.iter().find(|v| v.version == name)
    }

    /// (version, weight), newest first.
    pub fn weights(&self) -> Vec<(String, u32)> {
        self.versions
            .iter()
            .map(|v| (v.version.clone(), v.weight))
            .collect()
    }
}

/// One loaded version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// Version name.
    pub version: String,
    /// Share of new traffic, in percent.
    pub weight: u32,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// `wasmhost:plugin/service` or `wasi:http/proxy`.
    pub world: String,
    /// Request metrics of routed traffic since it was loaded (what canary
    /// analysis judges).
    pub metrics: Snapshot,
    /// Outside requests that pinned this version, counted apart.
    #[serde(default)]
    pub pinned_metrics: Snapshot,
    /// `serving`, `ejected` (out of weighted and sticky selection),
    /// `probation` (its next request probes it) or, on a cluster,
    /// `waiting` (loaded here but not yet on every replica: no traffic).
    #[serde(default)]
    pub state: String,
    /// Seconds until an ejected version is on probation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_for_secs: Option<u64>,
    /// Times it was ejected since it was loaded.
    #[serde(default)]
    pub ejections: u64,
    /// Requests it failed that were tried again (on it or on the stable version).
    #[serde(default)]
    pub retries: u64,
    /// Requests it failed that the stable version answered.
    #[serde(default)]
    pub fallbacks: u64,
    /// Publish-to-acknowledgement time of the messages it handled.
    #[serde(default)]
    pub message_latency: Snapshot,
    /// On a cluster: the replicas reporting now that have it loaded (of
    /// the service's `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_on: Option<u32>,
}

/// A version being compiled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadingView {
    /// Service name.
    pub service: String,
    /// The version the file name declares (none for a bare `NAME.wasm`).
    pub version: Option<String>,
    /// The file, relative to the plugins directory.
    pub file: String,
    /// Always `loading`.
    pub state: String,
    /// Versions ahead of it (0: it is compiling now; compiles run one at a
    /// time, smallest file first).
    #[serde(default)]
    pub queued_behind: usize,
    /// How long it has been compiling (or waiting, when queued).
    pub elapsed_ms: u64,
}

/// A file or manifest that did not load, and why (whole, not cut).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadErrorView {
    /// The file, relative to the plugins directory.
    pub file: String,
    /// Why.
    pub error: String,
}

/// A service's limits, in the manifest's own keys and units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LimitsView {
    /// Linear memory of one instance, e.g. `64 MiB`.
    pub memory: String,
    /// CPU time per request, e.g. `1s`.
    pub cpu_time: String,
    /// Wall-clock time per request.
    pub timeout: String,
    /// Largest request body.
    pub request_body: String,
    /// Largest response body.
    pub response_body: String,
    /// Requests run at once.
    pub concurrency: u32,
    /// Deepest `services.call` chain.
    pub call_depth: u32,
    /// Guest output per request.
    pub log_bytes: String,
    /// Resource-table entries per request.
    pub resources: u32,
    /// Requests one instance serves.
    pub requests_per_instance: u32,
}

impl From<&Limits> for LimitsView {
    fn from(l: &Limits) -> Self {
        let size = |b: usize| format_size(b as u64);
        let time = |d: Duration| humantime::format_duration(d).to_string();
        Self {
            memory: size(l.max_memory),
            cpu_time: time(l.cpu_time),
            timeout: time(l.timeout),
            request_body: size(l.max_request_body),
            response_body: size(l.max_response_body),
            concurrency: l.concurrency,
            call_depth: l.max_call_depth,
            log_bytes: size(l.log_bytes),
            resources: l.resources,
            requests_per_instance: l.requests_per_instance,
        }
    }
}

/// What a service is granted (environment values are never shown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrantsView {
    /// Services it may call.
    pub services: Vec<String>,
    /// Outbound hosts it may reach, as granted.
    pub http: Vec<String>,
    /// Names of the environment variables it sees.
    pub env: Vec<String>,
    /// A read-only directory.
    pub dir: Option<DirView>,
    /// Keys of its `[config]`.
    pub config: Vec<String>,
    /// Always `own namespace`.
    pub keyvalue: String,
    /// Always granted.
    pub logging: bool,
}

/// A granted directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirView {
    /// The host directory, resolved.
    pub host: Option<String>,
    /// Where the guest sees it.
    pub guest: String,
    /// Always `read-only`.
    pub access: String,
}

/// `GET /admin/logs`: one service's recent log lines.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LogsView {
    /// Whether this host keeps log lines at all (`wasmhost serve` does).
    pub kept: bool,
    /// The lines, oldest first.
    pub lines: Vec<crate::logbook::Line>,
}
