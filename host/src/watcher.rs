//! The watcher: applies every change of the plugins directory without a
//! restart.
//!
//! notify reports file events; they are debounced, then the directory is
//! rescanned off the async runtime by the single writer (this task) and the
//! new registry snapshot is swapped in atomically. Requests in flight keep
//! the `Arc<Version>` they started with, so a swap never cuts one off, and a
//! removed version is freed once its last request ends. Unchanged files keep
//! their compiled version; files still being written are retried shortly.

use crate::dispatch::Dispatcher;
use crate::loader::{Loader, STABLE_AGE};
use crate::registry::Registry;
use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Quiet time after the last event before the directory is rescanned
/// (a rename into place is loaded without waiting).
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps the directory watched; dropping it stops the watcher task.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dir`; every change is loaded and swapped into `dispatcher`.
pub fn spawn(dir: PathBuf, loader: Arc<Loader>, dispatcher: Arc<Dispatcher>) -> Result<Watcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            // Opening or reading a file changes nothing, and the rescan's own
            // reads would otherwise trigger the next rescan, forever.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let renamed = matches!(
                event.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::To | notify::event::RenameMode::Both
                ))
            );
            if let Some(path) = event.paths.iter().rev().find(|p| is_relevant(p)) {
                tracing::trace!(kind = ?event.kind, path = %path.display(), "plugins directory changed");
                let _ = tx.send(renamed.then(|| path.clone()));
            }
        }
    })
    .context("failed to create the plugins directory watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("failed to watch plugins directory {}", dir.display()))?;
    let task = tokio::spawn(run(dir, loader, dispatcher, rx));
    Ok(Watcher {
        _watcher: watcher,
        task,
    })
}

/// Components and manifests at the top of the directory; temp files are not.
fn is_relevant(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    !name.starts_with('.') && (name.ends_with(".wasm") || name.ends_with(".toml"))
}

async fn run(
    dir: PathBuf,
    loader: Arc<Loader>,
    dispatcher: Arc<Dispatcher>,
    mut rx: mpsc::UnboundedReceiver<Option<PathBuf>>,
) {
    let mut retry = false;
    loop {
        let mut renamed = std::collections::HashSet::new();
        // Wait for a change, or for files still being written to settle.
        let first = if retry {
            match tokio::time::timeout(STABLE_AGE, rx.recv()).await {
                Ok(None) => return,
                Ok(Some(event)) => event,
                Err(_) => None,
            }
        } else {
            match rx.recv().await {
                None => return,
                Some(event) => event,
            }
        };
        // A file renamed into place is complete: load it at once, with
        // whatever else is already queued. Other changes (a file being
        // written, a manifest edited) wait for a quiet moment.
        let quiet = if first.is_some() {
            Duration::ZERO
        } else {
            DEBOUNCE
        };
        renamed.extend(first);
        // (A zero timeout still takes an event that is already queued.)
        loop {
            match tokio::time::timeout(quiet, rx.recv()).await {
                Ok(Some(event)) => renamed.extend(event),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let started = Instant::now();
        tracing::debug!(renamed = renamed.len(), "rescanning the plugins directory");
        let writer = dispatcher.writer().await;
        let previous = dispatcher.registry();
        let (scan_loader, scan_dir, scan_prev) = (loader.clone(), dir.clone(), previous.clone());
        let release = writer.clone();
        let scan = match tokio::task::spawn_blocking(move || {
            scan_loader.load_dir(&scan_dir, &scan_prev, &release, &renamed)
        })
        .await
        {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => {
                tracing::error!("rescan failed, keeping what is live: {e:#}");
                continue;
            }
            Err(e) => {
                tracing::error!("rescan task failed, keeping what is live: {e}");
                continue;
            }
        };
        log_changes(&previous, &scan.registry, started);
        retry = !scan.pending.is_empty();
        if retry {
            tracing::debug!(files = ?scan.pending, "waiting for files still being written");
        }
        let mut registry = scan.registry;
        let mut writer = writer;
        let mut next = writer.clone();
        if crate::canary::on_new_versions(&previous, &registry, &mut next) {
            match next.save(dispatcher.state_dir()) {
                Ok(()) => {
                    registry = registry.with_release(&next);
                    *writer = next;
                }
                Err(e) => {
                    tracing::error!("could not persist the canary start, serving without it: {e:#}")
                }
            }
        }
        dispatcher.swap_registry(registry);
        drop(writer);
    }
}

/// Logs versions added and removed, and load errors that are new.
fn log_changes(old: &Registry, new: &Registry, started: Instant) {
    let key = |r: &Registry| -> BTreeSet<(String, String, String)> {
        r.services()
            .flat_map(|s| s.versions.iter())
            .map(|v| {
                (
                    v.service.to_string(),
                    v.version.to_string(),
                    v.digest.clone(),
                )
            })
            .collect()
    };
    let (before, after) = (key(old), key(new));
    let elapsed_ms = started.elapsed().as_millis() as u64;
    for (service, version, digest) in after.difference(&before) {
        let live = new
            .service(service)
            .and_then(|s| s.live())
            .is_some_and(|v| *v.version == **version);
        tracing::info!(%service, %version, digest = %&digest[..12], live, elapsed_ms, "version loaded");
    }
    for (service, version, _) in before.difference(&after) {
        tracing::info!(%service, %version, "version retired; requests in flight finish on it");
    }
    let old_errors: BTreeSet<_> = old.errors().map(|e| (&e.file, &e.error)).collect();
    for e in new.errors() {
        if !old_errors.contains(&(&e.file, &e.error)) {
            tracing::error!(file = %e.file, "not loaded: {}", e.error);
        }
    }
}
