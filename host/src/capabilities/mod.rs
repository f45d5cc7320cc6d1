//! The host side of every import a service may use, and the per-request
//! state (`HostState`) that backs them.
//!
//! Invariant: a `HostState` belongs to exactly one request of one version. It
//! names that service, so every capability is scoped to it (its key-value
//! namespace, its configuration, its log tag), and it grants nothing else:
//! the WASI context has no directories, no environment, no sockets and no
//! stdin; stdout and stderr go to the host's log.

pub mod config;
pub mod keyvalue;
pub mod logging;
pub mod services;
pub mod stdio;

use crate::bindings::Service;
use crate::dispatch::Dispatcher;
use crate::registry::Version;
use anyhow::Result;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Bytes of stdout plus stderr a single request may log.
pub const MAX_GUEST_OUTPUT: usize = 64 * 1024;

/// The data of one request's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and table limits of this store.
    pub(crate) limits: StoreLimits,
    /// The version being run: whose namespace, config and log tag apply.
    pub(crate) version: Arc<Version>,
    /// The dispatcher, for `services.call`.
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// How many `services.call` hops led to this request (0 from outside).
    pub(crate) depth: u32,
}

impl HostState {
    /// State for one request to `version`, `depth` calls deep.
    pub fn new(version: Arc<Version>, dispatcher: Arc<Dispatcher>, depth: u32) -> Self {
        let output = stdio::GuestOutput::new(
            version.service.clone(),
            version.version.clone(),
            MAX_GUEST_OUTPUT,
        );
        let wasi = WasiCtx::builder()
            .stdout(output.stream(stdio::Stream::Stdout))
            .stderr(output.stream(stdio::Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(dispatcher.limits().max_memory)
            .instances(64)
            .trap_on_grow_failure(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limits,
            version,
            dispatcher,
            depth,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The linker every service is pre-instantiated with: WASI 0.2 (granting
/// nothing, see [`HostState`]) plus the wasmhost world's imports.
pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Service::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}
