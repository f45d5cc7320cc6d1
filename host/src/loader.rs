//! The loader: turns the files of the plugins directory into a [`Registry`].
//!
//! For each top-level `*.wasm` it reads the whole file, checks that it is a
//! regular file inside the directory and a WebAssembly *component* (not a
//! core module, not a precompiled artifact: bytes are only ever compiled,
//! never deserialized), hashes it, compiles it (through the engine's on-disk
//! cache), and pre-links it against the `wasmhost:plugin/service` world. A
//! file that fails any step becomes a [`LoadError`] with a one-line reason;
//! it never stops the other files from loading.

use crate::bindings::ServicePre;
use crate::capabilities::calls::{CallError, Calls, ServiceId};
use crate::capabilities::{self, HostState};
use crate::config::Limits;
use crate::instance::{classify, new_store, CpuLanes, Failure};
use crate::manifest::Manifest;
use crate::plugin::PluginName;
use crate::registry::{FileStamp, LoadError, Loading, Pre, Registry, Version};
use crate::release_state::ReleaseState;
use crate::sandbox::Sandbox;
use crate::store::Store;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Largest component accepted, in bytes.
pub const MAX_COMPONENT_SIZE: u64 = 64 * 1024 * 1024;

pub use crate::config::DEFAULT_COMPILE_TIMEOUT as COMPILE_TIMEOUT;

/// The WebAssembly magic number.
const MAGIC: &[u8; 4] = b"\0asm";
/// Version and layer of a core module (`01 00 00 00`).
const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
/// Layer field of a component (bytes 6–7 are `01 00`).
const COMPONENT_LAYER: [u8; 2] = [1, 0];

pub use crate::files::STABLE_AGE;

/// What a scan reports while it runs, so the control plane can list what
/// is compiling and serve each version as soon as it is ready.
pub enum Progress {
    /// These versions are still to compile in this scan.
    Loading(Vec<Loading>),
    /// The first version of a new service finished compiling: the snapshot
    /// as it was plus every new service loaded so far, and what is still to
    /// compile.
    Loaded {
        /// The interim snapshot.
        registry: Registry,
        /// Still to compile.
        loading: Vec<Loading>,
    },
}

/// The result of scanning the plugins directory.
pub struct Scan {
    /// The new snapshot.
    pub registry: Registry,
    /// Versions still compiling in the background (listed as loading).
    pub compiling: Vec<Loading>,
    /// Files deferred because they are still being written.
    pub pending: Vec<String>,
}

/// Compiles and pre-links components.
pub struct Loader {
    engine: Engine,
    linker: Linker<HostState>,
    defaults: Limits,
    outside_symlinks: bool,
    /// The store a trial instantiation writes to, when trials are on.
    kv: Option<Store>,
    /// Longest a component may take to compile.
    compile_timeout: Duration,
    /// CPU lanes of each version (0: none, requests of a version all run).
    cpu_lanes: usize,
    /// Checks the compiled-artifact cache before each compile.
    cache_guard: Option<Arc<crate::cache_guard::CacheGuard>>,
    /// Compiles left running by a scan, by content digest.
    background: std::sync::Mutex<std::collections::HashMap<String, Background>>,
    /// Content digests refused for their compile time: not compiled again
    /// until the file's bytes change (a compile bomb costs one timeout, not
    /// one per scan).
    too_slow: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How long a scan waits for a compile before leaving it to finish in the
/// background (the scan goes on; a later scan takes the result), so one slow
/// component never holds up every other change for its whole compile.
pub const FOREGROUND_COMPILE: Duration = Duration::from_secs(2);

/// The component is still compiling in the background; a later scan takes
/// the result.
#[derive(Debug, thiserror::Error)]
#[error("still compiling")]
pub struct StillCompiling {
    /// When its compile started.
    pub since: std::time::SystemTime,
}

/// A compile a scan left running: its result, when it comes, and when it
/// started (it is still bound by the compile timeout).
struct Background {
    rx: std::sync::mpsc::Receiver<wasmtime::Result<Component>>,
    started: std::time::Instant,
    /// The file and its stamp, so a rescan need not read it again.
    file: (PathBuf, Option<FileStamp>),
    size: u64,
}

/// Compilation was given up after the compile timeout.
#[derive(Debug, thiserror::Error)]
#[error("compilation took longer than {0:?}; the component is refused")]
pub struct CompileTimeout(pub Duration);

impl Loader {
    /// A loader for `engine`, with the host's full linker; `defaults` are
    /// the limits of a service whose manifest overrides none.
    pub fn new(engine: Engine, defaults: Limits) -> Result<Self> {
        let linker = capabilities::linker(&engine).context("failed to set up the linker")?;
        Ok(Self {
            engine,
            linker,
            defaults,
            outside_symlinks: false,
            kv: None,
            too_slow: Default::default(),
            compile_timeout: COMPILE_TIMEOUT,
            cache_guard: None,
            background: Default::default(),
            cpu_lanes: crate::instance::default_lanes(),
        })
    }

