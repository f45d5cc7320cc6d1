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
use crate::resilience::{
    is_safe, Admission, Attempted, Ejection, ProbeGuard, RetryBudget, IDEMPOTENCY_KEY_HEADER,
    MAX_REPLAY_BODY,
};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Runs requests against the current snapshot.
pub struct Dispatcher {
    engine: Engine,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// The host's own database: the message log (and, embedded, the
    /// services' key-value data).
    kv: KvStore,
    /// Where the services' key-value data lives.
    store: crate::store::Store,
    /// Where published messages wait for their groups.
    bus: crate::bus::Bus,
    /// How the services this dispatcher runs reach each other.
    calls: Arc<dyn Calls>,
    /// Where the request path reports the versions it ejects.
    ejections: tokio::sync::mpsc::UnboundedSender<EjectionNotice>,
    /// Notified when a request stored messages.
    published: tokio::sync::Notify,
    /// Messages stored, by topic.
    published_by_topic: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// The other end, until the control plane takes it.
    ejected: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<EjectionNotice>>>,
}

impl Dispatcher {
    /// A dispatcher serving whatever `snapshot` holds (written by the
    /// control plane).
    pub fn new(
        engine: Engine,
        snapshot: Arc<ArcSwap<Snapshot>>,
        kv: KvStore,
        store: crate::store::Store,
        bus: crate::bus::Bus,
    ) -> Arc<Self> {
        let (ejections, ejected) = tokio::sync::mpsc::unbounded_channel();
        Arc::new_cyclic(|me: &Weak<Dispatcher>| Self {
            engine,
            snapshot,
            kv,
            store,
            bus,
            calls: Arc::new(DispatchCalls(me.clone())),
            ejections,
            published: tokio::sync::Notify::new(),
            published_by_topic: Default::default(),
            ejected: std::sync::Mutex::new(Some(ejected)),
        })
    }

