//! The admin API: status, weight changes, promote and rollback, metrics,
//! tokens, bad input, and release state that survives a restart.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use wasmhost_test_support::{state_dir, Host, Plugins, USER};

const BIN: &str = env!("CARGO_BIN_EXE_wasmhost");

fn two_versions() -> Plugins {
    let plugins = Plugins::examples();
    plugins.add(USER, "user@1.1.0.wasm");
    plugins
}

fn weights(host: &Host) -> Vec<(String, u64)> {
    let svc = host.service("user");
    svc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                v["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn admin_calls_need_the_token() {
    let plugins = Plugins::examples();
    let state = state_dir();
    let host = Host::start(BIN, plugins.path(), state.path());
    host.admin("GET", "/admin/services", None, Some(""))
        .expect_status(401);
    host.admin("GET", "/admin/services", None, Some("wrong"))
        .expect_status(401);
    host.admin("GET", "/metrics", None, Some(""))
        .expect_status(401);
    let all = host
        .admin("GET", "/admin/services", None, None)
        .expect_status(200)
        .json();
    let names: Vec<_> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["catalog", "inventory", "order", "user"]);
}

#[test]
fn release_promote_and_rollback_move_traffic_and_survive_a_restart() {
    let plugins = two_versions();
    let state = state_dir();
    let host = Host::start(BIN, plugins.path(), state.path());
    assert_eq!(
        weights(&host),
        [("1.1.0".to_string(), 100), ("1.0.0".to_string(), 0)]
    );

    // Bad input changes nothing.
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": {"1.0.0": 90, "1.1.0": 20}})),
        None,
    )
    .expect_status(422);
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": {"1.0.0": 50, "9.9.9": 50}})),
        None,
    )
    .expect_status(422);
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": "all"})),
        None,
    )
    .expect_status(400);
    host.admin(
        "PUT",
        "/admin/services/nobody/release",
        Some(json!({"weights": {"1.0.0": 100}})),
        None,
    )
    .expect_status(404);
    host.admin(
        "POST",
        "/admin/services/user/promote",
        Some(json!({"version": "3.0.0"})),
        None,
    )
    .expect_status(422);
    assert_eq!(
        weights(&host),
        [("1.1.0".to_string(), 100), ("1.0.0".to_string(), 0)]
    );

    host.admin(
        "POST",
        "/admin/services/user/promote",
        Some(json!({"version": "1.0.0"})),
        None,
    )
    .expect_status(200);
    assert_eq!(
        host.get("/users").header("x-wasmhost-version"),
        Some("1.0.0")
    );
    host.admin(
        "PUT",
        "/admin/services/user/release",
        Some(json!({"weights": {"1.0.0": 50, "1.1.0": 50}})),
        None,
    )
    .expect_status(200);
    let seen: std::collections::BTreeSet<_> = (0..60)
        .map(|_| {
            host.get("/users")
                .header("x-wasmhost-version")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(seen.len(), 2, "a 50/50 split served only {seen:?}");
    host.admin("POST", "/admin/services/user/rollback", None, None)
        .expect_status(200);
    assert_eq!(
        weights(&host),
        [("1.1.0".to_string(), 0), ("1.0.0".to_string(), 100)]
    );

    let metrics = String::from_utf8(
        host.admin("GET", "/metrics", None, None)
            .expect_status(200)
            .body
            .clone(),
    )
    .unwrap();
    assert!(
        metrics.contains("wasmhost_requests_total{service=\"user\",version=\"1.0.0\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("wasmhost_request_duration_seconds_bucket{service=\"user\",version=\"1.1.0\",le=\"+Inf\"}"), "{metrics}");
    let history = host.admin("GET", "/admin/services/user", None, None).json()["history"].clone();
    let actions: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["promote", "release", "rollback"]);
    host.stop();

    let host = Host::start(BIN, plugins.path(), state.path());
    assert_eq!(
        weights(&host),
        [("1.1.0".to_string(), 0), ("1.0.0".to_string(), 100)]
    );
    assert_eq!(
        host.get("/users").header("x-wasmhost-version"),
        Some("1.0.0")
    );
}

#[test]
fn metrics_count_requests_errors_and_traps_per_version() {
    let plugins = Plugins::examples();
    plugins.add(wasmhost_test_support::PROBE, "probe@0.1.0.wasm");
    let state = state_dir();
    let host = Host::start(BIN, plugins.path(), state.path());
    for _ in 0..3 {
        host.get("/probe/echo").expect_status(200);
    }
    host.get("/probe/trap").expect_status(500);
    let svc = host.service("probe");
    let m = &svc["versions"][0]["metrics"];
    assert_eq!(
        (
            m["requests"].as_u64(),
            m["errors"].as_u64(),
            m["traps"].as_u64(),
            m["in_flight"].as_u64()
        ),
        (Some(4), Some(1), Some(1), Some(0)),
        "{svc}"
    );
}

#[test]
fn the_cli_shows_status_and_changes_the_release() {
    let plugins = two_versions();
    let state = state_dir();
    let host = Host::start(BIN, plugins.path(), state.path());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .args([
                "--admin",
                host.admin_addr(),
                "--token",
                wasmhost_test_support::ADMIN_TOKEN,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["release", "user", "--weights", "1.0.0=90,1.1.0=10"]);
    assert!(ok, "release failed: {err}");
    assert!(
        out.contains("user     1.1.0    10%") && out.contains("user     1.0.0    90%"),
        "{out}"
    );
    let (ok, out, _) = cli(&["status"]);
    assert!(
        ok && out.starts_with("SERVICE") && out.contains("order"),
        "{out}"
    );
    let (ok, _, err) = cli(&["promote", "user", "7.0.0"]);
    assert!(!ok && err.contains("no loaded version `7.0.0`"), "{err}");
    let (ok, out, _) = cli(&["promote", "user", "1.1.0"]);
    assert!(ok && out.contains("1.1.0    100%"), "{out}");
    let (ok, out, _) = cli(&["rollback", "user"]);
    assert!(ok && out.contains("1.0.0    100%"), "{out}");
}
