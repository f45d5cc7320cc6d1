//! HTTP hazards from hostile or broken clients: oversized heads, slow heads
//! and bodies, idle connections, chunked bodies over the limit, too many
//! connections, and a shutdown while requests are in flight.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use wasmhost::views::ServiceView;
use wasmhost_test_support::{wait_until, Host, TestHost, HOSTILE};

fn start(extra: &[&str]) -> TestHost {
    TestHost::examples()
        .add(HOSTILE, "hostile@0.1.0.wasm")
        .args(extra)
        .start()
}

fn connect(host: &Host) -> TcpStream {
    let tcp = TcpStream::connect(host.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp
}

/// Reads until the server closes the connection; panics if it has not
/// within 10 s (so a returned reply proves the server closed it).
fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    if let Err(e) = tcp.read_to_end(&mut out) {
        panic!(
            "the server did not close the connection ({e}); read so far: {}",
            String::from_utf8_lossy(&out)
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn oversized_heads_get_431() {
    let host = start(&[]);
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
    let host = start(&["--header-timeout", "1s", "--body-timeout", "1s"]);

    // A head that never ends: the connection is closed, with nothing sent.
    let mut tcp = connect(&host);
    tcp.write_all(b"GET /users HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let reply = read_all(&mut tcp);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );

    // An idle keep-alive connection is closed after its one answer.
    let mut tcp = connect(&host);
    tcp.write_all(b"GET /users HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let reply = read_all(&mut tcp);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");

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
    let host = start(&[]);
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
fn connections_beyond_the_cap_wait_only_when_every_connection_is_busy() {
    let host = start(&["--max-connections", "2"]);
    // Two connections, each running a slow request.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = host.url("/hostile/sleep?ms=3000");
            std::thread::spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap()
                    .get(url)
                    .send()
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Both requests are running once the service has them.
    wait_until(
        "both slow requests running",
        Duration::from_secs(10),
        || {
            let svc: ServiceView = host.view("/admin/services/hostile");
            (svc.running == 2).then_some(())
        },
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    // A third client waits: it times out, unanswered (not refused, not
    // reset), and the host says why.
    match client.get(host.url("/users")).send() {
        Err(e) => assert!(e.is_timeout(), "the third client failed otherwise: {e:?}"),
        Ok(r) => panic!("a third connection was served: {}", r.status()),
    }
    host.wait_for_log(&["every connection busy"], Duration::from_secs(10));
    for b in busy {
        assert_eq!(b.join().unwrap().unwrap(), 200);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(client.get(host.url("/users")).send().unwrap().status(), 200);
}

/// One client holding many idle sockets (more than the cap, and the idle
/// timeout far away) does not lock others out: at the cap the connection
/// idle the longest is closed for each newcomer. The admin listener, with a
/// small cap of its own, does the same.
#[test]
fn an_idle_connection_flood_does_not_lock_out_other_clients() {
    let host = start(&["--max-connections", "20", "--header-timeout", "60s"]);
    let idle: Vec<TcpStream> = (0..100).map(|_| connect(&host)).collect();
    let admin_idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(host.admin_addr()).unwrap())
        .collect();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..8 {
        let r = client.get(host.url("/users")).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client
        .get(format!("http://{}/admin/services", host.admin_addr()))
        .bearer_auth(wasmhost_test_support::ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // The oldest idle sockets were the ones closed.
    let mut first = idle.into_iter().next().unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        first.read(&mut buf).unwrap(),
        0,
        "the oldest idle socket is still open"
    );
    drop(admin_idle);
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let host = start(&[]);
    let url = host.url("/hostile/sleep?ms=1500");
    let in_flight = std::thread::spawn(move || {
        let r = reqwest::blocking::get(url).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    wait_until("the request is running", Duration::from_secs(10), || {
        let hostile: ServiceView = host.view("/admin/services/hostile");
        (hostile.running == 1).then_some(())
    });
    let log = host.stop();
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}\nlog:\n{log}");
    assert!(body.contains("slept_ms"), "{body}");
    assert!(log.contains("stopped"), "{log}");
}

/// A client that asks `Expect: 100-continue` for a body over the limit is
/// told 413 before it sends the body, never `100 Continue` first.
#[test]
fn an_expect_continue_over_the_limit_gets_413_without_100_continue() {
    let host = start(&[]);
    let mut tcp = connect(&host);
    tcp.write_all(
        b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 50000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let reply = read_all(&mut tcp);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(!reply.contains("100 Continue"), "{reply}");
}

/// With `--max-connections-per-peer`, one address cannot take every slot:
/// its connections over the cap are closed as they arrive, while another
/// address is served. (The flood comes from 127.0.0.2, the client from
/// 127.0.0.1: both are loopback.)
#[test]
fn a_per_peer_cap_closes_one_address_extra_connections() {
    let host = start(&["--max-connections-per-peer", "3"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr: std::net::SocketAddr = host.addr().parse().unwrap();
    let from_other = |n: usize| -> Vec<std::net::TcpStream> {
        runtime.block_on(async {
            let mut out = Vec::new();
            for _ in 0..n {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                let stream = socket.connect(addr).await.unwrap();
                out.push(stream.into_std().unwrap());
            }
            out
        })
    };
    let held = from_other(3);
    // Once the host has the three, a fourth from the same address is closed.
    wait_until(
        "the fourth connection closed",
        Duration::from_secs(10),
        || {
            let mut extra = from_other(1).pop().unwrap();
            extra.set_nonblocking(false).unwrap();
            extra
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 1];
            matches!(extra.read(&mut buf), Ok(0)).then_some(())
        },
    );
    assert_eq!(host.get("/users").status, 200);
    drop(held);
}
