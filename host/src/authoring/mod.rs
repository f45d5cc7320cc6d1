//! Writing a service: `wasmhost new` ([`templates`]), `wasmhost build`
//! ([`sources`] and [`builder`]) and `wasmhost dev` ([`dev`]).
//!
//! Invariant: authoring only ever changes what is served by dropping a
//! finished component into the plugins directory, the way an operator
//! would; the host's watcher and control plane do the rest, so a service
//! under development is loaded, swapped and sandboxed exactly as in
//! production.

pub mod builder;
pub mod dev;
pub mod sources;
pub mod templates;

pub use builder::{build, BuildFailed, Built, Diagnostic};
pub use sources::{discover, Lang, Source};

use anyhow::{bail, Result};
use std::path::Path;
use std::time::Instant;

/// `wasmhost build`: builds every service source under `plugins` (or only
/// those named), one after the other, saying how each went; fails if any
/// did not build.
pub fn build_all(plugins: &Path, only: &[String]) -> Result<()> {
    let found = discover(plugins)?;
    for skipped in &found.skipped {
        eprintln!(
            "warning: {} is not built: {}",
            skipped.dir.display(),
            skipped.reason
        );
    }
    let unknown: Vec<&String> = only
        .iter()
        .filter(|name| !found.sources.iter().any(|s| &s.service == *name))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = found.sources.iter().map(|s| s.service.as_str()).collect();
        bail!(
            "no source for {unknown:?} under {} (found: {})",
            plugins.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let chosen: Vec<&Source> = found
        .sources
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.service))
        .collect();
    if chosen.is_empty() {
        bail!(
            "no service sources under {}: `wasmhost new NAME --lang rust|python|js` makes one",
            plugins.display()
        );
    }
    let mut failed = Vec::new();
    for (i, source) in chosen.iter().enumerate() {
        eprintln!(
            "==> [{}/{}] building {} {} ({}, {})",
            i + 1,
            chosen.len(),
            source.service,
            source.version,
            source.lang,
            source.dir.display()
        );
        let started = Instant::now();
        match build(source, plugins) {
            Ok(built) => eprintln!(
                "    {} ({} KiB, {:.1} s)",
                built.file.display(),
                built.bytes / 1024,
                built.took.as_secs_f64()
            ),
            Err(e) => {
                builder::report_failure(&source.service, &e, started.elapsed());
                failed.push(source.service.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} did not build: {}",
            failed.len(),
            chosen.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
