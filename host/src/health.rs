//! The host's own health: whether it is live, ready for traffic, or
//! draining. Load balancers read it at `/.well-known/wasmhost/live` and
//! `/.well-known/wasmhost/ready`, paths no manifest can claim.
//!
//! Invariant: once draining has begun it never ends (the host is on its way
//! out), and ready answers 503 from that moment on.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Path of the liveness probe.
pub const LIVE_PATH: &str = "/.well-known/wasmhost/live";
/// Path of the readiness probe.
pub const READY_PATH: &str = "/.well-known/wasmhost/ready";
/// The prefix reserved for the host's own endpoints.
pub const RESERVED_PREFIX: &str = "/.well-known/wasmhost";

/// Readiness flags shared by the watcher, the front, the admin API and
/// the shutdown sequence.
#[derive(Debug, Default)]
pub struct Health {
    scanned: AtomicBool,
    draining: AtomicBool,
    drain: Notify,
}

impl Health {
    /// The first scan has compiled every loadable service.
    pub fn mark_scanned(&self) {
        self.scanned.store(true, Ordering::Release);
    }

    /// Whether the first scan is done.
    pub fn is_scanned(&self) -> bool {
        self.scanned.load(Ordering::Acquire)
    }

    /// Begins draining (SIGTERM or `POST /admin/drain`): ready answers 503
    /// from now on, and whoever waits in [`Self::drain_requested`] wakes.
    pub fn start_drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.drain.notify_one();
        }
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Resolves once draining has been asked for.
    pub async fn drain_requested(&self) {
        if !self.is_draining() {
            self.drain.notified().await;
        }
    }

    /// The checks that fail now (empty: ready). `store_failing` is the
    /// key-value store's state.
    pub fn failing(&self, store_failing: bool) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.is_scanned() {
            out.push("first-scan");
        }
        if store_failing {
            out.push("store");
        }
        if self.is_draining() {
            out.push("draining");
        }
        out
    }
}
