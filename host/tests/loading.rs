//! Loading the plugins directory: bad files and bad manifests are refused
//! with a clear log line while every good service still loads and serves.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use wasmhost::views::ServicesView;
use wasmhost_test_support::{
    bin, state_dir, try_wait_until, wait_until, Host, Plugins, TestHost, Traffic, ADMIN_TOKEN,
    INVENTORY, PROBE, USER, WRONG_WORLD,
};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn bad_components_are_refused_and_the_good_ones_serve() {
    let plugins = Plugins::examples();
    let user = std::fs::read(USER).unwrap();
    plugins
        .write("empty@1.0.0.wasm", b"")
        .write(
            "random@1.0.0.wasm",
            b"this is not webassembly at all, just text",
        )
        .write("elf@1.0.0.wasm", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0")
        .write("core@1.0.0.wasm", b"\0asm\x01\0\0\0")
        .write("half@1.0.0.wasm", &user[..user.len() / 2])
        .add(WRONG_WORLD, "wrong@1.0.0.wasm")
        .write("Bad_Name.wasm", b"\0asm\x01\0\0\0");
    std::fs::create_dir(plugins.path().join("dir@1.0.0.wasm")).unwrap();
    let host = TestHost::with_plugins(plugins).start();

    host.wait_for_log(&["empty@1.0.0.wasm", "file is empty"], WAIT);
    host.wait_for_log(&["random@1.0.0.wasm", "not a WebAssembly file"], WAIT);
    host.wait_for_log(&["elf@1.0.0.wasm", "not a WebAssembly file"], WAIT);
    host.wait_for_log(
        &[
            "core@1.0.0.wasm",
            "core WebAssembly module, not a component",
        ],
        WAIT,
    );
    host.wait_for_log(&["half@1.0.0.wasm", "invalid component"], WAIT);
    host.wait_for_log(&["wrong@1.0.0.wasm", "wasmhost:plugin/handler@0.1.0"], WAIT);
    host.wait_for_log(&["Bad_Name.wasm", "invalid plugin file name"], WAIT);
    host.wait_for_log(&["dir@1.0.0.wasm", "not a regular file"], WAIT);

    host.post_json(
        "/users",
        serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .expect_status(201);
    host.get("/orders").expect_status(200);
    host.get("/wrong").expect_status(404);
}

#[test]
fn two_services_claiming_one_route_are_refused_and_the_rest_serve() {
    let plugins = Plugins::examples();
    plugins
        .add(PROBE, "probe@0.1.0.wasm")
        .write("probe.toml", "routes = [\"/probe\", \"/users\"]\n");
    let host = TestHost::with_plugins(plugins).start();
    let line = host.wait_for_log(&["route `/users` is claimed by `probe` and `user`"], WAIT);
    assert!(
        line.contains("ERROR"),
        "conflict should be an error line: {line}"
    );
    host.get("/users").expect_status(404);
    host.get("/probe/echo").expect_status(404);
    host.get("/orders").expect_status(200);
}

#[test]
fn a_bad_manifest_is_refused_with_its_reason() {
    let plugins = Plugins::examples();
    plugins
        .add(PROBE, "probe@0.1.0.wasm")
        .write("probe.toml", "routes = \"/probe\"\n");
    let host = TestHost::with_plugins(plugins).start();
    host.wait_for_log(&["probe.toml", "invalid manifest"], WAIT);
    host.wait_for_log(
        &["probe@0.1.0.wasm", "manifest probe.toml is invalid"],
        WAIT,
    );
    host.get("/probe/echo").expect_status(404);
    host.get("/users").expect_status(200);
}

#[test]
fn the_highest_version_serves_and_a_bare_name_is_versioned_by_hash() {
    let plugins = Plugins::new();
    plugins
        .add(PROBE, "probe@1.2.0.wasm")
        .add(PROBE, "probe@1.10.0.wasm")
        .add(USER, "user.wasm");
    plugins.copy_manifest("user.toml");
    let host = TestHost::with_plugins(plugins).start();
    assert_eq!(
        host.get("/probe/echo")
            .expect_status(200)
            .header("x-wasmhost-version"),
        Some("1.10.0")
    );
    let version = host
        .get("/users")
        .expect_status(200)
        .header("x-wasmhost-version")
        .unwrap()
        .to_string();
    assert_eq!(
        version.len(),
        12,
        "bare file should be versioned by a 12-digit hash, got {version}"
    );
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
}

#[test]
fn an_empty_directory_starts_and_says_so() {
    let plugins = Plugins::new();
    let host = TestHost::with_plugins(plugins).start();
    host.wait_for_log(&["no services loaded"], WAIT);
    host.get("/users").expect_status(404);
}

/// The load errors the admin API lists, as `(file, error)`.
fn load_errors(host: &Host) -> Vec<(String, String)> {
    let all = host
        .admin("GET", "/admin/services", None, None)
        .expect_status(200)
        .json();
    all["load_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn hazards_dropped_into_a_running_host_are_refused_and_the_live_version_serves() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    host.post_json(
        "/users",
        serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .expect_status(201);
    let traffic = Traffic::start(host.url("/users/1"), 2);

    // Each hazard arrives as a *newer* version of user, which would take all
    // traffic if it loaded.
    let user = std::fs::read(USER).unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), &user).unwrap();
    host.plugins()
        .write("user@2.0.0.wasm", b"")
        .write("user@2.1.0.wasm", &user[..user.len() - 100])
        .write(
            "user@2.2.0.wasm",
            (0..4096).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>(),
        )
        .write("user@2.3.0.wasm", b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0")
        .write(
            "user@2.5.0.wasm",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0wasmtime-aot",
        );
    host.plugins().add(WRONG_WORLD, "user@2.4.0.wasm");
    // Above the 64 MiB cap (sparse: refused before it is read).
    let big = std::fs::File::create(host.plugins().path().join("user@2.6.0.wasm")).unwrap();
    big.set_len(65 * 1024 * 1024).unwrap();
    drop(big);
    std::os::unix::fs::symlink(
        outside.path(),
        host.plugins().path().join("user@2.7.0.wasm"),
    )
    .unwrap();
    std::fs::create_dir(host.plugins().path().join("user@2.8.0.wasm")).unwrap();
    let fifo = host.plugins().path().join("user@2.9.0.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");

    let expected = [
        ("user@2.0.0.wasm", "file is empty"),
        ("user@2.1.0.wasm", "invalid component"),
        ("user@2.2.0.wasm", "not a WebAssembly file"),
        ("user@2.3.0.wasm", "core WebAssembly module"),
        ("user@2.4.0.wasm", "wasmhost:plugin/handler@0.1.0"),
        ("user@2.5.0.wasm", "not a WebAssembly file"),
        ("user@2.6.0.wasm", "over the 67108864-byte limit"),
        (
            "user@2.7.0.wasm",
            "symlink leads outside the plugins directory",
        ),
        ("user@2.8.0.wasm", "not a regular file"),
        ("user@2.9.0.wasm", "not a regular file"),
    ];
    let missing = |errors: &[(String, String)]| -> Vec<(&str, &str)> {
        expected
            .iter()
            .filter(|(file, why)| !errors.iter().any(|(f, e)| f == file && e.contains(why)))
            .copied()
            .collect()
    };
    if try_wait_until(Duration::from_secs(20), || {
        missing(&load_errors(&host)).is_empty().then_some(())
    })
    .is_none()
    {
        let errors = load_errors(&host);
        panic!(
            "not refused as expected: {:?}\nerrors: {errors:#?}",
            missing(&errors)
        );
    }
    let r = host.get("/users/1");
    r.expect_status(200);
    assert_eq!(r.header("x-wasmhost-version"), Some("1.0.0"));
    traffic.finish();
    host.wait_for_log(&["user@2.7.0.wasm", "symlink leads outside"], WAIT);
}

#[test]
fn a_symlink_outside_loads_only_when_the_host_is_told_to_follow_it() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("user.wasm");
    std::fs::copy(USER, &target).unwrap();
    let plugins = Plugins::new();
    std::os::unix::fs::symlink(&target, plugins.path().join("user@1.0.0.wasm")).unwrap();
    let state = state_dir();
    let host = Host::start(&bin(), plugins.path(), state.path());
    // Not loaded: no service answers.
    let r = host.get("/user/1");
    r.expect_status(404);
    assert_eq!(r.header("x-wasmhost-version"), None);
    host.wait_for_log(&["user@1.0.0.wasm", "--follow-symlinks"], WAIT);
    host.stop();
    let host = Host::start_with(&bin(), plugins.path(), state.path(), &["--follow-symlinks"]);
    // Loaded: the user service itself answers (it has no user 1).
    let r = host.get("/user/1");
    assert_eq!(r.header("x-wasmhost-version"), Some("1.0.0"));
}

#[test]
fn files_that_can_never_serve_are_warned_about_with_the_name_they_need() {
    let host = TestHost::empty()
        .add(PROBE, "probe@0.1.0.wasm")
        .add(PROBE, "probe.wasm")
        .add(PROBE, "probe@v0.2.0.wasm")
        .start();
    // 0.1.0 serves: the other two sort below it.
    let r = host.get("/probe/echo");
    r.expect_status(200);
    assert_eq!(r.header("x-wasmhost-version"), Some("0.1.0"));
    let all: ServicesView = host.view("/admin/services");
    let warning = |file: &str| {
        all.warnings
            .iter()
            .find(|w| w.file == file)
            .map(|w| w.error.clone())
            .unwrap_or_else(|| panic!("no warning for {file}: {all:?}"))
    };
    let bare = warning("probe.wasm");
    assert!(
        bare.contains("content hash") && bare.contains("probe@VERSION.wasm"),
        "{bare}"
    );
    let v = warning("probe@v0.2.0.wasm");
    assert!(
        v.contains("not a semantic version") && v.contains("rename it probe@0.2.0.wasm"),
        "{v}"
    );
    assert_eq!(all.warnings.len(), 2, "{all:?}");
    assert!(all.load_errors.is_empty(), "{all:?}");
}

#[test]
fn a_size_without_a_unit_is_a_load_error_naming_the_key() {
    let host = TestHost::empty()
        .add(PROBE, "probe@0.1.0.wasm")
        .manifest("probe", "[limits]\nmemory = 128\n")
        .start();
    let all: ServicesView = host.view("/admin/services");
    let error = &all
        .load_errors
        .iter()
        .find(|e| e.file == "probe.toml")
        .unwrap_or_else(|| panic!("no error for probe.toml: {all:?}"))
        .error;
    assert!(
        error.contains("memory = 128") && error.contains("a size needs its unit"),
        "{error}"
    );
    // Not 128 bytes: the service is not served with a broken manifest.
    host.get("/probe/echo").expect_status(404);
}

#[test]
fn status_shows_a_manifest_error_whole() {
    let host = TestHost::empty()
        .add(PROBE, "probe@0.1.0.wasm")
        .manifest("probe", "rutes = [\"/probe\"]\n")
        .start();
    let out = std::process::Command::new(bin())
        .args([
            "status",
            "--admin",
            host.admin_addr(),
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    // The whole error: where, the line itself, and what is wrong with it.
    assert!(out.contains("not loaded: probe.toml:"), "{out}");
    assert!(out.contains("line 1, column 1"), "{out}");
    assert!(out.contains("rutes = [\"/probe\"]"), "{out}");
    assert!(out.contains("unknown field `rutes`"), "{out}");
}

/// The manifests an operator can get wrong without writing bad TOML: a
/// FIFO, a symlink to a system file, a file of 50 MB. Each is refused with
/// its reason, the service keeps its last good manifest, admin writes and
/// SIGTERM still work.
#[test]
fn manifests_that_are_not_regular_small_files_are_refused_without_blocking() {
    let host = TestHost::examples().start();
    let dir = host.plugins().path().to_path_buf();
    std::fs::remove_file(dir.join("user.toml")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("user.toml"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    std::fs::remove_file(dir.join("order.toml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("order.toml")).unwrap();
    let big = std::fs::File::create(dir.join("catalog.toml")).unwrap();
    big.set_len(50 * 1024 * 1024).unwrap();
    drop(big);
    let expected = [
        ("user.toml", "not a regular file"),
        ("order.toml", "symlink leads outside the plugins directory"),
        ("catalog.toml", "over the 262144-byte limit"),
    ];
    let errors = wait_until("the three manifests refused", WAIT * 4, || {
        let errors = load_errors(&host);
        expected
            .iter()
            .all(|(file, why)| errors.iter().any(|(f, e)| f == file && e.contains(why)))
            .then_some(errors)
    });
    for (file, error) in &errors {
        assert!(
            error.len() < 1000 && !error.contains("root:"),
            "{file}: {error}"
        );
    }
    // Every service keeps serving under its last good manifest.
    assert_eq!(served_by(&host, "/users/1").as_deref(), Some("user"));
    assert_eq!(served_by(&host, "/products").as_deref(), Some("catalog"));
    assert_eq!(served_by(&host, "/orders/1").as_deref(), Some("order"));
    // The control plane is not stuck behind the FIFO.
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(serde_json::json!({"weights": {"1.0.0": 100}})),
        None,
    )
    .expect_status(200);
    let log = host.stop();
    assert!(log.contains("not a regular file"), "{log}");
}

/// A FIFO manifest present at start does not keep the host from serving.
#[test]
fn a_fifo_manifest_at_start_leaves_the_other_services_serving() {
    let host = TestHost::examples()
        .with(|p| {
            std::fs::remove_file(p.path().join("catalog.toml")).unwrap();
            let made = std::process::Command::new("mkfifo")
                .arg(p.path().join("catalog.toml"))
                .status()
                .unwrap();
            assert!(made.success(), "mkfifo failed");
        })
        .start();
    assert_eq!(served_by(&host, "/users/1").as_deref(), Some("user"));
    assert!(load_errors(&host)
        .iter()
        .any(|(f, e)| f == "catalog.toml" && e.contains("not a regular file")));
}

/// A manifest rewritten in place (truncated, then written) is not applied
/// half-written: between the two writes `user` keeps its routes.
#[test]
fn a_manifest_rewritten_in_place_is_applied_only_once_it_settles() {
    let host = TestHost::examples().start();
    let path = host.plugins().path().join("user.toml");
    let full = std::fs::read_to_string(&path).unwrap();
    let scans = host.view::<ServicesView>("/admin/services").scans;
    // First write: truncated in place. An empty manifest is valid and would
    // move `user` to its default route, /user, away from /users.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    wait_until("a rescan after the truncation", WAIT, || {
        (host.view::<ServicesView>("/admin/services").scans > scans).then_some(())
    });
    assert_eq!(served_by(&host, "/users/1").as_deref(), Some("user"));
    let routes = host.admin("GET", "/admin/services/user", None, None).json()["routes"].clone();
    assert_eq!(routes, serde_json::json!(["/users", "/user"]));
    // Second write: the whole manifest, now with one more route.
    std::fs::write(&path, full.replace("\"/user\"]", "\"/user\", \"/people\"]")).unwrap();
    wait_until("the settled manifest applied", WAIT * 2, || {
        (served_by(&host, "/people/1").as_deref() == Some("user")
            && host.admin("GET", "/admin/services/user", None, None).json()["routes"]
                .as_array()
                .is_some_and(|r| r.len() == 3))
        .then_some(())
    });
}

/// The plugins directory replaced by another (`mv`), and later removed and
/// recreated: the host watches the new one and loads what it holds.
#[test]
fn a_replaced_plugins_directory_is_watched_again() {
    let host = TestHost::empty().add(USER, "user@1.0.0.wasm").start();
    assert_eq!(served_by(&host, "/user/1").as_deref(), Some("user"));
    let dir = host.plugins().path().to_path_buf();
    let old = dir.with_extension("old");
    let new = dir.with_extension("new");
    std::fs::create_dir(&new).unwrap();
    std::fs::copy(USER, new.join("user@1.0.0.wasm")).unwrap();
    std::fs::copy(PROBE, new.join("probe@1.0.0.wasm")).unwrap();
    std::fs::rename(&dir, &old).unwrap();
    std::fs::rename(&new, &dir).unwrap();
    wait_until("probe loaded from the new directory", WAIT * 2, || {
        (served_by(&host, "/probe/echo").as_deref() == Some("probe")).then_some(())
    });
    // A file added to the new directory is loaded too.
    std::fs::remove_dir_all(&old).unwrap();
    std::fs::copy(USER, dir.join(".u.tmp")).unwrap();
    std::fs::rename(dir.join(".u.tmp"), dir.join("user@1.1.0.wasm")).unwrap();
    wait_until("user 1.1.0 loaded", WAIT, || {
        (host.get("/user/1").header("x-wasmhost-version") == Some("1.1.0")).then_some(())
    });
    // Removed and recreated.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(USER, dir.join("user@1.2.0.wasm")).unwrap();
    wait_until("user 1.2.0 loaded", WAIT * 2, || {
        (host.get("/user/1").header("x-wasmhost-version") == Some("1.2.0")).then_some(())
    });
    host.wait_for_log(&["watching the plugins directory again"], WAIT);
}

/// The service that answered `path`, as its response header names it.
fn served_by(host: &Host, path: &str) -> Option<String> {
    host.get(path)
        .header("x-wasmhost-service")
        .map(str::to_string)
}

/// A component whose start function loops (`tests/fixtures/spin-start.wat`).
fn spin_start() -> Vec<u8> {
    wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spin-start.wat"
    ))
    .unwrap()
}

/// Versions that compile but can never run are refused at load instead of
/// going live: a start function that loops (as a newer version of a live
/// service, it would take all the traffic) and an initial memory above the
/// service's limit. Then a manifest lowering the limit below what the live
/// version needs keeps the last good build.
#[test]
fn versions_that_cannot_start_under_their_limits_never_take_traffic() {
    let host = TestHost::empty()
        .add(USER, "user@1.0.0.wasm")
        .manifest("probe", "[limits]\nmemory = \"64 KiB\"\n")
        .add(PROBE, "probe@1.0.0.wasm")
        .start();
    let errors = load_errors(&host);
    assert!(
        errors.iter().any(|(f, e)| f == "probe@1.0.0.wasm"
            && e.contains("cannot start under its limits")
            && e.contains("ran out of memory (limit 64 KiB)")),
        "{errors:#?}"
    );
    assert_eq!(served_by(&host, "/probe/echo"), None);

    host.plugins().write(".spin.tmp", spin_start());
    std::fs::rename(
        host.plugins().path().join(".spin.tmp"),
        host.plugins().path().join("user@2.0.0.wasm"),
    )
    .unwrap();
    let errors = wait_until("user 2.0.0 refused", WAIT * 3, || {
        let errors = load_errors(&host);
        errors
            .iter()
            .any(|(f, _)| f == "user@2.0.0.wasm")
            .then_some(errors)
    });
    assert!(
        errors.iter().any(|(f, e)| f == "user@2.0.0.wasm"
            && e.contains("cannot start under its limits")
            && e.contains("CPU time limit")),
        "{errors:#?}"
    );
    let r = host.get("/user/1");
    assert_eq!(r.header("x-wasmhost-version"), Some("1.0.0"));
    assert_ne!(r.status, 504);
}

/// A component refused for its compile time costs one timeout: later scans
/// refuse it at once, until its bytes change, and a good version deployed
/// beside it loads.
#[test]
fn a_component_too_slow_to_compile_is_not_compiled_again() {
    let host = TestHost::empty()
        .add(USER, "user@1.0.0.wasm")
        .args(&["--compile-timeout", "1s"])
        .start();
    let bomb = wasmhost_test_support::with_new_digest(INVENTORY);
    host.plugins().write(".bomb.tmp", bomb);
    std::fs::rename(
        host.plugins().path().join(".bomb.tmp"),
        host.plugins().path().join("inventory@1.0.0.wasm"),
    )
    .unwrap();
    wait_until("the slow compile refused", WAIT * 6, || {
        load_errors(&host)
            .iter()
            .any(|(f, e)| f == "inventory@1.0.0.wasm" && e.contains("longer than 1s"))
            .then_some(())
    });
    host.plugins().deploy(USER, "user@1.1.0.wasm");
    wait_until("user 1.1.0 live", WAIT * 2, || {
        (host.get("/user/1").header("x-wasmhost-version") == Some("1.1.0")).then_some(())
    });
    let errors = load_errors(&host);
    assert!(
        errors.iter().any(|(f, e)| f == "inventory@1.0.0.wasm"
            && e.contains("not compiled again until the file changes")),
        "{errors:#?}"
    );
}

/// A route conflict the incumbent survives while running is settled the
/// same way after a restart: the owner recorded when the host last served
/// keeps the prefix, instead of both services going dark.
#[test]
fn the_incumbent_keeps_a_contested_route_across_a_restart() {
    let mut host = TestHost::empty()
        .add(USER, "user@1.0.0.wasm")
        .manifest("user", "routes = [\"/users\"]\n")
        .start();
    host.plugins()
        .write("people.toml", "routes = [\"/users\"]\n")
        .deploy(PROBE, "people@1.0.0.wasm");
    wait_until("the newcomer refused", WAIT * 2, || {
        load_errors(&host)
            .iter()
            .any(|(f, e)| f == "people.toml" && e.contains("`user` keeps it"))
            .then_some(())
    });
    assert_eq!(served_by(&host, "/users/1").as_deref(), Some("user"));
    host.restart();
    assert_eq!(served_by(&host, "/users/1").as_deref(), Some("user"));
    assert!(load_errors(&host)
        .iter()
        .any(|(f, e)| f == "people.toml" && e.contains("`user` keeps it")));
}

/// Each thread of process `pid`: its id, name and niceness (from
/// `/proc/PID/task/*/stat`: field 19, after the parenthesised name).
fn threads_of(pid: u32) -> Vec<(u32, String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // After ") ": state is field 3, so niceness (19) is the 17th.
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        found.push((
            task.file_name().to_string_lossy().parse().unwrap(),
            stat[open + 1..close].to_string(),
            fields[16].parse().unwrap(),
        ));
    }
    found
}

/// Compiles get every core, at a lower priority than serving: one compile
/// thread per core, each 10 nicer than the main thread, so once requests
/// flow the kernel runs them first.
#[test]
fn compile_threads_use_every_core_below_the_request_path() {
    let host = TestHost::empty().add(USER, "user@1.0.0.wasm").start();
    host.get("/users/1").expect_status(404);
    let threads = threads_of(host.pid());
    let main = threads.iter().find(|t| t.0 == host.pid()).unwrap().2;
    // The kernel keeps 15 bytes of a thread's name: `wasmhost-compil`.
    let pool: Vec<_> = threads
        .iter()
        .filter(|t| t.1.starts_with("wasmhost-compil"))
        .collect();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(pool.len() >= cores, "{threads:?} for {cores} cores");
    assert!(
        pool.iter().all(|t| t.2 == (main + 10).min(19)),
        "main thread at {main}: {threads:?}"
    );
    // The request path is not lowered.
    assert!(threads
        .iter()
        .any(|t| t.1.starts_with("tokio") && t.2 == main));
}
