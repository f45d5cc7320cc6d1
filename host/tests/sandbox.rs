//! The sandbox under attack: the `hostile` fixture tries every way out and
//! every way to take more than its share. Each attack must end only its own
//! request, with its own status and the limit it hit, while a stream of
//! requests to the user service keeps succeeding.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;
use wasmhost::views::ServiceView;
use wasmhost_test_support::{wait_until, Host, Plugins, TestHost, Traffic, HOSTILE};

const WAIT: Duration = Duration::from_secs(5);

/// A plain HTTP server on 127.0.0.1 answering every request with `hello`.
fn hello_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

/// The user example plus `hostile` with `manifest`, and a user to read.
fn start(manifest: &str) -> TestHost {
    let host = TestHost::examples()
        .add(HOSTILE, "hostile@0.1.0.wasm")
        .manifest("hostile", manifest)
        .start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host
}

/// Waits until `n` requests of `service` are running.
fn wait_running(host: &Host, service: &str, n: usize) {
    wait_until(&format!("{n} requests of {service} running"), WAIT, || {
        let view: ServiceView = host.view(&format!("/admin/services/{service}"));
        (view.running == n).then_some(())
    });
}

/// Asserts a JSON error naming the service, version and (when given) limit.
fn expect_failure(host: &Host, path: &str, status: u16, limit: Option<&str>) -> serde_json::Value {
    let r = host.get(path);
    r.expect_status(status);
    let body = r.json();
    assert_eq!(body["service"], "hostile", "{path}: {body}");
    assert_eq!(body["version"], "0.1.0", "{path}: {body}");
    match limit {
        Some(l) => assert_eq!(body["limit"], l, "{path}: {body}"),
        None => assert!(body.get("limit").is_none(), "{path}: {body}"),
    }
    // The next request to the same service succeeds.
    host.get("/hostile/sleep?ms=1").expect_status(200);
    body
}

#[test]
fn every_attack_fails_alone_while_good_traffic_flows() {
    let port = hello_server();
    let manifest = format!(
        "[limits]\ncpu-time = \"200ms\"\nmemory = \"32 MiB\"\n\n[grants]\nservices = [\"hostile\"]\nhttp = [\"127.0.0.1:{port}\", \"*\"]\n"
    );
    let host = start(&manifest);
    let traffic = Traffic::start(host.url("/users/1"), 2);

    // Runaway CPU, with and without host calls: 504 at the CPU deadline.
    for path in ["/hostile/spin", "/hostile/spin-host"] {
        let body = expect_failure(&host, path, 504, Some("cpu-time"));
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("CPU time limit of 200ms"),
            "{body}"
        );
    }
    // Memory growth past 32 MiB: 500, named as out of memory.
    let body = expect_failure(&host, "/hostile/memory", 500, Some("memory"));
    assert!(
        body["error"].as_str().unwrap().contains("out of memory"),
        "{body}"
    );
    // Unbounded recursion: 500 when the stack runs out.
    expect_failure(&host, "/hostile/recursion", 500, Some("stack"));
    // A panic: a trap, 500.
    let body = expect_failure(&host, "/hostile/panic", 500, None);
    assert!(
        body["error"].as_str().unwrap().contains("trapped"),
        "{body}"
    );
    // A 16 MiB response over the 8 MiB default.
    expect_failure(&host, "/hostile/huge?mib=16", 500, Some("response-body"));
    host.get("/hostile/huge?mib=1").expect_status(200);
    // A service calling itself forever: 508.
    expect_failure(&host, "/hostile/call-loop", 508, Some("call-depth"));
    // Handles opened without end: the resource table is bounded.
    expect_failure(&host, "/hostile/handles", 500, Some("resources"));

    // Escapes get the interface's error, never a trap.
    let r = host
        .get("/hostile/file?path=/etc/passwd")
        .expect_status(200)
        .json();
    assert!(r.get("content").is_none(), "read a host file: {r}");
    assert!(r["error"].is_string(), "{r}");
    let r = host.get("/hostile/env").expect_status(200).json();
    assert_eq!(r["vars"], json!([]), "saw the environment: {r}");
    let socket = format!("/hostile/socket?addr=127.0.0.1:{port}");
    let r = host.get(&socket).expect_status(200).json();
    assert!(r.get("connected").is_none(), "opened a socket: {r}");
    for denied in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://127.0.0.1:1/".to_string(),
        "http://10.0.0.1/".to_string(),
    ] {
        let r = host
            .get(&format!("/hostile/http?url={denied}"))
            .expect_status(200)
            .json();
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("HttpRequestDenied")),
            "{denied}: {r}"
        );
    }
    let r = host.get("/hostile/call/order").expect_status(200).json();
    assert!(r["error"].as_str().unwrap().contains("Denied"), "{r}");
    host.wait_for_log(
        &[
            "outbound HTTP refused",
            "service=hostile",
            "169.254.169.254",
        ],
        WAIT,
    );
    host.wait_for_log(&["service call refused: not granted", "callee=order"], WAIT);

    // What is granted works: the listed loopback port.
    let r = host
        .get(&format!("/hostile/http?url=http://127.0.0.1:{port}/x"))
        .expect_status(200)
        .json();
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"], "hello", "{r}");

    let served = traffic.finish();
    eprintln!("good requests served during the attacks: {served}");

    // Every failure is counted against the hostile version, none against user.
    let svc: ServiceView = host.view("/admin/services/hostile");
    let m = &svc.versions[0].metrics;
    assert!(m.errors >= 8, "{svc:?}");
    assert!(m.traps >= 7, "{svc:?}");
    let limits = svc.limits.as_ref().unwrap();
    assert_eq!(
        (limits.cpu_time.as_str(), limits.memory.as_str()),
        ("200ms", "32 MiB")
    );
    let user: ServiceView = host.view("/admin/services/user");
    assert_eq!(user.versions[0].metrics.errors, 0, "{user:?}");
}

