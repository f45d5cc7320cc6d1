//! The control plane: the one writer of what is served.
//!
//! Every change — an operator's weights, promote, rollback, pause and
//! resume, the result of a rescan, a version starting to compile, a canary
//! step — is a [`Change`] given to [`Control::apply`]. It takes the writer
//! lock, applies the rule (a pure function of `crate::release_state`) to a
//! copy of the release state, persists the copy, builds the next
//! [`Snapshot`] and swaps it in. A refused change is a typed
//! [`ReleaseError`] that knows its HTTP status, and nothing moves.
//!
//! Invariants: the writer lock is held only while a change is applied —
//! never across a compile (the loader compiles first, then hands its result
//! in; scans take turns on a lock of their own) — and readers never take it: admin reads, `wasmhost status` and the canary
//! analyst load the snapshot. A release change is persisted before it takes
//! effect.

use crate::manifest::Rollout;
use crate::registry::{Loading, Registry, ServiceEntry, Snapshot};
use crate::release_state::{self, CanaryDecision, Loaded, ReleaseError, ReleaseState};
use crate::spec::compare_versions;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// One change of what is served.
pub enum Change {
    /// `PUT …/release`: operator weights and, optionally, stickiness.
    SetWeights {
        /// Service name.
        service: String,
        /// Version → percent (checked here: they must sum to 100).
        weights: BTreeMap<String, u32>,
        /// `header:NAME` or `cookie:NAME`.
        sticky: Option<String>,
    },
    /// `POST …/promote`.
    Promote {
        /// Service name.
        service: String,
        /// The version that takes everything.
        version: String,
    },
    /// `POST …/rollback`.
    Rollback {
        /// Service name.
        service: String,
    },
    /// `POST …/pause` (`paused`) and `…/resume`.
    Pause {
        /// Service name.
        service: String,
        /// Pause or resume.
        paused: bool,
    },
    /// Versions whose compile is starting (they are listed as loading).
    Loading(Vec<Loading>),
    /// What a scan of the plugins directory loaded.
    Rescan {
        /// The registry the loader built (its policies are rebuilt here
        /// from the release state in effect).
        registry: Registry,
        /// Versions still to compile in this scan.
        loading: Vec<Loading>,
        /// `None` while the scan runs (new services served as they
        /// compile); at its end, what it started from.
        done: Option<ScanDone>,
    },
    /// The canary analyst's decisions, applied where still current.
    Canary(Vec<CanaryDecision>),
    /// The request path ejected a version (it is already out of
    /// selection): recorded in the history; a canary whose candidate is
    /// ejected twice in one step is rolled back.
    Ejected {
        /// Service name.
        service: String,
        /// The version ejected.
        version: String,
        /// Why and for how long, for the history.
        detail: String,
    },
    /// The cluster's release document, written by another replica: in
    /// effect here if its epoch is newer than the one applied.
    Remote(ReleaseState),
    /// What the cluster's other replicas report they have loaded (each
    /// as `SERVICE@VERSION`s): a version loaded here that one of them
    /// lacks is held — no traffic — and is released to the release rules
    /// (a canary start, a takeover) once every replica has it.
    Replicas(crate::registry::Replicas),
}

/// The end of a scan: the release rules compare what it started from with
/// what it loaded.
pub struct ScanDone {
    /// The snapshot the scan started from.
    pub base: Arc<Snapshot>,
    /// Whether it saw every file (none was still being written): only then
    /// are weights of removed versions pruned.
    pub complete: bool,
}

/// What an accepted change did.
pub struct Applied {
    /// The snapshot before the change.
    pub before: Arc<Snapshot>,
    /// The snapshot after it.
    pub after: Arc<Snapshot>,
    /// The history detail of a release change (`1.0.0=90,1.1.0=10`, the
    /// promoted version…); empty for other changes.
    pub detail: String,
}