    /// Gives each version `n` CPU lanes (0: no lanes, see
    /// [`crate::instance::CpuLanes`]).
    pub fn cpu_lanes(mut self, n: usize) -> Self {
        self.cpu_lanes = n;
        self
    }

    /// Checks the cache's entries against their MACs before every compile
    /// and records the entries each compile writes.
    pub fn cache_guard(mut self, guard: Arc<crate::cache_guard::CacheGuard>) -> Self {
        self.cache_guard = Some(guard);
        self
    }

    /// Gives up a compile after `timeout` (default [`COMPILE_TIMEOUT`]).
    pub fn compile_timeout(mut self, timeout: Duration) -> Self {
        self.compile_timeout = timeout;
        self
    }

    /// Instantiates every version once, under its service's limits, before
    /// it may take traffic (see [`Loader::trial`]); `kv` is the store the
    /// instance sees (its start code runs with the service's own grants).
    pub fn trial_instantiation(mut self, kv: Store) -> Self {
        self.kv = Some(kv);
        self
    }

    /// Also loads symlinks whose target is outside the plugins directory
    /// (refused by default: whoever can write the directory would otherwise
    /// make the host read any file it can).
    pub fn follow_outside_symlinks(mut self, allow: bool) -> Self {
        self.outside_symlinks = allow;
        self
    }

