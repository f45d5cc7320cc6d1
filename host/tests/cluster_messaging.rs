//! Messages on NATS JetStream (`--messaging`) through the real binary and
//! a real `nats-server`: the embedded log's contract (retries with their
//! back-off, exactly max-deliver deliveries, then a dead letter that can be
//! replayed and purged), and three replicas sharing each group's one
//! durable consumer so that a message is handled once across them, with
//! nothing lost when one of them is killed while delivering.
//!
//! Each test starts its own `nats-server -js` (and `redis-server`, for the
//! replicas' shared counts) on random loopback ports; without them the
//! test says it skipped and why, and under `CI=true` it fails instead.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use wasmhost_test_support::servers::{free_port, or_skip, Nats, Redis};
use wasmhost_test_support::{serve_command, wait_until, Host, TestHost, FAULTY};

const MANIFEST: &str = r#"
[grants]
publish = ["jobs.>"]

[[subscribe]]
topic = "jobs.*"
max-deliver = 3
backoff = ["50ms", "100ms"]
ack-wait = "2s"
"#;

fn publish(host: &Host, topic: &str, body: &str) -> String {
    let reply = host.send("POST", &format!("/faulty/publish/{topic}"), body);
    reply.expect_status(201);
    reply.json()["id"].as_str().unwrap().to_string()
}

fn count(host: &Host, key: &str) -> u64 {
    host.get(&format!("/faulty/count/{key}")).json()["value"]
        .as_u64()
        .unwrap()
}

fn until_count(host: &Host, key: &str, n: u64) {
    wait_until(
        &format!("{key} to reach {n}"),
        Duration::from_secs(30),
        || (count(host, key) >= n).then_some(()),
    );
}

fn dead_letters(host: &Host) -> serde_json::Value {
    host.admin(
        "GET",
        "/admin/groups/faulty/faulty/dead-letters",
        None,
        None,
    )
    .json()["dead_letters"]
        .clone()
}

#[test]
fn nats_keeps_the_message_log_contract() {
    let Some(nats) = or_skip("nats_keeps_the_message_log_contract", Nats::start()) else {
        return;
    };
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", MANIFEST)
        .args(&["--messaging", &nats.url()])
        .start();
    assert!(
        host.log()
            .contains("messages on the cluster's NATS JetStream"),
        "{}",
        host.log()
    );
    let ok = publish(&host, "jobs.email", "ok");
    until_count(&host, &format!("handled:{ok}"), 1);
    assert_eq!(count(&host, &format!("attempt:{ok}")), 1);

    // Fails twice, then succeeds: three deliveries, attempts 1, 2, 3.
    let flaky = publish(&host, "jobs.a", "flaky:2");
    until_count(&host, &format!("handled:{flaky}"), 1);
    assert_eq!(count(&host, &format!("attempt:{flaky}")), 3);
    assert_eq!(count(&host, &format!("deliveries:{flaky}")), 3);

    // Always asks for a retry: exactly max-deliver (3), then a dead letter.
    let stubborn = publish(&host, "jobs.b", "retry");
    wait_until("a dead letter", Duration::from_secs(30), || {
        (dead_letters(&host).as_array().unwrap().len() == 1).then_some(())
    });
    assert_eq!(count(&host, &format!("deliveries:{stubborn}")), 3);
    let dead = dead_letters(&host);
    assert_eq!(dead[0]["id"], stubborn.as_str());
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["version"], "1.0.0");

    // Rejected: one delivery, then the dead letters at once.
    let rejected = publish(&host, "jobs.c", "reject");
    wait_until("the rejected message", Duration::from_secs(30), || {
        (dead_letters(&host).as_array().unwrap().len() == 2).then_some(())
    });
    assert_eq!(count(&host, &format!("deliveries:{rejected}")), 1);
    let reason = dead_letters(&host)[1]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("faulty rejects this message"), "{reason}");
    let topics = host.admin("GET", "/admin/topics", None, None).json();
    assert_eq!(topics["groups"][0]["dead_letters"], 2, "{topics}");

    // Replay the first: delivered again from attempt 1, dead again after 3.
    let seq = dead[0]["seq"].as_u64().unwrap();
    let replay = host.admin(
        "POST",
        "/admin/groups/faulty/faulty/replay",
        Some(serde_json::json!({ "seqs": [seq] })),
        None,
    );
    assert_eq!(replay.json()["replayed"], 1);
    until_count(&host, &format!("deliveries:{stubborn}"), 6);
    wait_until("the replayed message back", Duration::from_secs(30), || {
        (dead_letters(&host).as_array().unwrap().len() == 2).then_some(())
    });
    let purged = host.admin(
        "DELETE",
        "/admin/groups/faulty/faulty/dead-letters",
        None,
        None,
    );
    assert_eq!(purged.json()["purged"], 2);
    assert_eq!(dead_letters(&host).as_array().unwrap().len(), 0);
}

#[test]
fn a_replica_without_its_broker_does_not_start() {
    let plugins = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = serve_command(plugins.path(), state.path())
        .args(["--messaging", &url])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("the message broker at {url} does not answer")),
        "{said}"
    );
    let out = serve_command(plugins.path(), state.path())
        .args(["--messaging", "redis://not-nats"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("is not a NATS URL"), "{said}");
}