/// The single writer of the snapshot.
pub struct Control {
    snapshot: Arc<ArcSwap<Snapshot>>,
    write: tokio::sync::Mutex<()>,
    /// Held by a scan from its start to its last change, so two scans never
    /// build on the same base (the writer lock is not held meanwhile).
    scan: tokio::sync::Mutex<()>,
    /// Changes of the plugins directory the watcher acted on.
    watch_events: std::sync::atomic::AtomicU64,
    state_dir: PathBuf,
    /// Whether the host is ready for traffic, or draining.
    health: Arc<crate::health::Health>,
    /// On a cluster, the release document every replica serves: changes
    /// are written there (compare-and-set on its epoch), not to the file.
    shared: Option<crate::shared_release::SharedRelease>,
    /// On a cluster, what the replicas report and the canary lease.
    cluster: Option<crate::cluster_metrics::ClusterMetrics>,
    /// On a cluster, what the other replicas reported last, and the
    /// versions given traffic here so far.
    others: std::sync::Mutex<Seen>,
}

/// What a replica knows of the cluster's versions.
#[derive(Default, Clone)]
struct Seen {
    /// The other replicas' last reports.
    others: crate::registry::Replicas,
    /// `SERVICE@VERSION`s given traffic here so far: never held again.
    admitted: std::collections::BTreeSet<String>,
}

/// The versions in `a` and not in `b`.
fn newly<'a>(
    a: &'a crate::registry::Held,
    b: &'a crate::registry::Held,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    a.iter().flat_map(move |(service, versions)| {
        versions
            .iter()
            .filter(move |v| !b.get(service).is_some_and(|h| h.contains(*v)))
            .map(move |v| (service.as_str(), v.as_str()))
    })
}

