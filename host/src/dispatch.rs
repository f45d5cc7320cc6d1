//! Dispatch: runs one request in a fresh instance of one version.
//!
//! Invariants: every request gets its own `Store` and instance, dropped when
//! the request ends, so nothing survives from one request to the next and a
//! trap cannot harm anything but its own request. The epoch deadline and the
//! wall-clock timeout are set before the guest runs. The request path takes
//! no lock: it loads the registry snapshot and clones the `Arc<Version>` it
//! runs.

use crate::bindings::{Request, Response};
use crate::capabilities::HostState;
use crate::config::Limits;
use crate::engine::TICK;
use crate::registry::{IdleInstance, Pre, Registry, Version};
use crate::rollout::ReleaseState;
use crate::store::KvStore;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use http::StatusCode;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Why a request produced no response from a service.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No service owns the path.
    #[error("no service serves `{path}`")]
    NoRoute {
        /// The request path.
        path: String,
    },
    /// No service has that name (for `services.call`).
    #[error("no service named `{0}`")]
    UnknownService(String),
    /// The service ran but failed.
    #[error("{service}@{version}: {failure}")]
    Failed {
        /// Service name.
        service: Arc<str>,
        /// Version name.
        version: Arc<str>,
        /// What went wrong.
        failure: Failure,
    },
}

/// How a service failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The guest trapped (a panic, `unreachable`, out of bounds, stack overflow…).
    #[error("the service trapped: {0}")]
    Trap(String),
    /// The guest used more CPU time than its limit.
    #[error("the service exceeded its CPU time limit of {0:?}")]
    CpuTime(Duration),
    /// The request took longer than its wall-clock limit.
    #[error("the service did not answer within {0:?}")]
    Timeout(Duration),
    /// The guest returned a response that is not valid HTTP.
    #[error("the service returned a malformed response: {0}")]
    Malformed(String),
    /// No instance slot was free in the host.
    #[error("the host is at its instance capacity")]
    Capacity,
    /// The service already runs as many requests as its limit allows.
    #[error("the service is at its concurrency limit of {0} requests")]
    Saturated(u32),
    /// The guest's memory growth was refused and it could not go on.
    #[error("the service ran out of memory (limit {})", crate::config::format_size(*.0 as u64))]
    OutOfMemory(usize),
    /// The guest recursed past its stack.
    #[error("the service exhausted its call stack")]
    StackOverflow,
    /// The response body was larger than the limit.
    #[error("the service returned a body over its {}-byte limit", .0)]
    ResponseTooLarge(usize),
    /// The guest held more resources (handles, streams…) than its limit.
    #[error("the service opened more than {0} resources at once")]
    TooManyResources(u32),
    /// A `services.call` chain went past the depth limit (a loop).
    #[error("service call loop: the chain went deeper than {0} calls")]
    CallLoop(u32),
    /// The host could not run the guest.
    #[error("the service could not be run: {0}")]
    Internal(String),
}

impl DispatchError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            DispatchError::NoRoute { .. } | DispatchError::UnknownService(_) => {
                StatusCode::NOT_FOUND
            }
            DispatchError::Failed { failure, .. } => match failure {
                Failure::CpuTime(_) | Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                Failure::Capacity | Failure::Saturated(_) => StatusCode::SERVICE_UNAVAILABLE,
                Failure::CallLoop(_) => StatusCode::LOOP_DETECTED,
                Failure::Trap(_)
                | Failure::OutOfMemory(_)
                | Failure::StackOverflow
                | Failure::ResponseTooLarge(_)
                | Failure::TooManyResources(_)
                | Failure::Malformed(_)
                | Failure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl DispatchError {
    /// `failure` of a request to `version`.
    pub fn failed(version: &Version, failure: Failure) -> Self {
        DispatchError::Failed {
            service: version.service.clone(),
            version: version.version.clone(),
            failure,
        }
    }

    /// The status and whether the guest failed while running, as a
    /// version's metrics count them.
    pub(crate) fn outcome(&self) -> (u16, bool) {
        let trapped = matches!(self, DispatchError::Failed { failure, .. } if failure.is_trap());
        (self.status().as_u16(), trapped)
    }
}

impl Failure {
    /// The limit this failure hit, named as in a manifest's `[limits]`.
    pub fn limit(&self) -> Option<&'static str> {
        Some(match self {
            Failure::CpuTime(_) => "cpu-time",
            Failure::Timeout(_) => "timeout",
            Failure::Capacity => "max-instances",
            Failure::Saturated(_) => "concurrency",
            Failure::OutOfMemory(_) => "memory",
            Failure::StackOverflow => "stack",
            Failure::ResponseTooLarge(_) => "response-body",
            Failure::CallLoop(_) => "call-depth",
            Failure::TooManyResources(_) => "resources",
            Failure::Trap(_) | Failure::Malformed(_) | Failure::Internal(_) => return None,
        })
    }

    /// Whether the guest failed while running (counted as a trap in metrics).
    fn is_trap(&self) -> bool {
        matches!(
            self,
            Failure::Trap(_)
                | Failure::CpuTime(_)
                | Failure::Timeout(_)
                | Failure::OutOfMemory(_)
                | Failure::StackOverflow
                | Failure::TooManyResources(_)
                | Failure::CallLoop(_)
        )
    }
}

