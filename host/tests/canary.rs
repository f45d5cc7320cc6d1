//! Canary releases: a dropped version takes traffic in steps and is promoted
//! or rolled back by the host itself after comparing it with the stable one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use wasmhost_test_support::{wait_until, Host, Plugins, TestHost, PROBE, USER, USER_V2};

const MANIFEST: &str = "routes = [\"/users\", \"/user\"]\nrollout = \"canary\"\nsteps = [50, 100]\nstep-interval-secs = 1\nmin-requests = 5\n";

/// Sends traffic to `path` until the admin view of `user` satisfies `done`.
fn drive_until(
    host: &Host,
    path: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_until(what, Duration::from_secs(30), || {
        for _ in 0..20 {
            host.get(path);
        }
        let svc = host.service("user");
        done(&svc).then_some(svc)
    })
}

fn weight(svc: &serde_json::Value, version: &str) -> u64 {
    svc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .map(|v| v["weight"].as_u64().unwrap())
        .unwrap_or(0)
}

#[test]
fn a_healthy_canary_is_promoted_step_by_step() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .write("user.toml", MANIFEST);
    let host = TestHost::with_plugins(plugins).start();
    host.post_json(
        "/users",
        serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .expect_status(201);

    host.plugins().deploy(USER_V2, "user@1.1.0.wasm");
    // A slow machine may not see the 50% step between two polls, so the
    // steps are checked in the history rather than observed live.
    let svc = drive_until(&host, "/users/1", "the promotion", |s| {
        weight(s, "1.1.0") == 100
    });
    let history: Vec<_> = svc["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap().to_string(),
                h["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(history.len(), 2, "{svc}");
    assert_eq!(history[0].0, "canary", "{svc}");
    assert!(history[0].1.contains("gets 50%"), "{svc}");
    assert_eq!(history[1].0, "promote", "{svc}");
    assert_eq!(
        host.get("/users/1").header("x-wasmhost-version"),
        Some("1.1.0")
    );
}

#[test]
fn a_failing_canary_is_rolled_back_with_its_reason() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .write("user.toml", MANIFEST);
    let host = TestHost::with_plugins(plugins).start();

    // The probe fixture, dropped as user 1.1.0, traps on GET /users/trap,
    // where the stable user service answers 400: a 5xx rate of 100% vs 0%.
    host.plugins().deploy(PROBE, "user@1.1.0.wasm");
    let svc = drive_until(&host, "/users/trap", "the rollback", |s| {
        s["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["action"] == "rollback"))
    });
    assert_eq!(weight(&svc, "1.0.0"), 100, "{svc}");
    assert_eq!(svc["history"][0]["action"], "canary", "{svc}");
    let last = svc["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "rollback", "{svc}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("error rate 100.0%"),
        "{last}"
    );
    // The rolled-back version stays loaded and pinnable.
    let client = reqwest::blocking::Client::new();
    let pinned = client
        .get(host.url("/users/echo"))
        .header("x-wasmhost-version", "1.1.0")
        .send()
        .unwrap();
    assert_eq!(pinned.headers()["x-wasmhost-version"], "1.1.0");
    host.wait_for_log(
        &["canary rolled back", "service=user", "version=1.1.0"],
        Duration::from_secs(5),
    );
}
