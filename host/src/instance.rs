//! One instance's life: the `Store` a request runs in, with its memory
//! limiter and CPU budget; how a wasmtime error is classified as a
//! [`Failure`]; and the idle pool of opt-in instance reuse. Shared by the
//! own-WIT and the wasi:http executors.
//!
//! Invariants: the CPU budget counts only epoch ticks spent in guest code
//! (time waiting on the host — a nested call, a disk write — is free); a
//! store is dropped with its request unless the service opted into reuse and
//! the request ended well.

use crate::bindings::{Request, Response, Service};
use crate::capabilities::services::CallLoop;
use crate::capabilities::HostState;
use crate::config::Limits;
use crate::engine::TICK;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

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
    /// The service answered, but its held key-value writes and messages
    /// could not be stored (the cluster's Redis or NATS is away): none were.
    #[error("the service answered, but its key-value writes and messages could not be stored, so none were: {0}")]
    Uncommitted(String),
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
            Failure::Trap(_)
            | Failure::Malformed(_)
            | Failure::Internal(_)
            | Failure::Uncommitted(_) => return None,
        })
    }

    /// A short name of the failure, for metrics labels: the limit it hit,
    /// or `trap`, `malformed`, `internal`.
    pub fn kind(&self) -> &'static str {
        self.limit().unwrap_or(match self {
            Failure::Malformed(_) => "malformed",
            Failure::Internal(_) => "internal",
            Failure::Uncommitted(_) => "uncommitted",
            _ => "trap",
        })
    }

    /// Whether the guest failed while running (counted as a trap in metrics).
    pub fn is_trap(&self) -> bool {
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
    if let Some(looped) = e.downcast_ref::<CallLoop>() {
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

/// Marker error returned by the epoch callback when the CPU budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("CPU time limit exceeded")]
struct CpuBudgetSpent;

/// A version's share of the CPU: how many of its requests may run guest
/// code at once past their first tick. A request that used a tick gives its
/// lane back and queues for one again (first come, first served), so a
/// version flooded with CPU-bound requests keeps only its lanes' worth of
/// them on the runtime's threads, and other services' requests are not
/// queued behind the flood.
#[derive(Clone)]
pub struct CpuLanes(Arc<Semaphore>);

impl CpuLanes {
    /// `n` lanes (at least one, at most what a semaphore holds: a huge
    /// `--cpu-lanes` means no cap in effect, never a panic).
    pub fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))))
    }
}

/// Lanes per version by default: all cores but one (one on a machine of
/// two), so a single service can never keep every core busy.
pub fn default_lanes() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// A store for one request, holding `state`: its memory limiter, and an
/// epoch callback that counts the CPU time the guest actually runs against
/// `cpu_time`, yielding every tick — and, with `lanes`, waiting for one of
/// the version's CPU lanes before it goes on.
pub fn new_store(
    engine: &Engine,
    state: HostState,
    cpu_time: Duration,
    lanes: Option<&CpuLanes>,
) -> Store<HostState> {
    let hold = state.lane.clone();
    // (The hold is shared with the state, which gives the lane back when a
    // reused instance goes idle.)
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    let budget = ticks(cpu_time);
    let lanes = lanes.map(|l| l.0.clone());
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        state.cpu_ticks += 1;
        if state.cpu_ticks >= budget {
            return Err(CpuBudgetSpent.into());
        }
        let Some(lanes) = lanes.clone() else {
            return Ok(UpdateDeadline::Yield(1));
        };
        hold.release();
        let hold = hold.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if let Ok(permit) = lanes.acquire_owned().await {
                    hold.keep(permit);
                }
            }),
        ))
    });
    store
}

/// Most instances of one version kept idle for reuse.
pub const MAX_IDLE_INSTANCES: usize = 8;

/// Instances of one version kept between requests (opt-in reuse).
///
/// An idle store holds its service's identity and sandbox, never the
/// version itself, so a version that leaves the registry is freed — with
/// its idle instances and their pool slots — when its last request ends.
#[derive(Default)]
pub struct IdleInstances {
    instances: std::sync::Mutex<Vec<IdleInstance>>,
}

/// An instance between two requests: its store, its bindings, and how many
/// requests it has served.
pub struct IdleInstance {
    pub(crate) store: wasmtime::Store<HostState>,
    pub(crate) service: Handler,
    pub(crate) served: u32,
}

impl IdleInstances {
    /// Takes an idle instance, if there is one.
    pub(crate) fn take(&self) -> Option<IdleInstance> {
        self.instances.lock().ok()?.pop()
    }

    /// Keeps `instance` for a later request; dropped when enough are kept.
    pub(crate) fn put(&self, instance: IdleInstance) {
        let surplus = match self.instances.lock() {
            Ok(mut idle) if idle.len() < MAX_IDLE_INSTANCES => {
                idle.push(instance);
                None
            }
            _ => Some(instance),
        };
        // Dropping a store takes microseconds: never under the lock.
        drop(surplus);
    }

    /// How many instances wait now.
    pub fn len(&self) -> usize {
        self.instances.lock().map_or(0, |idle| idle.len())
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An instantiated service, by contract version: what `handle` is called on.
pub enum Handler {
    /// `wasmhost:plugin@0.1.0`.
    V1(Service),
    /// `wasmhost:plugin@0.2.0`.
    V2(crate::bindings::v2::exports::wasmhost::plugin::handler::Guest),
}

impl Handler {
    /// Calls the guest's `handle` with `req`.
    pub async fn handle(
        &self,
        store: &mut Store<HostState>,
        req: &Request,
    ) -> wasmtime::Result<Response> {
        match self {
            Handler::V1(service) => {
                service
                    .wasmhost_plugin_handler()
                    .call_handle(store, req)
                    .await
            }
            Handler::V2(handler) => handler.call_handle(store, req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_down_but_never_to_zero() {
        assert_eq!(ticks(Duration::from_secs(1)), 100);
        assert_eq!(ticks(Duration::from_millis(1)), 1);
    }

    #[test]
    fn a_refused_allocation_is_reported_as_out_of_memory() {
        let limits = Limits::default();
        let trap = Failure::Trap("unreachable".into());
        assert!(matches!(
            trap.explained(true, &limits),
            Failure::OutOfMemory(_)
        ));
        let trap = Failure::Trap("unreachable".into());
        assert!(matches!(trap.explained(false, &limits), Failure::Trap(_)));
        assert_eq!(Failure::CpuTime(limits.cpu_time).limit(), Some("cpu-time"));
    }
}
