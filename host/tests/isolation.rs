//! Isolation: key-value namespaces, traps, malformed responses, the WASI
//! sandbox, and what a guest sees of its request.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::time::Duration;
use wasmhost_test_support::{Plugins, TestHost, PROBE};

const WAIT: Duration = Duration::from_secs(5);

fn host_with_probe(manifest: &str) -> TestHost {
    let plugins = Plugins::examples();
    plugins
        .add(PROBE, "probe@0.1.0.wasm")
        .write("probe.toml", manifest);
    TestHost::with_plugins(plugins).start()
}

#[test]
fn a_service_cannot_see_or_touch_another_services_keys() {
    let host = host_with_probe("");
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    // The user service keeps `user:1` in its bucket `users`; the probe opens
    // a bucket of the same name and sees only its own (empty) namespace.
    assert_eq!(
        host.get("/probe/kv/users").expect_status(200).json(),
        json!({"keys": []})
    );
    host.get("/probe/kv/users/user:1").expect_status(404);
    host.send(
        "PUT",
        "/probe/kv/users/user:1",
        r#"{"id":1,"name":"Mallory","email":"m@evil"}"#,
    )
    .expect_status(204);
    assert_eq!(
        host.get("/probe/kv/users/user:1").expect_status(200).json()["name"],
        "Mallory"
    );
    assert_eq!(
        host.get("/users/1").expect_status(200).json()["name"],
        "Ada"
    );
    assert_eq!(host.get("/users").json().as_array().unwrap().len(), 1);
}

#[test]
fn a_trap_fails_only_its_own_request() {
    let host = host_with_probe("");
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    std::thread::scope(|s| {
        let background = s.spawn(|| {
            for _ in 0..40 {
                host.get("/users/1").expect_status(200);
            }
        });
        for _ in 0..10 {
            let r = host.get("/probe/trap");
            r.expect_status(500);
            let body = r.json();
            assert_eq!(body["service"], "probe");
            assert_eq!(body["version"], "0.1.0");
            assert!(
                body["error"].as_str().unwrap().contains("trapped"),
                "{body}"
            );
            assert!(
                !body["error"].as_str().unwrap().contains('/'),
                "error leaks a path: {body}"
            );
        }
        background.join().unwrap();
    });
    host.get("/probe/echo").expect_status(200);
    host.wait_for_log(
        &["probe asked to trap", "service=probe", "version=0.1.0"],
        WAIT,
    );
}

#[test]
fn a_malformed_response_is_a_500_naming_the_service() {
    let host = host_with_probe("");
    let r = host.get("/probe/bad-status");
    r.expect_status(500);
    let body = r.json();
    assert_eq!(body["service"], "probe");
    assert!(
        body["error"].as_str().unwrap().contains("status 1000"),
        "{body}"
    );
}

#[test]
fn the_guest_gets_the_full_original_request() {
    let host = host_with_probe("");
    let r = host
        .send("POST", "/probe/echo?a=1&b=two%20words", "hello")
        .json();
    assert_eq!(r["method"], "POST");
    assert_eq!(r["path"], "/probe/echo");
    assert_eq!(r["query"], "a=1&b=two%20words");
    assert_eq!(r["body_len"], 5);
    assert!(
        r["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "content-type" && h[1] == "application/json"),
        "{r}"
    );
}

#[test]
fn the_sandbox_grants_no_files_and_no_environment() {
    let host = host_with_probe("");
    let r = host.get("/probe/sandbox").expect_status(200).json();
    assert!(
        r["file"]["Err"].is_string(),
        "reading a host file should fail: {r}"
    );
    assert_eq!(r["env"], 0);
}

#[test]
fn guest_output_and_config_are_scoped_to_the_service() {
    let host = host_with_probe("[config]\ngreeting = \"hello\"\n");
    assert_eq!(
        host.get("/probe/config/greeting").expect_status(200).json()["value"],
        "hello"
    );
    assert_eq!(
        host.get("/probe/config/missing").expect_status(200).json()["value"],
        serde_json::Value::Null
    );
    host.get("/probe/stdout").expect_status(200);
    host.wait_for_log(
        &[
            "probe says hello on stdout",
            "service=probe",
            "stream=stdout",
        ],
        WAIT,
    );
    host.wait_for_log(
        &[
            "probe says hello on stderr",
            "service=probe",
            "stream=stderr",
        ],
        WAIT,
    );
}

#[test]
fn services_call_each_other_through_the_host() {
    let host = host_with_probe("[grants]\nservices = [\"user\", \"probe\", \"nobody\"]\n");
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    let r = host
        .get("/probe/call/user/users/1")
        .expect_status(200)
        .json();
    assert_eq!(r["status"], 200);
    assert!(r["body"].as_str().unwrap().contains("Ada"), "{r}");
    let r = host.get("/probe/call/nobody/x").expect_status(502).json();
    assert!(r["error"].as_str().unwrap().contains("NotFound"), "{r}");
    // A service not granted is denied with the interface's error.
    let r = host
        .get("/probe/call/order/orders")
        .expect_status(502)
        .json();
    assert!(r["error"].as_str().unwrap().contains("Denied"), "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("[grants] services"),
        "{r}"
    );
    host.wait_for_log(&["service call refused: not granted", "callee=order"], WAIT);
    // A chain deeper than the depth limit (8) is cut with 508.
    let deep = "/probe/call/probe".repeat(9) + "/probe/echo";
    let r = host.get(&deep);
    r.expect_status(508);
    assert_eq!(r.json()["limit"], "call-depth", "{}", r.json());
    // Eight hops are fine.
    let ok = "/probe/call/probe".repeat(8) + "/probe/echo";
    host.get(&ok).expect_status(200);
}

#[test]
fn an_oversized_body_is_refused_with_413() {
    let host = host_with_probe("");
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = host.send("POST", "/probe/echo", big);
    r.expect_status(413);
    assert!(r.json()["error"].as_str().unwrap().contains("limit"));
    assert_eq!(r.json()["limit"], "request-body");
    assert_eq!(r.json()["service"], "probe");
    host.send("POST", "/probe/echo", vec![b'x'; 1024])
        .expect_status(200);
}

#[test]
fn the_request_id_reaches_the_guest_and_every_nested_call() {
    let host = host_with_probe("[grants]\nservices = [\"probe\"]\n");
    // Taken from the client: the guest sees it, and so does the service it
    // calls (the probe calling itself), and the client gets it back.
    let r = host.send_with(
        "GET",
        "/probe/call/probe/probe/echo",
        &[("x-request-id", "trace-me-42")],
    );
    r.expect_status(200);
    assert_eq!(r.header("x-request-id"), Some("trace-me-42"));
    let inner: serde_json::Value =
        serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    assert!(
        inner["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["x-request-id", "trace-me-42"])),
        "{inner}"
    );
    // The nested hop is logged inside the request's span, under its id.
    let line = host.wait_for_log(&["call{callee=probe depth=1", "call answered"], WAIT);
    assert!(line.contains("request_id=\"trace-me-42\""), "{line}");
    // Generated when the client sends none: 16 hex digits, sent back.
    let r = host.get("/probe/echo");
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let seen = r.json()["headers"].clone();
    assert!(
        seen.as_array()
            .unwrap()
            .contains(&json!(["x-request-id", id])),
        "{seen}"
    );
}