    /// Loads every `*.wasm` at the top of `dir` and the manifests of their
    /// services. Only an unreadable directory is an error; a bad file is
    /// recorded in the registry's errors and skipped.
    ///
    /// `previous` is the snapshot being replaced: a file whose content and
    /// config did not change keeps its compiled version; a file that is still
    /// being written (modified less than [`STABLE_AGE`] ago) is deferred and
    /// listed in [`Scan::pending`]; a file that no longer loads keeps its last
    /// good build, and so does a service whose manifest became invalid.
    /// Files in `renamed` were just renamed into place and are loaded at once.
    /// `progress` hears which versions will compile, then each one that did.
    pub fn load_dir(
        &self,
        dir: &Path,
        previous: &Registry,
        release: &ReleaseState,
        renamed: &std::collections::HashSet<PathBuf>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Scan> {
        let canonical_dir = dir
            .canonicalize()
            .with_context(|| format!("plugins directory {} is not readable", dir.display()))?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("failed to list plugins directory {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        // Smallest first: a service compiled in milliseconds is served at
        // once instead of waiting behind a 20 s interpreter.
        files.sort_by_cached_key(|p| {
            (
                std::fs::metadata(p).map_or(u64::MAX, |m| m.len()),
                p.clone(),
            )
        });
        let ready = |path: &PathBuf| renamed.contains(path) || crate::files::is_settled(path);
        let mut loading = to_compile(dir, &files, previous, &ready, self.outside_symlinks);
        if !loading.is_empty() {
            progress(Progress::Loading(loading.clone()));
        }

        let mut versions = Vec::new();
        let mut errors = Vec::new();
        let mut pending = Vec::new();
        let mut manifests: BTreeMap<String, Manifest> = BTreeMap::new();
        let mut sandboxes: BTreeMap<String, Arc<Sandbox>> = BTreeMap::new();
        let mut bad_manifests = BTreeMap::new();
        let mut unsettled = std::collections::BTreeSet::new();
        let mut compiling: Vec<Loading> = Vec::new();
        for path in &files {
            let path = path.clone();
            let file = display_name(&path);
            let last_good = previous.version_from(&path);
            let name = match PluginName::from_path(&path) {
                Ok(name) => name,
                Err(e) => {
                    errors.push(LoadError {
                        file,
                        error: format!("{e:#}"),
                    });
                    continue;
                }
            };
            if !manifests.contains_key(&name.service) && !bad_manifests.contains_key(&name.service)
            {
                let origin = format!("{}.toml", name.service);
                // A manifest is settled like a component: one being rewritten
                // in place is not applied half-written; the service keeps
                // what it had (or waits, when it is new) until it settles.
                let manifest_path = Manifest::path(dir, &name.service);
                if !ready(&manifest_path) {
                    pending.push(origin);
                    // (Versions of a live service keep loading under the
                    // manifest they had.)
                    match last_good_manifest(previous, &name.service) {
                        Some((m, sandbox)) => {
                            manifests.insert(name.service.clone(), m);
                            sandboxes.insert(name.service.clone(), sandbox);
                        }
                        None => {
                            unsettled.insert(name.service.clone());
                            bad_manifests.insert(name.service.clone(), ());
                        }
                    }
                }
            }
            if !manifests.contains_key(&name.service) && !bad_manifests.contains_key(&name.service)
            {
                let origin = format!("{}.toml", name.service);
                let loaded =
                    Manifest::load(dir, &name.service, self.outside_symlinks).and_then(|m| {
                        let sandbox = Sandbox::resolve(&m, &self.defaults, dir, &origin)?;
                        Ok((m, sandbox))
                    });
                match loaded {
                    Ok((m, sandbox)) => {
                        manifests.insert(name.service.clone(), m);
                        sandboxes.insert(name.service.clone(), Arc::new(sandbox));
                    }
                    Err(e) => {
                        errors.push(LoadError {
                            file: origin,
                            error: format!("{e:#}"),
                        });
                        match last_good_manifest(previous, &name.service) {
                            Some((m, sandbox)) => {
                                manifests.insert(name.service.clone(), m);
                                sandboxes.insert(name.service.clone(), sandbox);
                            }
                            None => {
                                bad_manifests.insert(name.service.clone(), ());
                            }
                        }
                    }
                }
            }
            if unsettled.contains(&name.service) {
                pending.push(file);
                continue;
            }
            let Some(sandbox) = sandboxes.get(&name.service) else {
                errors.push(LoadError {
                    file,
                    error: format!("not loaded: the manifest {}.toml is invalid", name.service),
                });
                continue;
            };
            // A file renamed into place is complete (the documented way to
            // deploy); any other file must first stop changing — unless it
            // is exactly the file its version was loaded from.
            let unchanged = last_good
                .as_ref()
                .is_some_and(|v| v.stamp.is_some() && v.stamp == FileStamp::of(&path));
            if !unchanged && !ready(&path) {
                pending.push(file);
                versions.extend(last_good);
                continue;
            }
            let sandbox = sandbox.clone();
            let was_loading = loading.iter().position(|l| l.file == file);
            match self.load_file(&canonical_dir, &path, name, sandbox, last_good.as_ref()) {
                Ok(v) => {
                    let v_service = v.service.clone();
                    versions.push(v);
                    if let Some(at) = was_loading {
                        loading.remove(at);
                        started_now(&mut loading);
                    }
                    // A service with nothing loaded before is served at
                    // once, beside everything else as it was; a new version
                    // of a live service waits for the scan's end, where the
                    // release rules (canary, takeover) see it.
                    if was_loading.is_some() && previous.service(&v_service).is_none() {
                        let mut interim: Vec<Arc<Version>> = previous
                            .services()
                            .flat_map(|s| s.versions.iter().cloned())
                            .collect();
                        interim.extend(
                            versions
                                .iter()
                                .filter(|v| previous.service(&v.service).is_none())
                                .cloned(),
                        );
                        let mut interim_manifests: BTreeMap<String, Manifest> = previous
                            .services()
                            .filter_map(|s| {
                                Some((s.name.clone(), previous.manifest(&s.name)?.clone()))
                            })
                            .collect();
                        for v in &interim {
                            if let Some(m) = manifests.get(&*v.service) {
                                interim_manifests
                                    .entry(v.service.to_string())
                                    .or_insert_with(|| m.clone());
                            }
                        }
                        let registry = Registry::build(
                            interim,
                            interim_manifests,
                            previous.errors().cloned().collect(),
                            Some(previous),
                            release,
                        );
                        progress(Progress::Loaded {
                            registry,
                            loading: listed(&compiling, &loading),
                        });
                    } else if was_loading.is_some() {
                        progress(Progress::Loading(listed(&compiling, &loading)));
                    }
                }
                Err(e) if e.is::<StillCompiling>() => {
                    let since = e.downcast_ref::<StillCompiling>().map(|s| s.since);
                    // Left compiling: the version it replaces (if any) keeps
                    // serving, the file stays listed as loading, and a
                    // later scan takes the result.
                    pending.push(file.clone());
                    versions.extend(last_good);
                    if let Some(at) = was_loading {
                        let mut entry = loading.remove(at);
                        entry.since = since.unwrap_or(entry.since);
                        compiling.push(entry);
                        started_now(&mut loading);
                        progress(Progress::Loading(listed(&compiling, &loading)));
                    }
                }
                Err(e) => {
                    if let Some(at) = was_loading {
                        loading.remove(at);
                        started_now(&mut loading);
                        progress(Progress::Loading(listed(&compiling, &loading)));
                    }
                    let mut error = format!("{e:#}");
                    if let Some(good) = last_good {
                        error.push_str(&format!(
                            "; version {} keeps its last good build",
                            good.version
                        ));
                        versions.push(good);
                    }
                    errors.push(LoadError { file, error });
                }
            }
        }
        let registry = Registry::build(versions, manifests, errors, Some(previous), release);
        // A compile whose file was removed or rewritten since it started
        // is of no use: dropped (its thread finishes and its result is
        // freed), so nothing waits for it.
        if let Ok(mut background) = self.background.lock() {
            background.retain(|_, bg| {
                files.contains(&bg.file.0) && FileStamp::of(&bg.file.0) == bg.file.1
            });
        }
        Ok(Scan {
            registry,
            pending,
            compiling,
        })
    }

    /// Loads one component file as `name`; `last` is the version this file
    /// held before, kept (the same `Arc`) when neither its content nor its
    /// config changed.
    pub fn load_file(
        &self,
        dir: &Path,
        path: &Path,
        name: PluginName,
        sandbox: Arc<Sandbox>,
        last: Option<&Arc<Version>>,
    ) -> Result<Arc<Version>> {
        // Unchanged on disk since it was loaded, same name and sandbox: keep
        // it without reading and hashing the file again (a rescan must stay
        // fast beside tens of MB of interpreters).
        let stamp = FileStamp::of(path);
        if let Some(v) = last {
            if stamp.is_some()
                && v.stamp == stamp
                && v.sandbox == sandbox
                && name.version.as_deref().is_none_or(|n| *v.version == *n)
            {
                return Ok(v.clone());
            }
        }
        // A file still compiling in the background, unchanged since: its
        // digest is known, nothing is read again.
        let running = self.background.lock().ok().and_then(|b| {
            b.iter()
                .find(|(_, bg)| stamp.is_some() && bg.file == (path.to_path_buf(), stamp))
                .map(|(digest, bg)| (digest.clone(), bg.size))
        });
        let (bytes, digest, size) = match running {
            Some((digest, size)) => (None, digest, size),
            None => {
                let bytes = crate::files::read_regular(
                    dir,
                    path,
                    MAX_COMPONENT_SIZE,
                    self.outside_symlinks,
                )?;
                let digest = hex::encode(Sha256::digest(&bytes));
                let size = bytes.len() as u64;
                (Some(bytes), digest, size)
            }
        };
        let version = name
            .version
            .clone()
            .unwrap_or_else(|| digest[..12].to_string());
        let (metrics, pinned_metrics, outlier, counters, deliveries) = match last {
            Some(v) if *v.version == *version => (
                v.metrics.clone(),
                v.pinned_metrics.clone(),
                v.outlier.clone(),
                v.counters.clone(),
                v.deliveries.clone(),
            ),
            _ => Default::default(),
        };
        let pre = match last {
            Some(v) if v.digest == digest && *v.version == *version => {
                if v.sandbox == sandbox {
                    return Ok(v.clone());
                }
                v.pre.clone()
            }
            _ => {
                if self.too_slow.lock().is_ok_and(|s| s.contains(&digest)) {
                    bail!(
                        "{} (not compiled again until the file changes)",
                        CompileTimeout(self.compile_timeout)
                    );
                }
                match self.compile_in_scan(&digest, bytes, (path.to_path_buf(), stamp), size) {
                    Ok(pre) => pre,
                    Err(e) => {
                        if e.is::<CompileTimeout>() {
                            if let Ok(mut s) = self.too_slow.lock() {
                                s.insert(digest);
                            }
                        }
                        return Err(e);
                    }
                }
            }
        };
        let id = ServiceId {
            service: name.service.as_str().into(),
            version: version.as_str().into(),
        };
        let subscriber = matches!(&pre, Pre::Plugin(p) if p.subscriber.is_some())
            || matches!(&pre, Pre::Messaging(_));
        if sandbox.subscribes && !subscriber {
            bail!(
                "{}.toml subscribes to topics, but this component exports no `wasmhost:plugin/subscriber@0.2.0` (build it for the `subscriber-service` world of wit/v0.2) and no `wasi:messaging/incoming-handler` (run in a component that exports no HTTP handler)",
                id.service
            );
        }
        self.trial(&pre, id, &sandbox)?;
        Ok(Arc::new(Version {
            service: name.service.into(),
            version: version.into(),
            digest,
            file: path.to_path_buf(),
            size,
            stamp,
            pre,
            sandbox,
            metrics,
            pinned_metrics,
            lanes: (self.cpu_lanes > 0).then(|| CpuLanes::new(self.cpu_lanes)),
            idle: Arc::default(),
            outlier,
            counters,
            deliveries,
        }))
    }

    /// Starts compiling `bytes` on a thread of its own.
    fn start_compile(
        &self,
        bytes: Vec<u8>,
    ) -> Result<std::sync::mpsc::Receiver<wasmtime::Result<Component>>> {
        check_header(&bytes)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = self.engine.clone();
        let guard = self.cache_guard.clone();
        if let Some(guard) = &guard {
            guard.check();
        }
        std::thread::Builder::new()
            .name("wasmhost-compile".into())
            .spawn(move || {
                // Its serial parts (parsing, validation, linking) yield to
                // requests too, like the pool's threads.
                crate::engine::lower_priority();
                let compiled = Component::from_binary(&engine, &bytes);
                if let Some(guard) = guard {
                    guard.record();
                }
                let _ = tx.send(compiled);
            })
            .context("cannot start a compile thread")?;
        Ok(rx)
    }

    /// Compiles for a scan: a new compile is waited for at most
    /// [`FOREGROUND_COMPILE`], then left running ([`StillCompiling`]); one
    /// already running is only looked at. Either way the compile timeout
    /// counts from its start. `bytes` is `None` when the compile of
    /// `digest` is already running.
    fn compile_in_scan(
        &self,
        digest: &str,
        bytes: Option<Vec<u8>>,
        file: (PathBuf, Option<FileStamp>),
        size: u64,
    ) -> Result<Pre> {
        let running = self
            .background
            .lock()
            .ok()
            .and_then(|mut b| b.remove(digest));
        let (rx, started, wait) = match (running, bytes) {
            (Some(bg), _) => (bg.rx, bg.started, Duration::ZERO),
            (None, Some(bytes)) => (
                self.start_compile(bytes)?,
                std::time::Instant::now(),
                FOREGROUND_COMPILE.min(self.compile_timeout),
            ),
            (None, None) => {
                bail!("the compile of this file was lost; it is compiled again at the next change")
            }
        };
        let compiled = match rx.recv_timeout(wait) {
            Ok(compiled) => compiled,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if started.elapsed() >= self.compile_timeout {
                    return Err(CompileTimeout(self.compile_timeout).into());
                }
                if let Ok(mut b) = self.background.lock() {
                    b.insert(
                        digest.to_string(),
                        Background {
                            rx,
                            started,
                            file,
                            size,
                        },
                    );
                }
                let since = std::time::SystemTime::now()
                    .checked_sub(started.elapsed())
                    .unwrap_or_else(std::time::SystemTime::now);
                return Err(StillCompiling { since }.into());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the compiler stopped without a result")
            }
        };
        self.link(compiled.map_err(invalid)?)
    }

    /// Whether a compile is running in the background.
    pub fn is_compiling(&self) -> bool {
        self.background.lock().is_ok_and(|b| !b.is_empty())
    }

    /// Checks a compiled component against the worlds and pre-links it.
    fn link(&self, component: Component) -> Result<Pre> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_http = exports
            .iter()
            .any(|name| name.starts_with("wasi:http/incoming-handler@0.2"));
        let plugin_v2 = exports
            .iter()
            .any(|name| name == "wasmhost:plugin/handler@0.2.0");
        let wasi_messaging = exports
            .iter()
            .any(|name| name.starts_with("wasi:messaging/incoming-handler@0.2.0-draft"));
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "component imports something the host does not provide: {}",
                first_line(&format!("{e:#}"))
            )
        })?;
        if plugin_v2 {
            use crate::bindings::v2::exports::wasmhost::plugin::{handler, subscriber};
            let wrong = |e: wasmtime::Error| {
                anyhow::anyhow!(
                    "component does not implement the wasmhost:plugin@0.2.0 service world: {}",
                    first_line(&format!("{e:#}"))
                )
            };
            let handler = handler::GuestIndices::new(&pre).map_err(wrong)?;
            let subscriber = exports
                .iter()
                .any(|name| name == "wasmhost:plugin/subscriber@0.2.0")
                .then(|| subscriber::GuestIndices::new(&pre))
                .transpose()
                .map_err(wrong)?;
            return Ok(Pre::Plugin(Arc::new(crate::registry::PluginPre {
                pre,
                handler,
                subscriber,
            })));
        }
        if wasi_messaging && !exports_http {
            use crate::bindings::wasi_messaging::exports::wasi::messaging::incoming_handler;
            let handler = incoming_handler::GuestIndices::new(&pre).map_err(|e| {
                anyhow::anyhow!(
                    "component does not implement wasi:messaging/incoming-handler@0.2.0-draft: {}",
                    first_line(&format!("{e:#}"))
                )
            })?;
            return Ok(Pre::Messaging(Arc::new(crate::registry::MessagingPre {
                pre,
                handler,
            })));
        }
        if exports_http {
            return ProxyPre::new(pre).map(Pre::Proxy).map_err(|e| {
                anyhow::anyhow!(
                    "component does not implement the wasi:http/proxy world: {}",
                    first_line(&format!("{e:#}"))
                )
            });
        }
        ServicePre::new(pre).map(Pre::Service).map_err(|e| {
            anyhow::anyhow!(
                "component does not implement the wasmhost:plugin/service world (it must export `wasmhost:plugin/handler@0.1.0`, or `wasi:http/incoming-handler` for a wasi:http component): {}",
                first_line(&format!("{e:#}"))
            )
        })
    }
}

