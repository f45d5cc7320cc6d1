//! HTTP hazards from hostile or broken clients: oversized heads, slow heads
//! and bodies, idle connections, chunked bodies over the limit, too many
//! connections, and a shutdown while requests are in flight.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wasmhost_test_support::{state_dir, Host, Plugins, HOSTILE};

const BIN: &str = env!("CARGO_BIN_EXE_wasmhost");

fn start(extra: &[&str]) -> (Plugins, tempfile::TempDir, Host) {
    let plugins = Plugins::examples();
    plugins.add(HOSTILE, "hostile@0.1.0.wasm");
    let state = state_dir();
    let host = Host::start_with(BIN, plugins.path(), state.path(), extra);
    (plugins, state, host)
}

fn connect(host: &Host) -> TcpStream {
    let addr = host.url("").trim_start_matches("http://").to_string();
    let tcp = TcpStream::connect(addr.trim_end_matches('/')).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp
}

/// Reads until the server closes the connection (or 10 s pass).
fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn oversized_heads_get_431() {
    let (_p, _s, host) = start(&[]);
    let client = reqwest::blocking::Client::new();
    let mut many = client.get(host.url("/users"));
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_eq!(many.send().unwrap().status(), 431);
    let huge = client
        .get(host.url("/users"))
        .header("x-big", "a".repeat(32 * 1024))
        .send()
        .unwrap();
    assert_eq!(huge.status(), 431);
    host.get("/users").expect_status(200);
}

#[test]
fn slow_heads_idle_connections_and_slow_bodies_are_cut() {
    let (_p, _s, host) = start(&["--header-timeout", "1s", "--body-timeout", "1s"]);

    // A head that never ends: the connection is closed.
    let mut tcp = connect(&host);
    tcp.write_all(b"GET /users HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let started = Instant::now();
    read_all(&mut tcp);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // An idle keep-alive connection is closed after the same time.
    let mut tcp = connect(&host);
    tcp.write_all(b"GET /users HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let reply = read_all(&mut tcp);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body that stops short: 408.
    let mut tcp = connect(&host);
    tcp.write_all(b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"name\"")
        .unwrap();
    let reply = read_all(&mut tcp);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"service\":\"user\""), "{reply}");

    host.get("/users").expect_status(200);
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_without_reading_it_all() {
    let (_p, _s, host) = start(&[]);
    let mut tcp = connect(&host);
    tcp.write_all(b"POST /users HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    // 4 MiB offered against a 1 MiB limit; the server may stop reading early.
    for _ in 0..64 {
        if tcp
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| tcp.write_all(&chunk))
            .and_then(|()| tcp.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n");
    let reply = read_all(&mut tcp);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    host.get("/users").expect_status(200);
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_one() {
    let (_p, _s, host) = start(&["--max-connections", "2"]);
    let a = connect(&host);
    let b = connect(&host);
    // Give the host time to accept both.
    std::thread::sleep(Duration::from_millis(300));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    assert!(
        client.get(host.url("/users")).send().is_err(),
        "a third connection was served"
    );
    drop(a);
    drop(b);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(client.get(host.url("/users")).send().unwrap().status(), 200);
    host.wait_for_log(&["connection limit reached"], Duration::from_secs(5));
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let (_p, _s, host) = start(&[]);
    let url = host.url("/hostile/sleep?ms=1500");
    let in_flight = std::thread::spawn(move || {
        let r = reqwest::blocking::get(url).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = host.stop();
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}\nlog:\n{log}");
    assert!(body.contains("slept_ms"), "{body}");
    assert!(log.contains("stopped"), "{log}");
}
