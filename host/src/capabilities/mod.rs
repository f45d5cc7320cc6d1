//! The host side of every import a service may use, and the per-request
//! state (`HostState`) that backs them.
//!
//! Invariant: a `HostState` belongs to exactly one request of one version. It
//! names that service, so every capability is scoped to it (its key-value
//! namespace, its configuration, its log tag), and it grants nothing else:
//! the WASI context has no sockets and no stdin, and a directory,
//! environment variables or outbound HTTP only when the service's manifest
//! grants them (see [`crate::sandbox`]); stdout and stderr go to the host's
//! log, within the service's log budget.
//!
//! Capabilities never see the request path: a `HostState` holds the
//! service's identity, sandbox and handles, and reaches other services only
//! through the [`Calls`] trait (the `WasiHttpHooks` pattern), so nothing in
//! a store refers back to the version it runs or to the dispatcher.

pub mod calls;
pub mod config;
pub mod keyvalue;
pub mod logging;
pub mod messaging;
pub mod outbound;
pub mod services;
pub mod stdio;
pub mod wasi_messaging;

pub use calls::{CallError, Calls, ServiceId};

use crate::bindings::Service;
use crate::sandbox::Sandbox;
use crate::store::Store;
use anyhow::{Context, Result};
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The data of one request's `Store`.
pub struct HostState {
    /// Built when the guest first uses WASI (a lean guest's request often
    /// makes no WASI call at all), or at once when a directory is granted,
    /// so a preopen that fails is the request's error, not a later panic.
    wasi: Option<WasiCtx>,
    http: WasiHttpCtx,
    outbound: outbound::OutboundHttp,
    table: ResourceTable,
    /// Memory and table limits of this store.
    pub(crate) limiter: Limiter,
    /// The service and version being run: whose namespace and log tag apply.
    pub(crate) id: ServiceId,
    /// Its limits, grants and config.
    pub(crate) sandbox: Arc<Sandbox>,
    /// The key-value store (the service sees its own namespace only).
    pub(crate) kv: Store,
    /// The way to other services (`services.call`, `http://NAME.internal`).
    pub(crate) calls: Arc<dyn Calls>,
    /// The id of the outside request this one serves, passed on to nested calls.
    pub(crate) request_id: Arc<str>,
    /// How many `services.call` hops led to this request (0 from outside).
    pub(crate) depth: u32,
    /// The guest's stdout, stderr and log budget.
    pub(crate) output: stdio::GuestOutput,
    /// Epoch ticks of CPU time the current request has used.
    pub(crate) cpu_ticks: u64,
    /// The CPU lane it holds while running guest code, if any.
    pub(crate) lane: LaneHold,
    /// Whether this attempt may have changed the world: a key-value write
    /// was issued, or a request that is not read-only went out (a service
    /// call, outbound HTTP). An attempt that fails untouched is safe to retry.
    pub(crate) touched: bool,
    /// Key-value writes held until the request answers, when the service
    /// has `transactional-kv` (see [`crate::kv::WriteSet`]).
    pub(crate) pending: Option<crate::kv::WriteSet>,
    /// Messages published by this request, stored with its outcome.
    pub(crate) outbox: Vec<crate::messages::Outgoing>,
}

/// The lane a store holds while it runs guest code, if any.
#[derive(Default, Clone)]
pub struct LaneHold(Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>);

impl LaneHold {
    /// Gives the lane back (at the end of a request).
    pub(crate) fn release(&self) {
        if let Ok(mut held) = self.0.lock() {
            held.take();
        }
    }

    /// Holds `permit` until [`Self::release`] or the store's end.
    pub(crate) fn keep(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        if let Ok(mut held) = self.0.lock() {
            *held = Some(permit);
        }
    }
}