/// Marker error returned by the epoch callback when the CPU budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit exceeded")]
struct CpuBudgetSpent;

/// Runs requests against the current registry snapshot.
pub struct Dispatcher {
    engine: Engine,
    registry: ArcSwap<Registry>,
    kv: KvStore,
    limits: Limits,
    /// The release state; its lock also makes every registry change a
    /// single writer (watcher rescans and admin changes take turns).
    release: tokio::sync::Mutex<ReleaseState>,
    state_dir: PathBuf,
}

impl Dispatcher {
    /// A dispatcher serving `registry`.
    pub fn new(
        engine: Engine,
        registry: Registry,
        kv: KvStore,
        limits: Limits,
        release: ReleaseState,
        state_dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            engine,
            registry: ArcSwap::from_pointee(registry),
            kv,
            limits,
            release: tokio::sync::Mutex::new(release),
            state_dir,
        })
    }

    /// Takes the writer lock: the release state, for building the next
    /// registry. Hold it until the new registry is swapped in.
    pub async fn writer(&self) -> tokio::sync::MutexGuard<'_, ReleaseState> {
        self.release.lock().await
    }

    /// The state directory (where the release state is persisted).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// Applies `change` to a copy of the release state. When it returns
    /// `Ok(true)` the copy is persisted, then a registry with the new
    /// policies is swapped in; on `Ok(false)` or an error nothing changes.
    pub async fn maybe_change_release(
        &self,
        change: impl FnOnce(&Registry, &mut ReleaseState) -> Result<bool, String>,
    ) -> Result<(), String> {
        let mut guard = self.release.lock().await;
        let registry = self.registry.load_full();
        let mut next = guard.clone();
        if !change(&registry, &mut next)? {
            return Ok(());
        }
        next.save(&self.state_dir)
            .map_err(|e| format!("could not persist the release state: {e:#}"))?;
        self.swap_registry(registry.with_release(&next));
        *guard = next;
        Ok(())
    }

    /// Applies `change` to the release state: on success persists it and
    /// swaps in a registry with the new policies; on error changes nothing.
    pub async fn change_release<R>(
        &self,
        change: impl FnOnce(&Registry, &mut ReleaseState) -> Result<R, String>,
    ) -> Result<R, String> {
        let mut out = None;
        self.maybe_change_release(|registry, state| {
            out = Some(change(registry, state)?);
            Ok(true)
        })
        .await?;
        out.ok_or_else(|| "the release change did not run".to_string())
    }

    /// The current registry snapshot.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Replaces the registry snapshot; requests in flight keep their version.
    /// Versions that left it drop their idle instances (opt-in reuse).
    pub fn swap_registry(&self, registry: Registry) {
        let kept: std::collections::HashSet<*const crate::registry::IdleInstances> = registry
            .services()
            .flat_map(|s| s.versions.iter())
            .map(|v| Arc::as_ptr(&v.idle))
            .collect();
        let old = self.registry.swap(Arc::new(registry));
        for version in old.services().flat_map(|s| s.versions.iter()) {
            if !kept.contains(&Arc::as_ptr(&version.idle)) {
                version.idle.retire();
            }
        }
    }

    /// The key-value store.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The host's default limits (each service's own are in its sandbox).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh store for one request to `version`: its sandbox, its memory
    /// limiter, and an epoch callback that counts the CPU time the guest
    /// actually runs (not time spent waiting on the host, such as nested
    /// service calls) against its budget, yielding every tick.
    pub(crate) fn new_store(
        self: &Arc<Self>,
        version: &Arc<Version>,
        depth: u32,
    ) -> Result<Store<HostState>, Failure> {
        let state = HostState::new(version.clone(), self.clone(), depth)
            .map_err(|e| Failure::Internal(format!("{e:#}")))?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let budget = ticks(version.sandbox.limits.cpu_time);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            state.cpu_ticks += 1;
            if state.cpu_ticks >= budget {
                Err(CpuBudgetSpent.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    /// Chooses the version that serves an outside request for `path` with
    /// `headers`. It takes no concurrency slot yet: the caller claims one once
    /// the request body has arrived, so slow clients cannot fill a service.
    pub fn pick(&self, path: &str, headers: &[(String, String)]) -> Result<Picked, DispatchError> {
        let registry = self.registry.load();
        let service = registry.route(path).ok_or_else(|| DispatchError::NoRoute {
            path: path.to_string(),
        })?;
        Picked::from(service, headers)
    }

    /// Runs `req` on the live version of the service `name`, `depth` calls
    /// deep (for `services.call`). Boxed, since a call may nest.
    pub fn call_service(
        self: Arc<Self>,
        name: String,
        req: Request,
        depth: u32,
    ) -> BoxFuture<'static, Result<Response, DispatchError>> {
        Box::pin(async move {
            let (version, _permit) = {
                let registry = self.registry.load();
                let service = registry
                    .service(&name)
                    .ok_or_else(|| DispatchError::UnknownService(name.clone()))?;
                Picked::from(service, &req.headers)?.claim()?
            };
            self.run(version, req, depth).await
        })
    }

    /// Runs one request in a fresh instance of `version`.
    pub async fn run(
        self: &Arc<Self>,
        version: Arc<Version>,
        req: Request,
        depth: u32,
    ) -> Result<Response, DispatchError> {
        let fail = |failure| DispatchError::failed(&version, failure);
        let limits = &version.sandbox.limits;
        let started = std::time::Instant::now();
        let in_flight = version.metrics.start();
        let pre = match &version.pre {
            Pre::Service(pre) => pre.clone(),
            Pre::Proxy(_) => {
                drop(in_flight);
                return crate::proxy::call_buffered(self, version.clone(), req, depth).await;
            }
        };
        // A fresh instance, unless the service opted into reuse and an
        // instance that served it without fault is waiting (outside
        // requests only: a nested call always gets a fresh one).
        let reuse = limits.requests_per_instance > 1 && depth == 0;
        let (mut store, warm, served) = match reuse.then(|| version.idle.take()).flatten() {
            Some(idle) => {
                let mut store = idle.store;
                store.data_mut().next_request();
                store.set_epoch_deadline(1);
                (store, Some(idle.service), idle.served)
            }
            None => match self.new_store(&version, depth) {
                Ok(store) => (store, None, 0),
                Err(failure) => {
                    in_flight.finish(500, false, started.elapsed());
                    return Err(fail(failure));
                }
            },
        };

        let call = async {
            let service = match warm {
                Some(service) => service,
                None => pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| classify(e, limits))?,
            };
            let resp = service
                .wasmhost_plugin_handler()
                .call_handle(&mut store, &req)
                .await
                .map_err(|e| classify(e, limits))?;
            Ok::<_, Failure>((service, resp))
        };
        let outcome = tokio::time::timeout(limits.timeout, call).await;
        let memory_exhausted = store.data().limiter.memory_exhausted;
        let mut keep = None;
        let result = match outcome {
            Ok(Ok((_, resp))) if resp.body.len() > limits.max_response_body => {
                Err(fail(Failure::ResponseTooLarge(limits.max_response_body)))
            }
            Ok(Ok((service, resp))) => match validate(&resp) {
                Ok(()) => {
                    keep = Some(service);
                    Ok(resp)
                }
                Err(m) => Err(fail(Failure::Malformed(m))),
            },
            Ok(Err(failure)) => Err(fail(failure.explained(memory_exhausted, limits))),
            Err(_) => Err(fail(Failure::Timeout(limits.timeout))),
        };
        let (status, trapped) = match &result {
            Ok(resp) => (resp.status, false),
            Err(e) => e.outcome(),
        };
        in_flight.finish(status, trapped, started.elapsed());
        // Only an instance that answered well goes back, and only until it
        // has served its quota; any fault drops it with its store.
        if let Some(service) = keep.filter(|_| reuse && served + 1 < limits.requests_per_instance) {
            version.idle.put(IdleInstance {
                store,
                service,
                served: served + 1,
            });
        }
        result
    }
}

