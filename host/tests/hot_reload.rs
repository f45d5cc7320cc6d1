//! Hot reload: the plugins directory changes while the host serves, and
//! every change is applied without a restart and without a failed request.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use wasmhost::views::ServicesView;
use wasmhost_test_support::{
    bin, state_dir, wait_until, Host, Plugins, TestHost, PROBE, USER, USER_V2,
};

const WAIT: Duration = Duration::from_secs(15);

/// Polls `path` until its `x-wasmhost-version` is `want` (None: a 404).
fn wait_for_version(host: &Host, path: &str, want: Option<&str>) {
    wait_until(&format!("{path} answered by {want:?}"), WAIT, || {
        let r = host.get(path);
        let got = if r.status == 404 {
            None
        } else {
            r.header("x-wasmhost-version").map(str::to_string)
        };
        (got.as_deref() == want).then_some(())
    });
}

#[test]
fn an_idle_host_does_not_rescan_and_a_renamed_file_loads_at_once() {
    // The plugins directory given as a relative path, as users type it.
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .copy_manifest("user.toml");
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = std::path::Path::new(&up).join(plugins.path().strip_prefix("/").unwrap());
    let state = state_dir();
    let host = Host::start(&bin(), &relative, state.path());
    host.get("/users").expect_status(200);
    let counts = || {
        let all: ServicesView = host.view("/admin/services");
        (all.scans, all.watch_events)
    };
    // (Files copied in just before the start take a second scan, once they
    // have stopped changing.)
    let (at_start, events_at_start) = counts();

    // Reading files must not wake the watcher (the bug this guards against
    // rescanned every 50 ms, triggered by its own reads). Read them here too,
    // then deploy: the watcher handles its events in order, so once the new
    // version serves, every earlier event has been seen — and exactly one
    // scan, the deploy's, may have happened.
    for entry in std::fs::read_dir(plugins.path()).unwrap() {
        let _ = std::fs::read(entry.unwrap().path()).unwrap();
    }
    // A file renamed into place is complete: loaded at once, never deferred
    // as "still being written".
    plugins.deploy(USER_V2, "user@1.1.0.wasm");
    wait_for_version(&host, "/users", Some("1.1.0"));
    // The watcher saw one change (the rename), not our reads, and scanned once.
    assert_eq!(
        counts(),
        (at_start + 1, events_at_start + 1),
        "reads woke the watcher:\n{}",
        host.log()
    );
    // The deploy's own scan read every file; a second deploy proves those
    // reads queued no further scan either.
    plugins.deploy(USER, "user@1.2.0.wasm");
    wait_for_version(&host, "/users", Some("1.2.0"));
    assert_eq!(
        counts(),
        (at_start + 2, events_at_start + 2),
        "rescans kept coming:\n{}",
        host.log()
    );
    let log = host.log();
    assert!(
        !log.contains("still being written"),
        "renamed file was deferred:\n{log}"
    );
}

#[test]
fn a_dropped_component_is_served_and_a_removed_one_retired() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    host.get("/probe/echo").expect_status(404);

    host.plugins().deploy(PROBE, "probe@0.1.0.wasm");
    wait_for_version(&host, "/probe/echo", Some("0.1.0"));
    host.wait_for_log(&["version loaded", "service=probe", "version=0.1.0"], WAIT);

    host.plugins().deploy(USER, "user@1.1.0.wasm");
    wait_for_version(&host, "/users", Some("1.1.0"));
    std::fs::remove_file(host.plugins().path().join("user@1.1.0.wasm")).unwrap();
    wait_for_version(&host, "/users", Some("1.0.0"));
    host.wait_for_log(&["version retired", "service=user", "version=1.1.0"], WAIT);
}

