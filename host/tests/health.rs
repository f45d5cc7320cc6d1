//! The host's own probes and its drain: live and ready at paths no manifest
//! can claim; a drain turns ready to 503 at once, keeps serving for the
//! drain delay, then stops.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use wasmhost_test_support::{bin, state_dir, Host, Plugins, TestHost, USER};

#[test]
fn live_and_ready_answer_once_the_first_scan_is_done() {
    let host = TestHost::examples().start();
    host.get("/.well-known/wasmhost/live").expect_status(200);
    let ready = host.get("/.well-known/wasmhost/ready");
    ready.expect_status(200);
    assert_eq!(ready.json()["failing"], serde_json::json!([]));
}

#[test]
fn a_manifest_cannot_claim_the_hosts_paths() {
    let host = TestHost::empty()
        .add(USER, "user@1.0.0.wasm")
        .manifest("user", "routes = [\"/.well-known/wasmhost/ready\"]\n")
        .start();
    let all = host.admin("GET", "/admin/services", None, None).json();
    let errors = all["load_errors"].to_string();
    assert!(errors.contains("keeps for its own endpoints"), "{errors}");
    host.get("/.well-known/wasmhost/ready").expect_status(200);
}

#[test]
fn a_drain_turns_ready_to_503_keeps_serving_for_the_delay_then_stops() {
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let state = state_dir();
    let mut host = Host::start_with(
        &bin(),
        plugins.path(),
        state.path(),
        &["--drain-delay", "2s"],
    );
    host.get("/.well-known/wasmhost/ready").expect_status(200);
    let asked = Instant::now();
    host.admin("POST", "/admin/drain", None, None)
        .expect_status(202);
    let ready = host.get("/.well-known/wasmhost/ready");
    ready.expect_status(503);
    assert_eq!(ready.json()["failing"], serde_json::json!(["draining"]));
    // Still serving during the delay…
    host.get("/user/1").expect_status(404);
    assert_eq!(
        host.get("/user/1").header("x-wasmhost-service"),
        Some("user")
    );
    // …then it stops by itself, cleanly, once the delay is over.
    let status = host.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(host.log().contains("draining: ready answers 503"));
}
