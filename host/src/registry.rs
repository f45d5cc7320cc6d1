//! The registry: every loaded service, its versions, its routes, and the
//! files that failed to load.
//!
//! A `Registry` is an immutable snapshot. The request path reads it through
//! an `ArcSwap` and clones the `Arc<Version>` it runs, so replacing the
//! snapshot never disturbs a request in flight.

use crate::bindings::ServicePre;
use crate::capabilities::HostState;
pub use crate::files::FileStamp;
use crate::instance::IdleInstances;
use crate::manifest::Manifest;
use crate::metrics::VersionMetrics;
use crate::release::{Pins, Policy};
use crate::release_state::ReleaseState;
use crate::resilience::{Counters, Outlier, RetryBudget};
use crate::router::RouteTable;
use crate::sandbox::Sandbox;
use crate::spec::{compare_versions, Route, Weights};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// A pre-linked component, by the world it implements.
#[derive(Clone)]
pub enum Pre {
    /// The `wasmhost:plugin/service` world of 0.1.0: `handle(request) -> response`.
    Service(ServicePre<HostState>),
    /// A `wasmhost:plugin@0.2.0` world: `service`, or `subscriber-service`
    /// when it exports `subscriber` too.
    Plugin(Arc<PluginPre>),
    /// The standard `wasi:http/proxy` world (`wasi:http/incoming-handler`).
    Proxy(wasmtime_wasi_http::p2::bindings::ProxyPre<HostState>),
    /// The standard `wasi:messaging` draft: a component that exports
    /// `wasi:messaging/incoming-handler` and no HTTP handler (it handles
    /// messages only).
    Messaging(Arc<MessagingPre>),
}

/// A `wasi:messaging@0.2.0-draft` component, pre-linked.
pub struct MessagingPre {
    /// The pre-linked component.
    pub pre: wasmtime::component::InstancePre<HostState>,
    /// Its `incoming-handler` export.
    pub handler:
        crate::bindings::wasi_messaging::exports::wasi::messaging::incoming_handler::GuestIndices,
}

/// A `wasmhost:plugin@0.2.0` component, pre-linked, with where its exports are.
pub struct PluginPre {
    /// The pre-linked component.
    pub pre: wasmtime::component::InstancePre<HostState>,
    /// Its `handler` export.
    pub handler: crate::bindings::v2::exports::wasmhost::plugin::handler::GuestIndices,
    /// Its `subscriber` export, if it has one.
    pub subscriber:
        Option<crate::bindings::v2::exports::wasmhost::plugin::subscriber::GuestIndices>,
}

impl Pre {
    /// The world's name, for status output.
    pub fn world(&self) -> &'static str {
        match self {
            Pre::Service(_) => "wasmhost:plugin/service",
            Pre::Plugin(p) if p.subscriber.is_some() => "wasmhost:plugin/subscriber-service@0.2.0",
            Pre::Plugin(_) => "wasmhost:plugin/service@0.2.0",
            Pre::Proxy(_) => "wasi:http/proxy",
            Pre::Messaging(_) => "wasi:messaging/messaging-core",
        }
    }

    /// Instantiates a service of either contract version in `store`, ready
    /// for `handle` (`None` for a wasi:http component).
    pub async fn instantiate_handler(
        &self,
        store: &mut wasmtime::Store<HostState>,
    ) -> Option<wasmtime::Result<crate::instance::Handler>> {
        use crate::instance::Handler;
        Some(match self {
            Pre::Service(pre) => pre.instantiate_async(store).await.map(Handler::V1),
            Pre::Plugin(p) => match p.pre.instantiate_async(&mut *store).await {
                Ok(instance) => p.handler.load(&mut *store, &instance).map(Handler::V2),
                Err(e) => Err(e),
            },
            Pre::Proxy(_) => return None,
            Pre::Messaging(_) => Err(wasmtime::format_err!(
                "this service handles messages only (a wasi:messaging component exports no HTTP handler)"
            )),
        })
    }
}

