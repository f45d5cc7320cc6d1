//! Standard wasi:http components (the `wasi:http/proxy` world, as built for
//! `wasmtime serve`) served unchanged: routing, streaming bodies, trailers,
//! limits, metrics, and calls between them and wasmhost services.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;
use wasmhost::views::ServiceView;
use wasmhost_test_support::{Plugins, TestHost, HTTP_HELLO, PROBE};

fn start(manifest: &str) -> TestHost {
    let plugins = Plugins::examples();
    plugins
        .add(HTTP_HELLO, "hello@1.0.0.wasm")
        .write("hello.toml", manifest)
        .add(PROBE, "probe@0.1.0.wasm")
        .write("probe.toml", "[grants]\nservices = [\"hello\"]\n");
    TestHost::with_plugins(plugins).start()
}

#[test]
fn a_wasi_http_component_is_served_with_streams_trailers_and_limits() {
    let host = start("[limits]\nrequest-body = \"1 MiB\"\n\n[grants]\nservices = [\"user\"]\n");
    let r = host.get("/hello");
    r.expect_status(200);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "hello from a wasi:http component\n"
    );
    assert_eq!(r.header("x-wasmhost-service"), Some("hello"));
    assert_eq!(r.header("x-wasmhost-version"), Some("1.0.0"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // On the wire: chunked, with the trailer after the body.
    let addr = host
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("x-chunks: 3\r\n\r\n") {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let raw = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(raw.contains("x-chunks: 3"), "no trailer: {raw}");

    // A 512 KiB body streams in and straight back out.
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    let r = host.send("POST", "/hello/echo", big.clone());
    r.expect_status(200);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big, "the echoed body differs");
    // Over the request-body limit: refused before the guest runs.
    let r = host.send("POST", "/hello/echo", vec![b'x'; 2 * 1024 * 1024]);
    r.expect_status(413);
    assert_eq!(r.json()["service"], "hello");

    // wasi:http → wasmhost service, in-process through http://user.internal.
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    let r = host.get("/hello/user/1");
    r.expect_status(200);
    assert_eq!(r.json()["name"], "Ada");
    host.get("/hello/user/99").expect_status(404);

    // wasmhost service → wasi:http component, through services.call.
    let r = host
        .get("/probe/call/hello/hello")
        .expect_status(200)
        .json();
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"], "hello from a wasi:http component\n");

    // Counted like any version, and shown with its world.
    let svc: ServiceView = host.view("/admin/services/hello");
    assert_eq!(svc.versions[0].world, "wasi:http/proxy", "{svc:?}");
    assert!(svc.versions[0].metrics.requests >= 6, "{svc:?}");
}

#[test]
fn a_wasi_http_component_calls_only_granted_services() {
    let host = start("");
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    let r = host.get("/hello/user/1");
    r.expect_status(502);
    assert!(
        String::from_utf8_lossy(&r.body).contains("HttpRequestDenied"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    host.wait_for_log(
        &[
            "service call refused: not granted",
            "service=hello",
            "callee=user",
        ],
        Duration::from_secs(5),
    );
}
