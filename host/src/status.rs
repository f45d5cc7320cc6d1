//! The status table printed at start: every service, version and route, and
//! every file that failed to load.

use crate::registry::Registry;
use std::path::Path;

/// Logs one line per loaded version and one per load error.
pub fn log_registry(registry: &Registry, plugins_dir: &Path) {
    let mut served = 0;
    for service in registry.services() {
        let live = service.live().map(|v| v.version.clone());
        for v in &service.versions {
            served += 1;
            let state = if Some(&v.version) == live.as_ref() {
                "live"
            } else {
                "standby"
            };
            tracing::info!(
                service = %v.service,
                version = %v.version,
                routes = %service.routes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
                size_kib = v.size / 1024,
                digest = %&v.digest[..12],
                world = v.pre.world(),
                state,
                "service loaded"
            );
        }
    }
    for w in registry.warnings() {
        tracing::warn!(file = %w.file, warning = %w.error, "will not serve");
    }
    for e in registry.errors() {
        tracing::error!(file = %e.file, error = %e.error, "not loaded");
    }
    if served == 0 {
        tracing::warn!(
            "no services loaded from {}: put NAME@VERSION.wasm components there (`make plugins` builds the examples)",
            plugins_dir.display()
        );
    }
}