/// One loaded, compiled and pre-linked version of a service.
#[derive(Clone)]
pub struct Version {
    /// Service name.
    pub service: Arc<str>,
    /// Version name (from the file name, or the content hash).
    pub version: Arc<str>,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Size of the component in bytes.
    pub size: u64,
    /// The file's identity and times when it was read: a rescan that finds
    /// the same stamp reuses this version without reading the file again.
    pub stamp: Option<FileStamp>,
    /// The component, type-checked against its world and pre-linked.
    pub pre: Pre,
    /// Its limits and grants, from the service's manifest.
    pub sandbox: Arc<Sandbox>,
    /// Request metrics of routed traffic (what canary analysis judges);
    /// kept across reloads of the same version.
    pub metrics: Arc<VersionMetrics>,
    /// Request metrics of outside requests that pinned this version: shown
    /// apart, never judged.
    pub pinned_metrics: Arc<VersionMetrics>,
    /// Its share of the CPU (see [`crate::instance::CpuLanes`]).
    pub lanes: Option<crate::instance::CpuLanes>,
    /// Instances waiting for their next request, when the service's
    /// `requests-per-instance` is above 1 (empty otherwise).
    pub idle: Arc<IdleInstances>,
    /// Its ejection state (serving, ejected, probation); kept across
    /// reloads of the same version, like its metrics.
    pub outlier: Arc<Outlier>,
    /// Its retries and fallbacks, for Prometheus; kept likewise.
    pub counters: Arc<Counters>,
    /// The message deliveries it handled, by outcome; kept likewise.
    pub deliveries: Arc<crate::messages::DeliveryCounts>,
}

impl Version {
    /// The metrics a request counts in: a pinned outside request apart.
    pub fn tally(&self, pinned: bool) -> &VersionMetrics {
        if pinned {
            &self.pinned_metrics
        } else {
            &self.metrics
        }
    }
}

/// A service and its live versions.
#[derive(Clone)]
pub struct ServiceEntry {
    /// Service name.
    pub name: String,
    /// Route prefixes it owns.
    pub routes: Vec<Route>,
    /// Loaded versions, oldest first.
    pub versions: Vec<Arc<Version>>,
    /// Their names, in the same order.
    pub names: Vec<Arc<str>>,
    /// How traffic is split between them.
    pub policy: Policy,
    /// One permit per request running now, `concurrency` in all; shared by
    /// every version and kept across snapshots while the limit is unchanged.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The service's concurrency limit (the size of `slots`).
    pub concurrency: u32,
    /// Reachable only from other services.
    pub private: bool,
    /// Prefixes only other services reach.
    pub private_routes: Vec<Route>,
    /// The retry budget every retry and fallback of the service draws on;
    /// kept across snapshots while its policy is unchanged.
    pub budget: Arc<RetryBudget>,
}

impl ServiceEntry {
    /// Whether an outside request for `path` may reach this service.
    pub fn is_public(&self, path: &str) -> bool {
        !self.private && !self.private_routes.iter().any(|r| r.covers(path))
    }

    /// The version that takes new traffic without a pin: the one with the
    /// largest weight (the highest version by default).
    pub fn live(&self) -> Option<&Arc<Version>> {
        let name = self
            .policy
            .weights
            .iter()
            .max_by_key(|(_, w)| *w)
            .map(|(v, _)| v)?;
        self.version(name)
    }

    /// The version failed requests fall back to and that is never ejected:
    /// the stable version on record (a canary's, or the one a newcomer took
    /// over from) while loaded, else the one with the largest weight.
    pub fn stable(&self) -> Option<&Arc<Version>> {
        self.policy
            .stable
            .as_deref()
            .and_then(|s| self.version(s))
            .or_else(|| self.live())
    }

    /// The loaded version named `name`.
    pub fn version(&self, name: &str) -> Option<&Arc<Version>> {
        self.versions.iter().find(|v| *v.version == *name)
    }

    /// The version for a request with `headers` (see [`Policy::pick`]),
    /// and whether a pin chose it.
    pub fn pick(
        &self,
        headers: &[(String, String)],
        roll: u64,
        pins: Pins,
    ) -> Option<(&Arc<Version>, bool)> {
        let (name, pinned) = self.policy.pick(&self.names, headers, roll, pins)?;
        Some((self.version(name)?, pinned))
    }
}

