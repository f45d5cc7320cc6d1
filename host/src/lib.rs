//! wasmhost: a WebAssembly component host for HTTP microservices.
//!
//! Services are Wasm components that target the `wasmhost:plugin/service`
//! world (see `wit/`). The host loads every `NAME@VERSION.wasm` in its plugins
//! directory, routes HTTP requests to them by path prefix, and runs each
//! request in a sandboxed instance (a fresh one, unless the service opts
//! into reuse).
//!
//! Layers, each importing only its own or a lower one (checked by
//! `tests/layers.rs`): data (`spec`, `config`, `release`, `release_state`,
//! `metrics`, `kv`), the Wasm runtime (`engine`, `sandbox`, `capabilities`,
//! `instance`, `contract`), loaded code (`registry`, `loader`), the request
//! path (`dispatch`, `proxy`, `error`), and the edges (`control` — the only
//! writer of what is served — `watcher`, `canary`, `front`, `server`,
//! `admin`, `client`).
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
pub mod contract;
pub mod control;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod front;
pub mod instance;
pub mod kv;
pub mod loader;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod registry;
pub mod release;
pub mod release_state;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod shutdown;
pub mod spec;
pub mod status;
pub mod views;
pub mod watcher;

pub use config::{Manifest, ServeConfig};

use anyhow::{Context, Result};
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long in-flight requests may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let kv = kv::KvStore::open(&state_dir.join("kv.redb"))?;
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
    let release = release_state::ReleaseState::load(&state_dir)?;
    // Absolute, so the watcher's paths and the scan's paths are the same
    // (a file renamed into place is recognised as such and loaded at once).
    let plugins_dir = config
        .plugins_dir
        .canonicalize()
        .unwrap_or_else(|_| config.plugins_dir.clone());
    let control = Arc::new(control::Control::new(
        registry::Registry::default(),
        release,
        state_dir.clone(),
    ));
    let dispatcher = dispatch::Dispatcher::new(engine, control.handle(), kv);
    let analyst = tokio::spawn(canary::analyst(control.clone()));

    let token_hint = if std::env::var_os("WASMHOST_ADMIN_TOKEN").is_some() {
        "from WASMHOST_ADMIN_TOKEN".to_string()
    } else {
        format!("in {}", state_dir.join("admin-token").display())
    };
    tracing::info!(token = %token_hint, "admin API on http://{admin_addr}");
    let admin_server = axum::serve(admin_listener, admin::app(control.clone(), &token));
    let admin_task = tokio::spawn(admin_server.into_future());
    tracing::info!(
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on http://{addr}"
    );
    // The first scan runs in the watcher: each service is served as soon as
    // its version has compiled, and the log says `ready` once all have.
    let _watcher = watcher::spawn(plugins_dir, loader, control.clone())?;

    server::serve(
        listener,
        front::app(dispatcher, config.http.body_timeout),
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
