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
pub mod authoring;
mod bindings;
pub mod bus;
pub mod cache_guard;
pub mod canary;
mod capabilities;
pub mod client;
pub mod cluster_metrics;
pub mod config;
pub mod contract;
pub mod control;
pub mod delivery;
pub mod dispatch;
pub mod ejections;
pub mod engine;
pub mod error;
pub mod files;
pub mod front;
pub mod function_cache;
pub mod health;
mod host;
pub mod instance;
pub mod kv;
pub mod kv_transfer;
pub mod loader;
pub mod logbook;
pub mod manifest;
pub mod messages;
pub mod metrics;
pub mod nats_log;
pub mod oci_ref;
pub mod oci_source;
pub mod plugin;
pub mod proxy;
pub mod redis_kv;
pub mod registry;
pub mod release;
pub mod release_follower;
pub mod release_state;
pub mod resilience;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod shared_release;
pub mod shutdown;
pub mod spec;
pub mod status;
pub mod store;
pub mod timeline;
pub mod topics_api;
pub mod traces;
pub mod views;
pub mod watcher;

pub use config::ServeConfig;
pub use host::{Host, HostBuilder};
pub use manifest::Manifest;

use anyhow::{Context, Result};
use std::future::Future;
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
    let mut http = config.http.clone();
    // The soft fd limit is often 1024: raise it, and keep the connection cap
    // inside it, so a connection flood cannot take the fds a rescan needs.
    let (cap, fd_limit) = config::fit_to_fd_limit(http.max_connections);
    if cap < http.max_connections {
        tracing::warn!(
            wanted = http.max_connections,
            cap,
            fd_limit,
            "the open-file limit leaves room for fewer connections; raise `ulimit -n` for more"
        );
    }
    http.max_connections = cap;
    tracing::debug!(fd_limit, max_connections = cap, "connection cap");
    let (sources, interval) = (config.sources.clone(), config.source_interval);
    let host = Host::builder().config(config).build()?;
    host.check_store().await?;
    // The registry's versions are in the plugins directory before the first
    // scan; a registry that does not answer holds nothing up.
    let _sources = if sources.is_empty() {
        None
    } else {
        let mut follower = oci_source::Follower::new(sources, host.plugins_dir().to_path_buf());
        follower.look().await;
        Some(tokio::spawn(follower.run(interval)))
    };
    let token = admin::token(host.state_dir())?;
    let cluster = host.control().cluster().cloned();
    let flusher = cluster
        .clone()
        .map(|c| tokio::spawn(canary::flusher(host.control().clone(), c)));
    let analyst = tokio::spawn(canary::analyst(host.control().clone(), cluster.clone()));
    let sampler = tokio::spawn(admin::ui::sampler(
        host.control().clone(),
        host.timeline().clone(),
    ));
    let delivery = tokio::spawn(delivery::run(host.dispatcher().clone()));
    let follower = host
        .control()
        .shared()
        .cloned()
        .map(|shared| tokio::spawn(release_follower::follow(host.control().clone(), shared)));
    let ejections = host
        .dispatcher()
        .take_ejections()
        .map(|notices| tokio::spawn(ejections::recorder(host.control().clone(), notices)));

    let token_hint = if std::env::var_os("WASMHOST_ADMIN_TOKEN").is_some() {
        "from WASMHOST_ADMIN_TOKEN".to_string()
    } else {
        format!("in {}", host.state_dir().join("admin-token").display())
    };
    tracing::info!(token = %token_hint, "admin API on http://{admin_addr}");
    tracing::info!("release dashboard on http://{admin_addr}/ui (log in with the admin token)");
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        host.admin(&token),
        config::HttpLimits::admin(),
        std::future::pending(),
        Duration::ZERO,
    ));
    tracing::info!(
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on http://{addr}"
    );
    // The first scan runs in the watcher: each service is served as soon as
    // its version has compiled, and the log says `ready` once all have.
    let _watcher = watcher::spawn(
        host.plugins_dir().to_path_buf(),
        host.loader().clone(),
        host.control().clone(),
    )?;

    // A drain (the signal, or `POST /admin/drain`) turns ready to 503 at
    // once; the host keeps serving for the drain delay so load balancers
    // notice, then stops accepting and finishes what is in flight.
    let health = host.control().health().clone();
    let drain_delay = host.config().drain_delay;
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = health.drain_requested() => {}
        }
        health.start_drain();
        tracing::info!(
            delay_ms = drain_delay.as_millis() as u64,
            "draining: ready answers 503; serving until the delay ends (a second Ctrl-C or SIGTERM stops now)"
        );
        tokio::select! {
            () = tokio::time::sleep(drain_delay) => {}
            () = shutdown::signal() => tracing::info!("stopping without waiting for the drain delay"),
        }
    };
    server::serve(listener, host.front(), http, stop, DRAIN_TIMEOUT).await?;
    admin_task.abort();
    analyst.abort();
    sampler.abort();
    delivery.abort();
    for task in [follower, flusher].into_iter().flatten() {
        task.abort();
    }
    if let Some(task) = ejections {
        task.abort();
    }
    if let Some(cluster) = &cluster {
        // The others count one replica fewer at once, not after its
        // report goes stale.
        if let Err(error) = cluster.leave().await {
            tracing::debug!(error = %format!("{error:#}"), "could not withdraw this replica's report");
        }
    }
    tracing::info!("stopped");
    Ok(())
}