/// A version whose file is being read and compiled: listed by the admin
/// API, and, for a service with nothing loaded yet, answered with 503 and
/// `retry-after` on its routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Loading {
    /// Service name.
    pub service: String,
    /// The version the file name declares (`None` for a bare `NAME.wasm`).
    pub version: Option<String>,
    /// The file name, relative to the plugins directory.
    pub file: String,
    /// The routes its manifest gives.
    pub routes: Vec<Route>,
    /// When its compile started.
    pub since: std::time::SystemTime,
}

/// What is served at one moment: the loaded code (with policies built from
/// the release state), the release state itself, and what is compiling.
/// The control plane swaps a whole new snapshot in; readers never wait.
#[derive(Default)]
pub struct Snapshot {
    /// Services, versions, routes and load errors.
    pub registry: Registry,
    /// The release state the registry's policies were built from.
    pub release: ReleaseState,
    /// Versions being compiled now.
    pub loading: Vec<Loading>,
    /// Scans of the plugins directory finished since the start.
    pub scans: u64,
    /// On a cluster: versions loaded here that another replica has not
    /// loaded yet; they take no traffic until every replica has them.
    pub held: Held,
}

/// Versions by service (`service → versions`).
pub type Held = BTreeMap<String, std::collections::BTreeSet<String>>;

/// How replicas name a version to each other: `SERVICE@VERSION`.
pub fn version_key(service: &str, version: &str) -> String {
    format!("{service}@{version}")
}

/// What a cluster's other replicas reported, as `SERVICE@VERSION`s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replicas {
    /// What each of them has loaded.
    pub loaded: Vec<std::collections::BTreeSet<String>>,
    /// What any of them gives traffic to (loaded and not held).
    pub admitted: std::collections::BTreeSet<String>,
}

/// The versions of `registry` to hold: those that some other replica
/// lacks, unless a replica already gives them traffic (one that joins the
/// cluster, or is still compiling, never takes traffic away from a version
/// that has it) or `admitted` here (once released, never held again). A
/// service none of whose versions every replica has is not held at all:
/// it serves what it has, as it would alone.
pub fn held_versions(
    registry: &Registry,
    others: &Replicas,
    admitted: &std::collections::BTreeSet<String>,
) -> Held {
    let mut held = Held::new();
    for service in registry.services() {
        let lacking: std::collections::BTreeSet<String> = service
            .names
            .iter()
            .filter(|v| {
                let name = version_key(&service.name, v);
                !admitted.contains(&name)
                    && !others.admitted.contains(&name)
                    && others.loaded.iter().any(|o| !o.contains(&name))
            })
            .map(|v| v.to_string())
            .collect();
        if !lacking.is_empty() && lacking.len() < service.names.len() {
            held.insert(service.name.clone(), lacking);
        }
    }
    held
}

/// `release` with `service`'s operator weights of `held` versions given to
/// its stable version (when it has weight, else the version with the most;
/// none left: the weights are dropped and the default applies).
fn without_held_weights(
    release: &ReleaseState,
    service: &str,
    held: &std::collections::BTreeSet<String>,
) -> ReleaseState {
    let mut out = release.clone();
    let Some(entry) = out.services.get_mut(service) else {
        return out;
    };
    let Some(weights) = entry.weights.as_mut() else {
        return out;
    };
    let taken: u32 = held.iter().filter_map(|v| weights.remove(v)).sum();
    if taken == 0 {
        return out;
    }
    let stable = entry
        .stable
        .clone()
        .filter(|s| weights.contains_key(s))
        .or_else(|| {
            weights
                .iter()
                .max_by_key(|(_, w)| **w)
                .map(|(v, _)| v.clone())
        });
    match stable {
        Some(s) => *weights.entry(s).or_default() += taken,
        None => entry.weights = None,
    }
    out
}

/// The `SERVICE@VERSION`s of `registry` not in `held`: given traffic.
pub fn admitted(registry: &Registry, held: &Held) -> std::collections::BTreeSet<String> {
    registry
        .services()
        .flat_map(|s| {
            s.names
                .iter()
                .filter(|v| !held.get(&s.name).is_some_and(|h| h.contains(&***v)))
                .map(|v| version_key(&s.name, v))
        })
        .collect()
}