impl Loader {
    /// Instantiates `pre` once as `id` under `sandbox` (memory, CPU time,
    /// timeout), so a version that can never run — initial memory above its
    /// limit, a start function that loops or traps — is a load error instead
    /// of a live version failing every request. Its start code may use the
    /// service's key-value store; calls to other services are refused.
    fn trial(&self, pre: &Pre, id: ServiceId, sandbox: &Arc<Sandbox>) -> Result<()> {
        let Some(kv) = &self.kv else {
            return Ok(());
        };
        let limits = &sandbox.limits;
        let state = HostState::new(
            id,
            sandbox.clone(),
            kv.clone(),
            Arc::new(NoCalls),
            "load-trial".into(),
            0,
        )?;
        let mut store = new_store(&self.engine, state, limits.cpu_time, None);
        let run = async {
            match pre {
                Pre::Proxy(pre) => pre.instantiate_async(&mut store).await.map(drop),
                Pre::Messaging(m) => m.pre.instantiate_async(&mut store).await.map(drop),
                service => match service.instantiate_handler(&mut store).await {
                    Some(instantiated) => instantiated.map(drop),
                    None => Ok(()),
                },
            }
            .map_err(|e| classify(e, limits))
        };
        let outcome = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(tokio::time::timeout(limits.timeout, run)),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .context("cannot start a runtime for the trial instantiation")?
                .block_on(tokio::time::timeout(limits.timeout, run)),
        };
        let failure = match outcome {
            Ok(Ok(())) => return Ok(()),
            // Initial memory above the limit is refused before any code runs.
            Ok(Err(_)) if store.data().limiter.memory_exhausted => {
                Failure::OutOfMemory(limits.max_memory)
            }
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Timeout(limits.timeout),
        };
        bail!("the component cannot start under its limits, so it is not served: {failure}")
    }
}

