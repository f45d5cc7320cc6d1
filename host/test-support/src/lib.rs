//! Test support for wasmhost: the guest components, built once per test
//! build by `build.rs`, and [`TestHost`], a real `wasmhost serve` process on
//! an ephemeral port that owns its plugins and state directories:
//!
//! ```ignore
//! let host = TestHost::examples().add(PROBE, "probe@0.1.0.wasm").start();
//! host.get("/users").expect_status(200);
//! let user: ServiceView = host.view("/admin/services/user");
//! ```
//!
//! Every wait here is bounded; a timeout panics with what was expected and
//! the host's log so far.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/components.rs"));

pub mod servers;

/// The admin token every test host uses.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a host may take to start listening (the first one compiles the
/// Python and JavaScript services, tens of MB, into the shared cache).
pub const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A directory laid out like a plugins directory.
pub struct Plugins {
    dir: tempfile::TempDir,
}

impl Default for Plugins {
    fn default() -> Self {
        Self::new()
    }
}

impl Plugins {
    /// An empty plugins directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create plugins dir"),
        }
    }

    /// The example services with their manifests, as `make plugins` lays them out.
    pub fn examples() -> Self {
        let p = Self::new();
        p.add(USER, "user@1.0.0.wasm")
            .add(ORDER, "order@1.0.0.wasm")
            .add(INVENTORY, "inventory@1.0.0.wasm")
            .add(NOTIFY, "notify@1.0.0.wasm")
            .add(CATALOG, "catalog@1.0.0.wasm");
        p.copy_manifest("user.toml")
            .copy_manifest("order.toml")
            .copy_manifest("inventory.toml")
            .copy_manifest("notify.toml")
            .copy_manifest("catalog.toml");
        p
    }

    /// Copies a component in as `file`.
    pub fn add(&self, component: &str, file: &str) -> &Self {
        std::fs::copy(component, self.path().join(file)).unwrap_or_else(|e| {
            panic!("copy {component}: {e} (the Python and JavaScript services are built by `make plugins`)")
        });
        self
    }

    /// Deploys a component the documented way: copy to a temp name, then
    /// rename to `file`.
    pub fn deploy(&self, component: &str, file: &str) -> &Self {
        let tmp = self.path().join(format!(".{file}.tmp"));
        std::fs::copy(component, &tmp).expect("copy component");
        std::fs::rename(&tmp, self.path().join(file)).expect("rename component");
        self
    }

    /// Writes `file` with `contents`.
    pub fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> &Self {
        std::fs::write(self.path().join(file), contents).expect("write plugin file");
        self
    }

    /// Copies a manifest from the repository's `plugins/`.
    pub fn copy_manifest(&self, file: &str) -> &Self {
        std::fs::copy(Path::new(PLUGINS_DIR).join(file), self.path().join(file))
            .expect("copy manifest");
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The `wasmhost` binary of this build (beside the test executables).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.join("wasmhost")
}

/// What a test host starts with: a plugins directory, `serve` arguments,
/// and a state directory of its own (unless one is given, to restart on
/// the same state).
pub struct TestHostBuilder {
    plugins: Plugins,
    state: Option<tempfile::TempDir>,
    args: Vec<String>,
}

impl TestHostBuilder {
    /// Copies a component in as `file`.
    pub fn add(self, component: &str, file: &str) -> Self {
        self.plugins.add(component, file);
        self
    }

    /// Writes the manifest `SERVICE.toml`.
    pub fn manifest(self, service: &str, text: &str) -> Self {
        self.plugins.write(&format!("{service}.toml"), text);
        self
    }

    /// Does something else to the plugins directory before the start.
    pub fn with(self, prepare: impl FnOnce(&Plugins)) -> Self {
        prepare(&self.plugins);
        self
    }