impl Snapshot {
    /// The service still compiling its first version that would own `path`.
    pub fn loading_route(&self, path: &str) -> Option<&Loading> {
        // Only on a path no loaded service owns, so building the table here
        // costs the request path nothing; the matching is the router's own.
        let mut table = RouteTable::new();
        for l in self
            .loading
            .iter()
            .filter(|l| self.registry.service(&l.service).is_none())
        {
            for route in &l.routes {
                // A prefix two loading services claim is settled at load.
                let _ = table.insert(route.as_str(), &l.service);
            }
        }
        let service = table.lookup(path)?;
        self.loading.iter().find(|l| l.service == service)
    }
}

/// A file (or manifest) that could not be loaded, and why.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The file name, relative to the plugins directory.
    pub file: String,
    /// The reason, one line.
    pub error: String,
}

/// A snapshot of everything loaded.
#[derive(Default)]
pub struct Registry {
    services: BTreeMap<String, ServiceEntry>,
    manifests: BTreeMap<String, Manifest>,
    routes: RouteTable,
    /// Files and manifests that did not load.
    errors: Vec<LoadError>,
    /// Weights that could not apply; recomputed with the policies.
    policy_errors: Vec<LoadError>,
    /// Files that load but can never take traffic by default.
    warnings: Vec<LoadError>,
}

impl Registry {
    /// Builds a snapshot from loaded versions and their manifests.
    ///
    /// When services' routes collide, a service that already owned the
    /// prefix in `previous` keeps it and the newcomers are refused; at start
    /// the owner recorded in `release` (the table last served) does; with
    /// neither, every claimant is refused, since no rule could pick one
    /// fairly. Each refusal is an error naming the prefix and
    /// the claimants.
    pub fn build(
        versions: Vec<Arc<Version>>,
        manifests: BTreeMap<String, Manifest>,
        mut errors: Vec<LoadError>,
        previous: Option<&Registry>,
        release: &ReleaseState,
    ) -> Self {
        let mut by_service: BTreeMap<String, Vec<Arc<Version>>> = BTreeMap::new();
        for v in versions {
            by_service.entry(v.service.to_string()).or_default().push(v);
        }
        let routes_of = |name: &str| {
            manifests
                .get(name)
                .cloned()
                .unwrap_or_default()
                .routes_for(name)
        };

        let claims: BTreeMap<String, Vec<Route>> = by_service
            .keys()
            .map(|name| (name.clone(), routes_of(name)))
            .collect();
        // The owner before this scan; at start, the owner recorded when the
        // host last served.
        let incumbent = |prefix: &str| {
            previous
                .and_then(|p| p.routes.lookup_exact(prefix).map(str::to_string))
                .or_else(|| release.route_owners.get(prefix).cloned())
        };
        let (refused, conflicts) = claim_routes(&claims, &incumbent);
        errors.extend(conflicts);

        let mut services = BTreeMap::new();
        let mut table = RouteTable::new();
        let mut policy_errors = Vec::new();
        for (name, mut versions) in by_service {
            if refused.contains(&name) {
                continue;
            }
            versions.sort_by(|a, b| compare_versions(&a.version, &b.version));
            versions.dedup_by(|a, b| a.version == b.version);
            let routes = routes_of(&name);
            for prefix in &routes {
                // Cannot fail: conflicting services were refused above.
                let _ = table.insert(prefix.as_str(), &name);
            }
            let names: Vec<Arc<str>> = versions.iter().map(|v| v.version.clone()).collect();
            let concurrency = versions
                .last()
                .map_or(crate::config::DEFAULT_CONCURRENCY, |v| {
                    v.sandbox.limits.concurrency
                });
            let slots = previous
                .and_then(|p| p.services.get(&name))
                .filter(|p| p.concurrency == concurrency)
                .map(|p| p.slots.clone())
                .unwrap_or_else(|| Arc::new(tokio::sync::Semaphore::new(concurrency as usize)));
            let policy = policy_for(
                &name,
                &names,
                manifests.get(&name),
                release,
                &mut policy_errors,
            );
            let budget_policy = manifests
                .get(&name)
                .map(|m| m.resilience.budget.clone())
                .unwrap_or_default();
            let budget = previous
                .and_then(|p| p.services.get(&name))
                .filter(|p| {
                    p.versions
                        .last()
                        .is_some_and(|v| v.sandbox.resilience.budget == budget_policy)
                })
                .map(|p| p.budget.clone())
                .unwrap_or_else(|| Arc::new(RetryBudget::new(&budget_policy)));
            services.insert(
                name.clone(),
                ServiceEntry {
                    private: manifests.get(&name).is_some_and(|m| m.private),
                    private_routes: manifests
                        .get(&name)
                        .map(|m| m.private_routes.clone())
                        .unwrap_or_default(),
                    name,
                    routes,
                    versions,
                    names,
                    policy,
                    slots,
                    concurrency,
                    budget,
                },
            );
        }
        let warnings = naming_warnings(&services);
        Self {
            services,
            manifests,
            routes: table,
            errors,
            policy_errors,
            warnings,
        }
    }

