//! The control plane end to end: reads and operator commands answer while a
//! version compiles, and the rollback a user reaches after a newcomer took
//! over goes back to the version that served before it.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::time::Duration;
use wasmhost::views::{ServiceView, ServicesView};
use wasmhost_test_support::{wait_until, Host, Plugins, TestHost, INVENTORY, USER};

/// The Python inventory service under a digest no cache has seen (the
/// interpreter takes seconds to compile).
fn uncached_inventory() -> Vec<u8> {
    wasmhost_test_support::with_new_digest(INVENTORY)
}

fn loading_files(host: &Host) -> Vec<String> {
    let all: ServicesView = host.view("/admin/services");
    all.loading.into_iter().map(|l| l.file).collect()
}

#[test]
fn reads_and_release_commands_answer_while_a_python_version_compiles() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    let tmp = host.plugins().path().join(".inventory@1.1.0.wasm.tmp");
    std::fs::write(&tmp, uncached_inventory()).unwrap();
    std::fs::rename(&tmp, host.plugins().path().join("inventory@1.1.0.wasm")).unwrap();

    wait_until(
        "inventory@1.1.0 listed as loading",
        Duration::from_secs(30),
        || {
            loading_files(&host)
                .contains(&"inventory@1.1.0.wasm".to_string())
                .then_some(())
        },
    );
    // Each of these answers while the compile runs…
    let user: ServiceView = host.view("/admin/services/user");
    assert_eq!(user.name, "user");
    let inventory: ServiceView = host.view("/admin/services/inventory");
    assert_eq!(
        inventory.loading.first().and_then(|l| l.version.as_deref()),
        Some("1.1.0"),
        "{inventory:?}"
    );
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": {"1.0.0": 100}})),
        None,
    )
    .expect_status(200);
    let cli = |args: &[&str]| host.cli(args);
    let release = cli(&["release", "user", "--weights", "1.0.0=100"]);
    assert!(
        release.status.success(),
        "{}",
        String::from_utf8_lossy(&release.stderr)
    );
    let status = cli(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && out.contains("inventory@1.1.0.wasm"),
        "{out}"
    );
    assert!(out.contains("loading"), "{out}");
    // A deploy of another service is not held up by the compile: it loads
    // while the interpreter still compiles in the background (it does not
    // take traffic: the weights above keep 1.0.0).
    host.plugins().deploy(USER, "user@1.1.0.wasm");
    wait_until("user@1.1.0 loaded", Duration::from_secs(10), || {
        let user: ServiceView = host.view("/admin/services/user");
        user.version("1.1.0").map(|_| ())
    });
    // …as this proves: the version is still compiling now.
    assert!(
        loading_files(&host).contains(&"inventory@1.1.0.wasm".to_string()),
        "inventory@1.1.0 finished compiling before the reads returned; the test proves nothing"
    );
    // And then it is served.
    wait_until("inventory@1.1.0 loaded", Duration::from_secs(300), || {
        let inventory: ServiceView = host.view("/admin/services/inventory");
        inventory.version("1.1.0").map(|_| ())
    });
    assert!(loading_files(&host).is_empty());
    // The new version answers (an unknown SKU is the service's own 404).
    let reply = host.get("/inventory/widget");
    reply.expect_status(404);
    assert_eq!(reply.header("x-wasmhost-version"), Some("1.1.0"));
}

#[test]
fn rollback_after_a_newcomer_took_over_goes_back_to_the_version_before_it() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    host.plugins().deploy(USER, "user@1.1.0.wasm");
    wait_until("user@1.1.0 takes over", Duration::from_secs(60), || {
        (host.get("/users").header("x-wasmhost-version") == Some("1.1.0")).then_some(())
    });
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": {"1.0.0": 90, "1.1.0": 10}})),
        None,
    )
    .expect_status(200);
    let back: ServiceView = host
        .admin("POST", "/admin/services/user/rollback", None, None)
        .expect_status(200)
        .parse();
    assert_eq!(
        back.weights(),
        [("1.1.0".to_string(), 0), ("1.0.0".to_string(), 100)]
    );
    let user: ServiceView = host.view("/admin/services/user");
    let history: Vec<_> = user
        .history
        .iter()
        .map(|h| (h.action.as_str(), h.detail.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            ("deploy", "1.1.0 takes over from 1.0.0"),
            ("release", "1.0.0=90,1.1.0=10"),
            ("rollback", "1.0.0")
        ]
    );
}

#[test]
fn removing_a_version_the_weights_name_renormalises_the_rest() {
    let plugins = Plugins::examples();
    plugins
        .add(USER, "user@1.1.0.wasm")
        .add(USER, "user@1.2.0.wasm");
    let host = TestHost::with_plugins(plugins).start();
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": {"1.0.0": 30, "1.1.0": 40, "1.2.0": 30}})),
        None,
    )
    .expect_status(200);
    std::fs::remove_file(host.plugins().path().join("user@1.1.0.wasm")).unwrap();
    let user = wait_until("1.1.0 removed", Duration::from_secs(30), || {
        let user: ServiceView = host.view("/admin/services/user");
        (user.versions.len() == 2).then_some(user)
    });
    assert_eq!(
        user.weights(),
        [("1.2.0".to_string(), 50), ("1.0.0".to_string(), 50)]
    );
    assert_eq!(
        user.history.last().map(|h| h.detail.as_str()),
        Some("1.0.0=50,1.2.0=50 (1.1.0 removed)")
    );
    let all: ServicesView = host.view("/admin/services");
    assert!(
        all.load_errors.is_empty(),
        "a removed version must not leave an error: {all:?}"
    );
}

#[test]
fn a_service_compiling_its_first_version_answers_503_with_retry_after() {
    let host = TestHost::examples().start();
    let plugins = host.plugins().path().to_path_buf();
    let tmp = plugins.join(".stock@1.0.0.wasm.tmp");
    std::fs::write(&tmp, uncached_inventory()).unwrap();
    std::fs::rename(&tmp, plugins.join("stock@1.0.0.wasm")).unwrap();
    wait_until("stock listed as loading", Duration::from_secs(30), || {
        loading_files(&host)
            .contains(&"stock@1.0.0.wasm".to_string())
            .then_some(())
    });
    let r = host.get("/stock/anything");
    r.expect_status(503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json()["error"],
        "service `stock` is still loading; retry shortly"
    );
    assert!(
        loading_files(&host).contains(&"stock@1.0.0.wasm".to_string()),
        "stock finished compiling before the request; the test proves nothing"
    );
    // Other services serve meanwhile, and stock once it has compiled.
    host.get("/users").expect_status(200);
    wait_until("stock served", Duration::from_secs(300), || {
        (host.get("/stock/anything").header("x-wasmhost-service") == Some("stock")).then_some(())
    });
}
