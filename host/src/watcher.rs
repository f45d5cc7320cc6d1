//! The watcher: applies every change of the plugins directory without a
//! restart.
//!
//! notify reports file events; they are debounced, then the directory is
//! rescanned off the async runtime (compiling without any lock held) and
//! the result goes to the control plane, which swaps it in atomically. Requests in flight keep
//! the `Arc<Version>` they started with, so a swap never cuts one off, and a
//! removed version is freed once its last request ends. Unchanged files keep
//! their compiled version; files still being written are retried shortly, and
//! so is a scan that failed. A plugins directory replaced or recreated at its
//! path is watched again (checked every [`DIR_CHECK`]).

use crate::control::{Change, Control, ScanDone};
use crate::loader::{Loader, Progress, STABLE_AGE};
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

/// How often the watcher checks that the directory it watches is still the
/// one at its path (a directory replaced by `mv` or removed and recreated
/// takes its inotify watch with it).
pub const DIR_CHECK: Duration = Duration::from_secs(1);

/// Longest wait between retries of a scan that failed.
pub const SCAN_RETRY_MAX: Duration = Duration::from_secs(10);

/// Keeps the directory watched; dropping it stops the watcher task.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dir`: scans it once, serving each version as it
/// compiles, then loads every change through `control`.
pub fn spawn(dir: PathBuf, loader: Arc<Loader>, control: Arc<Control>) -> Result<Watcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let counter = control.clone();
    // inotify reports a rename as From, To and then Both; Both repeats the
    // To just sent and would only queue a second, empty rescan.
    let mut last_to: Option<PathBuf> = None;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            use notify::event::{ModifyKind, RenameMode};
            // Opening or reading a file changes nothing, and the rescan's own
            // reads would otherwise trigger the next rescan, forever.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let rename = match event.kind {
                notify::EventKind::Modify(ModifyKind::Name(mode)) => Some(mode),
                _ => None,
            };
            let Some(path) = event.paths.iter().rev().find(|p| is_relevant(p)) else {
                return;
            };
            if rename == Some(RenameMode::Both) && last_to.as_ref() == Some(path) {
                return;
            }
            last_to = (rename == Some(RenameMode::To)).then(|| path.clone());
            let renamed = matches!(rename, Some(RenameMode::To | RenameMode::Both));
            tracing::trace!(kind = ?event.kind, path = %path.display(), "plugins directory changed");
            counter.count_watch_event();
            let _ = tx.send(renamed.then(|| path.clone()));
        }
    })
    .context("failed to create the plugins directory watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("failed to watch plugins directory {}", dir.display()))?;
    let watched = WatchedDir {
        identity: identity(&dir),
        watcher,
    };
    let task = tokio::spawn(run(dir, loader, control, rx, watched));
    Ok(Watcher { task })
}

/// Components and manifests at the top of the directory; temp files are not.
fn is_relevant(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    !name.starts_with('.') && (name.ends_with(".wasm") || name.ends_with(".toml"))
}

/// Scans `dir` off the async runtime and hands the result to the control
/// plane: which versions will compile (listed as loading), each version as
/// soon as it compiled, then the whole scan. The writer lock is taken only
/// for those hand-overs, never across a compile. Returns the files still
/// being written, or `None` when the scan failed. `log` says whether to log
/// what changed (the first scan logs the whole table at its end instead).
async fn scan(
    dir: &Path,
    loader: &Arc<Loader>,
    control: &Arc<Control>,
    renamed: std::collections::HashSet<PathBuf>,
    log: bool,
    announced: &Announced,
) -> Option<Vec<String>> {
    let started = Instant::now();
    let _turn = control.scan_turn().await;
    let before = control.snapshot();
    let (l, d, c) = (loader.clone(), dir.to_path_buf(), control.clone());
    let runtime = tokio::runtime::Handle::current();
    let said = announced.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut progress = |p: Progress| {
            let change = match p {
                Progress::Loading(loading) => {
                    announce(&loading, &said);
                    Change::Loading(loading)
                }
                Progress::Loaded { registry, loading } => {
                    announce(&loading, &said);
                    Change::Rescan {
                        registry,
                        loading,
                        done: None,
                    }
                }
            };
            if let Err(error) = runtime.block_on(c.apply(change)) {
                tracing::error!(%error, "could not apply scan progress");
            }
        };
        let now = c.snapshot();
        l.load_dir(&d, &now.registry, &now.release, &renamed, &mut progress)
    });
    let scan = match task.await {
        Ok(Ok(scan)) => scan,
        Ok(Err(e)) => {
            tracing::error!(
                error = format_args!("{e:#}"),
                "rescan failed, keeping what is live"
            );
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "rescan task failed, keeping what is live");
            return None;
        }
    };
    // A file compiling in the background is announced once, not at every
    // scan that finds it still compiling.
    if let Ok(mut said) = announced.lock() {
        said.retain(|file| scan.compiling.iter().any(|l| l.file == *file));
    }
    let change = Change::Rescan {
        registry: scan.registry,
        loading: scan.compiling,
        done: Some(ScanDone {
            base: before.clone(),
            complete: scan.pending.is_empty(),
        }),
    };
    match control.apply(change).await {
        Ok(applied) if log => log_changes(&before.registry, &applied.after.registry, started),
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "rescan could not be applied"),
    }
    Some(scan.pending)
}

