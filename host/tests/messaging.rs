//! Messages between services through the real binary: a request's
//! publishes are delivered at least once to every subscribing group, only
//! if the request answered; retries follow the back-off; a message that
//! keeps failing, or is rejected, lands in the dead letters, which can be
//! replayed; a failing canary's deliveries are handled by the stable version.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use wasmhost_test_support::{wait_until, Host, TestHost, FAULTY, FAULTY_BROKEN, MESSENGER, PROBE};

const MANIFEST: &str = r#"
[grants]
publish = ["jobs.>"]

[[subscribe]]
topic = "jobs.*"
max-deliver = 3
backoff = ["50ms", "100ms"]
ack-wait = "5s"
"#;

fn host() -> TestHost {
    TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", MANIFEST)
        .start()
}

/// Publishes `body` on `topic` through the fixture; the message's id.
fn publish(host: &Host, topic: &str, body: &str) -> String {
    let reply = host.send("POST", &format!("/faulty/publish/{topic}"), body);
    reply.expect_status(201);
    reply.json()["id"].as_str().unwrap().to_string()
}

fn count(host: &Host, key: &str) -> u64 {
    // Pinned: a test may have a broken 1.1.0 beside it.
    host.get_pinned(&format!("/faulty/count/{key}"), "1.0.0")
        .json()["value"]
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
fn a_published_message_is_handled_once_with_attempt_one() {
    let host = host();
    let id = publish(&host, "jobs.email", "ok");
    until_count(&host, &format!("handled:{id}"), 1);
    assert_eq!(count(&host, &format!("attempt:{id}")), 1);
    assert_eq!(count(&host, &format!("deliveries:{id}")), 1);
    let topics = host.admin("GET", "/admin/topics", None, None).json();
    let group = &topics["groups"][0];
    assert_eq!(group["service"], "faulty");
    assert_eq!(group["group"], "faulty");
    assert_eq!(group["topic"], "jobs.*");
    let svc: wasmhost::views::ServiceView = host.view("/admin/services/faulty");
    assert_eq!(svc.versions[0].message_latency.requests, 1);
    let metrics = host.admin("GET", "/metrics", None, None);
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    for line in [
        "wasmhost_messages_published_total{topic=\"jobs.email\"} 1",
        "wasmhost_messages_delivered_total{service=\"faulty\",version=\"1.0.0\",outcome=\"ack\"} 1",
        "wasmhost_message_backlog{service=\"faulty\",group=\"faulty\"} 0",
        "wasmhost_dead_letters{service=\"faulty\",group=\"faulty\"} 0",
        "wasmhost_consumer_lag_seconds{service=\"faulty\",group=\"faulty\"} 0",
        "wasmhost_message_redeliveries_total{service=\"faulty\",version=\"1.0.0\"} 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
}

#[test]
fn a_failing_message_is_retried_then_dead_lettered_and_can_be_replayed() {
    let host = host();
    // Fails twice, then succeeds: three deliveries, attempts 1, 2, 3.
    let flaky = publish(&host, "jobs.a", "flaky:2");
    until_count(&host, &format!("handled:{flaky}"), 1);
    assert_eq!(count(&host, &format!("attempt:{flaky}")), 3);
    assert_eq!(count(&host, &format!("deliveries:{flaky}")), 3);

    // Always asks for a retry: exactly max-deliver (3), then a dead letter.
    let stubborn = publish(&host, "jobs.b", "retry");
    wait_until("a dead letter", Duration::from_secs(30), || {
        let dead = dead_letters(&host);
        (dead.as_array().unwrap().len() == 1).then_some(dead)
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
    let dead = dead_letters(&host);
    let reason = dead[1]["reason"].as_str().unwrap();
    assert!(reason.contains("faulty rejects this message"), "{reason}");

    // The command line shows the same.
    let cli = |args: &[&str]| {
        let out = host.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = cli(&["dlq", "list", "faulty"]);
    assert!(
        listed.contains("faulty rejects this message") && listed.contains(&stubborn),
        "{listed}"
    );
    let topics = cli(&["topics"]);
    assert!(
        topics.starts_with("SERVICE  GROUP") && topics.contains("jobs.*"),
        "{topics}"
    );

    // Replay the first: one new delivery, attempt 1 again.
    let seq = dead[0]["seq"].as_u64().unwrap();
    let replay = host.admin(
        "POST",
        "/admin/groups/faulty/faulty/replay",
        Some(serde_json::json!({ "seqs": [seq] })),
        None,
    );
    assert_eq!(replay.json()["replayed"], 1);
    until_count(&host, &format!("deliveries:{stubborn}"), 4);
    // Purge what is left once the replayed one is back.
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
fn a_request_that_fails_publishes_nothing() {
    let host = host();
    host.send("POST", "/faulty/publish-then-trap/jobs.x", "ok")
        .expect_status(500);
    let id = publish(&host, "jobs.y", "ok");
    until_count(&host, &format!("handled:{id}"), 1);
    assert_eq!(
        count(&host, "deliveries"),
        1,
        "the trapped request's message was delivered"
    );
}

#[test]
fn publishing_needs_a_grant_and_a_bounded_size() {
    let host = host();
    let reply = host.send("POST", "/faulty/publish/other.topic", "ok");
    reply.expect_status(400);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("Denied") && error.contains("[grants] publish"),
        "{error}"
    );
    let big = vec![b'x'; 1024 * 1024 + 1];
    let reply = host.send("POST", "/faulty/publish/jobs.big", big);
    // The host's request-body limit (1 MiB) refuses it before the guest.
    assert_eq!(reply.status, 413);
}

#[test]
fn a_subscription_needs_a_subscriber() {
    // The probe is a 0.1.0 component: it has no subscriber export.
    let host = TestHost::empty()
        .add(PROBE, "probe@0.1.0.wasm")
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("probe", "[[subscribe]]\ntopic = \"jobs.*\"\n")
        .manifest(
            "faulty",
            "[[subscribe]]\ntopic = \"jobs.*\"\nmax-deliver = 0\n",
        )
        .start();
    let log = host.log();
    assert!(
        log.contains("exports no `wasmhost:plugin/subscriber@0.2.0`"),
        "{log}"
    );
    assert!(log.contains("subscribe.max-deliver"), "{log}");
    // Both refused, nothing else stopped: the 404 of a path no one owns.
    host.get("/probe/echo").expect_status(404);
}

/// A 50/50 release of faulty whose 1.1.0 traps on everything, with
/// `extra` in its manifest; 1,000 messages published through 1.0.0 (pinned:
/// 1.1.0 traps on HTTP too). Waits until the group is idle; returns the
/// host.
fn canary_run(extra: &str) -> TestHost {
    let manifest = format!(
        "weights = {{ \"1.0.0\" = 50, \"1.1.0\" = 50 }}\n[resilience]\neject = {{ consecutive = 0 }}\n{extra}{MANIFEST}"
    );
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .add(FAULTY_BROKEN, "faulty@1.1.0.wasm")
        .manifest("faulty", &manifest)
        .start();
    let reply = host.send_with(
        "POST",
        "/faulty/publish-many/jobs.canary/1000",
        &[("x-wasmhost-version", "1.0.0")],
    );
    reply.expect_status(201);
    wait_until("the group idle", Duration::from_secs(120), || {
        let topics = host.admin("GET", "/admin/topics", None, None).json();
        let g = &topics["groups"][0];
        (g["backlog"] == 0 && g["in_flight"] == 0).then_some(())
    });
    host
}

#[test]
fn a_failing_canary_s_deliveries_are_handled_by_the_stable_version() {
    let host = canary_run("");
    // Every message reached the stable version exactly once, none is dead.
    assert_eq!(summary(&host), (1000, 0));
    assert_eq!(count(&host, "deliveries"), 1000);
    assert_eq!(dead_letters(&host).as_array().unwrap().len(), 0);
    // The candidate's failures still count against it: about half.
    let svc: wasmhost::views::ServiceView = host.view("/admin/services/faulty");
    let candidate = svc.version("1.1.0").unwrap();
    assert!(
        (400..=600).contains(&candidate.metrics.errors),
        "{:?}",
        candidate.metrics
    );
    assert_eq!(candidate.fallbacks, candidate.metrics.errors);
}

#[test]
fn without_fallback_a_failing_canary_dead_letters_messages() {
    // The control: the same release with fallback off. A message goes to
    // the trapping candidate half of the time at each of its 3 attempts, so
    // about one in eight (125 of 1,000) ends in the dead letters.
    let host = canary_run("fallback = false\n");
    let listed = host
        .admin(
            "GET",
            "/admin/groups/faulty/faulty/dead-letters?limit=1000",
            None,
            None,
        )
        .json();
    let dead = listed["dead_letters"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .len() as u64;
    assert!((60..=200).contains(&dead), "{dead} dead letters");
    let (handled, _) = summary(&host);
    assert_eq!(handled + dead, 1000);
}

/// (messages handled at least once, handlings beyond the first).
fn summary(host: &Host) -> (u64, u64) {
    // Pinned: a test may have a broken 1.1.0 beside it.
    let s = host.get_pinned("/faulty/summary", "1.0.0").json();
    (s["handled"].as_u64().unwrap(), s["extra"].as_u64().unwrap())
}

#[test]
fn no_message_is_lost_when_the_host_is_killed_while_delivering() {
    const N: u64 = 10_000;
    const KILLS: u64 = 20;
    let manifest = r#"
[grants]
publish = ["jobs.>"]

[[subscribe]]
topic = "jobs.*"
ack-wait = "1s"
max-in-flight = 16
"#;
    let mut host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", manifest)
        .start();
    for _ in 0..N / 1000 {
        host.send("POST", "/faulty/publish-many/jobs.bulk/1000", "ok")
            .expect_status(201);
    }
    // SIGKILL at random points of the consumption, then start again
    // on the same state: expired leases come back, nothing is lost.
    for k in 1..=KILLS {
        // Somewhere in the k-th of KILLS + 1 equal stretches.
        let at = N * k / (KILLS + 1) + fastrand::u64(0..N / (KILLS + 1) / 2);
        wait_until("consumption to progress", Duration::from_secs(120), || {
            (count(&host, "deliveries") >= at).then_some(())
        });
        host.crash_and_restart();
    }
    let done = wasmhost_test_support::try_wait_until(Duration::from_secs(300), || {
        let topics = host.admin("GET", "/admin/topics", None, None).json();
        let g = &topics["groups"][0];
        (g["backlog"] == 0 && g["in_flight"] == 0).then_some(())
    });
    let (handled, extra) = summary(&host);
    assert!(done.is_some(), "{handled} of {N} handled after 300 s");
    assert_eq!(handled, N, "messages lost");
    // At most what was in flight at each kill is handled again.
    assert!(
        extra <= 16 * KILLS,
        "{extra} duplicate handlings after {KILLS} kills"
    );
}

#[test]
fn a_slow_handler_keeps_its_lease_and_is_delivered_once() {
    // ack-wait 3 s, a handler that takes 7 s: its lease is extended every
    // 1.5 s while it runs, so no second delivery starts meanwhile (dapr#8321).
    let manifest = MANIFEST.replace("ack-wait = \"5s\"", "ack-wait = \"3s\"");
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", &manifest)
        .start();
    let id = publish(&host, "jobs.slow", "sleep:7000");
    until_count(&host, &format!("handled:{id}"), 1);
    assert_eq!(count(&host, &format!("deliveries:{id}")), 1);
}

#[test]
fn an_order_notifies_its_user_and_a_cancelled_order_s_stock_comes_back() {
    use serde_json::json;
    // The examples: order (Rust, 0.2.0) publishes orders.created; notify
    // (Python, 0.2.0) consumes it; user, catalog and inventory stay 0.1.0.
    let host = TestHost::examples().start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.post_json(
        "/products",
        json!({"sku": "RS-1", "name": "Rust book", "price_cents": 200}),
    )
    .expect_status(201);
    host.send(
        "PUT",
        "/inventory/RS-1",
        json!({"quantity": 10}).to_string(),
    )
    .expect_status(200);
    let order = host.post_json(
        "/orders",
        json!({"user_id": 1, "items": [{"sku": "RS-1", "quantity": 2}]}),
    );
    order.expect_status(201);
    let id = order.json()["id"].clone();
    let notes = wait_until("the notification", Duration::from_secs(60), || {
        let notes = host.get("/notifications?user_id=1").json()["notifications"].clone();
        (!notes.as_array().unwrap().is_empty()).then_some(notes)
    });
    assert_eq!(notes[0]["order_id"], id);
    assert_eq!(notes[0]["total_cents"], order.json()["total_cents"]);
    assert!(notes[0]["text"].as_str().unwrap().contains("is confirmed"));
    // Another user has none.
    let other = host.get("/notifications?user_id=2").json();
    assert_eq!(other["notifications"].as_array().unwrap().len(), 0);
    host.get("/notifications?user_id=x").expect_status(400);

    // Cancelled: orders.cancelled reaches the (Python) inventory, which
    // gives the stock back, once however often the order is cancelled.
    assert_eq!(host.get("/inventory/RS-1").json()["quantity"], 8);
    let cancelled = host.send("POST", &format!("/orders/{id}/cancel"), "");
    cancelled.expect_status(200);
    assert_eq!(cancelled.json()["cancelled"], true);
    wait_until("the stock back", Duration::from_secs(60), || {
        (host.get("/inventory/RS-1").json()["quantity"] == 10).then_some(())
    });
    host.send("POST", &format!("/orders/{id}/cancel"), "")
        .expect_status(200);
    host.send("POST", "/orders/999/cancel", "")
        .expect_status(404);
    let topics = host.admin("GET", "/admin/topics", None, None).json();
    let groups: Vec<String> = topics["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{}:{}",
                g["service"].as_str().unwrap(),
                g["topic"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        groups,
        ["inventory:orders.cancelled", "notify:orders.created"]
    );
}

#[test]
fn a_poison_message_stalls_nothing_and_handlers_stay_within_max_in_flight() {
    let manifest = r#"
[grants]
publish = ["jobs.>"]

[[subscribe]]
topic = "jobs.*"
max-in-flight = 4
max-deliver = 100
backoff = ["20ms"]
"#;
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", manifest)
        .start();
    // A message that always fails, retried every 20 ms, and 40 slow good ones.
    let poison = publish(&host, "jobs.poison", "retry");
    host.send("POST", "/faulty/publish-many/jobs.slow/40", "sleep:50")
        .expect_status(201);
    // The in-flight count never goes above 4, however fast it is sampled.
    let mut highest = 0;
    let handled = wasmhost_test_support::try_wait_until(Duration::from_secs(60), || {
        let topics = host.admin("GET", "/admin/topics", None, None).json();
        highest = highest.max(topics["groups"][0]["in_flight"].as_u64().unwrap());
        (summary(&host).0 >= 40).then_some(())
    });
    assert!(
        handled.is_some(),
        "the good messages stalled behind the poison one"
    );
    assert!(
        highest <= 4,
        "{highest} deliveries in flight, max-in-flight 4"
    );
    assert!(highest >= 1);
    // The poison message is still being retried meanwhile.
    assert!(count(&host, &format!("deliveries:{poison}")) > 1);
}

/// Waits until faulty's only group has nothing waiting or in flight.
fn until_idle(host: &Host) {
    wait_until("the group idle", Duration::from_secs(120), || {
        let topics = host.admin("GET", "/admin/topics", None, None).json();
        let g = &topics["groups"][0];
        (g["backlog"] == 0 && g["in_flight"] == 0).then_some(())
    });
}

/// 200 messages over 4 keys, handled by up to 16 handlers that sleep a
/// random 0–20 ms and ask for a retry on a quarter of first attempts; each
/// key's handling order, as the handler recorded it.
fn keyed_run(extra: &str) -> Vec<Vec<u32>> {
    let manifest = format!(
        "[grants]\npublish = [\"jobs.>\"]\n\n[[subscribe]]\ntopic = \"jobs.*\"\nbackoff = [\"20ms\"]\n{extra}"
    );
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", &manifest)
        .start();
    host.send("POST", "/faulty/publish-keyed/jobs.keyed/4/200", "order:20")
        .expect_status(201);
    until_idle(&host);
    (0..4)
        .map(|k| {
            let seen = host.get(&format!("/faulty/value/order:k{k}")).json()["value"]
                .as_str()
                .unwrap()
                .to_string();
            seen.split(',').map(|i| i.parse().unwrap()).collect()
        })
        .collect()
}

#[test]
fn messages_with_one_key_are_handled_one_at_a_time_in_publish_order() {
    let order = keyed_run("ordered-by = \"key\"\n");
    for (k, seen) in order.iter().enumerate() {
        let published: Vec<u32> = (0..50).map(|i| i * 4 + k as u32).collect();
        assert_eq!(seen, &published, "key k{k}");
    }
}

#[test]
fn without_ordered_by_the_same_messages_are_handled_out_of_order() {
    // The control: the same run without `ordered-by`. Retries and 16
    // handlers reorder each key, and two handlers of one key at once also
    // lose an append (the handler reads, then writes): what `ordered-by`
    // prevents.
    let order = keyed_run("");
    let mut disordered = 0;
    for (k, seen) in order.iter().enumerate() {
        let published: Vec<u32> = (0..50).map(|i| i * 4 + k as u32).collect();
        disordered += usize::from(*seen != published);
    }
    assert_eq!(disordered, 4, "{order:?}");
}

/// The release policy's stable hash (FNV-1a, 64-bit) of a sticky value.
fn bucket(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) % 100
}

/// Acknowledged deliveries per version of faulty, from /metrics.
fn acks(host: &Host) -> [u64; 2] {
    let reply = host.admin("GET", "/metrics", None, None);
    let text = String::from_utf8_lossy(&reply.body);
    ["1.0.0", "1.1.0"].map(|v| {
        let series = format!(
            "wasmhost_messages_delivered_total{{service=\"faulty\",version=\"{v}\",outcome=\"ack\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    })
}

fn split_release(sticky: &str) -> TestHost {
    let manifest = format!(
        "weights = {{ \"1.0.0\" = 50, \"1.1.0\" = 50 }}\n[grants]\npublish = [\"jobs.>\"]\n\n[[subscribe]]\ntopic = \"jobs.*\"\n{sticky}"
    );
    TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .add(FAULTY, "faulty@1.1.0.wasm")
        .manifest("faulty", &manifest)
        .start()
}

/// Publishes `n` messages with the key `key` and waits until they are
/// acknowledged; how many each version took.
fn one_key(host: &Host, key: &str, n: u64) -> [u64; 2] {
    let before = acks(host);
    host.send_with(
        "POST",
        &format!("/faulty/publish-keyed/jobs.sticky/1/{n}"),
        &[("x-key-prefix", key), ("x-wasmhost-version", "1.0.0")],
    )
    .expect_status(201);
    until_idle(host);
    let after = acks(host);
    [after[0] - before[0], after[1] - before[1]]
}

#[test]
fn a_subscription_sticky_on_the_key_sends_each_key_to_one_version() {
    let host = split_release("sticky = \"key\"\n");
    // Keys from both halves of the hash space, so both versions take some.
    let low = (0..)
        .map(|i| format!("low{i}-"))
        .find(|k| bucket(&format!("{k}0")) < 50);
    let high = (0..)
        .map(|i| format!("high{i}-"))
        .find(|k| bucket(&format!("{k}0")) >= 50);
    let mut took = [0u64; 2];
    for key in [low.unwrap(), high.unwrap(), "a-".into(), "b-".into()] {
        let split = one_key(&host, &key, 20);
        assert!(
            split == [20, 0] || split == [0, 20],
            "key {key}0 was split {split:?}"
        );
        took[0] += split[0];
        took[1] += split[1];
    }
    assert!(took[0] > 0 && took[1] > 0, "{took:?}");
}

#[test]
fn without_a_sticky_key_one_key_s_messages_are_spread_over_the_versions() {
    // The control: the same split without `sticky`.
    let host = split_release("");
    let split = one_key(&host, "a-", 40);
    assert!(split[0] > 0 && split[1] > 0, "{split:?}");
    assert_eq!(split[0] + split[1], 40);
}

#[test]
fn a_standard_wasi_messaging_component_handles_and_publishes_through_the_same_log() {
    let faulty =
        "[grants]\npublish = [\"jobs.>\", \"std.>\"]\n\n[[subscribe]]\ntopic = \"jobs.*\"\n";
    let messenger = r#"
[grants]
publish = ["jobs.>"]

[[subscribe]]
topic = "std.in"
max-deliver = 3
backoff = ["20ms"]
"#;
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .add(MESSENGER, "messenger@1.0.0.wasm")
        .manifest("faulty", faulty)
        .manifest("messenger", messenger)
        .start();
    let svc: wasmhost::views::ServiceView = host.view("/admin/services/messenger");
    assert_eq!(svc.versions[0].world, "wasi:messaging/messaging-core");
    // It has no HTTP handler: its route says so, and nothing is counted.
    let reply = host.get("/messenger");
    reply.expect_status(404);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("handles messages only"));
    // Handled, and what it sent through `producer.send` reaches faulty.
    publish(&host, "std.in", "forward");
    wait_until("the forwarded message", Duration::from_secs(30), || {
        (summary(&host).0 == 1).then_some(())
    });
    // An error result is retried with the back-off, then dead-lettered.
    let failing = publish(&host, "std.in", "fail");
    let denied = publish(&host, "std.in", "forward-denied");
    let elsewhere = publish(&host, "std.in", "elsewhere");
    let dead = wait_until("three dead letters", Duration::from_secs(30), || {
        let listed = host
            .admin(
                "GET",
                "/admin/groups/messenger/messenger/dead-letters",
                None,
                None,
            )
            .json();
        let dead = listed["dead_letters"].as_array().unwrap().clone();
        (dead.len() == 3).then_some(dead)
    });
    for (letter, id) in dead.iter().zip([&failing, &denied, &elsewhere]) {
        assert_eq!(letter["id"].as_str(), Some(id.as_str()));
        assert_eq!(letter["attempts"], 3, "{letter}");
    }
    // An ungranted send and an unknown client were refused, and logged.
    let log = host.log();
    assert!(log.contains("not granted to `messenger`"), "{log}");
    assert!(log.contains("no messaging backend named `kafka`"), "{log}");
    // Nothing it refused was published: faulty still has one message.
    assert_eq!(summary(&host), (1, 0));
}
