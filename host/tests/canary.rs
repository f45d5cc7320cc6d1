//! Canary releases: a dropped version takes traffic in steps and is promoted
//! or rolled back by the host itself after comparing it with the stable one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use wasmhost::views::ServiceView;
use wasmhost_test_support::{wait_until, Host, Plugins, TestHost, PROBE, USER, USER_V2};

const MANIFEST: &str = "routes = [\"/users\", \"/user\"]\nrollout = \"canary\"\nsteps = [50, 100]\nstep-interval-secs = 1\nmin-requests = 5\n";

/// Sends traffic to `path` until the admin view of `user` satisfies `done`.
fn drive_until(
    host: &Host,
    path: &str,
    what: &str,
    done: impl Fn(&ServiceView) -> bool,
) -> ServiceView {
    wait_until(what, Duration::from_secs(30), || {
        for _ in 0..20 {
            host.get(path);
        }
        let svc: ServiceView = host.view("/admin/services/user");
        done(&svc).then_some(svc)
    })
}

fn weight(svc: &ServiceView, version: &str) -> u32 {
    svc.version(version).map_or(0, |v| v.weight)
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
    let history: Vec<_> = svc
        .history
        .iter()
        .map(|h| (h.action.as_str(), h.detail.as_str()))
        .collect();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0], ("canary", "1.1.0 gets 50% beside 1.0.0"));
    assert_eq!(history[1].0, "promote", "{history:?}");
    assert!(
        history[1].1.starts_with("1.1.0 promoted after its canary"),
        "{history:?}"
    );
    assert_eq!(
        host.get("/users/1").header("x-wasmhost-version"),
        Some("1.1.0")
    );
}

#[test]
fn a_failing_canary_is_rolled_back_with_its_reason() {
    let plugins = Plugins::new();
    // Analysis alone judges here: with ejection on, the candidate would be
    // out after 5 traps and rolled back at its second ejection instead.
    plugins.add(USER, "user@1.0.0.wasm").write(
        "user.toml",
        format!("{MANIFEST}[resilience]\neject = {{ consecutive = 0 }}\n"),
    );
    let host = TestHost::with_plugins(plugins)
        .args(&["--pin-token", "let-me-pin"])
        .start();

    // The probe fixture, dropped as user 1.1.0, traps on GET /users/trap,
    // where the stable user service answers 400: a 5xx rate of 100% vs 0%
    // (the clients get the stable version's 400 by fallback; the analyst
    // still sees the candidate's traps).
    host.plugins().deploy(PROBE, "user@1.1.0.wasm");
    let svc = drive_until(&host, "/users/trap", "the rollback", |s| {
        s.history.iter().any(|e| e.action == "rollback")
    });
    assert_eq!(weight(&svc, "1.0.0"), 100, "{svc:?}");
    assert_eq!(svc.history[0].action, "canary", "{svc:?}");
    let last = svc.history.last().unwrap();
    assert_eq!(last.action, "rollback", "{svc:?}");
    assert!(last.detail.contains("error rate 100.0%"), "{last:?}");
    assert!(svc.canary.is_none(), "{svc:?}");
    // The rolled-back version stays loaded, pinnable with the pin token
    // only (and then the guest never sees the token).
    let pinned = host.get_pinned("/users/echo", "1.1.0");
    assert_eq!(pinned.header("x-wasmhost-version"), Some("1.0.0"));
    let pinned = host.send_with(
        "GET",
        "/users/echo",
        &[
            ("x-wasmhost-version", "1.1.0"),
            ("x-wasmhost-pin-token", "let-me-pin"),
        ],
    );
    assert_eq!(pinned.header("x-wasmhost-version"), Some("1.1.0"));
    let seen = pinned.json()["headers"].to_string();
    assert!(!seen.contains("let-me-pin"), "{seen}");
    host.wait_for_log(
        &["canary rolled back", "service=user", "version=1.1.0"],
        Duration::from_secs(5),
    );
}

/// Pinned outside requests never steer a canary: a candidate that only
/// pinned traffic reaches is not promoted, and its pinned requests are
/// counted apart. Without a pin token, a rolled-back version is not
/// reachable by a pin either.
#[test]
fn pinned_outside_traffic_is_counted_apart_and_never_promotes_a_canary() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .write("user.toml", MANIFEST);
    let host = TestHost::with_plugins(plugins).start();
    host.plugins().deploy(USER_V2, "user@1.1.0.wasm");
    wait_until("the canary starts", Duration::from_secs(10), || {
        let svc: ServiceView = host.view("/admin/services/user");
        svc.canary.is_some().then_some(())
    });
    // Three step intervals of pinned traffic alone.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let mut sent = 0;
    while std::time::Instant::now() < until {
        let r = host.get_pinned("/users/1", "1.1.0");
        assert_eq!(r.header("x-wasmhost-version"), Some("1.1.0"));
        sent += 1;
    }
    let svc: ServiceView = host.view("/admin/services/user");
    assert!(
        svc.history.iter().all(|h| h.action != "promote"),
        "{:?}",
        svc.history
    );
    assert_eq!(weight(&svc, "1.1.0"), 50, "{svc:?}");
    let candidate = svc.version("1.1.0").unwrap();
    assert_eq!(candidate.metrics.requests, 0);
    assert_eq!(candidate.pinned_metrics.requests, sent);

    // Rolled back, the candidate is out of reach of outside pins.
    host.admin("POST", "/admin/services/user/rollback", None, None)
        .expect_status(200);
    let r = host.get_pinned("/users/1", "1.1.0");
    assert_eq!(r.header("x-wasmhost-version"), Some("1.0.0"));
}