    /// The same services with their policies recomputed from `release`.
    pub fn with_release(&self, release: &ReleaseState) -> Self {
        self.with_release_holding(release, &Held::new())
    }

    /// [`Registry::with_release`], the `held` versions left out of every
    /// policy: loaded (a pin reaches them), but given no traffic.
    pub fn with_release_holding(&self, release: &ReleaseState, held: &Held) -> Self {
        let mut policy_errors = Vec::new();
        let services = self
            .services
            .iter()
            .map(|(name, s)| {
                // A held version is out of the policy; its weights go to the
                // stable version here (or, without one, to the version with
                // the most weight).
                let moved;
                let (routable, release) = match held.get(name) {
                    Some(h) => {
                        moved = without_held_weights(release, name, h);
                        let routable: Vec<Arc<str>> = s
                            .names
                            .iter()
                            .filter(|v| !h.contains(&***v))
                            .cloned()
                            .collect();
                        (routable, &moved)
                    }
                    None => (s.names.clone(), release),
                };
                let policy = policy_for(
                    name,
                    &routable,
                    self.manifests.get(name),
                    release,
                    &mut policy_errors,
                );
                (
                    name.clone(),
                    ServiceEntry {
                        policy,
                        ..s.clone()
                    },
                )
            })
            .collect();
        let warnings = naming_warnings(&services);
        Self {
            services,
            manifests: self.manifests.clone(),
            routes: self.routes.clone(),
            errors: self.errors.clone(),
            policy_errors,
            warnings,
        }
    }

    /// The same registry without the `held` versions: what the release
    /// rules see (a version every replica has loaded appears to them only
    /// then).
    pub fn without(&self, held: &Held) -> Self {
        let mut services = self.services.clone();
        for (name, versions) in held {
            if let Some(s) = services.get_mut(name) {
                s.versions.retain(|v| !versions.contains(&*v.version));
                s.names.retain(|v| !versions.contains(&**v));
            }
        }
        Self {
            services,
            manifests: self.manifests.clone(),
            routes: self.routes.clone(),
            errors: self.errors.clone(),
            policy_errors: self.policy_errors.clone(),
            warnings: self.warnings.clone(),
        }
    }

    /// The consumer groups a message goes to: one per `[[subscribe]]` of a
    /// loaded service matching its topic, as `service/group`, each with the
    /// message's ordering key under that subscription's `ordered-by`.
    pub fn groups_for(&self, message: &crate::messages::Outgoing) -> Vec<(String, Option<String>)> {
        let mut groups: Vec<(String, Option<String>)> = self
            .subscriptions()
            .filter(|(_, sub)| sub.topic.matches(&message.topic))
            .map(|(service, sub)| {
                let order = sub
                    .ordered_by
                    .as_ref()
                    .and_then(|by| by.of(message.key.as_deref(), &message.headers))
                    .map(str::to_string);
                (group_key(service, sub.group_name(service)), order)
            })
            .collect();
        groups.sort();
        groups.dedup_by(|a, b| a.0 == b.0);
        groups
    }

