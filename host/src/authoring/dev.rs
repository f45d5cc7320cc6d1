//! `wasmhost dev`: serve the plugins directory and rebuild a service when
//! its source is saved.
//!
//! Invariant: a save rebuilds only the service whose folder changed, and its
//! component reaches the plugins directory only when the build succeeded
//! (copy-then-rename, [`builder::build`]); the host's own watcher then swaps
//! it in as it would any dropped-in file, so requests in flight finish on the
//! build they started on, none is dropped, and key-value data (in the state
//! directory) is untouched. A failed build is shown and the last good build
//! keeps serving. Ctrl-C stops the host and the source watcher together.

use super::builder;
use super::sources::{self, Source};
use crate::config::ServeConfig;
use anyhow::{Context, Result};
use notify::Watcher as _;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Quiet time after the last save before a rebuild starts (an editor's
/// save is often several writes and a rename).
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// What `dev` tells the host to stop with.
pub type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Builds every source whose component is older than its files, then
/// serves (with `serve`: `wasmhost::run`) and rebuilds on each save until
/// Ctrl-C or SIGTERM.
pub async fn run<F, Fut>(mut config: ServeConfig, serve: F) -> Result<()>
where
    F: FnOnce(ServeConfig, Stop) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    // Nothing sits behind a load balancer here: stop at once.
    config.drain_delay = Duration::ZERO;
    let plugins = config.plugins_dir.clone();
    std::fs::create_dir_all(&plugins)
        .with_context(|| format!("cannot create the plugins directory {}", plugins.display()))?;
    let found = sources::discover(&plugins)?;
    for skipped in &found.skipped {
        eprintln!(
            "warning: {} is not built: {}",
            skipped.dir.display(),
            skipped.reason
        );
    }
    if found.sources.is_empty() {
        eprintln!(
            "no service sources under {} yet: `wasmhost new NAME --lang rust|python|js` makes one (it is picked up on save)",
            plugins.display()
        );
    }
    for source in found.sources {
        if source.is_built(&plugins) {
            eprintln!(
                "==> {} {} is up to date ({})",
                source.service,
                source.version,
                source.component_file(&plugins).display()
            );
        } else {
            build_one(source, &plugins).await;
        }
    }

    let (saves_tx, mut saves) = mpsc::unbounded_channel::<PathBuf>();
    let _watch = watch_sources(&plugins, saves_tx)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut host = tokio::spawn(serve(
        config,
        Box::pin(async move {
            let mut stop = stop_rx;
            let _ = stop.wait_for(|s| *s).await;
        }),
    ));
    eprintln!(
        "watching the service sources under {} (Ctrl-C stops)",
        plugins.display()
    );
    let signal = crate::shutdown::signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            done = &mut host => return done.context("the host stopped")?,
            Some(first) = saves.recv() => {
                let mut dirs = BTreeSet::from([first]);
                // Debounce: collect every folder saved until it is quiet.
                while let Ok(Some(dir)) = tokio::time::timeout(DEBOUNCE, saves.recv()).await {
                    dirs.insert(dir);
                }
                for dir in dirs {
                    match sources::source_of(&dir) {
                        Ok(Some(source)) => build_one(source, &plugins).await,
                        Ok(None) => {}
                        Err(e) => eprintln!("warning: {} is not built: {e:#}", dir.display()),
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    host.await.context("the host stopped")?
}

/// Builds one service off the async runtime and says how it went.
async fn build_one(source: Source, plugins: &Path) {
    eprintln!(
        "==> building {} {} ({}, {})",
        source.service,
        source.version,
        source.lang,
        source.dir.display()
    );
    let name = source.service.clone();
    let plugins = plugins.to_path_buf();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || builder::build(&source, &plugins)).await;
    match result {
        Ok(Ok(built)) => eprintln!(
            "    built {} in {:.1} s ({} KiB); the host swaps it in now",
            built.file.display(),
            built.took.as_secs_f64(),
            built.bytes / 1024
        ),
        Ok(Err(e)) => builder::report_failure(&name, &e, started.elapsed()),
        Err(e) => eprintln!("error: the build of {name} stopped: {e}"),
    }
}

/// Watches the plugins directory for saves in service folders and sends the
/// folder of each (never for build output, dependencies or components).
fn watch_sources(
    plugins: &Path,
    saves: mpsc::UnboundedSender<PathBuf>,
) -> Result<notify::RecommendedWatcher> {
    let root = plugins
        .canonicalize()
        .with_context(|| format!("cannot read {}", plugins.display()))?;
    let base = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            if let Some(dir) = service_dir(&base, path) {
                let _ = saves.send(dir);
            }
        }
    })
    .context("cannot watch the service sources")?;
    watcher
        .watch(&root, notify::RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", root.display()))?;
    Ok(watcher)
}

/// The service folder a changed `path` belongs to, if the change is to a
/// source: not a component or manifest at the top (the host's watcher loads
/// those), not build output (`target/`, `node_modules/`, `__pycache__/`),
/// lock files the tools rewrite, hidden files or editor backups.
fn service_dir(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or("."));
    let top = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let file = *rest.last()?;
    let ignored_dir =
        |p: &&str| p.starts_with('.') || matches!(*p, "target" | "node_modules" | "__pycache__");
    if ignored_dir(&top)
        || rest.iter().any(ignored_dir)
        || file.ends_with('~')
        || file.ends_with(".wasm")
        || matches!(file, "Cargo.lock" | "package-lock.json" | "4913")
    {
        return None;
    }
    Some(root.join(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_source_saves_trigger_a_build() {
        let root = Path::new("/p");
        let dir = |p: &str| service_dir(root, &root.join(p));
        assert_eq!(dir("hello/src/lib.rs"), Some(root.join("hello")));
        assert_eq!(dir("hello/app.py"), Some(root.join("hello")));
        assert_eq!(dir("hello/wit/plugin.wit"), Some(root.join("hello")));
        for ignored in [
            "hello@0.1.0.wasm",
            "hello.toml",
            ".hello.build.wasm",
            "hello/target/release/x.rlib",
            "hello/node_modules/a/index.js",
            "hello/__pycache__/app.cpython-311.pyc",
            "hello/Cargo.lock",
            "hello/.app.py.swp",
            "hello/app.py~",
            "hello/hello.wasm",
        ] {
            assert_eq!(dir(ignored), None, "{ignored}");
        }
    }
}
