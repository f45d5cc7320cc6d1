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

#[test]
fn a_client_that_stops_when_ready_turns_sees_no_failure_through_a_drain() {
    let plugins = Plugins::new();
    plugins.add(USER, "user@1.0.0.wasm");
    let state = state_dir();
    let mut host = Host::start_with(
        &bin(),
        plugins.path(),
        state.path(),
        &["--drain-delay", "1s"],
    );
    let (ready, work) = (host.url("/.well-known/wasmhost/ready"), host.url("/user/1"));
    // Four clients in a loop, each polling ready before every request, as a
    // load balancer's health check would, and stopping once it turns.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (ready, work) = (ready.clone(), work.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let (mut served, mut failed, mut turned) = (0u32, Vec::new(), false);
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    match client.get(&ready).send() {
                        Ok(r) if r.status().as_u16() == 503 => {
                            turned = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            failed.push(format!("ready: {e}"));
                            break;
                        }
                    }
                    match client.get(&work).send() {
                        Ok(r) if r.headers().contains_key("x-wasmhost-service") => served += 1,
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (served, failed, turned)
            })
        })
        .collect();
    // Load first, then SIGTERM in the middle of it.
    for _ in 0..50 {
        host.get("/user/1");
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &host.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for client in clients {
        let (served, failed, turned) = client.join().unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        assert!(
            turned,
            "ready never turned to 503 before the listener closed"
        );
        assert!(served > 0);
    }
    assert!(host.wait_exit(Duration::from_secs(20)).success());
}