    /// Every subscription of a loaded service, with the service's name.
    pub fn subscriptions(
        &self,
    ) -> impl Iterator<Item = (&str, &crate::manifest::Subscription)> + '_ {
        self.services
            .keys()
            .filter_map(move |name| {
                let manifest = self.manifests.get(name)?;
                Some(manifest.subscribe.iter().map(move |s| (name.as_str(), s)))
            })
            .flatten()
    }

    /// The version loaded from `file`, if any.
    pub fn version_from(&self, file: &std::path::Path) -> Option<Arc<Version>> {
        self.services
            .values()
            .flat_map(|s| s.versions.iter())
            .find(|v| v.file == file)
            .cloned()
    }

    /// The manifest in effect for `service`.
    pub fn manifest(&self, service: &str) -> Option<&Manifest> {
        self.manifests.get(service)
    }

    /// The service that owns `path`.
    pub fn route(&self, path: &str) -> Option<&ServiceEntry> {
        self.routes
            .lookup(path)
            .and_then(|name| self.services.get(name))
    }

    /// Every routed prefix and its service.
    pub fn route_owners(&self) -> BTreeMap<String, String> {
        self.routes
            .iter()
            .map(|(prefix, service)| (prefix.to_string(), service.to_string()))
            .collect()
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.get(name)
    }

    /// Every service, by name.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// Files that loaded but can never take traffic by default, each with
    /// the name it should have.
    pub fn warnings(&self) -> impl Iterator<Item = &LoadError> {
        self.warnings.iter()
    }

    /// Files and manifests that failed to load, then weights that could
    /// not apply.
    pub fn errors(&self) -> impl Iterator<Item = &LoadError> {
        self.errors.iter().chain(&self.policy_errors)
    }
}

/// Settles who owns each route prefix: `claims` is each service's routes,
/// `incumbent` the service that owned a prefix before. When services
/// collide, the incumbent keeps the prefix and the newcomers are refused;
/// with no incumbent among the claimants every claimant is refused, since
/// no rule could pick one fairly. Returns the refused services and one
/// error per refusal, naming the prefix and the claimants.
fn claim_routes(
    claims: &BTreeMap<String, Vec<Route>>,
    incumbent: &dyn Fn(&str) -> Option<String>,
) -> (BTreeSet<String>, Vec<LoadError>) {
    let mut owners: BTreeMap<&Route, BTreeSet<&String>> = BTreeMap::new();
    for (name, routes) in claims {
        for prefix in routes {
            owners.entry(prefix).or_default().insert(name);
        }
    }
    let mut refused = BTreeSet::new();
    let mut errors = Vec::new();
    for (prefix, owners) in owners.iter().filter(|(_, o)| o.len() > 1) {
        let list: Vec<_> = owners.iter().map(|o| format!("`{o}`")).collect();
        let keeper = incumbent(prefix.as_str()).filter(|i| owners.contains(i));
        for owner in owners {
            if Some(*owner) == keeper.as_ref() {
                continue;
            }
            refused.insert((*owner).clone());
            let outcome = match &keeper {
                Some(i) => format!("`{i}` keeps it and `{owner}` is not served"),
                None => format!("service `{owner}` is not served until only one claims it"),
            };
            errors.push(LoadError {
                file: format!("{owner}.toml"),
                error: format!(
                    "route `{prefix}` is claimed by {}; {outcome}",
                    list.join(" and ")
                ),
            });
        }
    }
    (refused, errors)
}

/// Versions that sort below a semantic version of their service (a bare
/// `NAME.wasm`, versioned by its hash, or a name such as `v0.2.0`) and that
/// no weight sends traffic to: they load, but would never serve by default.
fn naming_warnings(services: &BTreeMap<String, ServiceEntry>) -> Vec<LoadError> {
    let mut out = Vec::new();
    for s in services.values() {
        let Some(top) = s
            .names
            .iter()
            .rev()
            .find(|v| semver::Version::parse(v).is_ok())
        else {
            continue;
        };
        for v in &s.versions {
            let name = &*v.version;
            let weighted = s.policy.weights.iter().any(|(n, w)| **n == *name && *w > 0);
            if semver::Version::parse(name).is_ok() || weighted {
                continue;
            }
            let file = v
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let service = &s.name;
            let error = if !file.contains('@') {
                format!(
                    "can never take traffic beside {service}@{top}.wasm: a bare name is versioned by its content hash, which sorts below every semantic version; rename it {service}@VERSION.wasm"
                )
            } else {
                let hint = name
                    .strip_prefix('v')
                    .filter(|rest| semver::Version::parse(rest).is_ok())
                    .map_or_else(
                        || format!("{service}@MAJOR.MINOR.PATCH.wasm"),
                        |rest| format!("{service}@{rest}.wasm"),
                    );
                format!(
                    "never takes traffic by default: `{name}` is not a semantic version, so it sorts below {top}; rename it {hint}"
                )
            };
            out.push(LoadError { file, error });
        }
    }
    out
}