/// Files whose compile was logged (kept across scans while they compile).
type Announced = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// Logs the compile that starts now, once per file: the first in `loading`
/// not logged yet (compiles left running in the background come first and
/// were logged when they started; the loader compiles the rest one at a
/// time, in order).
fn announce(loading: &[crate::registry::Loading], announced: &Announced) {
    let Ok(mut said) = announced.lock() else {
        return;
    };
    if let Some((at, next)) = loading
        .iter()
        .enumerate()
        .find(|(_, l)| !said.contains(&l.file))
    {
        said.insert(next.file.clone());
        tracing::info!(
            service = %next.service,
            file = %next.file,
            queued = loading.len() - at - 1,
            "compiling"
        );
    }
}

/// The first scan: every version is served as soon as it has compiled;
/// files still being written are waited for (bounded).
async fn initial(dir: &Path, loader: &Arc<Loader>, control: &Arc<Control>, announced: &Announced) {
    let started = Instant::now();
    // Files still being written are waited for 20 times; a compile left
    // running in the background, until it ends (its timeout bounds it).
    let mut writing = 0;
    loop {
        match scan(dir, loader, control, Default::default(), false, announced).await {
            Some(pending) if !pending.is_empty() => {
                if !loader.is_compiling() {
                    writing += 1;
                    if writing >= 20 {
                        break;
                    }
                }
                tokio::time::sleep(STABLE_AGE).await;
            }
            _ => break,
        }
    }
    control.health().mark_scanned();
    let snapshot = control.snapshot();
    crate::status::log_registry(&snapshot.registry, dir);
    tracing::info!(
        services = snapshot.registry.services().count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ready: every service in the plugins directory is loaded"
    );
}

/// The directory under watch and which directory it was when watched.
struct WatchedDir {
    identity: Option<(u64, u64)>,
    watcher: notify::RecommendedWatcher,
}

impl WatchedDir {
    /// Re-establishes the watch when the path now names another directory
    /// (or names one again); says whether it did. A missing directory is
    /// reported once and checked again later; what is loaded keeps serving.
    fn check(&mut self, dir: &Path) -> bool {
        let now = identity(dir);
        if now == self.identity {
            return false;
        }
        let was = self.identity.take();
        let _ = self.watcher.unwatch(dir);
        match now {
            None => {
                tracing::warn!(
                    dir = %dir.display(),
                    "the plugins directory is gone; what is loaded keeps serving until it is back"
                );
                false
            }
            Some(_) => match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.identity = now;
                    tracing::info!(
                        dir = %dir.display(),
                        replaced = was.is_some(),
                        "watching the plugins directory again; rescanning"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the plugins directory yet");
                    false
                }
            },
        }
    }
}

/// Device and inode of `dir`, when it is a directory.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    meta.is_dir().then(|| (meta.dev(), meta.ino()))
}

/// Waits for a change; `None` when the channel closed. A replaced
/// directory counts as a change; so does the end of `settle` when set.
async fn next_event(
    dir: &Path,
    rx: &mut mpsc::UnboundedReceiver<Option<PathBuf>>,
    watched: &mut WatchedDir,
    settle: Option<Duration>,
) -> Option<Option<PathBuf>> {
    let deadline = settle.map(|d| tokio::time::Instant::now() + d);
    let mut check = tokio::time::interval(DIR_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = rx.recv() => return event,
            () = until => return Some(None),
            _ = check.tick() => {
                if watched.check(dir) {
                    return Some(None);
                }
            }
        }
    }
}

async fn run(
    dir: PathBuf,
    loader: Arc<Loader>,
    control: Arc<Control>,
    mut rx: mpsc::UnboundedReceiver<Option<PathBuf>>,
    mut watched: WatchedDir,
) {
    let announced = Announced::default();
    initial(&dir, &loader, &control, &announced).await;
    let mut retry: Option<Duration> = None;
    loop {
        let mut renamed = std::collections::HashSet::new();
        // Wait for a change, or for files still being written to settle,
        // or for a failed scan's retry.
        let Some(first) = next_event(&dir, &mut rx, &mut watched, retry).await else {
            return;
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
        tracing::debug!(renamed = renamed.len(), "rescanning the plugins directory");
        let pending = scan(&dir, &loader, &control, renamed, true, &announced).await;
        retry = match &pending {
            Some(files) if files.is_empty() => None,
            Some(files) => {
                tracing::debug!(?files, "waiting for files still being written");
                Some(STABLE_AGE)
            }
            // A scan that failed (out of file descriptors, the directory
            // gone for a moment) is retried: a deploy is never lost.
            None => Some(retry.map_or(STABLE_AGE, |d| (d * 2).min(SCAN_RETRY_MAX))),
        };
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
    let old_warnings: BTreeSet<_> = old.warnings().map(|e| (&e.file, &e.error)).collect();
    for w in new.warnings() {
        if !old_warnings.contains(&(&w.file, &w.error)) {
            tracing::warn!(file = %w.file, warning = %w.error, "will not serve");
        }
    }
    let old_errors: BTreeSet<_> = old.errors().map(|e| (&e.file, &e.error)).collect();
    for e in new.errors() {
        if !old_errors.contains(&(&e.file, &e.error)) {
            tracing::error!(file = %e.file, error = %e.error, "not loaded");
        }
    }
}