    /// Extra `serve` arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the host and waits (bounded) until it is ready.
    pub fn start(self) -> TestHost {
        let state = self.state.unwrap_or_else(state_dir);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let host = Host::start_with(&bin(), self.plugins.path(), state.path(), &args);
        TestHost {
            host: Some(host),
            plugins: self.plugins,
            state,
            args: self.args,
        }
    }
}

/// A running host with the directories it owns; derefs to [`Host`].
pub struct TestHost {
    host: Option<Host>,
    plugins: Plugins,
    state: tempfile::TempDir,
    args: Vec<String>,
}

impl TestHost {
    /// A host with the example services, as `make plugins` lays them out.
    pub fn examples() -> TestHostBuilder {
        Self::with_plugins(Plugins::examples())
    }

    /// A host with an empty plugins directory.
    pub fn empty() -> TestHostBuilder {
        Self::with_plugins(Plugins::new())
    }

    /// A host with `plugins`.
    pub fn with_plugins(plugins: Plugins) -> TestHostBuilder {
        TestHostBuilder {
            plugins,
            state: None,
            args: Vec::new(),
        }
    }

    /// Its plugins directory.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// Its state directory.
    pub fn state(&self) -> &Path {
        self.state.path()
    }

    /// Stops it (SIGTERM, clean exit checked) and starts it again on the
    /// same directories; returns the first run's log.
    pub fn restart(&mut self) -> String {
        let log = self.host.take().expect("running").stop();
        self.start_again();
        log
    }

    /// Kills the process at once (SIGKILL: no drain, no clean-up, as a
    /// crash would) and starts it again on the same directories.
    pub fn crash_and_restart(&mut self) {
        // Dropping a `Host` kills its process.
        drop(self.host.take());
        self.start_again();
    }

    /// Starts the host on its directories and arguments again.
    fn start_again(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.host = Some(Host::start_with(
            &bin(),
            self.plugins.path(),
            self.state.path(),
            &args,
        ));
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        self.host.take().expect("running").stop()
    }
}

impl std::ops::Deref for TestHost {
    type Target = Host;
    fn deref(&self) -> &Host {
        self.host.as_ref().expect("running")
    }
}

/// A running `wasmhost serve`, killed on drop.
pub struct Host {
    child: Child,
    log_thread: Option<std::thread::JoinHandle<()>>,
    addr: String,
    admin_addr: String,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::blocking::Client,
}

impl Host {
    /// Starts `bin serve` on 127.0.0.1:0 with `plugins` and `state`, and
    /// waits until it listens.
    pub fn start(bin: &Path, plugins: &Path, state: &Path) -> Self {
        Self::start_with(bin, plugins, state, &[])
    }

    /// [`Host::start`] with extra `serve` arguments.
    pub fn start_with(bin: &Path, plugins: &Path, state: &Path, extra: &[&str]) -> Self {
        Self::start_command(bin, "serve", plugins, state, extra, &[])
    }

    /// `bin dev` (build the sources, serve, rebuild on save) on `plugins`
    /// and `state`, with `envs` set (where the build tools are); waits until
    /// it is ready, so until the first builds are done.
    pub fn start_dev(bin: &Path, plugins: &Path, state: &Path, envs: &[(&str, &str)]) -> Self {
        Self::start_command(bin, "dev", plugins, state, &[], envs)
    }