/// The policy of `name`: an operator's weights and stickiness win over the
/// manifest's; weights that cannot apply are reported and the highest version
/// takes all traffic.
fn policy_for(
    name: &str,
    names: &[Arc<str>],
    manifest: Option<&Manifest>,
    release: &ReleaseState,
    errors: &mut Vec<LoadError>,
) -> Policy {
    let operator = release.services.get(name);
    let sticky = operator
        .and_then(|r| r.sticky.clone())
        .or_else(|| manifest.and_then(|m| m.sticky.clone()));
    let (weights, origin) = match operator.and_then(|r| r.weights.as_ref()) {
        Some(w) => (Some(w), "the release state"),
        None => (
            manifest
                .and_then(|m| m.weights.as_ref())
                .map(Weights::as_map),
            "the manifest",
        ),
    };
    let mut policy = match Policy::resolve(names, weights, sticky.clone()) {
        Ok(p) => p,
        Err(e) => {
            // The stable version on record, when loaded, is what an operator
            // chose last; only without one does the highest take over.
            let stable = operator
                .and_then(|r| r.stable.as_deref())
                .filter(|s| names.iter().any(|n| **n == **s));
            let fallback = match stable {
                Some(s) => format!("the stable version {s} takes all traffic"),
                None => "the highest version takes all traffic".to_string(),
            };
            errors.push(LoadError {
                file: format!("{name}.toml"),
                error: format!("weights from {origin}: {e:#}; {fallback}"),
            });
            let all = stable.map(|s| BTreeMap::from([(s.to_string(), 100)]));
            Policy::resolve(names, all.as_ref(), sticky).unwrap_or_default()
        }
    };
    policy.stable = operator
        .and_then(|r| r.stable.as_deref())
        .and_then(|s| names.iter().find(|n| ***n == *s))
        .cloned();
    policy.rolled_back = operator
        .map(|r| {
            r.rolled_back
                .iter()
                .map(|v| Arc::from(v.as_str()))
                .collect()
        })
        .unwrap_or_default();
    policy
}

/// The key of a consumer group in the message log: `service/group`.
pub fn group_key(service: &str, group: &str) -> String {
    format!("{service}/{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(c: &[(&str, &[&str])]) -> BTreeMap<String, Vec<Route>> {
        c.iter()
            .map(|(name, routes)| {
                (
                    name.to_string(),
                    routes.iter().map(|r| Route::parse(r).unwrap()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn colliding_newcomers_are_all_refused() {
        let (refused, errors) = claim_routes(
            &claims(&[("probe", &["/users"]), ("user", &["/users", "/user"])]),
            &|_| None,
        );
        assert_eq!(refused, ["probe".to_string(), "user".to_string()].into());
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].error,
            "route `/users` is claimed by `probe` and `user`; service `probe` is not served until only one claims it"
        );
    }

    #[test]
    fn the_incumbent_keeps_its_route() {
        let (refused, errors) = claim_routes(
            &claims(&[("probe", &["/users"]), ("user", &["/users"])]),
            &|prefix| (prefix == "/users").then(|| "user".to_string()),
        );
        assert_eq!(refused, ["probe".to_string()].into());
        assert_eq!(errors[0].file, "probe.toml");
        assert!(errors[0]
            .error
            .ends_with("`user` keeps it and `probe` is not served"));
    }

    #[test]
    fn distinct_routes_need_no_settling() {
        let (refused, errors) =
            claim_routes(&claims(&[("a", &["/a"]), ("b", &["/b", "/"])]), &|_| {
                Some("a".to_string())
            });
        assert!(refused.is_empty() && errors.is_empty());
    }
}