    /// The versions the request path ejects, as they are ejected (once:
    /// the control plane records them).
    pub fn take_ejections(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<EjectionNotice>> {
        self.ejected.lock().ok()?.take()
    }

    /// What is served now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The host's own database (the message log).
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Where the services' key-value data lives.
    pub fn store(&self) -> &crate::store::Store {
        &self.store
    }

    /// Where published messages wait for their groups.
    pub fn bus(&self) -> &crate::bus::Bus {
        &self.bus
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
            self.store.clone(),
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

    /// Whether the host's own database is failing writes now. (A shared
    /// Redis that fails does not count: every replica shares it, and
    /// taking them all out of the load balancer would stop the requests
    /// that need no key-value data too.)
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

    /// Runs `req` on the service `name`, `depth` calls deep (for
    /// `services.call`), with the callee's retries and fallback. Boxed,
    /// since a call may nest.
    pub fn call_service(
        self: Arc<Self>,
        name: String,
        req: Request,
        depth: u32,
    ) -> BoxFuture<'static, Result<Response, DispatchError>> {
        Box::pin(async move {
            let picked = {
                let snapshot = self.snapshot.load();
                let service = snapshot
                    .registry
                    .service(&name)
                    .ok_or_else(|| DispatchError::UnknownService(name.clone()))?;
                Picked::of(service, &req.headers, Pins::Trusted)?
            };
            let span = tracing::Span::current();
            span.record("version", &*picked.version.version);
            self.serve(picked, &req, depth).await.result
        })
    }

    /// Serves `req` on the version `picked` chose, trying again where the
    /// service's `[resilience]` allows it: a failure before guest code ran
    /// once, a failure with no response when the request is safe to repeat
    /// (an idempotent method, an honoured idempotency key, or an attempt
    /// that touched nothing), a listed error status likewise. A version
    /// that is not the stable one and was not pinned falls back to the
    /// stable version; otherwise the retry waits its back-off and goes to
    /// the same version. Every retry draws on the service's budget, and
    /// every attempt together stays within the first version's `timeout`.
    ///
    /// The request takes one of the service's concurrency slots here and
    /// holds it across its attempts.
    pub async fn serve(self: &Arc<Self>, picked: Picked, req: &Request, depth: u32) -> Served {
        let pinned = picked.pinned;
        // A contract request is always whole; one for a wasi:http component
        // is replayed only up to the size a proxy would buffer.
        let replayable = !matches!(picked.version.pre, Pre::Proxy(_))
            || req.body.len() as u64 <= MAX_REPLAY_BODY;
        self.retrying(
            picked,
            &req.method,
            &req.headers,
            replayable,
            |version, limit| async move { self.run(&version, req, depth, pinned, limit).await },
        )
        .await
    }

    /// The streaming path of a wasi:http component from outside, when its
    /// body is small enough to have been read whole (at most
    /// [`MAX_REPLAY_BODY`]): each attempt gets the same head and body, and
    /// an attempt that failed before the component set its response is
    /// tried again like any other.
    pub async fn serve_proxy(
        self: &Arc<Self>,
        picked: Picked,
        head: &http::request::Parts,
        headers: &[(String, String)],
        body: bytes::Bytes,
    ) -> Served<http::Response<HyperOutgoingBody>> {
        let pinned = picked.pinned;
        let request_id = request_id(headers);
        let (request_id, body) = (&request_id, &body);
        self.retrying(
            picked,
            head.method.as_str(),
            headers,
            true,
            |version, limit| async move {
                let version = &version;
                let mut req = http::Request::new(http_body_util::Full::new(body.clone()));
                *req.method_mut() = head.method.clone();
                *req.uri_mut() = head.uri.clone();
                *req.version_mut() = head.version;
                *req.headers_mut() = head.headers.clone();
                let store = self.new_store(version, 0, request_id.clone());
                let handled = crate::proxy::handle(store, version.clone(), req, pinned);
                let result = match tokio::time::timeout(limit, handled).await {
                    Ok(result) => result,
                    Err(_) => Err(DispatchError::failed(version, Failure::Timeout(limit))),
                };
                let failed = attempted(&result, true, &version.sandbox.resilience);
                // A wasi:http component's effects are not tracked: never untouched.
                Attempt {
                    result,
                    failed,
                    touched: true,
                }
            },
        )
        .await
    }

    /// The retry loop behind [`Self::serve`] and [`Self::serve_proxy`]:
    /// `attempt` runs the request once on a version within a time limit.
    async fn retrying<T: Answer, F>(
        self: &Arc<Self>,
        picked: Picked,
        method: &str,
        headers: &[(String, String)],
        replayable: bool,
        mut attempt: impl FnMut(Arc<Version>, Duration) -> F,
    ) -> Served<T>
    where
        F: std::future::Future<Output = Attempt<T>>,
    {
        let Picked {
            version: first,
            pinned,
            by_pin,
            stable,
            mut probe,
            slots,
            concurrency,
            budget,
        } = picked;
        let policy = &first.sandbox.resilience;
        budget.deposit();
        let started = tokio::time::Instant::now();
        // (A timeout too long to add to a clock reading has no deadline.)
        let deadline = started.checked_add(first.sandbox.limits.timeout);
        let left = || {
            deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(tokio::time::Instant::now())
            })
        };
        let idempotency_key = policy.idempotency_key
            && headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(IDEMPOTENCY_KEY_HEADER));
        let mut version = first.clone();
        let mut fallback_from: Option<Arc<str>> = None;
        let mut permit = None;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            // One span per try, so a trace shows retries and fallbacks.
            let span = tracing::debug_span!(
                "attempt",
                service = &*version.service,
                version = &*version.version,
                attempt = attempts,
                fallback = fallback_from.is_some(),
                otel.name = %format_args!("{} {}", version.service, version.version),
            );
            let tried = match &permit {
                Some(_) => {
                    let left = left();
                    let limit = policy.per_try_timeout.map_or(left, |t| t.min(left));
                    attempt(version.clone(), limit).instrument(span).await
                }
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => {
                        permit = Some(p);
                        let limit = policy
                            .per_try_timeout
                            .map_or(version.sandbox.limits.timeout, |t| {
                                t.min(version.sandbox.limits.timeout)
                            });
                        attempt(version.clone(), limit).instrument(span).await
                    }
                    Err(_) => {
                        version
                            .tally(pinned)
                            .start()
                            .finish(503, false, Duration::ZERO);
                        Attempt {
                            result: Err(DispatchError::failed(
                                &version,
                                Failure::Saturated(concurrency),
                            )),
                            failed: Some(Attempted::NotStarted),
                            touched: false,
                        }
                    }
                },
            };
            // The version's standing: only routed traffic counts (a pin is
            // a caller's own choice), and only a failure with no response.
            if !by_pin {
                self.judge(&version, &stable, &mut probe, tried.failed, &tried.result);
            }
            let Some(failed) = tried.failed else {
                return Served {
                    result: tried.result,
                    version,
                    fallback_from,
                    attempts,
                };
            };
            // A body that cannot be replayed makes only a failure before
            // guest code ran worth another attempt.
            let safe = replayable && is_safe(method, idempotency_key, !tried.touched);
            let left = left();
            let retry = policy.may_retry(failed, safe, attempts - 1)
                && !left.is_zero()
                && budget.withdraw();
            if !retry {
                return Served {
                    result: tried.result,
                    version,
                    fallback_from,
                    attempts,
                };
            }
            let reason = match &tried.result {
                Err(DispatchError::Failed { failure, .. }) => failure.kind(),
                _ => "status",
            };
            version.counters.retried(reason);
            let to_stable = stable
                .as_ref()
                .filter(|s| policy.fallback && !by_pin && s.version != version.version)
                .cloned();
            match to_stable {
                Some(stable) => {
                    tracing::debug!(service = %version.service, from = %version.version, to = %stable.version, reason, "falling back to the stable version");
                    version.counters.fell_back(&stable.version);
                    fallback_from.get_or_insert_with(|| version.version.clone());
                    version = stable;
                }
                None => {
                    let wait = policy.backoff.delay(attempts, fastrand::f64()).min(left);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Records an attempt's outcome in `version`'s standing: a probe is
    /// settled, a failure with no response counts towards an ejection
    /// (never of the stable version), an answer resets the count.
    fn judge(
        &self,
        version: &Arc<Version>,
        stable: &Option<Arc<Version>>,
        probe: &mut Option<(Arc<str>, ProbeGuard)>,
        failed: Option<Attempted>,
        result: &Result<impl Answer, DispatchError>,
    ) {
        let no_response = failed == Some(Attempted::NoResponse);
        if !no_response && probe.is_none() {
            version.outlier.succeeded();
            return;
        }
        let policy = &version.sandbox.resilience.eject;
        let now = tokio::time::Instant::now();
        let probed = probe
            .take_if(|(v, _)| *v == version.version)
            .map(|(_, guard)| guard);
        let ejection = match probed {
            Some(guard) => guard.settle(policy, !no_response, now),
            None if no_response => {
                let ejectable = stable
                    .as_ref()
                    .is_some_and(|s| s.version != version.version);
                let why = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => String::new(),
                };
                version.outlier.failed(policy, ejectable, now, &why)
            }
            None => {
                version.outlier.succeeded();
                None
            }
        };
        if let Some(ejection) = ejection {
            tracing::warn!(
                service = %version.service,
                version = %version.version,
                reason = %ejection.reason,
                seconds = ejection.penalty.as_secs(),
                "version ejected: its traffic goes to the stable version"
            );
            let _ = self.ejections.send(EjectionNotice {
                service: version.service.clone(),
                version: version.version.clone(),
                ejection,
            });
        }
    }

    /// Runs one attempt of `req` on `version` within `timeout`: a fresh
    /// instance (or, with opt-in reuse, an idle one); `pinned` says it is
    /// an outside request that pinned the version (counted apart).
    pub async fn run(
        self: &Arc<Self>,
        version: &Arc<Version>,
        req: &Request,
        depth: u32,
        pinned: bool,
        timeout: Duration,
    ) -> Attempt {
        let fail = |failure| DispatchError::failed(version, failure);
        let limits = &version.sandbox.limits;
        let started = std::time::Instant::now();
        let in_flight = version.tally(pinned).start();
        let pre = match &version.pre {
            Pre::Proxy(_) => {
                drop(in_flight);
                let store = self.new_store(version, depth, request_id(&req.headers));
                let result =
                    crate::proxy::call_buffered(store, version.clone(), req.clone(), pinned).await;
                let failed = attempted(&result, false, &version.sandbox.resilience);
                // A wasi:http component's effects are not tracked: never untouched.
                return Attempt {
                    result,
                    failed,
                    touched: true,
                };
            }
            Pre::Messaging(_) => {
                drop(in_flight);
                let body = serde_json::json!({
                    "error": format!("`{}` handles messages only: it has no HTTP handler", version.service),
                });
                return Attempt {
                    result: Ok(Response {
                        status: 404,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: body.to_string().into_bytes(),
                    }),
                    failed: None,
                    touched: false,
                };
            }
            service => service,
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
            None => match self.new_store(version, depth, request_id(&req.headers)) {
                Ok(store) => (store, None, 0),
                Err(failure) => {
                    in_flight.finish(500, false, started.elapsed());
                    return Attempt {
                        result: Err(fail(failure)),
                        failed: Some(Attempted::NotStarted),
                        touched: false,
                    };
                }
            },
        };

        // Whether the guest's handler was reached (an instantiation that
        // failed ran no request code).
        let mut reached = warm.is_some();
        let call = async {
            let service = match warm {
                Some(service) => service,
                None => pre
                    .instantiate_handler(&mut store)
                    .await
                    .unwrap_or_else(|| Err(wasmtime::format_err!("not a wasmhost:plugin service")))
                    .map_err(|e| classify(e, limits))?,
            };
            reached = true;
            let resp = service
                .handle(&mut store, req)
                .await
                .map_err(|e| classify(e, limits))?;
            Ok::<_, Failure>((service, resp))
        };
        let outcome = tokio::time::timeout(timeout, call).await;
        let memory_exhausted = store.data().limiter.memory_exhausted;
        let mut keep = None;
        let mut result = match outcome {
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
            Err(_) => Err(fail(Failure::Timeout(timeout))),
        };
        // Writes held back by `transactional-kv` and published messages
        // commit with the answer, together, and are dropped with a failure.
        if result.is_ok() {
            if let Err(error) = self.commit_outcome(store.data_mut()).await {
                keep = None;
                result = Err(fail(Failure::Uncommitted(error)));
            }
        }
        let touched = store.data().touched();
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
        let failed = match attempted(&result, touched, &version.sandbox.resilience) {
            // Instantiation failed: no request code ran, unless a start
            // function touched something.
            Some(Attempted::NoResponse) if !reached && !touched => Some(Attempted::NotStarted),
            other => other,
        };
        Attempt {
            result,
            failed,
            touched,
        }
    }
}

