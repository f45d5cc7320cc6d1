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

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