/// One instance slot in the whole host, so every request reuses it: a
/// secret the previous request left in memory must be gone, with either
/// memory reset.
fn secret_is_gone_for_the_next_request(args: &[&str]) -> TestHost {
    let mut all = vec!["--max-instances", "1"];
    all.extend_from_slice(args);
    let host = TestHost::empty()
        .add(HOSTILE, "hostile@0.1.0.wasm")
        .args(&all)
        .start();
    let secret = "S3CRET-7f3a9c-do-not-leak";
    for _ in 0..3 {
        let put = host.send("PUT", "/hostile/secret", secret);
        let put = put.expect_status(200).json();
        // The scan sees the planted block, so it would see a leaked one.
        assert!(put["found_own"].as_u64().unwrap() >= 1000, "{put}");
        let r = host
            .get(&format!("/hostile/secret?find={secret}"))
            .expect_status(200)
            .json();
        assert_eq!(r["in_static"], false, "a static survived: {r}");
        // A few copies come with the request itself; the block had 300,000.
        assert!(
            r["longest_run"].as_u64().unwrap() < 10,
            "memory leaked between requests: {r}"
        );
    }
    host
}

#[test]
fn a_secret_left_in_memory_is_gone_for_the_next_request() {
    let host = secret_is_gone_for_the_next_request(&[]);
    // `auto` scans for written pages unless this machine has swap on.
    let swap_on = std::fs::read_to_string("/proc/swaps")
        .is_ok_and(|s| s.lines().skip(1).any(|l| !l.trim().is_empty()));
    let log = host.log();
    assert_eq!(
        log.contains("swap is on: freed instance memory is reset in full"),
        swap_on,
        "{log}"
    );
}