impl HostState {
    /// State for one request to the service `id` with `sandbox`, `depth`
    /// calls deep, reaching other services through `calls`.
    pub fn new(
        id: ServiceId,
        sandbox: Arc<Sandbox>,
        kv: Store,
        calls: Arc<dyn Calls>,
        request_id: Arc<str>,
        depth: u32,
    ) -> Result<Self> {
        let transactional = sandbox.resilience.transactional_kv;
        let output = stdio::GuestOutput::new(
            id.service.clone(),
            id.version.clone(),
            sandbox.limits.log_bytes,
        );
        let wasi = match (&sandbox.dir, &sandbox.grants.dir) {
            (Some(host), Some(grant)) => {
                let mut wasi = wasi_builder(&output, &sandbox);
                wasi.preopened_dir(host, &grant.guest, FsPerms::ReadOnly)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("cannot open granted directory {}", host.display()))?;
                Some(wasi.build())
            }
            _ => None,
        };
        let mut table = ResourceTable::new();
        table.set_max_capacity(sandbox.limits.resources as usize);
        let outbound = outbound::OutboundHttp::new(
            id.clone(),
            sandbox.clone(),
            calls.clone(),
            request_id.clone(),
            depth,
        );
        Ok(Self {
            wasi,
            http: WasiHttpCtx::new(),
            outbound,
            table,
            limiter: Limiter::new(sandbox.limits.max_memory),
            id,
            sandbox,
            kv,
            calls,
            request_id,
            depth,
            output,
            cpu_ticks: 0,
            lane: Default::default(),
            touched: false,
            pending: transactional.then(Default::default),
            outbox: Vec::new(),
        })
    }

    /// Readies a reused instance's state for its next request: the full
    /// CPU and log budgets, no memory refusal on record.
    pub(crate) fn next_request(&mut self) {
        self.cpu_ticks = 0;
        self.output.reset();
        self.limiter.memory_exhausted = false;
        self.touched = false;
        self.outbound.touched = false;
        self.outbox.clear();
        if let Some(pending) = &mut self.pending {
            *pending = Default::default();
        }
    }

    /// Whether this attempt may have changed the world (see `touched`).
    pub(crate) fn touched(&self) -> bool {
        self.touched || self.outbound.touched
    }
}

/// The WASI context of a service: stdout and stderr to the host's log, no
/// network, granted environment variables. (A granted directory is added
/// by `HostState::new`: opening it is the one step that can fail.)
fn wasi_builder(output: &stdio::GuestOutput, sandbox: &Sandbox) -> WasiCtxBuilder {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(output.stream(stdio::Stream::Stdout))
        .stderr(output.stream(stdio::Stream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (key, value) in &sandbox.grants.env {
        wasi.env(key, value);
    }
    wasi
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let ctx = match &mut self.wasi {
            Some(ctx) => ctx,
            slot @ None => slot.insert(wasi_builder(&self.output, &self.sandbox).build()),
        };
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Bounds one store's memories and tables, and remembers whether the guest
/// ran into the memory limit (so an out-of-memory abort is reported as one).
pub struct Limiter {
    max_memory: usize,
    /// Set once a memory growth was refused.
    pub memory_exhausted: bool,
}

/// Most elements of one table (function references of a large guest).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl Limiter {
    fn new(max_memory: usize) -> Self {
        Self {
            max_memory,
            memory_exhausted: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_memory;
        if !allowed {
            self.memory_exhausted = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

/// The linker every service is pre-instantiated with: WASI 0.2 and
/// `wasi:http` (granting nothing, see [`HostState`]), the wasmhost worlds'
/// imports and `wasi:messaging`'s.
pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Service::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    // Contract 0.2.0: its own `services` and `messaging`, and its types
    // interface (records shared with 0.1.0).
    use crate::bindings::v2::wasmhost::plugin as v2;
    v2::services::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    v2::messaging::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    // The standard wasi:messaging draft, over the same log.
    use crate::bindings::wasi_messaging::wasi::messaging as wasi_messaging;
    wasi_messaging::types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    wasi_messaging::producer::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}
