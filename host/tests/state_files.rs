//! The state directory's files: private to the host's user, and a damaged
//! database is one clear error, never a crash.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use wasmhost_test_support::{
    bin, serve_args, serve_command, state_dir, try_wait_until, Host, Plugins, USER,
};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A generated admin token and the database are mode 0600, also when the
/// token file existed before with a looser mode.
#[test]
fn the_admin_token_and_the_database_are_private() {
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let state = state_dir();
    let token = state.path().join("admin-token");
    std::fs::write(&token, "old").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = serve_command(plugins.path(), state.path())
        .env_remove("WASMHOST_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rewritten = try_wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&token)
            .ok()
            .filter(|t| t.len() == 32 && state.path().join("kv.redb").exists())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(rewritten.is_some(), "no new admin token was written");
    assert_eq!(mode(&token), 0o600);
    assert_eq!(mode(&state.path().join("kv.redb")), 0o600);
}

/// A truncated `kv.redb` stops the host at start with a sentence saying
/// what to do (exit 1), not a panic (exit 101).
#[test]
fn a_damaged_database_is_a_clear_error_at_start() {
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let state_dir = state_dir();
    let host = Host::start(&bin(), plugins.path(), state_dir.path());
    host.send("PUT", "/user/1", "x");
    host.stop();
    let (state, plugins) = (state_dir.path(), plugins.path());
    let db = state.join("kv.redb");
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(5000).unwrap();
    drop(file);
    let out = serve_command(plugins, state).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A small tmpfs mounted at `dir` (root only); `None` when it cannot be.
fn small_fs(dir: &std::path::Path) -> Option<()> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk fails key-value writes with a 500 and a log line; once
/// space is freed the store writes again, without a restart, and nothing
/// written before is lost.
#[test]
fn the_key_value_store_recovers_after_the_disk_was_full() {
    let plugins = Plugins::new();
    plugins.add(wasmhost_test_support::PROBE, "probe@1.0.0.wasm");
    plugins.write("probe.toml", "[limits]\nrequest-body = \"1 MiB\"\n");
    let state = state_dir();
    if small_fs(state.path()).is_none() {
        eprintln!("skipped: mounting a small tmpfs needs root (the disk-full test)");
        return;
    }
    let _unmount = Unmount(state.path().to_path_buf());
    let host = Host::start(&bin(), plugins.path(), state.path());
    host.send("PUT", "/probe/kv/b/first", "kept")
        .expect_status(204);
    // Fill the disk, then write until the store fails.
    let filler = state.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    }
    let value = vec![b'x'; 512 * 1024];
    let failed = (0..200).find_map(|i| {
        let r = host.send("PUT", &format!("/probe/kv/b/k{i}"), value.clone());
        (r.status == 500).then_some(r)
    });
    assert!(failed.is_some(), "no write failed on a full disk");
    host.wait_for_log(
        &["the key-value store cannot write"],
        Duration::from_secs(5),
    );
    // Readiness says so meanwhile, naming the check.
    let ready = host.get("/.well-known/wasmhost/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["failing"], serde_json::json!(["store"]));
    std::fs::remove_file(&filler).unwrap();
    host.send("PUT", "/probe/kv/b/after", "written")
        .expect_status(204);
    host.send("PUT", "/probe/kv/b/after2", "written")
        .expect_status(204);
    let r = host.get("/probe/kv/b/first");
    r.expect_status(200);
    assert_eq!(r.body, b"kept");
    host.wait_for_log(
        &["the key-value store writes again"],
        Duration::from_secs(5),
    );
    host.get("/.well-known/wasmhost/ready").expect_status(200);
    host.stop();
}

/// Weights in `release.json` that cannot apply stop the host at start,
/// naming the service, instead of sending every request to the newest
/// version.
#[test]
fn invalid_weights_in_the_release_state_are_refused_at_start() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .add(USER, "user@1.1.0.wasm");
    let state = state_dir();
    std::fs::write(
        state.path().join("release.json"),
        r#"{"services": {"user": {"weights": {"1.0.0": 150, "1.1.0": 0}}}}"#,
    )
    .unwrap();
    let out = serve_command(plugins.path(), state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the weights of `user` are invalid"),
        "{stderr}"
    );
}

/// A release change that cannot be saved is the host's failure (500, with
/// the reason), never a client error, and changes nothing.
#[test]
fn a_release_change_that_cannot_be_saved_is_a_500() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .add(USER, "user@1.1.0.wasm");
    let state = state_dir();
    let host = Host::start(&bin(), plugins.path(), state.path());
    // The file's place taken by a non-empty directory: the rename that
    // saves the state fails, whoever runs the host.
    let blocker = state.path().join("release.json");
    let _ = std::fs::remove_file(&blocker);
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), "x").unwrap();
    let r = host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(serde_json::json!({"weights": {"1.0.0": 50, "1.1.0": 50}})),
        None,
    );
    assert_eq!(r.status, 500, "{:?}", String::from_utf8_lossy(&r.body));
    let view: wasmhost::views::ServiceView = host.view("/admin/services/user");
    assert!(
        view.weights().contains(&("1.1.0".to_string(), 100)),
        "{view:?}"
    );
}

/// The host raises its soft limit on open files to the hard limit, so the
/// usual 1,024 does not cap its connections (and the fds a rescan needs).
#[test]
fn the_open_file_soft_limit_is_raised_at_start() {
    let hard: u64 = String::from_utf8(
        Command::new("bash")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(0);
    if hard <= 512 {
        eprintln!("skipped: the hard open-file limit ({hard}) leaves nothing to raise");
        return;
    }
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let state = state_dir();
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -Sn 512 && exec \"$0\" \"$@\""])
        .arg(bin())
        .args(serve_args(plugins.path(), state.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let soft = try_wait_until(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&limits).ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let soft: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
        (soft > 512).then_some(soft)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        soft,
        Some(hard),
        "the soft limit was not raised to the hard one"
    );
}