#[test]
fn a_full_memory_reset_also_clears_every_secret() {
    let host = secret_is_gone_for_the_next_request(&["--memory-reset", "full"]);
    host.wait_for_log(
        &["freed instance memory is reset in full (--memory-reset full)"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_full_service_is_refused_at_once_with_503_and_others_are_untouched() {
    let manifest = "[limits]\nconcurrency = 1\n";
    let host = start(manifest);
    let url = host.url("/hostile/sleep?ms=1500");
    let busy = std::thread::spawn(move || reqwest::blocking::get(url).unwrap().status());
    wait_running(&host, "hostile", 1);
    let r = host.get("/hostile/sleep?ms=1");
    r.expect_status(503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["limit"], "concurrency");
    host.get("/users/1").expect_status(200);
    assert_eq!(busy.join().unwrap(), 200);
    host.get("/hostile/sleep?ms=1").expect_status(200);
}

#[test]
fn the_wall_clock_limit_includes_waiting() {
    let host = start("[limits]\ntimeout = \"500ms\"\n");
    let body = expect_failure(&host, "/hostile/sleep?ms=5000", 504, Some("timeout"));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 500ms"),
        "{body}"
    );
}

#[test]
fn guest_output_is_bounded_per_request() {
    let host = start("[limits]\nlog-bytes = \"16 KiB\"\n");
    host.get("/hostile/log?kib=1024").expect_status(200);
    host.wait_for_log(
        &["guest log limit (log-bytes) reached", "service=hostile"],
        WAIT,
    );
    let lines = host
        .log()
        .lines()
        .filter(|l| l.contains("stream=\"stdout\"") || l.contains("stream=stdout"))
        .count();
    // Each line the fixture writes is 1 KiB: exactly 16 fit in 16 KiB.
    assert_eq!(lines, 16, "guest output lines logged");
}

#[test]
fn granted_environment_and_directory_are_visible_read_only() {
    let plugins = Plugins::examples();
    std::fs::create_dir(plugins.path().join("assets")).unwrap();
    std::fs::write(
        plugins.path().join("assets/motd.txt"),
        "hello from the host",
    )
    .unwrap();
    plugins.add(HOSTILE, "hostile@0.1.0.wasm").write(
        "hostile.toml",
        "[grants]\nenv = { GREETING = \"hi\" }\ndir = { host = \"assets\", guest = \"/assets\" }\n",
    );
    let host = TestHost::with_plugins(plugins).start();
    let r = host.get("/hostile/env").expect_status(200).json();
    assert_eq!(r["vars"], json!([["GREETING", "hi"]]), "{r}");
    let r = host
        .get("/hostile/file?path=/assets/motd.txt")
        .expect_status(200)
        .json();
    assert_eq!(r["content"], "hello from the host", "{r}");
    // Read-only: writing fails and leaves the host file alone.
    let r = host
        .send("PUT", "/hostile/file?path=/assets/motd.txt", "overwritten")
        .expect_status(200)
        .json();
    assert!(r.get("written").is_none(), "{r}");
    assert_eq!(
        std::fs::read_to_string(host.plugins().path().join("assets/motd.txt")).unwrap(),
        "hello from the host"
    );
    // Outside the granted directory there is still nothing.
    let r = host
        .get("/hostile/file?path=/etc/passwd")
        .expect_status(200)
        .json();
    assert!(r.get("content").is_none(), "{r}");
    let r = host
        .get("/hostile/file?path=/assets/../../etc/passwd")
        .expect_status(200)
        .json();
    assert!(r.get("content").is_none(), "{r}");
    // The admin API shows the grants, never the environment's values.
    let svc: ServiceView = host.view("/admin/services/hostile");
    let grants = svc.grants.unwrap();
    assert_eq!(grants.env, ["GREETING"]);
    let dir = grants.dir.unwrap();
    assert_eq!(
        (dir.guest.as_str(), dir.access.as_str()),
        ("/assets", "read-only")
    );
}

#[test]
fn a_client_slow_to_send_its_body_holds_no_slot() {
    let host = start("[limits]\nconcurrency = 1\n");
    // A request whose body never finishes arriving...
    let mut slow = std::net::TcpStream::connect(host.addr()).unwrap();
    slow.write_all(b"PUT /hostile/secret HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        .unwrap();
    host.wait_for_log(&["request routed", "path=\"/hostile/secret\""], WAIT);
    // ...does not take the service's only slot.
    host.get("/hostile/sleep?ms=1").expect_status(200);
    drop(slow);
}
