//! Dispatch: the request path. It picks the version of a service that
//! serves a request (pin ▸ sticky ▸ weights), claims one of the service's
//! concurrency slots, and runs the request in an instance of that version.
//!
//! Invariants: by default every request gets its own `Store` and instance,
//! dropped when it ends (with opt-in reuse an instance that answered well
//! serves the next outside request of its version, see
//! [`crate::instance::IdleInstances`]). The epoch deadline and the wall-clock
//! timeout are set before the guest runs. The request path takes no lock on
//! what is served: it loads the snapshot and clones the `Arc<Version>` it
//! runs, so a swap never cuts a request off. The dispatcher never writes
//! the snapshot; the control plane does.

pub use crate::error::{DispatchError, Failure};

use crate::bindings::{Request, Response};
use crate::capabilities::{CallError, Calls, HostState, ServiceId};
use crate::contract::validate;
use crate::instance::{classify, new_store, IdleInstance};
use crate::kv::KvStore;
use crate::registry::{Pre, ServiceEntry, Snapshot, Version};
use crate::release::Pins;
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Engine, Store};

/// Runs requests against the current snapshot.
pub struct Dispatcher {
    engine: Engine,
    snapshot: Arc<ArcSwap<Snapshot>>,
    kv: KvStore,
    /// How the services this dispatcher runs reach each other.
    calls: Arc<dyn Calls>,
}

impl Dispatcher {
    /// A dispatcher serving whatever `snapshot` holds (written by the
    /// control plane).
    pub fn new(engine: Engine, snapshot: Arc<ArcSwap<Snapshot>>, kv: KvStore) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Dispatcher>| Self {
            engine,
            snapshot,
            kv,
            calls: Arc::new(DispatchCalls(me.clone())),
        })
    }

    /// What is served now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The key-value store.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// A fresh store for one request to `version`, `depth` calls deep,
    /// serving the outside request `request_id`.
    pub(crate) fn new_store(
        &self,
        version: &Version,
        depth: u32,
        request_id: Arc<str>,
    ) -> Result<Store<HostState>, Failure> {
        let id = ServiceId {
            service: version.service.clone(),
            version: version.version.clone(),
        };
        let state = HostState::new(
            id,
            version.sandbox.clone(),
            self.kv.clone(),
            self.calls.clone(),
            request_id,
            depth,
        )
        .map_err(|e| Failure::Internal(format!("{e:#}")))?;
        Ok(new_store(
            &self.engine,
            state,
            version.sandbox.limits.cpu_time,
            // Lanes for outside requests only: a nested call waiting for a
            // lane its caller holds would wait for ever.
            version.lanes.as_ref().filter(|_| depth == 0),
        ))
    }

    /// Whether the key-value store is failing writes now.
    pub fn store_failing(&self) -> bool {
        self.kv.is_failing()
    }

    /// Chooses the version that serves an outside request for `path` with
    /// `headers`. It takes no concurrency slot yet: the caller claims one once
    /// the request body has arrived, so slow clients cannot fill a service.
    pub fn pick(
        &self,
        path: &str,
        headers: &[(String, String)],
        pins: Pins,
    ) -> Result<Picked, DispatchError> {
        let snapshot = self.snapshot.load();
        // A private service (or route) is answered like a path no one owns.
        let public = snapshot.registry.route(path).filter(|s| s.is_public(path));
        let Some(service) = public else {
            if let Some(loading) = snapshot.loading_route(path) {
                return Err(DispatchError::Loading {
                    service: loading.service.clone(),
                });
            }
            return Err(DispatchError::NoRoute {
                path: path.to_string(),
            });
        };
        Picked::of(service, headers, pins)
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
                let snapshot = self.snapshot.load();
                let service = snapshot
                    .registry
                    .service(&name)
                    .ok_or_else(|| DispatchError::UnknownService(name.clone()))?;
                Picked::of(service, &req.headers, Pins::Trusted)?.claim()?
            };
            let span = tracing::Span::current();
            span.record("version", &*version.version);
            self.run(version, req, depth, false).await
        })
    }

    /// Runs one request in a fresh instance of `version`; `pinned` says it
    /// is an outside request that pinned the version (counted apart).
    pub async fn run(
        self: &Arc<Self>,
        version: Arc<Version>,
        req: Request,
        depth: u32,
        pinned: bool,
    ) -> Result<Response, DispatchError> {
        let fail = |failure| DispatchError::failed(&version, failure);
        let limits = &version.sandbox.limits;
        let started = std::time::Instant::now();
        let in_flight = version.tally(pinned).start();
        let pre = match &version.pre {
            Pre::Service(pre) => pre.clone(),
            Pre::Proxy(_) => {
                drop(in_flight);
                let store = self.new_store(&version, depth, request_id(&req.headers));
                return crate::proxy::call_buffered(store, version.clone(), req, pinned).await;
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
            None => match self.new_store(&version, depth, request_id(&req.headers)) {
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
            store.data().lane.release();
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
    /// Whether an outside pin chose it.
    pub pinned: bool,
    slots: Arc<tokio::sync::Semaphore>,
    concurrency: u32,
}

impl Picked {
    /// Picks the version of `service` for a request with `headers`.
    fn of(
        service: &ServiceEntry,
        headers: &[(String, String)],
        pins: Pins,
    ) -> Result<Self, DispatchError> {
        let (version, pinned) = service
            .pick(headers, fastrand::u64(..), pins)
            .map(|(v, pinned)| (v.clone(), pinned && pins == Pins::Outside))
            .ok_or_else(|| DispatchError::UnknownService(service.name.clone()))?;
        Ok(Self {
            version,
            pinned,
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
                    .tally(self.pinned)
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

/// The id of the outside request, from the `x-request-id` header the front
/// sets (or the caller passed on).
pub(crate) fn request_id(headers: &[(String, String)]) -> Arc<str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(crate::capabilities::services::REQUEST_ID_HEADER))
        .map_or_else(|| Arc::from("-"), |(_, v)| Arc::from(v.as_str()))
}

/// [`Calls`] for the services of one dispatcher. It holds the dispatcher
/// weakly: the dispatcher's snapshot holds versions, whose idle stores hold
/// this.
struct DispatchCalls(Weak<Dispatcher>);

impl Calls for DispatchCalls {
    fn call(
        &self,
        callee: String,
        req: Request,
        depth: u32,
    ) -> BoxFuture<'static, Result<Response, CallError>> {
        let Some(dispatcher) = self.0.upgrade() else {
            return Box::pin(async { Err(CallError::Failed("the host is stopping".into())) });
        };
        Box::pin(async move {
            dispatcher
                .call_service(callee.clone(), req, depth)
                .await
                .map_err(|e| {
                    tracing::debug!(%callee, error = %e, "service call failed");
                    match e {
                        DispatchError::Failed {
                            failure: Failure::CallLoop(max),
                            ..
                        } => CallError::Loop(max),
                        DispatchError::UnknownService(_)
                        | DispatchError::NoRoute { .. }
                        | DispatchError::Loading { .. } => CallError::NotFound(callee),
                        other => CallError::Failed(other.to_string()),
                    }
                })
        })
    }
}
