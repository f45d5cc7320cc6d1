//! wasmhost: a WebAssembly component host for HTTP microservices.
//!
//! Services are Wasm components that target the `wasmhost:plugin/service`
//! world (see `wit/`). The host loads every `NAME@VERSION.wasm` in its plugins
//! directory, routes HTTP requests to them by path prefix, and runs each
//! request in a fresh, sandboxed instance.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = wasmhost::ServeConfig::default();
//! wasmhost::run(config, wasmhost::shutdown::signal()).await
//! # }
//! ```

pub mod admin;
mod bindings;
pub mod canary;
mod capabilities;
pub mod client;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod registry;
pub mod release;
pub mod rollout;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod watcher;

pub use config::{Manifest, ServeConfig};

use anyhow::{Context, Result};
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Scans the plugins directory at start, waiting (bounded) for files that
/// are still being written.
async fn initial_scan(
    loader: &Arc<loader::Loader>,
    dir: &std::path::Path,
    release: &rollout::ReleaseState,
) -> Result<registry::Registry> {
    let mut registry = registry::Registry::default();
    for _ in 0..20 {
        let (l, d, prev, rel) = (loader.clone(), dir.to_path_buf(), registry, release.clone());
        let scan =
            tokio::task::spawn_blocking(move || l.load_dir(&d, &prev, &rel, &Default::default()))
                .await
                .context("the loader thread failed")??;
        registry = scan.registry;
        if scan.pending.is_empty() {
            break;
        }
        tokio::time::sleep(loader::STABLE_AGE).await;
    }
    Ok(registry)
}

/// Loads the plugins directory and serves it until `shutdown` resolves, then
/// finishes the requests in flight (for at most [`DRAIN_TIMEOUT`]).
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "failed to create state directory {}",
            config.state_dir.display()
        )
    })?;
    // wasmtime's cache wants an absolute path.
    let state_dir = config.state_dir.canonicalize().with_context(|| {
        format!(
            "failed to resolve state directory {}",
            config.state_dir.display()
        )
    })?;
    let kv = store::KvStore::open(&state_dir.join("kv.redb"))?;
    // Bind before loading, so a taken port fails at once, not after compiling.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("failed to read the listening address")?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("failed to listen on {} (admin API)", config.admin_listen))?;
    let admin_addr = admin_listener
        .local_addr()
        .context("failed to read the admin listening address")?;
    let token = admin::token(&state_dir)?;
    engine::limit_compile_threads();
    let cache_dir = match &config.cache_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create cache directory {}", dir.display()))?;
            dir.canonicalize()
                .with_context(|| format!("failed to resolve cache directory {}", dir.display()))?
        }
        None => state_dir.join("cache"),
    };
    let engine = engine::build(&config.limits, &cache_dir)?;
    engine::start_epoch_ticker(&engine)?;

    let loader = Arc::new(
        loader::Loader::new(engine.clone(), config.limits.clone())?
            .follow_outside_symlinks(config.follow_symlinks),
    );
    let release = rollout::ReleaseState::load(&state_dir)?;
    // Absolute, so the watcher's paths and the scan's paths are the same
    // (a file renamed into place is recognised as such and loaded at once).
    let plugins_dir = config
        .plugins_dir
        .canonicalize()
        .unwrap_or_else(|_| config.plugins_dir.clone());
    let registry = initial_scan(&loader, &plugins_dir, &release).await?;
    status::log_registry(&registry, &plugins_dir);
    let dispatcher = dispatch::Dispatcher::new(
        engine,
        registry,
        kv,
        config.limits.clone(),
        release,
        state_dir.clone(),
    );
    let analyst = tokio::spawn(canary::analyst(dispatcher.clone()));
    let _watcher = watcher::spawn(plugins_dir, loader, dispatcher.clone())?;

    let token_hint = if std::env::var_os("WASMHOST_ADMIN_TOKEN").is_some() {
        "from WASMHOST_ADMIN_TOKEN".to_string()
    } else {
        format!("in {}", state_dir.join("admin-token").display())
    };
    tracing::info!("admin API on http://{admin_addr} (bearer token {token_hint})");
    let admin_server = axum::serve(admin_listener, admin::app(dispatcher.clone(), &token));
    let admin_task = tokio::spawn(admin_server.into_future());
    tracing::info!(
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on http://{addr}"
    );

    server::serve(
        listener,
        http::app(dispatcher, config.http.body_timeout),
        config.http.clone(),
        shutdown,
        DRAIN_TIMEOUT,
    )
    .await?;
    admin_task.abort();
    analyst.abort();
    tracing::info!("stopped");
    Ok(())
}