    fn start_command(
        bin: &Path,
        command: &str,
        plugins: &Path,
        state: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        // Hosts start one at a time across every test process, so a
        // component missing from the shared cache is compiled once, by the
        // first host, instead of by every test at the same moment.
        std::fs::create_dir_all(TEST_CACHE_DIR).expect("create the test cache dir");
        let lock = std::fs::File::create(Path::new(TEST_CACHE_DIR).join(".start.lock"))
            .expect("create the start lock");
        lock.lock().expect("take the start lock");
        let mut args = serve_args(plugins, state);
        args[0] = command.into();
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            // One artifact cache for every test host (unless the test names
            // its own): a component is compiled once per test run, not once
            // per test.
            .args(if extra.contains(&"--cache-dir") {
                vec![]
            } else {
                vec!["--cache-dir", TEST_CACHE_DIR]
            })
            // Tests stop hosts at once unless they test the drain itself.
            .args(if extra.contains(&"--drain-delay") {
                vec![]
            } else {
                vec!["--drain-delay", "0s"]
            })
            .args(extra)
            .env("RUST_LOG", "info,wasmhost=debug")
            .env("WASMHOST_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmhost");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let admin = Arc::new(Mutex::new(String::new()));
        let admin_sink = admin.clone();
        let listen = Arc::new(Mutex::new(String::new()));
        let listen_sink = listen.clone();
        let log_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("admin API on http://").nth(1) {
                    *admin_sink.lock().unwrap() = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                }
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    *listen_sink.lock().unwrap() = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                }
                // Services are served as each compiles; tests start once
                // the first scan has loaded them all.
                if line.contains("ready: every service") {
                    let _ = tx.send(listen_sink.lock().unwrap().clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "wasmhost was not ready within {START_TIMEOUT:?}; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        drop(lock);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let admin_addr = admin.lock().unwrap().clone();
        Self {
            child,
            log_thread: Some(log_thread),
            addr,
            admin_addr,
            log,
            client,
        }
    }

    /// A call to the admin API with the test token (or `token`, when given;
    /// an empty one sends none).
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.admin_addr));
        let token = token.unwrap_or(ADMIN_TOKEN);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Reply::from(req.send().expect("admin request"))
    }

    /// `ADDR` of the admin API.
    pub fn admin_addr(&self) -> &str {
        &self.admin_addr
    }

    /// Runs the `wasmhost` command line with `args` against this host's
    /// admin API (with the test token).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .args(["--admin", &self.admin_addr, "--token", ADMIN_TOKEN])
            .output()
            .expect("run the wasmhost command line")
    }

    /// `http://ADDR` of the host.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An admin `GET` of `path`, as the typed view `T` (e.g.
    /// `wasmhost::views::ServiceView`).
    pub fn view<T: DeserializeOwned>(&self, path: &str) -> T {
        let reply = self.admin("GET", path, None, None);
        reply.expect_status(200);
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "GET {path}: not the expected view ({e}): {}",
                String::from_utf8_lossy(&reply.body)
            )
        })
    }

    /// `host:port` of the plugin-traffic listener.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A GET pinned to `version` (the `x-wasmhost-version` header).
    pub fn get_pinned(&self, path: &str, version: &str) -> Reply {
        Reply::from(
            self.client
                .get(self.url(path))
                .header("x-wasmhost-version", version)
                .send()
                .expect("GET"),
        )
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A GET request.
    pub fn get(&self, path: &str) -> Reply {
        Reply::from(self.client.get(self.url(path)).send().expect("GET"))
    }

    /// A request with a body.
    pub fn send(&self, method: &str, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .expect("request");
        Reply::from(resp)
    }

    /// A request with extra headers and no body.
    pub fn send_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        Reply::from(req.send().expect("request"))
    }

    /// A POST of a JSON value.
    pub fn post_json(&self, path: &str, value: serde_json::Value) -> Reply {
        self.send("POST", path, value.to_string())
    }

    /// Puts a product in the example catalog at `price_cents` and gives the
    /// example inventory `quantity` of it.
    pub fn stock(&self, sku: &str, name: &str, price_cents: u64, quantity: u64) {
        self.post_json(
            "/products",
            serde_json::json!({"sku": sku, "name": name, "price_cents": price_cents}),
        )
        .expect_status(201);
        self.send(
            "PUT",
            &format!("/inventory/{sku}"),
            serde_json::json!({ "quantity": quantity }).to_string(),
        )
        .expect_status(200);
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains every one of `parts`.
    pub fn wait_for_log(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {parts:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `timeout`) for the host to exit on its own; panics
    /// with its log when it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "wasmhost did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "wasmhost exited with {status}; log:\n{}",
                    self.log()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "wasmhost did not exit after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The process is gone: its stderr ends, and the log thread with it.
        if let Some(thread) = self.log_thread.take() {
            thread.join().expect("log thread");
        }
        self.log()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl From<reqwest::blocking::Response> for Reply {
    fn from(resp: reqwest::blocking::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let body = resp.bytes().expect("read body").to_vec();
        Self {
            status,
            headers,
            body,
        }
    }
}

impl Reply {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as the typed value `T`; panics with the body when it is not.
    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not the expected value ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Panics unless the status is `expected`, showing the body.
    pub fn expect_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status,
            expected,
            "expected status {expected}, got {} with body {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// Polls `probe` until it returns `Some`, for at most `timeout`; panics
/// naming `what` when it never does. Every wait in the tests goes through
/// this (or [`Host::wait_for_log`]), never a bare sleep.
pub fn wait_until<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    try_wait_until(timeout, probe).unwrap_or_else(|| panic!("{what}: not within {timeout:?}"))
}

/// [`wait_until`] that returns `None` at the timeout, for a caller that
/// explains the failure itself.
pub fn try_wait_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh state directory.
pub fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create state dir")
}

/// Steady good traffic in the background: a thread sends `GET path` in a
/// loop until stopped, and counts every answer that is not a 200.
pub struct Traffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Traffic {
    /// Starts `threads` clients looping on `GET url`.
    pub fn start(url: String, threads: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (url, flag) = (url.clone(), flag.clone());
                    std::thread::spawn(move || {
                        let client = reqwest::blocking::Client::builder()
                            .timeout(Duration::from_secs(30))
                            .build()
                            .expect("client");
                        let (mut ok, mut failures) = (0u64, Vec::new());
                        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                            match client.get(&url).send() {
                                Ok(r) if r.status() == 200 => ok += 1,
                                Ok(r) => failures.push(format!(
                                    "{}: {}",
                                    r.status(),
                                    r.text().unwrap_or_default()
                                )),
                                Err(e) => failures.push(e.to_string()),
                            }
                        }
                        (ok, failures)
                    })
                })
                .collect();
            let mut total = (0, Vec::new());
            for w in workers {
                let (ok, failures) = w.join().expect("traffic thread");
                total.0 += ok;
                total.1.extend(failures);
            }
            total
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the clients; panics unless every request succeeded, and
    /// returns how many did.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failures) = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("traffic thread");
        assert!(
            failures.is_empty(),
            "{} of {} good requests failed, first: {:?}",
            failures.len(),
            ok + failures.len() as u64,
            failures.first()
        );
        assert!(ok > 0, "no good request was served");
        ok
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `component`'s bytes with a custom section of their own appended: the
/// same code under a digest no cache has seen, so the host really compiles
/// it.
pub fn with_new_digest(component: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(component).expect("read component");
    let name = b"wasmhost-test";
    let payload = format!("{:?}", std::time::SystemTime::now());
    let content_len = 1 + name.len() + payload.len();
    assert!(content_len < 128, "one LEB128 byte holds the section size");
    bytes.push(0); // custom section
    bytes.push(content_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload.as_bytes());
    bytes
}

/// The arguments of `wasmhost serve` on `plugins` and `state`, both
/// listeners on free loopback ports (append more after them).
pub fn serve_args(plugins: &Path, state: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--plugins",
    ]
    .map(Into::into)
    .into();
    args.push(plugins.into());
    args.push("--state".into());
    args.push(state.into());
    args
}

/// `wasmhost serve` on `plugins` and `state` (see [`serve_args`]), for a
/// test that runs the binary itself: its exit status, its raw output.
pub fn serve_command(plugins: &Path, state: &Path) -> Command {
    let mut command = Command::new(bin());
    command.args(serve_args(plugins, state));
    command
}