impl Control {
    /// A control plane serving `registry` with `release`, persisting the
    /// release state in `state_dir`.
    pub fn new(registry: Registry, release: ReleaseState, state_dir: PathBuf) -> Self {
        let registry = registry.with_release(&release);
        Self {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot {
                registry,
                release,
                loading: Vec::new(),
                scans: 0,
                held: Default::default(),
            })),
            write: tokio::sync::Mutex::new(()),
            scan: tokio::sync::Mutex::new(()),
            watch_events: Default::default(),
            state_dir,
            health: Arc::default(),
            shared: None,
            cluster: None,
            others: Default::default(),
        }
    }

    /// Keeps the release state in the cluster's release document.
    pub fn with_shared(mut self, shared: crate::shared_release::SharedRelease) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Reports this replica to the cluster and decides canaries over the
    /// replicas' merged metrics while it holds the lease.
    pub fn with_cluster(mut self, cluster: crate::cluster_metrics::ClusterMetrics) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster's replicas, on a cluster.
    pub fn cluster(&self) -> Option<&crate::cluster_metrics::ClusterMetrics> {
        self.cluster.as_ref()
    }

    /// The cluster's release document, on a cluster.
    pub fn shared(&self) -> Option<&crate::shared_release::SharedRelease> {
        self.shared.as_ref()
    }

    /// The host's readiness and drain state.
    pub fn health(&self) -> &Arc<crate::health::Health> {
        &self.health
    }

    /// The handle readers load the snapshot from (the dispatcher's).
    pub fn handle(&self) -> Arc<ArcSwap<Snapshot>> {
        self.snapshot.clone()
    }

    /// Waits until no other scan runs, and holds that until dropped: a scan
    /// takes this before it reads its base snapshot and keeps it until its
    /// last change is applied. Readers and operator changes never wait on it.
    pub async fn scan_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.scan.lock().await
    }

    /// Counts a change of the plugins directory the watcher acts on.
    pub fn count_watch_event(&self) {
        self.watch_events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes of the plugins directory the watcher has acted on.
    pub fn watch_events(&self) -> u64 {
        self.watch_events.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What is served now; never waits.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Applies `change`: on success the new snapshot is in effect (and a
    /// release change persisted); on error nothing changed.
    pub async fn apply(&self, change: Change) -> Result<Applied, ReleaseError> {
        self.apply_based_on(change, None).await
    }

    /// [`Control::apply`] of an operator's change made after reading the
    /// release at epoch `based_on` (`If-Match`): refused with
    /// [`ReleaseError::Stale`] unless that is still the epoch.
    pub async fn apply_based_on(
        &self,
        change: Change,
        based_on: Option<u64>,
    ) -> Result<Applied, ReleaseError> {
        let _writer = self.write.lock().await;
        let before = self.snapshot.load_full();
        let mut release = before.release.clone();
        if let Change::Remote(remote) = change {
            if remote.epoch > before.release.epoch {
                release = remote;
                tracing::info!(
                    epoch = release.epoch,
                    "applied the cluster's release document"
                );
            }
            let served = Served {
                loading: before.loading.clone(),
                scans: before.scans,
                held: before.held.clone(),
            };
            return Ok(self.publish(before, release, None, served, String::new()));
        }
        if let Change::Replicas(others) = change {
            let admitted = self
                .others
                .lock()
                .map(|o| o.admitted.clone())
                .unwrap_or_default();
            let held = crate::registry::held_versions(&before.registry, &others, &admitted);
            if let Ok(mut seen) = self.others.lock() {
                seen.others = others;
            }
            if held == before.held {
                return Ok(Applied {
                    after: before.clone(),
                    before,
                    detail: String::new(),
                });
            }
            for (service, version) in newly(&before.held, &held) {
                tracing::info!(%service, %version, "every replica has loaded the version: it may take traffic");
            }
            let changed = rescan_rules(
                &before.registry.without(&before.held),
                &before.registry.without(&held),
                &mut release,
                false,
                &before.registry,
            );
            if changed {
                if let Err(error) = self.persist(&mut release, before.release.epoch).await {
                    // Another replica wrote it first: its document arrives
                    // as a notice, and the next report releases the
                    // version under it (never under no rule at all).
                    tracing::info!(%error, "the release change of a version every replica has is another replica's; holding it until the document arrives");
                    return Ok(Applied {
                        after: before.clone(),
                        before,
                        detail: String::new(),
                    });
                }
            }
            let served = Served {
                loading: before.loading.clone(),
                scans: before.scans,
                held,
            };
            return Ok(self.publish(before, release, None, served, String::new()));
        }
        let epoch = before.release.epoch;
        if let Some(based_on) = based_on.filter(|b| *b != epoch) {
            return Err(ReleaseError::Stale {
                current: epoch,
                based_on,
            });
        }
        let scans =
            before.scans + u64::from(matches!(change, Change::Rescan { done: Some(_), .. }));
        let mut held = before.held.clone();
        let (registry, loading, detail, persist) = match change {
            Change::Loading(loading) => (None, loading, String::new(), false),
            Change::Rescan {
                registry,
                loading,
                done,
            } => {
                if self.cluster.is_some() {
                    let seen = self.others.lock().map(|o| o.clone()).unwrap_or_default();
                    held = crate::registry::held_versions(&registry, &seen.others, &seen.admitted);
                    for (service, version) in newly(&held, &before.held) {
                        tracing::info!(%service, %version, "loaded, but held until every replica has it");
                    }
                }
                let changed = done.is_some_and(|done| {
                    rescan_rules(
                        &done.base.registry.without(&done.base.held),
                        &registry.without(&held),
                        &mut release,
                        done.complete,
                        &registry,
                    )
                });
                (Some(registry), loading, String::new(), changed)
            }
            Change::Canary(decisions) => {
                let mut changed = false;
                for decision in &decisions {
                    if let Some(entry) = release.services.get_mut(&decision.service) {
                        changed |= release_state::apply_canary(entry, decision);
                    }
                }
                (None, before.loading.clone(), String::new(), changed)
            }
            Change::Ejected {
                service,
                version,
                detail,
            } => {
                let changed = match release.services.get_mut(&service) {
                    Some(entry) => release_state::on_ejection(entry, &version, &detail),
                    None => {
                        let mut entry = release_state::ServiceRelease::default();
                        release_state::on_ejection(&mut entry, &version, &detail);
                        release.services.insert(service, entry);
                        true
                    }
                };
                (None, before.loading.clone(), String::new(), changed)
            }
            operator => {
                not_held(&before.held, &operator)?;
                let detail = operator_change(&before.registry, &mut release, operator)?;
                (None, before.loading.clone(), detail, true)
            }
        };
        if persist {
            if let Err(error) = self.persist(&mut release, epoch).await {
                if registry.is_none() {
                    return Err(error);
                }
                // A rescan still takes effect, without its release change
                // (on a cluster: another replica wrote it first, and its
                // document arrives as a notice).
                match &error {
                    ReleaseError::Stale { .. } => {
                        tracing::info!(%error, "serving the rescan with the cluster's release, not this replica's change")
                    }
                    _ => tracing::error!(%error, "serving the rescan without its release change"),
                }
                release = before.release.clone();
            }
        }
        let served = Served {
            loading,
            scans,
            held,
        };
        Ok(self.publish(before, release, registry, served, detail))
    }

    /// Writes `release` as the change after epoch `epoch`: to the cluster's
    /// document (compare-and-set), or to the state file.
    async fn persist(&self, release: &mut ReleaseState, epoch: u64) -> Result<(), ReleaseError> {
        match &self.shared {
            Some(shared) => match shared.save(release, epoch).await {
                Ok(crate::shared_release::Saved::Stored(next)) => {
                    release.epoch = next;
                    Ok(())
                }
                Ok(crate::shared_release::Saved::Stale(current)) => Err(ReleaseError::Stale {
                    current,
                    based_on: epoch,
                }),
                Err(e) => Err(ReleaseError::Persist(format!("{e:#}"))),
            },
            None => {
                release.epoch = epoch + 1;
                release
                    .save(&self.state_dir)
                    .map_err(|e| ReleaseError::Persist(format!("{e:#}")))
            }
        }
    }

    /// Puts `release` (with `registry`, or the one served) in effect.
    fn publish(
        &self,
        before: Arc<Snapshot>,
        release: ReleaseState,
        registry: Option<Registry>,
        served: Served,
        detail: String,
    ) -> Applied {
        let Served {
            loading,
            scans,
            held,
        } = served;
        let registry = registry
            .as_ref()
            .unwrap_or(&before.registry)
            .with_release_holding(&release, &held);
        if self.cluster.is_some() {
            if let Ok(mut seen) = self.others.lock() {
                seen.admitted
                    .extend(crate::registry::admitted(&registry, &held));
            }
        }
        let after = Arc::new(Snapshot {
            registry,
            release,
            loading,
            scans,
            held,
        });
        self.snapshot.store(after.clone());
        Applied {
            before,
            after,
            detail,
        }
    }
}

/// What a snapshot carries besides its registry and release.
struct Served {
    loading: Vec<Loading>,
    scans: u64,
    held: crate::registry::Held,
}

/// What a rule sees of `service`.
fn loaded(service: &ServiceEntry) -> Loaded<'_> {
    Loaded {
        service: &service.name,
        names: &service.names,
        live: service.live().map(|v| &*v.version),
    }
}

/// Refuses an operator's change that would give traffic to a version held
/// until every replica has it.
fn not_held(held: &crate::registry::Held, change: &Change) -> Result<(), ReleaseError> {
    let (service, wanted): (&str, Vec<&str>) = match change {
        Change::SetWeights {
            service, weights, ..
        } => (
            service,
            weights
                .iter()
                .filter(|(_, w)| **w > 0)
                .map(|(v, _)| v.as_str())
                .collect(),
        ),
        Change::Promote { service, version } => (service, vec![version.as_str()]),
        _ => return Ok(()),
    };
    match wanted
        .into_iter()
        .find(|v| held.get(service).is_some_and(|h| h.contains(*v)))
    {
        Some(version) => Err(ReleaseError::NotEverywhere {
            service: service.to_string(),
            version: version.to_string(),
        }),
        None => Ok(()),
    }
}

/// Applies an operator's change to `release`; returns the history detail.
fn operator_change(
    registry: &Registry,
    release: &mut ReleaseState,
    change: Change,
) -> Result<String, ReleaseError> {
    let name = match &change {
        Change::SetWeights { service, .. }
        | Change::Promote { service, .. }
        | Change::Rollback { service }
        | Change::Pause { service, .. } => service.clone(),
        _ => return Ok(String::new()),
    };
    let service = registry
        .service(&name)
        .ok_or_else(|| ReleaseError::UnknownService(name.clone()))?;
    let entry = release.services.entry(name).or_default();
    let loaded = loaded(service);
    match change {
        Change::SetWeights {
            weights, sticky, ..
        } => release_state::set_weights(entry, loaded, weights, sticky.as_deref()),
        Change::Promote { version, .. } => release_state::promote(entry, loaded, &version),
        Change::Rollback { .. } => release_state::rollback(entry, loaded),
        Change::Pause { paused, .. } => release_state::set_paused(entry, loaded, paused),
        _ => Ok(String::new()),
    }
}

/// The release rules a rescan triggers: a canary for a newcomer whose
/// manifest asks for one, the version it replaced recorded as stable when a
/// newcomer takes over, and (once the scan is complete) operator weights of
/// removed versions pruned. `previous` and `next` are seen without the
/// versions held for the cluster's other replicas; `loaded_all` is `next`
/// with them (what is loaded). Returns whether `release` changed.
fn rescan_rules(
    previous: &Registry,
    next: &Registry,
    release: &mut ReleaseState,
    complete: bool,
    loaded_all: &Registry,
) -> bool {
    let mut changed = on_new_versions(previous, next, release);
    let next = next.with_release(release);
    for service in next.services() {
        let entry = release.services.entry(service.name.clone()).or_default();
        if complete {
            // Held versions are loaded: their weights are not pruned.
            let all = loaded_all.service(&service.name).unwrap_or(service);
            changed |= release_state::prune_removed(entry, loaded(all));
        }
        let (Some(old), Some(now)) = (
            previous.service(&service.name).and_then(|s| s.live()),
            service.live(),
        ) else {
            continue;
        };
        let newcomer = previous
            .service(&service.name)
            .is_some_and(|s| s.version(&now.version).is_none());
        if newcomer && old.version != now.version {
            changed |= release_state::on_takeover(entry, &old.version, &now.version);
        }
    }
    // Entries created only to look are not kept.
    release.services.retain(|_, s| !s.is_empty());
    if complete {
        let owners = next.route_owners();
        if owners != release.route_owners {
            release.route_owners = owners;
            changed = true;
        }
    }
    changed
}

/// Starts a canary for every service whose manifest asks for one and that
/// gained a new version between `previous` and `next`. Returns whether the
/// release state changed.
pub fn on_new_versions(previous: &Registry, next: &Registry, state: &mut ReleaseState) -> bool {
    let mut changed = false;
    for service in next.services() {
        let manifest = next.manifest(&service.name).cloned().unwrap_or_default();
        if manifest.rollout != Rollout::Canary {
            continue;
        }
        let Some(old) = previous.service(&service.name) else {
            continue;
        };
        let Some(stable) = old.live().map(|v| v.version.to_string()) else {
            continue;
        };
        // The newest version that was not loaded before is the candidate.
        let Some(candidate) = service
            .names
            .iter()
            .rev()
            .find(|v| old.version(v).is_none())
            .map(|v| v.to_string())
        else {
            continue;
        };
        if compare_versions(&candidate, &stable).is_le() {
            continue;
        }
        let first = manifest.steps[0];
        let entry = state.services.entry(service.name.clone()).or_default();
        // On a cluster another replica may have started it already, or
        // even rolled it back, before this one had loaded the version.
        if entry
            .canary
            .as_ref()
            .is_some_and(|c| c.candidate == candidate)
            || entry.rolled_back.contains(&candidate)
        {
            continue;
        }
        release_state::start_canary(entry, &stable, &candidate, first);
        tracing::info!(service = %service.name, version = %candidate, %stable, weight = first, "canary started");
        changed = true;
    }
    changed
}