/// (messages handled at least once, handlings beyond the first).
fn summary(host: &Host) -> (u64, u64) {
    let s = host.get("/faulty/summary").json();
    (s["handled"].as_u64().unwrap(), s["extra"].as_u64().unwrap())
}

/// Acknowledged deliveries on `host`, from its /metrics.
fn acks(host: &Host) -> u64 {
    let metrics = host.admin("GET", "/metrics", None, None);
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    metrics
        .lines()
        .find(|l| {
            l.starts_with("wasmhost_messages_delivered_total{service=\"faulty\"")
                && l.contains("outcome=\"ack\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_replicas_handle_each_message_once_and_lose_none_when_one_dies() {
    const N: u64 = 1_500;
    let test = "three_replicas_handle_each_message_once_and_lose_none_when_one_dies";
    let Some(nats) = or_skip(test, Nats::start()) else {
        return;
    };
    let Some(redis) = or_skip(test, Redis::start()) else {
        return;
    };
    let manifest = "[grants]\npublish = [\"jobs.>\"]\n\n[[subscribe]]\ntopic = \"jobs.*\"\nack-wait = \"2s\"\nmax-in-flight = 16\n";
    let replicas: Vec<TestHost> = (0..3)
        .map(|_| {
            TestHost::empty()
                .add(FAULTY, "faulty@1.0.0.wasm")
                .manifest("faulty", manifest)
                .args(&["--messaging", &nats.url(), "--cluster", &redis.url()])
                .start()
        })
        .collect();
    // Each replica publishes a third, slow enough to be killed mid-way.
    for r in &replicas {
        r.send(
            "POST",
            &format!("/faulty/publish-many/jobs.bulk/{}", N / 3),
            "sleep:5",
        )
        .expect_status(201);
    }
    wait_until("consumption to progress", Duration::from_secs(60), || {
        (count(&replicas[0], "deliveries") >= N / 4).then_some(())
    });
    let killed = &replicas[2];
    let status = std::process::Command::new("kill")
        .args(["-KILL", &killed.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let survivors = &replicas[..2];
    wait_until("every message handled", Duration::from_secs(120), || {
        (summary(&survivors[0]).0 >= N).then_some(())
    });
    let (handled, extra) = summary(&survivors[0]);
    assert_eq!(handled, N, "messages lost or invented");
    // Only what the killed replica had leased is handled twice.
    assert!(extra <= 16, "{extra} handled twice");
    // Both survivors took their share of the one group.
    let shares: Vec<u64> = survivors.iter().map(|r| acks(r)).collect();
    assert!(shares.iter().all(|n| *n > 0), "{shares:?}");
    eprintln!("{N} messages across 3 replicas (one killed): survivors acked {shares:?}, {extra} handled twice");
    let topics = survivors[1]
        .admin("GET", "/admin/topics", None, None)
        .json();
    let group = &topics["groups"][0];
    wait_until("the group is idle", Duration::from_secs(30), || {
        let topics = survivors[1]
            .admin("GET", "/admin/topics", None, None)
            .json();
        let g = &topics["groups"][0];
        (g["backlog"] == 0 && g["in_flight"] == 0).then_some(())
    });
    assert_eq!(group["dead_letters"], 0, "{topics}");
}

#[test]
fn a_broker_that_goes_away_fails_publishes_clearly_and_deliveries_resume() {
    let Some(mut nats) = or_skip(
        "a_broker_that_goes_away_fails_publishes_clearly_and_deliveries_resume",
        Nats::start(),
    ) else {
        return;
    };
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", MANIFEST)
        .args(&["--messaging", &nats.url()])
        .start();
    let before = publish(&host, "jobs.a", "ok");
    until_count(&host, &format!("handled:{before}"), 1);

    nats.stop();
    let started = std::time::Instant::now();
    let failed = wait_until("a publish refused", Duration::from_secs(30), || {
        let reply = host.send("POST", "/faulty/publish/jobs.a", "ok");
        (reply.status >= 500).then_some(reply)
    });
    let said = String::from_utf8_lossy(&failed.body).to_string();
    assert!(said.contains("unreachable"), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The service still answers what needs no broker.
    host.get("/faulty/count/deliveries").expect_status(200);

    // Back (same store): publishing and deliveries resume.
    nats.restart();
    let after = wait_until("a publish accepted", Duration::from_secs(30), || {
        let reply = host.send("POST", "/faulty/publish/jobs.b", "ok");
        (reply.status == 201).then(|| reply.json()["id"].as_str().unwrap().to_string())
    });
    until_count(&host, &format!("handled:{after}"), 1);
    assert_eq!(count(&host, &format!("handled:{before}")), 1);

    // Back without its store (streams and consumers gone): made again.
    nats.restart_empty();
    let fresh = wait_until("a publish accepted", Duration::from_secs(30), || {
        let reply = host.send("POST", "/faulty/publish/jobs.c", "ok");
        (reply.status == 201).then(|| reply.json()["id"].as_str().unwrap().to_string())
    });
    until_count(&host, &format!("handled:{fresh}"), 1);
}