impl Dispatcher {
    /// The version of `service` a message goes to (release policy: by the
    /// subscription's `sticky` value when the message has one, else as a
    /// request with its headers; an ejected version's share to the stable
    /// one), and the stable version.
    pub fn pick_for_message(
        &self,
        service: &str,
        headers: &[(String, String)],
        sticky: Option<&str>,
    ) -> Option<(Arc<Version>, Option<Arc<Version>>)> {
        let snapshot = self.snapshot();
        let entry = snapshot.registry.service(service)?;
        let version = match sticky {
            Some(value) => entry
                .policy
                .pick_by_value(value)
                .and_then(|v| entry.version(v)),
            None => entry
                .pick(headers, fastrand::u64(..), Pins::Ignored)
                .map(|(v, _)| v),
        }?;
        let stable = entry.stable().cloned();
        let version = match (&stable, version.outlier.is_serving()) {
            (Some(stable), false) => stable.clone(),
            _ => version.clone(),
        };
        Some((version, stable))
    }
}

/// A version's subscriber export: the wasmhost contract's, or the standard
/// `wasi:messaging/incoming-handler`.
enum Subscriber<'a> {
    Plugin(&'a crate::bindings::v2::exports::wasmhost::plugin::subscriber::GuestIndices),
    Wasi(&'a crate::bindings::wasi_messaging::exports::wasi::messaging::incoming_handler::GuestIndices),
}

/// How a subscriber's handler took one delivery.
#[derive(Debug)]
pub enum Delivered {
    /// Handled: acknowledged (its own writes and messages are stored).
    Ack,
    /// It asked for another attempt, after this many ms if given.
    Retry(Option<u32>),
    /// It refused the message for good.
    Reject(String),
    /// It trapped, hit a limit or timed out (counts as a retry).
    Failed(DispatchError),
}

impl Dispatcher {
    /// Hands `msg` to the subscriber of `version` in a fresh instance,
    /// within the service's limits; counted in the version's metrics like
    /// a request (ack 200, reject 400, retry 503, failure 5xx), so canary
    /// analysis sees deliveries too.
    pub async fn deliver(
        self: &Arc<Self>,
        version: &Arc<Version>,
        msg: &crate::bindings::v2::wasmhost::plugin::messaging::Message,
    ) -> Delivered {
        use crate::bindings::v2::exports::wasmhost::plugin::subscriber::Failure as Refusal;
        let fail = |failure| Delivered::Failed(DispatchError::failed(version, failure));
        let subscriber = match &version.pre {
            Pre::Plugin(p) => p
                .subscriber
                .as_ref()
                .map(|i| (&p.pre, Subscriber::Plugin(i))),
            Pre::Messaging(m) => Some((&m.pre, Subscriber::Wasi(&m.handler))),
            _ => None,
        };
        let Some((pre, handler)) = subscriber else {
            return fail(Failure::Internal(
                "the version exports no subscriber".into(),
            ));
        };
        let limits = &version.sandbox.limits;
        let started = std::time::Instant::now();
        let in_flight = version.metrics.start();
        let mut store = match self.new_store(version, 0, Arc::from(msg.id.as_str())) {
            Ok(store) => store,
            Err(failure) => {
                in_flight.finish(500, false, started.elapsed());
                return fail(failure);
            }
        };
        let call = async {
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify(e, limits))?;
            match handler {
                Subscriber::Plugin(indices) => {
                    let guest = indices
                        .load(&mut store, &instance)
                        .map_err(|e| classify(e, limits))?;
                    guest
                        .call_handle(&mut store, msg)
                        .await
                        .map_err(|e| classify(e, limits))
                }
                Subscriber::Wasi(indices) => {
                    let guest = indices
                        .load(&mut store, &instance)
                        .map_err(|e| classify(e, limits))?;
                    let incoming = crate::capabilities::wasi_messaging::incoming(msg);
                    let resource = store
                        .data_mut()
                        .push_message(incoming)
                        .map_err(|e| classify(e, limits))?;
                    let handled = guest
                        .call_handle(&mut store, resource)
                        .await
                        .map_err(|e| classify(e, limits))?;
                    // The draft has no dispositions: any error is a retry.
                    Ok(handled.map_err(|error| {
                        tracing::info!(service = %version.service, version = %version.version, id = %msg.id, ?error, "the wasi:messaging handler failed the message");
                        Refusal::Retry(None)
                    }))
                }
            }
        };
        let outcome = tokio::time::timeout(limits.timeout, call).await;
        let memory_exhausted = store.data().limiter.memory_exhausted;
        let delivered = match outcome {
            Ok(Ok(Ok(()))) => match self.commit_outcome(store.data_mut()).await {
                Ok(()) => Delivered::Ack,
                Err(error) => fail(Failure::Uncommitted(error)),
            },
            Ok(Ok(Err(Refusal::Retry(delay)))) => Delivered::Retry(delay),
            Ok(Ok(Err(Refusal::Reject(reason)))) => Delivered::Reject(reason),
            Ok(Err(failure)) => fail(failure.explained(memory_exhausted, limits)),
            Err(_) => fail(Failure::Timeout(limits.timeout)),
        };
        let counts = &version.deliveries;
        let counter = match &delivered {
            Delivered::Ack => &counts.ack,
            Delivered::Retry(_) => &counts.retry,
            Delivered::Reject(_) => &counts.reject,
            Delivered::Failed(_) => &counts.trap,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if msg.attempt > 1 {
            counts
                .redeliveries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (status, trapped) = match &delivered {
            Delivered::Ack => (200, false),
            Delivered::Reject(_) => (400, false),
            Delivered::Retry(_) => (503, false),
            Delivered::Failed(e) => e.outcome(),
        };
        in_flight.finish(status, trapped, started.elapsed());
        delivered
    }

    /// Stores what a request that answered left in `state`: its held
    /// key-value writes and its messages (each to the groups subscribed to
    /// its topic now), in one transaction; then wakes the delivery loop.
    pub(crate) async fn commit_outcome(&self, state: &mut HostState) -> Result<(), String> {
        let pending = state.pending.take().filter(|p| !p.is_empty());
        let mut outbox = std::mem::take(&mut state.outbox);
        if pending.is_none() && outbox.is_empty() {
            return Ok(());
        }
        if !outbox.is_empty() {
            let snapshot = self.snapshot.load();
            for message in &mut outbox {
                message.groups = snapshot.registry.groups_for(message);
            }
        }
        let published = !outbox.is_empty();
        let topics: Vec<String> = outbox.iter().map(|m| m.topic.clone()).collect();
        // Embedded, the writes and the messages are one transaction. On the
        // cluster's Redis the writes go first (one MULTI/EXEC), then the
        // messages into the log (the local one, or NATS): a message never
        // tells of a write that did not happen.
        let local_writes = match (&self.store, pending) {
            (crate::store::Store::Redis(_), Some(pending)) => {
                self.store
                    .commit(pending)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                None
            }
            (_, pending) => pending,
        };
        if local_writes.is_none() && outbox.is_empty() {
            return Ok(());
        }
        let committed = self.bus.commit(&self.kv, local_writes, outbox).await;
        match committed {
            Ok(()) => {
                if published {
                    if let Ok(mut counts) = self.published_by_topic.lock() {
                        for topic in topics {
                            *counts.entry(topic).or_default() += 1;
                        }
                    }
                    self.published.notify_waiters();
                }
                Ok(())
            }
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Messages stored so far, by topic.
    pub fn published_by_topic(&self) -> std::collections::BTreeMap<String, u64> {
        self.published_by_topic
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Woken whenever messages were stored (the delivery loop waits on it).
    pub fn published(&self) -> &tokio::sync::Notify {
        &self.published
    }
}

/// What one failed attempt was, for the retry rule; `None` for an answer
/// that is not retried.
fn attempted(
    result: &Result<impl Answer, DispatchError>,
    touched: bool,
    policy: &crate::resilience::ResiliencePolicy,
) -> Option<Attempted> {
    match result {
        Ok(resp) if resp.status() >= 500 && policy.retry_on.contains(&resp.status()) => {
            Some(Attempted::Status(resp.status()))
        }
        Ok(_) => None,
        Err(DispatchError::Failed { failure, .. }) => Some(match failure {
            Failure::Saturated(_) | Failure::Capacity => Attempted::NotStarted,
            Failure::Internal(_) if !touched => Attempted::NotStarted,
            Failure::CallLoop(_) => Attempted::Final,
            _ => Attempted::NoResponse,
        }),
        Err(_) => Some(Attempted::Final),
    }
}

/// A response an attempt may end with: its status decides whether a
/// listed error status is tried again.
pub trait Answer {
    /// The HTTP status.
    fn status(&self) -> u16;
}

impl Answer for Response {
    fn status(&self) -> u16 {
        self.status
    }
}

impl<B> Answer for http::Response<B> {
    fn status(&self) -> u16 {
        http::Response::status(self).as_u16()
    }
}

/// One attempt of a request on one version.
pub struct Attempt<T = Response> {
    /// Its answer, or why there was none.
    pub result: Result<T, DispatchError>,
    /// How it failed, for the retry rule (`None`: it answered).
    pub failed: Option<Attempted>,
    /// Whether it may have changed the world (see `HostState::touched`).
    pub touched: bool,
}

/// A request's way through the versions of its service.
pub struct Served<T = Response> {
    /// The answer, or the last attempt's failure.
    pub result: Result<T, DispatchError>,
    /// The version of the last attempt.
    pub version: Arc<Version>,
    /// The version first chosen, when the stable version answered instead.
    pub fallback_from: Option<Arc<str>>,
    /// Attempts made (1 unless something was retried).
    pub attempts: u32,
}

/// A version the request path ejected, for the control plane (history,
/// canary rollback).
#[derive(Debug, Clone)]
pub struct EjectionNotice {
    /// Service name.
    pub service: Arc<str>,
    /// The version ejected.
    pub version: Arc<str>,
    /// Why and for how long.
    pub ejection: Ejection,
}

/// The version chosen for a request, before it takes a concurrency slot of
/// its service (see [`Dispatcher::serve`]).
pub struct Picked {
    /// The version that will run the request.
    pub version: Arc<Version>,
    /// Whether an outside pin chose it (its metrics are counted apart).
    pub pinned: bool,
    /// Whether any pin chose it: it never falls back and its failures do
    /// not count towards an ejection.
    by_pin: bool,
    /// Where failed requests fall back to.
    stable: Option<Arc<Version>>,
    /// The probe of a version on probation this request is, if any.
    probe: Option<(Arc<str>, ProbeGuard)>,
    slots: Arc<tokio::sync::Semaphore>,
    concurrency: u32,
    budget: Arc<RetryBudget>,
}

impl Picked {
    /// Picks the version of `service` for a request with `headers`: an
    /// ejected version's share goes to the stable version, and a version
    /// on probation gets exactly one request, its probe.
    fn of(
        service: &ServiceEntry,
        headers: &[(String, String)],
        pins: Pins,
    ) -> Result<Self, DispatchError> {
        let (mut version, pinned) = service
            .pick(headers, fastrand::u64(..), pins)
            .map(|(v, pinned)| (v.clone(), pinned))
            .ok_or_else(|| DispatchError::UnknownService(service.name.clone()))?;
        let stable = service.stable().cloned();
        let mut probe = None;
        if !pinned && !version.outlier.is_serving() {
            match version.outlier.admit(tokio::time::Instant::now()) {
                Admission::Admit => {}
                Admission::Probe(guard) => probe = Some((version.version.clone(), guard)),
                Admission::Refuse => {
                    if let Some(stable) = &stable {
                        version = stable.clone();
                    }
                }
            }
        }
        Ok(Self {
            version,
            pinned: pinned && pins == Pins::Outside,
            by_pin: pinned,
            stable,
            probe,
            slots: service.slots.clone(),
            concurrency: service.concurrency,
            budget: service.budget.clone(),
        })
    }

    /// Takes one of the service's concurrency slots, held until the permit
    /// is dropped; a full service is refused at once (and counted). For a
    /// request served whole, [`Dispatcher::serve`] claims instead.
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
