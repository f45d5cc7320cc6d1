//! Real servers for the cluster tests, started from the installed binaries
//! on a random 127.0.0.1 port, each in its own temporary directory, and
//! killed on drop: tests run side by side and leave nothing behind.
//!
//! A server that is not installed is a reason to skip, never a silent pass:
//! [`or_skip`] prints `skipped TEST: WHY` and returns `None`, and under
//! `CI=true` (where `.ci/run` installs every server) it fails instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `server`, or `None` after saying why `test` is skipped (a failure
/// under `CI=true`).
pub fn or_skip<T>(test: &str, server: Result<T, String>) -> Option<T> {
    match server {
        Ok(s) => Some(s),
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped {test}: {why}");
            None
        }
        Err(why) => panic!("{test} cannot run in CI: {why}"),
    }
}

/// A free port on 127.0.0.1 (free when asked; the server binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// Where an installed program is, if it is on PATH.
pub fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A `redis-server` of the test's own.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Redis {
    /// Starts one, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bin = installed("redis-server")
            .ok_or("redis-server is not installed (apt-get install -y redis-server)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir,
            bin,
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.command("PING").is_some_and(|a| a.starts_with("+PONG")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server did not answer on port {}", self.port))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one inline command and returns the raw answer.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Stops it (the port stays its own for [`Redis::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it saves nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart redis-server");
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A `nats-server` of the test's own, JetStream on, its store in a
/// temporary directory.
pub struct Nats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Nats {
    /// Starts one, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bin = installed("nats-server")
            .ok_or("nats-server is not installed (apt-get install -y nats-server)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut nats = Self {
            child: None,
            port: free_port(),
            dir,
            bin,
        };
        nats.spawn()?;
        Ok(nats)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                // The server greets with INFO once it accepts clients.
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("nats-server did not answer on port {}", self.port))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (its store stays, for [`Nats::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store: what JetStream had
    /// stored is still there.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart nats-server");
    }

    /// Starts it again on the same port with an empty store, as a server
    /// that lost its disk.
    pub fn restart_empty(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(self.dir.path()).expect("read the store") {
            let path = entry.expect("entry").path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
        self.spawn().expect("restart nats-server");
    }
}

/// A `docker-registry` (the CNCF distribution server) of the test's own,
/// plain HTTP on loopback, its storage in a temporary directory.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bin = installed("docker-registry")
            .ok_or("docker-registry is not installed (apt-get install -y docker-registry)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let registry = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return Ok(registry);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("docker-registry did not answer on port {port}"))
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding the blob `sha256:HEX` (to damage it).
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `haproxy` of the test's own: round robin over `backends`, each
/// checked on the readiness path every 200 ms, a request retried on
/// another replica when its connection fails or it gets no answer (what
/// the README's "Run N replicas" configures).
pub struct Haproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The configuration [`Haproxy`] runs, also shown in the README.
pub fn haproxy_config(port: u16, backends: &[&str]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
         \x20 retries 3\n  option redispatch 1\n\
         \x20 retry-on conn-failure empty-response response-timeout\n\
         frontend wasmhost\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
         backend replicas\n  balance roundrobin\n\
         \x20 option httpchk GET /.well-known/wasmhost/ready\n\
         \x20 default-server check inter 200ms fall 1 rise 2\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        cfg.push_str(&format!("  server r{i} {addr}\n"));
    }
    cfg
}

impl Haproxy {
    /// Starts one in front of `backends` (`HOST:PORT`), or says why it cannot.
    pub fn start(backends: &[&str]) -> Result<Self, String> {
        let bin =
            installed("haproxy").ok_or("haproxy is not installed (apt-get install -y haproxy)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(port, backends)).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start haproxy: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("haproxy did not listen on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests at a steady rate in the background (an open loop: a slow
/// answer does not slow the rate), counted by outcome.
pub struct Paced {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Paced {
    /// `rate` requests per second of `method url` (with `body`), spread
    /// over `threads` clients.
    pub fn start(method: &str, url: String, body: &str, rate: u32, threads: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let interval = Duration::from_secs_f64(f64::from(threads) / f64::from(rate));
        let threads = (0..threads)
            .map(|t| {
                let (stop, url, body) = (stop.clone(), url.clone(), body.to_string());
                let answered = answered.clone();
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("client");
                    let (mut ok, mut failed) = (0, Vec::new());
                    let mut next = Instant::now() + interval.mul_f64(f64::from(t) / 8.0);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                        next += interval;
                        let mut req = client.request(method.clone(), &url);
                        if !body.is_empty() {
                            req = req
                                .header("content-type", "application/json")
                                .body(body.clone());
                        }
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match req.send() {
                            Ok(r) if r.status().is_success() => ok += 1,
                            Ok(r) => failed.push(format!(
                                "{}: {}",
                                r.status(),
                                r.text().unwrap_or_default()
                            )),
                            Err(e) => failed.push(e.to_string()),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Self {
            stop,
            answered,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops, and returns the answers that were a success and the failures.
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.threads {
            let (o, f) = t.join().expect("client thread");
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}