#[test]
fn a_changed_manifest_updates_routes_and_config() {
    let plugins = Plugins::examples();
    plugins.add(PROBE, "probe@0.1.0.wasm");
    let host = TestHost::with_plugins(plugins).start();
    host.get("/probe/echo").expect_status(200);

    host.plugins().write(
        "probe.toml",
        "routes = [\"/p2\"]\n[config]\ngreeting = \"hi\"\n",
    );
    wait_for_version(&host, "/p2/echo", Some("0.1.0"));
    host.get("/probe/echo").expect_status(404);
    assert_eq!(host.get("/p2/config/greeting").json()["value"], "hi");

    // A broken manifest keeps the last good one.
    host.plugins().write("probe.toml", "routes = 42\n");
    host.wait_for_log(&["probe.toml", "invalid manifest"], WAIT);
    host.get("/p2/echo").expect_status(200);
}

#[test]
fn a_bad_drop_never_replaces_what_serves() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);

    host.plugins()
        .write("user@2.0.0.wasm", b"definitely not a component");
    host.wait_for_log(&["user@2.0.0.wasm", "not a WebAssembly file"], WAIT);
    assert_eq!(
        host.get("/users/1")
            .expect_status(200)
            .header("x-wasmhost-version"),
        Some("1.0.0")
    );

    // Overwriting the live file with garbage keeps its last good build.
    host.plugins()
        .write("user@1.0.0.wasm", b"\0asm\x0d\0\x01\0garbage");
    host.wait_for_log(&["user@1.0.0.wasm", "keeps its last good build"], WAIT);
    assert_eq!(
        host.get("/users/1").expect_status(200).json()["name"],
        "Ada"
    );
}

#[test]
fn a_slow_plain_copy_is_never_served_half_written() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    let bytes = std::fs::read(PROBE).unwrap();
    let mut file = std::fs::File::create(host.plugins().path().join("probe@0.2.0.wasm")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 20 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        let r = host.get("/probe/echo");
        assert!(
            r.status == 404 || r.status == 200,
            "unexpected status {} during the copy",
            r.status
        );
        // The pace of a slow writer (the input of this test, not a wait).
        std::thread::sleep(Duration::from_millis(60));
    }
    drop(file);
    wait_for_version(&host, "/probe/echo", Some("0.2.0"));
    assert!(
        !host.log().contains("invalid component"),
        "a half-written file was compiled; log:\n{}",
        host.log()
    );
}

#[test]
fn a_swap_storm_under_load_fails_no_request() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    let stop = AtomicBool::new(false);
    let (served, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let promote = |v: &str| {
        host.admin(
            "POST",
            "/admin/services/user/promote",
            Some(json!({"version": v})),
            None,
        )
        .expect_status(200);
    };
    let mut operations = 0;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = host.get("/users/1");
                    let version = r
                        .header("x-wasmhost-version")
                        .unwrap_or_default()
                        .to_string();
                    // 1.1.0 (feature v2) adds `display_name`; 1.0.0 never does:
                    // a response must be wholly one version or the other.
                    let body = if r.status == 200 {
                        r.json()
                    } else {
                        json!(null)
                    };
                    let consistent = match version.as_str() {
                        "1.0.0" => body.get("display_name").is_none(),
                        "1.1.0" => body["display_name"] == "Ada <ada@example.com>",
                        _ => false,
                    };
                    if r.status == 200 && consistent && body["name"] == "Ada" {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "failed: {} {version} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        );
                    }
                }
            });
        }
        for _ in 0..10 {
            host.plugins().deploy(USER_V2, "user@1.1.0.wasm");
            wait_for_version(&host, "/users/1", Some("1.1.0"));
            promote("1.0.0");
            promote("1.1.0");
            host.admin("POST", "/admin/services/user/rollback", None, None)
                .expect_status(200);
            wait_for_version(&host, "/users/1", Some("1.0.0"));
            promote("1.1.0");
            std::fs::remove_file(host.plugins().path().join("user@1.1.0.wasm")).unwrap();
            wait_for_version(&host, "/users/1", Some("1.0.0"));
            operations += 6;
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (served, failed) = (served.into_inner(), failed.into_inner());
    eprintln!("swap storm: {operations} swaps, promotes and rollbacks; {served} requests served, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the swaps",
        served + failed
    );
    assert!(
        served > 100,
        "too few requests ({served}) to prove anything"
    );
}
