//! The host assembled: state directory, key-value store, engine, loader,
//! control plane and dispatcher, from a [`ServeConfig`]. [`crate::run`]
//! serves it on real listeners; tests and benchmarks drive it in-process
//! through its two axum apps (`front` and `admin`) with `oneshot`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let host = wasmhost::Host::builder().plugins("plugins").state(".wasmhost").build()?;
//! host.load().await?; // one scan, every file taken as complete
//! let front = host.front(); // an axum::Router serving the services
//! # Ok(()) }
//! ```

use crate::config::ServeConfig;
use crate::control::{Change, Control, ScanDone};
use crate::dispatch::Dispatcher;
use crate::loader::Loader;
use crate::release_state::ReleaseState;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Builds a [`Host`].
#[derive(Debug, Clone, Default)]
pub struct HostBuilder {
    config: ServeConfig,
}

impl HostBuilder {
    /// Every option at once (as `wasmhost serve` parses them).
    pub fn config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// The plugins directory.
    pub fn plugins(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.plugins_dir = dir.into();
        self
    }

    /// The state directory.
    pub fn state(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = dir.into();
        self
    }

    /// Where compiled artifacts are cached (default: `STATE/cache`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cache_dir = Some(dir.into());
        self
    }

    /// Opens the state, builds the engine and the control plane; loads
    /// nothing yet (see [`Host::load`], or the watcher).
    pub fn build(self) -> Result<Host> {
        let config = self.config;
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
        let kv = crate::kv::KvStore::open(&state_dir.join("kv.redb"))?;
        let store = match &config.cluster {
            Some(url) => crate::store::Store::Redis(crate::redis_kv::RedisKv::open(url)?),
            None => crate::store::Store::Embedded(kv.clone()),
        };
        crate::engine::size_compile_pool();
        let cache_dir = match &config.cache_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("failed to create cache directory {}", dir.display())
                })?;
                dir.canonicalize().with_context(|| {
                    format!("failed to resolve cache directory {}", dir.display())
                })?
            }
            None => state_dir.join("cache"),
        };
        let guard = Arc::new(crate::cache_guard::CacheGuard::open(&cache_dir)?);
        let reset = crate::engine::MemoryReset::detect(config.memory_reset);
        let engine = crate::engine::build(
            &config.limits,
            &cache_dir,
            &reset,
            config.incremental_compile,
        )?;
        crate::engine::start_epoch_ticker(&engine)?;
        let loader = Arc::new(
            Loader::new(engine.clone(), config.limits.clone())?
                .follow_outside_symlinks(config.follow_symlinks)
                .trial_instantiation(store.clone())
                .compile_timeout(config.compile_timeout)
                .cache_guard(guard)
                .cpu_lanes(
                    config
                        .cpu_lanes
                        .unwrap_or_else(crate::instance::default_lanes),
                ),
        );
        let release = ReleaseState::load(&state_dir)?;
        // Absolute, so the watcher's paths and the scan's paths are the same
        // (a file renamed into place is recognised as such and loaded at once).
        let plugins_dir = config
            .plugins_dir
            .canonicalize()
            .unwrap_or_else(|_| config.plugins_dir.clone());
        let mut control = Control::new(
            crate::registry::Registry::default(),
            release,
            state_dir.clone(),
        );
        if let crate::store::Store::Redis(redis) = &store {
            control = control
                .with_shared(crate::shared_release::SharedRelease::new(redis.clone()))
                .with_cluster(crate::cluster_metrics::ClusterMetrics::new(redis.clone()));
        }
        let control = Arc::new(control);
        let bus = match &config.messaging {
            Some(url) => crate::bus::Bus::Nats(crate::nats_log::NatsLog::new(url)?),
            None => crate::bus::Bus::Embedded(kv.clone()),
        };
        let dispatcher = Dispatcher::new(engine, control.handle(), kv, store, bus);
        Ok(Host {
            config,
            state_dir,
            plugins_dir,
            loader,
            control,
            dispatcher,
            timeline: Arc::default(),
        })
    }
}