/// The version chosen for a request, before it takes a concurrency slot of
/// its service (see [`Picked::claim`]).
pub struct Picked {
    /// The version that will run the request.
    pub version: Arc<Version>,
    slots: Arc<tokio::sync::Semaphore>,
    concurrency: u32,
}

impl Picked {
    /// Picks the version of `service` for a request with `headers`.
    fn from(
        service: &crate::registry::ServiceEntry,
        headers: &[(String, String)],
    ) -> Result<Self, DispatchError> {
        let version = service
            .pick(headers, fastrand::u64(..))
            .cloned()
            .ok_or_else(|| DispatchError::UnknownService(service.name.clone()))?;
        Ok(Self {
            version,
            slots: service.slots.clone(),
            concurrency: service.concurrency,
        })
    }

    /// Takes one of the service's concurrency slots, held until the permit
    /// is dropped; a full service is refused at once (and counted).
    pub fn claim(self) -> Result<(Arc<Version>, OwnedSemaphorePermit), DispatchError> {
        match self.slots.try_acquire_owned() {
            Ok(permit) => Ok((self.version, permit)),
            Err(_) => {
                self.version
                    .metrics
                    .start()
                    .finish(503, false, Duration::ZERO);
                Err(DispatchError::failed(
                    &self.version,
                    Failure::Saturated(self.concurrency),
                ))
            }
        }
    }
}

