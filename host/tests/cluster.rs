//! Replicas on one Redis (`--cluster`): the key-value contract on a real
//! `redis-server`, exact increments from three real replicas, data moved
//! from a host's own store into the cluster, and a Redis that goes away.
//!
//! Each test starts its own `redis-server` on a random loopback port
//! (`test-support`'s `servers`); without one installed the test says it
//! skipped and why, and under `CI=true` it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;
use wasmhost::kv::{Namespace, WriteSet, LIST_PAGE};
use wasmhost::redis_kv::RedisKv;
use wasmhost_test_support::servers::{free_port, or_skip, Paced, Redis};
use wasmhost_test_support::{bin, serve_command, wait_until, TestHost, USER};

fn redis(test: &str) -> Option<Redis> {
    or_skip(test, Redis::start())
}

/// A host with the user service (and its manifest: routes /users).
fn user_host() -> wasmhost_test_support::TestHostBuilder {
    TestHost::empty().add(USER, "user@1.0.0.wasm").with(|p| {
        p.copy_manifest("user.toml");
    })
}

fn replica(redis: &Redis) -> TestHost {
    user_host().args(&["--cluster", &redis.url()]).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_key_value_contract() {
    let Some(mut server) = redis("redis_keeps_the_key_value_contract") else {
        return;
    };
    let kv = RedisKv::open(&server.url()).unwrap();
    kv.ping().await.unwrap();
    let user = Namespace::new("user", "data").unwrap();
    let order = Namespace::new("order", "data").unwrap();
    let colon = Namespace::new("user", "data:x").unwrap();

    // Namespaces: a service never sees another's keys, nor a bucket
    // another bucket's, even one whose name extends it with a colon.
    kv.set(&user, "x:k", b"secret").await.unwrap();
    kv.set(&colon, "k", b"other").await.unwrap();
    assert_eq!(kv.get(&order, "x:k").await.unwrap(), None);
    assert_eq!(
        kv.get(&user, "x:k").await.unwrap().as_deref(),
        Some(&b"secret"[..])
    );
    assert_eq!(kv.all_keys(&user).await.unwrap(), vec!["x:k".to_string()]);
    assert_eq!(kv.all_keys(&colon).await.unwrap(), vec!["k".to_string()]);
    assert!(kv.all_keys(&order).await.unwrap().is_empty());
    assert_eq!(
        server.command("EXISTS wh:{user}:data:x:k").as_deref(),
        Some(":1\r\n")
    );
    assert!(kv.exists(&user, "x:k").await.unwrap());
    kv.delete(&user, "x:k").await.unwrap();
    kv.delete(&user, "never-there").await.unwrap();
    assert!(!kv.exists(&user, "x:k").await.unwrap());
    assert!(kv.set(&user, &"k".repeat(5000), b"").await.is_err());

    // Listing walks SCAN: every key once, in pages.
    let many = Namespace::new("user", "many").unwrap();
    let mut set = WriteSet::default();
    for i in 0..(2 * LIST_PAGE + 500) {
        set.set(&many, &format!("k{i:05}"), b"v".to_vec()).unwrap();
    }
    kv.commit(&set).await.unwrap();
    let (mut seen, mut pages, mut cursor) = (BTreeSet::new(), 0, None);
    loop {
        let (keys, next) = kv.list_keys(&many, cursor).await.unwrap();
        assert!(keys.len() <= 2 * LIST_PAGE, "a page of {}", keys.len());
        pages += 1;
        seen.extend(keys);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2 * LIST_PAGE + 500);
    assert!(pages > 1, "{pages} pages");

    // Increments are INCRBY: exact under concurrency.
    let counter = Namespace::new("order", "orders").unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (kv, ns) = (kv.clone(), counter.clone());
            tokio::spawn(async move {
                for _ in 0..250 {
                    kv.increment(&ns, "next-id", 1).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(kv.increment(&counter, "next-id", 0).await.unwrap(), 2000);
    kv.set(&counter, "word", b"abc").await.unwrap();
    let err = kv.increment(&counter, "word", 1).await.unwrap_err();
    assert!(err.to_string().contains("not a decimal"), "{err}");

    // A server that goes away: a clear error naming it, within the
    // response timeout, and service again once it is back.
    server.stop();
    let started = std::time::Instant::now();
    let err = kv.get(&user, "k").await.unwrap_err();
    assert!(
        started.elapsed() < wasmhost::redis_kv::RESPONSE_TIMEOUT * 3,
        "{:?}",
        started.elapsed()
    );
    assert!(format!("{err:#}").contains("unreachable"), "{err:#}");
    assert!(kv.is_failing());
    server.restart();
    let back = wait_until("the connection recovers", Duration::from_secs(10), || {
        block_on_ok(kv.set(&user, "k", b"again"))
    });
    assert!(back);
    assert!(!kv.is_failing());
}

/// Polls an async call from a blocking `wait_until` (the test's runtime
/// is multi-threaded, so blocking in place is allowed).
fn block_on_ok(call: impl std::future::Future<Output = anyhow::Result<()>>) -> Option<bool> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(call))
        .ok()
        .map(|()| true)
}

#[test]
fn three_replicas_count_exactly_and_share_their_data() {
    let Some(server) = redis("three_replicas_count_exactly_and_share_their_data") else {
        return;
    };
    let replicas: Vec<TestHost> = (0..3).map(|_| replica(&server)).collect();
    for r in &replicas {
        assert!(
            r.log().contains("key-value data on the cluster's Redis"),
            "{}",
            r.log()
        );
    }
    // 3 replicas × 4 clients create 10,000 users: every id is given once.
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 4;
    let urls: Vec<String> = replicas.iter().map(|r| r.url("/users")).collect();
    let ids: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..replicas.len() * CLIENTS)
            .map(|w| {
                let url = urls[w % urls.len()].clone();
                let workers = urls.len() * CLIENTS;
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let share = TOTAL / workers + usize::from(w < TOTAL % workers);
                    (0..share)
                        .map(|i| {
                            let reply = client
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(format!(
                                    r#"{{"name":"u{w}-{i}","email":"u{w}-{i}@example.com"}}"#
                                ))
                                .send()
                                .unwrap();
                            assert_eq!(reply.status().as_u16(), 201, "{:?}", reply.text());
                            let user: serde_json::Value = reply.json().unwrap();
                            user["id"].as_u64().unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all: BTreeSet<u64> = ids.iter().flatten().copied().collect();
    assert_eq!(ids.iter().map(Vec::len).sum::<usize>(), TOTAL);
    assert_eq!(all.len(), TOTAL, "an id was given twice");
    assert_eq!(all.first(), Some(&1));
    assert_eq!(all.last(), Some(&(TOTAL as u64)));
    assert_eq!(
        server.command("GET wh:{user}:users:next-id").as_deref(),
        Some("$5\r\n10000\r\n")
    );

    // A user created through one replica is read through the others.
    let created = replicas[0]
        .post_json(
            "/users",
            serde_json::json!({"name": "ada", "email": "ada@example.com"}),
        )
        .json();
    let id = created["id"].as_u64().unwrap();
    for r in &replicas[1..] {
        let seen = r.get(&format!("/users/{id}"));
        seen.expect_status(200);
        assert_eq!(seen.json()["name"], "ada");
    }
}

#[test]
fn a_hosts_data_moves_into_the_cluster() {
    let Some(server) = redis("a_hosts_data_moves_into_the_cluster") else {
        return;
    };
    // One host on its own store makes three users, then stops.
    let alone = user_host().start();
    for name in ["ada", "grace", "edsger"] {
        alone
            .post_json(
                "/users",
                serde_json::json!({"name": name, "email": format!("{name}@example.com")}),
            )
            .expect_status(201);
    }
    let state = alone.state().to_path_buf();
    let plugins = tempfile::tempdir().unwrap();
    let file = plugins.path().join("kv.jsonl");
    let kept = tempfile::tempdir().unwrap();
    copy_dir(&state, kept.path());
    drop(alone);

    let export = std::process::Command::new(bin())
        .args(["kv", "export", "--state"])
        .arg(kept.path())
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&export.stderr);
    assert!(export.status.success(), "{said}");
    assert!(said.contains("exported 4 keys"), "{said}");
    let import = std::process::Command::new(bin())
        .args(["kv", "import", "--cluster", &server.url(), "--file"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&import.stderr);
    assert!(import.status.success(), "{said}");
    assert!(said.contains("imported 4 keys"), "{said}");

    // A replica on the cluster serves them and carries on the ids.
    let replica = replica(&server);
    let listed = replica.get("/users").json();
    let names: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["ada", "edsger", "grace"]));
    let next = replica
        .post_json(
            "/users",
            serde_json::json!({"name": "barbara", "email": "barbara@example.com"}),
        )
        .json();
    assert_eq!(next["id"], 4);

    // And the cluster exports what it holds, on stdout.
    let back = std::process::Command::new(bin())
        .args(["kv", "export", "--cluster", &server.url()])
        .output()
        .unwrap();
    assert!(back.status.success());
    let lines = String::from_utf8(back.stdout).unwrap();
    assert_eq!(lines.lines().count(), 5, "{lines}");
    assert!(lines.contains(r#""key":"next-id","value":"4""#), "{lines}");

    // A bad line stops the import before anything is written.
    std::fs::write(&file, "{\"service\":\"user\"}\n").unwrap();
    let bad = std::process::Command::new(bin())
        .args(["kv", "import", "--cluster", &server.url(), "--file"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(said.contains("line 1 is not an exported entry"), "{said}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_replica_outlives_its_redis_going_away() {
    let Some(mut server) = redis("a_replica_outlives_its_redis_going_away") else {
        return;
    };
    let replica = replica(&server);
    replica
        .post_json(
            "/users",
            serde_json::json!({"name": "ada", "email": "ada@example.com"}),
        )
        .expect_status(201);
    server.stop();
    let failed = replica.get("/users/1");
    assert_eq!(
        failed.status,
        500,
        "{}",
        String::from_utf8_lossy(&failed.body)
    );
    let body = String::from_utf8_lossy(&failed.body).into_owned();
    assert!(body.contains("unreachable"), "{body}");
    // It stays ready (every replica shares the Redis: failing readiness
    // would take them all out) and says once what is wrong.
    replica
        .get("/.well-known/wasmhost/ready")
        .expect_status(200);
    replica.get("/users/1");
    replica.wait_for_log(
        &["the shared key-value store is unreachable"],
        Duration::from_secs(5),
    );
    assert_eq!(
        replica
            .log()
            .matches("the shared key-value store is unreachable")
            .count(),
        1
    );
    server.restart();
    // The restarted server is empty (it saves nothing): the id starts again.
    let again = wait_until("the replica writes again", Duration::from_secs(15), || {
        let reply = replica.post_json(
            "/users",
            serde_json::json!({"name": "grace", "email": "grace@example.com"}),
        );
        (reply.status == 201).then(|| reply.json())
    });
    assert_eq!(again["id"], 1);
    replica.wait_for_log(
        &["the shared key-value store answers again"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_replica_without_its_redis_does_not_start() {
    let plugins = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let out = serve_command(plugins.path(), state.path())
        .args(["--cluster", &url])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("does not answer"), "{said}");
    assert!(said.contains("127.0.0.1"), "{said}");
    let out = serve_command(plugins.path(), state.path())
        .args(["--cluster", "http://not-redis"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not a Redis URL"), "{said}");
}

/// Replicas with user 1.0.0 and 1.1.0 (the same build under two versions),
/// once each reports both loaded and none holds either.
fn two_version_replicas(redis: &Redis, n: usize) -> Vec<TestHost> {
    let replicas = started_replicas(redis, n);
    let settled = |r: &TestHost| {
        let (reporting, on) = loaded_on(r);
        let view = r.admin("GET", "/admin/services/user", None, None).json();
        let waiting = view["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["state"] == "waiting");
        reporting == n as u64 && on.iter().all(|k| *k == n as u64) && !waiting
    };
    wait_until(
        "every replica has both versions",
        Duration::from_secs(15),
        || replicas.iter().all(settled).then_some(()),
    );
    replicas
}

fn started_replicas(redis: &Redis, n: usize) -> Vec<TestHost> {
    (0..n)
        .map(|_| {
            TestHost::empty()
                .add(USER, "user@1.0.0.wasm")
                .add(USER, "user@1.1.0.wasm")
                .with(|p| {
                    p.copy_manifest("user.toml");
                })
                .args(&["--cluster", &redis.url()])
                .start()
        })
        .collect()
}

/// The release epoch a replica serves.
fn epoch_of(host: &TestHost) -> u64 {
    host.admin("GET", "/admin/services/user", None, None).json()["release_epoch"]
        .as_u64()
        .unwrap()
}

/// `PUT /admin/services/user/release` on `host`, with `If-Match` when given.
fn put_weights(host: &TestHost, old: u32, if_match: Option<u64>) -> (u16, serde_json::Value) {
    let mut req = reqwest::blocking::Client::new()
        .put(format!(
            "http://{}/admin/services/user/release",
            host.admin_addr()
        ))
        .bearer_auth(wasmhost_test_support::ADMIN_TOKEN)
        .body(
            serde_json::json!({
                "weights": {"1.0.0": old, "1.1.0": 100 - old},
                "sticky": "header:x-user-id",
            })
            .to_string(),
        );
    if let Some(epoch) = if_match {
        req = req.header("if-match", format!("\"{epoch}\""));
    }
    let reply = req.send().unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().unwrap())
}

/// Waits until every replica serves epoch `epoch` or later.
fn all_at(replicas: &[TestHost], epoch: u64) {
    wait_until(
        "every replica applies the epoch",
        Duration::from_secs(10),
        || replicas.iter().all(|r| epoch_of(r) >= epoch).then_some(()),
    );
}

#[test]
fn one_release_document_for_every_replica() {
    let Some(server) = redis("one_release_document_for_every_replica") else {
        return;
    };
    let replicas = two_version_replicas(&server, 3);
    let start = replicas.iter().map(epoch_of).max().unwrap();
    all_at(&replicas, start);

    // A change on any replica is applied by the others (pub/sub), p99 ≤ 1 s
    // over 50 changes.
    let mut delays = Vec::new();
    for trial in 0..50usize {
        let writer = &replicas[trial % 3];
        let (status, view) = put_weights(writer, if trial % 2 == 0 { 90 } else { 80 }, None);
        assert_eq!(status, 200, "{view}");
        let epoch = view["release_epoch"].as_u64().unwrap();
        let started = std::time::Instant::now();
        for (i, other) in replicas.iter().enumerate() {
            if i == trial % 3 {
                continue;
            }
            wait_until(
                "a replica applies the change",
                Duration::from_secs(5),
                || (epoch_of(other) >= epoch).then_some(()),
            );
            delays.push(started.elapsed());
        }
    }
    delays.sort();
    let p99 = delays[delays.len() * 99 / 100 - 1];
    eprintln!(
        "release propagation over {} applications: p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        delays[delays.len() / 2],
        p99,
        delays[delays.len() - 1]
    );
    assert!(p99 <= Duration::from_secs(1), "p99 {p99:?}");

    // With the notices cut (Redis drops every subscriber), the 2 s poll
    // still brings each change, within 2.5 s.
    let mut slowest = Duration::ZERO;
    for trial in 0..5usize {
        let killed = server.command("CLIENT KILL TYPE pubsub").unwrap();
        assert!(killed.starts_with(':'), "{killed}");
        let (status, view) = put_weights(&replicas[0], if trial % 2 == 0 { 90 } else { 80 }, None);
        assert_eq!(status, 200, "{view}");
        let epoch = view["release_epoch"].as_u64().unwrap();
        let started = std::time::Instant::now();
        for other in &replicas[1..] {
            wait_until("a replica polls the change", Duration::from_secs(5), || {
                (epoch_of(other) >= epoch).then_some(())
            });
        }
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("release propagation with the notices cut: slowest of 5 {slowest:?}");
    assert!(slowest <= Duration::from_millis(2500), "{slowest:?}");
    replicas[1].wait_for_log(&["the release notices stopped"], Duration::from_secs(1));

    // Two writers that read the same epoch: one wins, the other gets 409.
    let epoch = epoch_of(&replicas[0]);
    all_at(&replicas, epoch);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| put_weights(&replicas[1], 70, Some(epoch)));
        let b = s.spawn(|| put_weights(&replicas[2], 60, Some(epoch)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let refused = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(
        refused["error"].as_str().unwrap().contains("changed first"),
        "{refused}"
    );
    // A stale If-Match on one replica is refused too, and changes nothing.
    let (status, _) = put_weights(&replicas[0], 50, Some(epoch));
    assert_eq!(status, 409);
    all_at(&replicas, epoch + 1);
    for r in &replicas {
        assert_eq!(epoch_of(r), epoch + 1);
    }
}

#[test]
fn a_sticky_user_sees_one_version_on_every_replica() {
    let Some(server) = redis("a_sticky_user_sees_one_version_on_every_replica") else {
        return;
    };
    let replicas = two_version_replicas(&server, 3);
    let (status, view) = put_weights(&replicas[0], 90, None);
    assert_eq!(status, 200, "{view}");
    all_at(&replicas, view["release_epoch"].as_u64().unwrap());

    let client = reqwest::blocking::Client::new();
    let version = |r: &TestHost, user: &str| -> String {
        let reply = client
            .get(r.url("/users"))
            .header("x-user-id", user)
            .send()
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply.headers()["x-wasmhost-version"]
            .to_str()
            .unwrap()
            .to_string()
    };
    // 1,000 users × 3 replicas × 3 requests.
    let mut on_candidate = 0;
    for u in 0..1000 {
        let user = format!("user-{u}");
        let seen: BTreeSet<String> = (0..9).map(|i| version(&replicas[i % 3], &user)).collect();
        assert_eq!(seen.len(), 1, "{user} saw {seen:?}");
        on_candidate += usize::from(seen.contains("1.1.0"));
    }
    assert!(
        (80..=120).contains(&on_candidate),
        "expected 10% ± 2 of users on 1.1.0, got {on_candidate} of 1000"
    );
}

/// Whether something listens on `addr` (a replica that exited is a
/// zombie until reaped, so its pid says nothing).
fn listening(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[test]
fn a_replica_that_stops_or_dies_fails_no_get() {
    let Some(server) = redis("a_replica_that_stops_or_dies_fails_no_get") else {
        return;
    };
    let replicas: Vec<TestHost> = (0..3)
        .map(|_| {
            user_host()
                .args(&["--cluster", &server.url(), "--drain-delay", "1s"])
                .start()
        })
        .collect();
    replicas[0]
        .post_json(
            "/users",
            serde_json::json!({"name": "ada", "email": "ada@example.com"}),
        )
        .expect_status(201);
    let addrs: Vec<&str> = replicas.iter().map(|r| r.addr()).collect();
    let Some(proxy) = or_skip(
        "a_replica_that_stops_or_dies_fails_no_get",
        wasmhost_test_support::servers::Haproxy::start(&addrs),
    ) else {
        return;
    };
    wait_until("the proxy serves", Duration::from_secs(10), || {
        reqwest::blocking::get(proxy.url("/users/1"))
            .ok()
            .filter(|r| r.status() == 200)
    });
    let traffic = Paced::start("GET", proxy.url("/users/1"), "", 200, 8);
    let after = |traffic: &Paced, n: u64| {
        let until = traffic.sent() + n;
        wait_until("the traffic goes on", Duration::from_secs(30), || {
            (traffic.sent() >= until).then_some(())
        });
    };
    after(&traffic, 400);
    // SIGTERM: ready turns 503, the proxy takes it out, it finishes what it has.
    let (first, second) = (replicas[0].pid(), replicas[1].pid());
    signal(first, "-TERM");
    let stopped = replicas[0].addr().to_string();
    wait_until("the replica stops", Duration::from_secs(15), || {
        (!listening(&stopped)).then_some(())
    });
    after(&traffic, 400);
    // SIGKILL: what it was answering is lost, and retried elsewhere.
    signal(second, "-KILL");
    after(&traffic, 600);
    let (ok, failed) = traffic.finish();
    assert!(ok >= 1400, "{ok} answered");
    assert!(
        failed.is_empty(),
        "{} of {} GETs failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    eprintln!("failover: {ok} GETs through haproxy at 200/s, a replica stopped (SIGTERM) and one killed (SIGKILL): 0 failed");
}

#[test]
fn a_bad_release_document_changes_nothing() {
    let Some(server) = redis("a_bad_release_document_changes_nothing") else {
        return;
    };
    let replicas = two_version_replicas(&server, 2);
    let (status, view) = put_weights(&replicas[0], 90, None);
    assert_eq!(status, 200, "{view}");
    let epoch = view["release_epoch"].as_u64().unwrap();
    all_at(&replicas, epoch);
    // Someone writes junk with a newer epoch.
    let next = epoch + 1;
    assert!(server
        .command("SET wh:{release} not-json")
        .unwrap()
        .starts_with("+OK"));
    assert!(server
        .command(&format!("SET wh:{{release}}:epoch {next}"))
        .unwrap()
        .starts_with("+OK"));
    replicas[1].wait_for_log(
        &["the cluster's release document is refused", "is corrupt"],
        Duration::from_secs(5),
    );
    // Both still serve the 90/10 release they had.
    for r in &replicas {
        assert_eq!(epoch_of(r), epoch);
        r.get("/users").expect_status(200);
    }
}

const CANARY: &str = "routes = [\"/users\", \"/user\"]\nrollout = \"canary\"\nsteps = [50, 100]\nstep-interval-secs = 1\nmin-requests = 5\n[resilience]\neject = { consecutive = 0 }\n";

/// Which of `replicas` says it leads canary analysis, once one does.
fn leader(replicas: &[TestHost], except: Option<usize>) -> usize {
    wait_until(
        "a replica leads canary analysis",
        Duration::from_secs(15),
        || {
            replicas
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != except)
                .find(|(_, r)| r.log().contains("this replica leads canary analysis"))
                .map(|(i, _)| i)
        },
    )
}

#[test]
fn one_replica_decides_a_canary_over_every_replicas_metrics() {
    let Some(server) = redis("one_replica_decides_a_canary_over_every_replicas_metrics") else {
        return;
    };
    let replicas: Vec<TestHost> = (0..3)
        .map(|_| {
            TestHost::empty()
                .add(USER, "user@1.0.0.wasm")
                .manifest("user", CANARY)
                .args(&["--cluster", &server.url()])
                .start()
        })
        .collect();
    let first = leader(&replicas, None);
    // The probe fixture as user 1.1.0 traps on GET /users/trap, where the
    // stable version answers 400: 100% errors against 0% (clients get the
    // stable answer by fallback).
    for r in &replicas {
        r.plugins()
            .deploy(wasmhost_test_support::PROBE, "user@1.1.0.wasm");
    }
    let view = wait_until(
        "one rollback, on every replica",
        Duration::from_secs(60),
        || {
            for r in &replicas {
                for _ in 0..10 {
                    r.get("/users/trap");
                }
            }
            let view = replicas[0]
                .admin("GET", "/admin/services/user", None, None)
                .json();
            let rolled_back = view["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["action"] == "rollback");
            rolled_back.then_some(view)
        },
    );

    let history = view["history"].as_array().unwrap();
    let rollbacks = history.iter().filter(|h| h["action"] == "rollback").count();
    assert_eq!(rollbacks, 1, "{history:?}");
    let canaries = history.iter().filter(|h| h["action"] == "canary").count();
    assert_eq!(canaries, 1, "{history:?}");
    // Every replica serves the rollback, and only the leader decided it.
    let epoch = view["release_epoch"].as_u64().unwrap();
    all_at(&replicas, epoch);
    for r in &replicas {
        let v = r.admin("GET", "/admin/services/user", None, None).json();
        let candidate = v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["version"] == "1.1.0")
            .unwrap()
            .clone();
        assert_eq!(candidate["weight"], 0, "{v}");
    }
    let deciders: Vec<usize> = (0..3)
        .filter(|i| replicas[*i].log().contains("canary rolled back"))
        .collect();
    assert_eq!(deciders, vec![first], "only the leader decides");

    // The leader dies: another takes the lease within its 10 s (+ a renewal).
    signal(replicas[first].pid(), "-KILL");
    let started = std::time::Instant::now();
    let next = leader(&replicas, Some(first));
    assert_ne!(next, first);
    assert!(
        started.elapsed() <= Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    eprintln!(
        "canary leader: replica {next} took over {:?} after the leader was killed",
        started.elapsed()
    );
}

/// What `GET /admin/services` says of the user service's replicas: how
/// many report, and on how many each version is loaded.
fn loaded_on(host: &TestHost) -> (u64, Vec<u64>) {
    let all = host.admin("GET", "/admin/services", None, None).json();
    let user = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "user")
        .unwrap()
        .clone();
    let on = user["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["loaded_on"].as_u64().unwrap_or(0))
        .collect();
    (user["replicas"].as_u64().unwrap_or(0), on)
}

#[test]
fn each_version_shows_the_replicas_it_is_loaded_on() {
    let Some(server) = redis("each_version_shows_the_replicas_it_is_loaded_on") else {
        return;
    };
    let mut replicas = two_version_replicas(&server, 3);
    wait_until(
        "every replica reports both versions",
        Duration::from_secs(10),
        || (loaded_on(&replicas[0]) == (3, vec![3, 3])).then_some(()),
    );
    let all = replicas[1]
        .admin("GET", "/admin/services", None, None)
        .json();
    let reports = all["replicas"].as_array().unwrap();
    assert_eq!(reports.len(), 3, "{all}");
    assert!(
        reports.iter().all(|r| r["epoch"].as_u64().is_some()),
        "{all}"
    );

    // One replica gets a third version: loaded on 1 of 3.
    replicas[2].plugins().deploy(USER, "user@1.2.0.wasm");
    wait_until(
        "the third version shows on one replica",
        Duration::from_secs(10),
        || (loaded_on(&replicas[2]) == (3, vec![1, 3, 3])).then_some(()),
    );

    // A replica that dies stops counting once its report is stale.
    let dead = replicas.remove(2);
    signal(dead.pid(), "-KILL");
    let started = std::time::Instant::now();
    wait_until(
        "the dead replica drops out",
        Duration::from_secs(20),
        || (loaded_on(&replicas[0]) == (2, vec![2, 2])).then_some(()),
    );
    eprintln!("a killed replica dropped out after {:?}", started.elapsed());
    drop(dead);

    // One that stops withdraws its report: it drops out at once.
    let stopped = replicas.remove(1);
    signal(stopped.pid(), "-TERM");
    let addr = stopped.addr().to_string();
    wait_until("the replica stops", Duration::from_secs(30), || {
        (!listening(&addr)).then_some(())
    });
    let gone = std::time::Instant::now();
    wait_until(
        "the stopped replica drops out",
        Duration::from_secs(3),
        || (loaded_on(&replicas[0]) == (1, vec![1, 1])).then_some(()),
    );
    eprintln!(
        "a stopped replica dropped out {:?} after it stopped listening",
        gone.elapsed()
    );
}

/// The version `host` answers `GET /users` with.
fn served_by(host: &TestHost) -> String {
    let reply = reqwest::blocking::get(host.url("/users")).unwrap();
    assert_eq!(reply.status(), 200);
    reply.headers()["x-wasmhost-version"]
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_new_version_takes_traffic_only_once_every_replica_has_it() {
    let Some(server) = redis("a_new_version_takes_traffic_only_once_every_replica_has_it") else {
        return;
    };
    let replicas: Vec<TestHost> = (0..3).map(|_| replica(&server)).collect();
    wait_until(
        "every replica reports 1.0.0",
        Duration::from_secs(10),
        || (loaded_on(&replicas[0]) == (3, vec![3])).then_some(()),
    );
    // Two of three get 1.1.0: loaded there, but it takes no traffic.
    for r in &replicas[..2] {
        r.plugins().deploy(USER, "user@1.1.0.wasm");
    }
    wait_until(
        "1.1.0 shows on two replicas",
        Duration::from_secs(15),
        || (loaded_on(&replicas[0]) == (3, vec![2, 3])).then_some(()),
    );
    for r in &replicas {
        for _ in 0..5 {
            assert_eq!(served_by(r), "1.0.0");
        }
    }
    let view = replicas[0]
        .admin("GET", "/admin/services/user", None, None)
        .json();
    assert_eq!(view["versions"][0]["version"], "1.1.0", "{view}");
    assert_eq!(view["versions"][0]["state"], "waiting", "{view}");
    assert_eq!(view["versions"][0]["weight"], 0, "{view}");
    // An operator cannot give it traffic yet either.
    let (status, refused) = put_weights(&replicas[0], 50, None);
    assert_eq!(status, 409, "{refused}");
    let said = refused["error"].as_str().unwrap_or_default().to_string();
    assert!(said.contains("not loaded on every replica"), "{refused}");
    // `wasmhost status` shows where each version is loaded.
    let out = replicas[0].cli(&["status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.contains("LOADED"), "{status}");
    let row = status
        .lines()
        .find(|l| l.contains("1.1.0"))
        .unwrap_or_default();
    assert!(row.contains("2/3") && row.contains("waiting"), "{status}");
    assert!(status.contains("replicas: 3:"), "{status}");
    // A pin still reaches it (to try it before it takes traffic).
    assert_eq!(
        replicas[0]
            .get_pinned("/users", "1.1.0")
            .header("x-wasmhost-version"),
        Some("1.1.0")
    );

    // The third gets it: every replica moves to 1.1.0.
    replicas[2].plugins().deploy(USER, "user@1.1.0.wasm");
    let started = std::time::Instant::now();
    let mut moved = Vec::new();
    for r in &replicas {
        wait_until("the replica serves 1.1.0", Duration::from_secs(15), || {
            (served_by(r) == "1.1.0").then_some(())
        });
        moved.push(started.elapsed());
    }
    eprintln!("1.1.0 on the last replica: replicas served it after {moved:?}");
    wait_until("1.1.0 loaded on all three", Duration::from_secs(10), || {
        (loaded_on(&replicas[1]).1 == vec![3, 3]).then_some(())
    });
}
