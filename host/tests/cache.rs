//! The compiled-artifact cache runs as native code, so the host trusts only
//! entries whose MAC it recorded: an entry changed on disk, or another
//! component's entry under its name, is deleted and compiled again.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use wasmhost_test_support::{bin, serve_command, state_dir, Host, Plugins, PROBE, USER};

/// The cache entries (`modules/COMPILER/HASH`), largest first.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(cache.join("modules"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_none())
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    out
}

fn start(plugins: &Path, state: &Path, cache: &Path) -> Host {
    Host::start_with(
        &bin(),
        plugins,
        state,
        &["--cache-dir", cache.to_str().unwrap()],
    )
}

#[test]
fn tampered_and_swapped_cache_entries_are_never_loaded() {
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let (state, cache) = (state_dir(), tempfile::tempdir().unwrap());
    let host = start(plugins.path(), state.path(), cache.path());
    host.get("/user/1").expect_status(404);
    host.stop();
    let user_entry = entries(cache.path()).remove(0);
    // An untouched cache is trusted across a restart (and wasmtime's own
    // cleanup leaves the key and the MACs alone).
    let host = start(plugins.path(), state.path(), cache.path());
    host.get("/user/1").expect_status(404);
    let log = host.stop();
    assert!(!log.contains("failed its integrity check"), "{log}");
    assert!(user_entry.exists());

    // Another component's entry under the user's name.
    let probe_plugins = Plugins::new();
    probe_plugins.add(PROBE, "probe@1.0.0.wasm");
    let other_state = state_dir();
    start(probe_plugins.path(), other_state.path(), cache.path()).stop();
    let all = entries(cache.path());
    let probe_entry = all.iter().find(|p| **p != user_entry).unwrap();
    std::fs::copy(probe_entry, &user_entry).unwrap();
    let host = start(plugins.path(), state.path(), cache.path());
    let r = host.get("/user/1");
    assert_eq!(r.header("x-wasmhost-service"), Some("user"));
    // The user service's own answer, not the probe's echo.
    assert!(
        !String::from_utf8_lossy(&r.body).contains("\"method\""),
        "{r:?}"
    );
    host.wait_for_log(
        &["failed its integrity check"],
        std::time::Duration::from_secs(5),
    );
    host.stop();

    // Flip the code in the middle of the artifact, as a writer with access
    // to the directory could (decompressed, changed, compressed again).
    let mut code = zstd::decode_all(&std::fs::read(&user_entry).unwrap()[..]).unwrap();
    let (from, to) = (code.len() / 4, code.len() / 2);
    for b in &mut code[from..to] {
        *b ^= 0xff;
    }
    std::fs::write(&user_entry, zstd::encode_all(&code[..], 3).unwrap()).unwrap();
    let host = start(plugins.path(), state.path(), cache.path());
    let r = host.get("/user/1");
    assert_eq!(r.header("x-wasmhost-service"), Some("user"));
    assert_ne!(r.status, 500);
    host.wait_for_log(
        &["failed its integrity check"],
        std::time::Duration::from_secs(5),
    );
    host.stop();
}

#[test]
fn a_cache_directory_others_may_write_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let (state, cache) = (state_dir(), tempfile::tempdir().unwrap());
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = serve_command(plugins.path(), state.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writable by other users"), "{stderr}");
}

/// `wasmhost cache warm` compiles what a later host needs: that host
/// compiles nothing (the cache gains no entry), and a file that does not
/// load fails the command, naming it.
#[test]
fn a_warmed_cache_serves_without_compiling() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .add(PROBE, "probe@1.0.0.wasm");
    let (state, cache) = (state_dir(), tempfile::tempdir().unwrap());
    let warm = |plugins: &Path| {
        std::process::Command::new(bin())
            .args(["cache", "warm", "--plugins"])
            .arg(plugins)
            .arg("--state")
            .arg(state.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .output()
            .unwrap()
    };
    let out = warm(plugins.path());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("compiled 2 versions of 2 services"), "{said}");
    let warmed = entries(cache.path());
    assert_eq!(warmed.len(), 2, "{warmed:?}");

    let served = state_dir();
    let host = start(plugins.path(), served.path(), cache.path());
    host.get("/user/1").expect_status(404);
    let log = host.stop();
    assert_eq!(
        entries(cache.path()),
        warmed,
        "the host compiled again: {log}"
    );

    plugins.write("broken@1.0.0.wasm", b"not wasm");
    let out = warm(plugins.path());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("1 file did not load"), "{said}");
    assert!(said.contains("broken@1.0.0.wasm"), "{said}");
}