impl Failure {
    /// This failure with its real cause when the guest's memory growth was
    /// refused: a guest whose allocation fails aborts, which looks like a trap.
    pub(crate) fn explained(self, memory_exhausted: bool, limits: &Limits) -> Failure {
        match self {
            Failure::Trap(_) if memory_exhausted => Failure::OutOfMemory(limits.max_memory),
            failure => failure,
        }
    }
}

/// Sorts a wasmtime error (from instantiating or calling) into a [`Failure`].
pub(crate) fn classify(e: wasmtime::Error, limits: &Limits) -> Failure {
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Failure::Capacity;
    }
    if e.downcast_ref::<CpuBudgetSpent>().is_some() {
        return Failure::CpuTime(limits.cpu_time);
    }
    if let Some(looped) = e.downcast_ref::<crate::capabilities::services::CallLoop>() {
        return Failure::CallLoop(looped.max);
    }
    if let Some(wasmtime::component::ResourceTableError::Full) = e.downcast_ref() {
        return Failure::TooManyResources(limits.resources);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::CpuTime(limits.cpu_time),
        Some(Trap::StackOverflow) => Failure::StackOverflow,
        Some(trap) => Failure::Trap(trap.to_string()),
        None => Failure::Internal(
            format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
    }
}

/// Epoch ticks in `d` (at least one).
fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64
}

/// Checks that a guest response can be sent as HTTP.
pub fn validate(resp: &Response) -> Result<(), String> {
    if !(100..=599).contains(&resp.status) {
        return Err(format!("status {} is not between 100 and 599", resp.status));
    }
    for (name, value) in &resp.headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{}`", name.escape_debug()))?;
        http::HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for header `{name}`"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn validate_rejects_bad_status_and_headers() {
        assert!(validate(&resp(200, &[("content-type", "application/json")])).is_ok());
        assert!(validate(&resp(99, &[])).unwrap_err().contains("99"));
        assert!(validate(&resp(1000, &[])).is_err());
        assert!(validate(&resp(200, &[("bad header", "x")]))
            .unwrap_err()
            .contains("bad header"));
        assert!(validate(&resp(200, &[("x", "a\nb")])).is_err());
    }

    #[test]
    fn ticks_round_down_but_never_to_zero() {
        assert_eq!(ticks(Duration::from_secs(1)), 100);
        assert_eq!(ticks(Duration::from_millis(1)), 1);
    }
}
