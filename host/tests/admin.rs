//! The admin API end to end: status, weight changes, promote and rollback,
//! metrics, tokens, the CLI, and release state that survives a restart.
//! (Its answers to bad input are tested in-process, in `admin_api.rs`.)
#![allow(clippy::unwrap_used)]

use serde_json::json;
use wasmhost::views::{ServiceView, ServicesView};
use wasmhost_test_support::{TestHost, TestHostBuilder, PROBE, USER};

fn two_versions() -> TestHostBuilder {
    TestHost::examples().add(USER, "user@1.1.0.wasm")
}

fn weights(host: &TestHost) -> Vec<(String, u32)> {
    host.view::<ServiceView>("/admin/services/user").weights()
}

fn pair(v: &str, w: u32) -> (String, u32) {
    (v.to_string(), w)
}

#[test]
fn admin_calls_need_the_token() {
    let host = TestHost::examples().start();
    host.admin("GET", "/admin/services", None, Some(""))
        .expect_status(401);
    host.admin("GET", "/admin/services", None, Some("wrong"))
        .expect_status(401);
    host.admin("GET", "/metrics", None, Some(""))
        .expect_status(401);
    let all: ServicesView = host.view("/admin/services");
    let names: Vec<_> = all.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["catalog", "inventory", "notify", "order", "user"]);
}

#[test]
fn release_promote_and_rollback_move_traffic_and_survive_a_restart() {
    let mut host = two_versions().start();
    assert_eq!(weights(&host), [pair("1.1.0", 100), pair("1.0.0", 0)]);

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
    assert_eq!(weights(&host), [pair("1.1.0", 0), pair("1.0.0", 100)]);

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
    let user: ServiceView = host.view("/admin/services/user");
    let actions: Vec<_> = user.history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(actions, ["promote", "release", "rollback"]);
    assert_eq!(user.history[1].detail, "1.0.0=50,1.1.0=50");

    host.restart();
    assert_eq!(weights(&host), [pair("1.1.0", 0), pair("1.0.0", 100)]);
    assert_eq!(
        host.get("/users").header("x-wasmhost-version"),
        Some("1.0.0")
    );
}

#[test]
fn metrics_count_requests_errors_and_traps_per_version() {
    let host = TestHost::examples().add(PROBE, "probe@0.1.0.wasm").start();
    for _ in 0..3 {
        host.get("/probe/echo").expect_status(200);
    }
    host.get("/probe/trap").expect_status(500);
    let probe: ServiceView = host.view("/admin/services/probe");
    let m = &probe.versions[0].metrics;
    // The trapping GET is safe to repeat, so it was tried twice: each
    // attempt counts.
    assert_eq!(
        (m.requests, m.errors, m.traps, m.in_flight),
        (5, 2, 2, 0),
        "{probe:?}"
    );
    assert_eq!(probe.versions[0].retries, 1);
}

#[test]
fn the_cli_shows_status_and_changes_the_release() {
    let host = two_versions().start();
    let cli = |args: &[&str]| {
        let out = host.cli(args);
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