/// Service calls during a trial instantiation: there is no request to call
/// on behalf of.
struct NoCalls;

impl Calls for NoCalls {
    fn call(
        &self,
        callee: String,
        _req: crate::bindings::Request,
        _depth: u32,
    ) -> futures::future::BoxFuture<'static, Result<crate::bindings::Response, CallError>> {
        Box::pin(async move {
            Err(CallError::Failed(format!(
                "`{callee}` cannot be called while a version is instantiated at load"
            )))
        })
    }
}

/// Checks the WebAssembly header: a component, not a core module or
/// something else entirely.
pub fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        bail!("file is empty");
    }
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        bail!("not a WebAssembly file (no `\\0asm` header)");
    }
    if bytes[4..8] == CORE_MODULE {
        bail!(
            "this is a core WebAssembly module, not a component: build with `--target wasm32-wasip2` or wrap it with `wasm-tools component new`"
        );
    }
    if bytes[6..8] != COMPONENT_LAYER {
        bail!("unsupported WebAssembly binary (unknown version or layer)");
    }
    Ok(())
}

/// The next compile starts now: its time counts from here (the others
/// wait their turn, in order).
fn started_now(loading: &mut [Loading]) {
    if let Some(next) = loading.first_mut() {
        next.since = std::time::SystemTime::now();
    }
}