/// A host, ready to load and serve.
pub struct Host {
    config: ServeConfig,
    state_dir: PathBuf,
    plugins_dir: PathBuf,
    loader: Arc<Loader>,
    control: Arc<Control>,
    dispatcher: Arc<Dispatcher>,
    timeline: Arc<crate::timeline::Timeline>,
}

impl Host {
    /// A builder with the defaults of `wasmhost serve`.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Scans the plugins directory, every file taken as complete, and
    /// serves what loaded once no compile is left running (the watcher does
    /// this itself when serving).
    pub async fn load(&self) -> Result<()> {
        loop {
            let (loader, dir, control) = (
                self.loader.clone(),
                self.plugins_dir.clone(),
                self.control.clone(),
            );
            let turn = self.control.scan_turn().await;
            let base = control.snapshot();
            let scan = tokio::task::spawn_blocking(move || {
                let files = std::fs::read_dir(&dir)
                    .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                    .unwrap_or_default();
                let now = control.snapshot();
                loader.load_dir(&dir, &now.registry, &now.release, &files, &mut |_| {})
            })
            .await
            .context("the loader thread failed")??;
            let change = Change::Rescan {
                registry: scan.registry,
                loading: scan.compiling,
                done: Some(ScanDone {
                    base,
                    complete: scan.pending.is_empty(),
                }),
            };
            self.control
                .apply(change)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if !self.loader.is_compiling() {
                self.control.health().mark_scanned();
                return Ok(());
            }
            drop(turn);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Checks that the services' key-value store answers: on the cluster's
    /// Redis, a wrong address or a server that is down stops the start with
    /// an error naming it, instead of failing every request later. On a
    /// cluster it then takes up the cluster's release document.
    pub async fn check_store(&self) -> Result<()> {
        if let crate::store::Store::Redis(redis) = self.dispatcher.store() {
            redis.ping().await.with_context(|| {
                format!(
                    "cannot start as a cluster replica: the Redis at {} does not answer (is it running? is --cluster right?)",
                    redis.addr()
                )
            })?;
            tracing::info!(redis = %redis.addr(), "key-value data on the cluster's Redis, shared by every replica");
        }
        if let crate::bus::Bus::Nats(nats) = self.dispatcher.bus() {
            nats.check().await.with_context(|| {
                format!(
                    "cannot start: the message broker at {} does not answer (is nats-server running with JetStream, -js? is --messaging right?)",
                    nats.redacted()
                )
            })?;
            tracing::info!(nats = %nats.redacted(), "messages on the cluster's NATS JetStream, one consumer per group shared by every replica");
        }
        if let Some(shared) = self.control.shared() {
            crate::release_follower::join(&self.control, shared)
                .await
                .context("cannot read the cluster's release document")?;
        }
        if let Some(cluster) = self.control.cluster() {
            // Before the first scan: a version another replica lacks is
            // held from the moment it loads.
            crate::canary::hold_for_replicas(&self.control, cluster).await;
        }
        Ok(())
    }

    /// The app serving the services (plugin traffic).
    pub fn front(&self) -> axum::Router {
        crate::front::app(
            self.dispatcher.clone(),
            crate::front::FrontOptions {
                body_timeout: self.config.http.body_timeout,
                pin_token: self.config.pin_token.as_deref().map(Arc::from),
                health: self.control.health().clone(),
            },
        )
    }

    /// The admin API, every call requiring `token`.
    pub fn admin(&self, token: &str) -> axum::Router {
        crate::admin::app(
            self.control.clone(),
            self.dispatcher.clone(),
            token,
            self.timeline.clone(),
        )
    }

    /// Each version's recent traffic, as the dashboard charts it.
    pub fn timeline(&self) -> &Arc<crate::timeline::Timeline> {
        &self.timeline
    }

    /// The control plane.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// The options it was built with.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The plugins directory, resolved.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// The loader (for the watcher).
    pub fn loader(&self) -> &Arc<Loader> {
        &self.loader
    }
}