/// The files of this scan that will be read and compiled (new, or changed
/// on disk since their version was loaded), as the admin API lists them.
fn to_compile(
    dir: &Path,
    files: &[PathBuf],
    previous: &Registry,
    ready: &dyn Fn(&PathBuf) -> bool,
    follow_outside: bool,
) -> Vec<Loading> {
    let since = std::time::SystemTime::now();
    files
        .iter()
        .filter(|path| ready(path))
        .filter(|path| {
            previous
                .version_from(path)
                .is_none_or(|v| v.stamp.is_none() || v.stamp != FileStamp::of(path))
        })
        .filter_map(|path| {
            let name = PluginName::from_path(path).ok()?;
            let routes = Manifest::load(dir, &name.service, follow_outside)
                .map(|m| m.routes_for(&name.service))
                .unwrap_or_default();
            Some(Loading {
                service: name.service,
                version: name.version,
                file: display_name(path),
                routes,
                since,
            })
        })
        .collect()
}

/// The manifest `service` was served with in `previous`, and its sandbox:
/// what it keeps while its manifest is unsettled or invalid.
fn last_good_manifest(previous: &Registry, service: &str) -> Option<(Manifest, Arc<Sandbox>)> {
    let sandbox = previous.service(service)?.versions.first()?.sandbox.clone();
    Some((previous.manifest(service)?.clone(), sandbox))
}

/// What a scan lists as loading: the compiles left running, then the files
/// still to compile.
fn listed(compiling: &[Loading], loading: &[Loading]) -> Vec<Loading> {
    compiling.iter().chain(loading).cloned().collect()
}

/// A compile error, as a load error says it.
fn invalid(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("invalid component: {}", first_line(&format!("{e:#}")))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_explain_themselves() {
        let err = |b: &[u8]| check_header(b).unwrap_err().to_string();
        assert!(err(b"").contains("empty"));
        assert!(err(b"\x7fELF\x02\x01\x01\x00rest").contains("not a WebAssembly file"));
        assert!(err(b"\0asm\x01\0\0\0").contains("core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
