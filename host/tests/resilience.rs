//! Fault tolerance through the real binary: a failing version's requests
//! are answered by the stable one and the version is ejected; retries never
//! repeat a request that changed something; transactional key-value makes
//! a failed attempt leave no trace; the only version of a service is never
//! ejected.
#![allow(clippy::unwrap_used)]

use wasmhost::views::ServiceView;
use wasmhost_test_support::{
    Host, Plugins, TestHost, TestHostBuilder, FAULTY, FAULTY_BROKEN, FAULTY_LATE, HTTP_HELLO, PROBE,
};

/// Counts of `n` sequential GETs of `path`: (non-2xx answers, answers that
/// fell back, answers by each version).
fn drive(host: &Host, path: &str, n: usize) -> (usize, usize, Vec<String>) {
    let mut errors = 0;
    let mut fallbacks = 0;
    let mut versions = Vec::new();
    for _ in 0..n {
        let reply = host.get(path);
        if !(200..300).contains(&reply.status) {
            errors += 1;
        }
        if reply.header("x-wasmhost-fallback-from").is_some() {
            fallbacks += 1;
        }
        versions.push(reply.header("x-wasmhost-version").unwrap_or("").to_string());
    }
    (errors, fallbacks, versions)
}

fn half_and_half(extra: &str) -> TestHost {
    let plugins = Plugins::new();
    plugins
        .add(FAULTY, "faulty@1.0.0.wasm")
        .add(FAULTY_BROKEN, "faulty@1.1.0.wasm")
        .write(
            "faulty.toml",
            format!("weights = {{ \"1.0.0\" = 50, \"1.1.0\" = 50 }}\n{extra}"),
        );
    TestHost::with_plugins(plugins)
        .args(&["--pin-token", "pin"])
        .start()
}

#[test]
fn a_trapping_candidate_at_half_the_traffic_is_answered_by_stable_then_ejected() {
    let host = half_and_half("");
    // A pinned request never falls back, and does not count towards an
    // ejection: it asked for that version.
    for _ in 0..10 {
        let reply = host.send_with(
            "GET",
            "/faulty/ok",
            &[
                ("x-wasmhost-version", "1.1.0"),
                ("x-wasmhost-pin-token", "pin"),
            ],
        );
        reply.expect_status(500);
        assert_eq!(reply.header("x-wasmhost-version"), Some("1.1.0"));
        assert_eq!(reply.header("x-wasmhost-fallback-from"), None);
    }

    let (errors, fallbacks, versions) = drive(&host, "/faulty/ok", 1000);
    assert_eq!(errors, 0, "a client saw the candidate fail");
    assert!(versions.iter().all(|v| v == "1.0.0"), "{versions:?}");
    assert!(
        (1..=5).contains(&fallbacks),
        "{fallbacks} answers fell back before the ejection"
    );

    let svc: ServiceView = host.view("/admin/services/faulty");
    let candidate = svc.version("1.1.0").unwrap();
    assert_eq!(candidate.state, "ejected", "{candidate:?}");
    assert!(candidate.ejected_for_secs.is_some_and(|s| s <= 30));
    assert_eq!(candidate.ejections, 1);
    assert_eq!(candidate.fallbacks, fallbacks as u64);
    // The failures still count against the candidate.
    assert!(candidate.metrics.errors >= 5, "{:?}", candidate.metrics);
    assert_eq!(svc.version("1.0.0").unwrap().state, "serving");
    let history = svc.history.iter().find(|h| h.action == "eject");
    let detail = &history.expect("the ejection is in the history").detail;
    assert!(
        detail.starts_with("1.1.0 ejected for 30s") && detail.contains("5 consecutive failures"),
        "{detail}"
    );

    let metrics = host.admin("GET", "/metrics", None, None);
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    for line in [
        format!("wasmhost_fallbacks_total{{service=\"faulty\",from=\"1.1.0\",to=\"1.0.0\"}} {fallbacks}"),
        "wasmhost_ejections_total{service=\"faulty\",version=\"1.1.0\"} 1".to_string(),
        "wasmhost_version_state{service=\"faulty\",version=\"1.1.0\",state=\"ejected\"} 1"
            .to_string(),
        // The fallbacks, and the pinned GETs retried on their own version.
        format!(
            "wasmhost_retries_total{{service=\"faulty\",version=\"1.1.0\",reason=\"trap\"}} {}",
            fallbacks + 10
        ),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    }
}

#[test]
fn without_fallback_and_ejection_half_the_requests_fail() {
    // The control for the test above: the same candidate, nothing to save it.
    let host = half_and_half("[resilience]\nfallback = false\neject = { consecutive = 0 }\n");
    let (errors, fallbacks, _) = drive(&host, "/faulty/ok", 1000);
    assert!((440..=560).contains(&errors), "{errors} errors");
    assert_eq!(fallbacks, 0);
    let svc: ServiceView = host.view("/admin/services/faulty");
    assert_eq!(svc.version("1.1.0").unwrap().state, "serving");
}

#[test]
fn the_only_version_is_never_ejected() {
    let host = TestHost::empty()
        .add(FAULTY_BROKEN, "faulty@1.0.0.wasm")
        .start();
    for _ in 0..20 {
        // A trap, answered as one: never a 503 for an ejected service.
        host.get("/faulty/ok").expect_status(500);
    }
    let svc: ServiceView = host.view("/admin/services/faulty");
    let only = svc.version("1.0.0").unwrap();
    assert_eq!(only.state, "serving");
    assert_eq!(only.ejections, 0);
    assert_eq!(only.metrics.requests, 40, "each GET was tried twice");
}

#[test]
fn a_request_that_changed_something_is_never_repeated() {
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest("faulty", "[limits]\ntimeout = \"300ms\"\n")
        .start();
    // The increment commits, then the guest outlives its timeout: one
    // attempt, the counter at 1, the client told it timed out.
    let reply = host.send("POST", "/faulty/incr-then-sleep/c/3000", "");
    reply.expect_status(504);
    assert_eq!(reply.header("x-wasmhost-attempts"), None);
    assert_eq!(host.get("/faulty/count/c").json()["value"], 1);
    // The same for a trap after an increment.
    host.send("POST", "/faulty/incr-then-trap/d", "")
        .expect_status(500);
    assert_eq!(host.get("/faulty/count/d").json()["value"], 1);
    // A trap before anything happened is tried again, whatever the method
    // (and fails again here: the fault is in the code).
    let reply = host.send("POST", "/faulty/trap", "");
    reply.expect_status(500);
    assert_eq!(reply.header("x-wasmhost-attempts"), Some("2"));
}

/// The fixture as version 1.0.0, then `candidate` dropped in as 1.1.0: a
/// blue-green deploy, 1.1.0 taking all traffic, 1.0.0 the stable version.
fn deployed(candidate: &str, manifest: &str) -> TestHost {
    deployed_beside(candidate, manifest, |b| b)
}

/// [`deployed`], with more in the plugins directory.
fn deployed_beside(
    candidate: &str,
    manifest: &str,
    more: impl FnOnce(TestHostBuilder) -> TestHostBuilder,
) -> TestHost {
    let host = more(
        TestHost::empty()
            .add(FAULTY, "faulty@1.0.0.wasm")
            .manifest("faulty", manifest),
    )
    .start();
    host.plugins().deploy(candidate, "faulty@1.1.0.wasm");
    wasmhost_test_support::wait_until(
        "1.1.0 to take over",
        std::time::Duration::from_secs(30),
        || {
            let svc: ServiceView = host.view("/admin/services/faulty");
            (svc.version("1.1.0").map(|v| v.weight) == Some(100)).then_some(())
        },
    );
    host
}

#[test]
fn a_post_that_trapped_before_any_write_is_answered_by_the_stable_version() {
    let host = deployed(FAULTY_BROKEN, "");
    let reply = host.send("POST", "/faulty/incr/k", "");
    reply.expect_status(201);
    assert_eq!(reply.header("x-wasmhost-version"), Some("1.0.0"));
    assert_eq!(reply.header("x-wasmhost-fallback-from"), Some("1.1.0"));
    assert_eq!(reply.header("x-wasmhost-attempts"), Some("2"));
    assert_eq!(host.get("/faulty/count/k").json()["value"], 1);
}

#[test]
fn a_write_then_a_trap_is_repeated_only_with_transactional_kv() {
    // Without it the write stays and the POST is not repeated.
    let host = deployed(FAULTY_LATE, "");
    host.send("POST", "/faulty/bump/n", "").expect_status(500);
    let count = host.send_with("GET", "/faulty/count/n", &[]);
    assert_eq!(count.json()["value"], 1, "the failed attempt's write stays");
    drop(host);

    // With it the trap discards the write, the stable version does it once.
    let host = deployed(FAULTY_LATE, "[resilience]\ntransactional-kv = true\n");
    let reply = host.send("POST", "/faulty/bump-then-trap/n", "");
    reply.expect_status(500);
    assert_eq!(
        host.get("/faulty/count/n").json()["value"],
        0,
        "the write was dropped"
    );
    let reply = host.send("POST", "/faulty/bump/n", "");
    reply.expect_status(201);
    assert_eq!(reply.header("x-wasmhost-fallback-from"), Some("1.1.0"));
    assert_eq!(host.get("/faulty/count/n").json()["value"], 1);
}

#[test]
fn retries_on_the_same_version_hide_random_failures() {
    // One fixture as two services: one retries (the default), one does not.
    let host = TestHost::empty()
        .add(FAULTY, "flaky@1.0.0.wasm")
        .add(FAULTY, "plain@1.0.0.wasm")
        .manifest("plain", "[resilience]\nretries = 0\n")
        .start();
    let (retried, _, _) = drive(&host, "/flaky/fail/50", 200);
    let (plain, _, _) = drive(&host, "/plain/fail/50", 200);
    // 50% of 200 fail once; retried, 25% fail twice.
    assert!(
        (70..=130).contains(&plain),
        "{plain} errors without retries"
    );
    assert!(retried <= 80, "{retried} errors with a retry");
    assert!(retried < plain, "{retried} with retries, {plain} without");
}

#[test]
fn a_service_call_follows_the_callees_policy() {
    let host = deployed_beside(FAULTY_BROKEN, "", |b| {
        b.add(PROBE, "probe@0.1.0.wasm")
            .manifest("probe", "[grants]\nservices = [\"faulty\"]\n")
    });
    // probe → services.call(faulty, GET /faulty/ok): 1.1.0 traps, the
    // callee's stable version answers, and the caller never knows.
    let reply = host.get("/probe/call/faulty/faulty/ok");
    reply.expect_status(200);
    assert_eq!(reply.json()["status"], 200, "{:?}", reply.json());
    let svc: ServiceView = host.view("/admin/services/faulty");
    assert_eq!(svc.version("1.1.0").unwrap().fallbacks, 1);
    assert_eq!(svc.version("1.0.0").unwrap().metrics.requests, 1);
}

#[test]
fn a_wasi_http_stable_version_answers_for_a_failed_candidate() {
    // Versions of one service may implement either world: a broken own-WIT
    // candidate falls back to the standard wasi:http component it replaced.
    let host = TestHost::empty()
        .add(HTTP_HELLO, "hello@1.0.0.wasm")
        .start();
    host.plugins().deploy(FAULTY_BROKEN, "hello@1.1.0.wasm");
    wasmhost_test_support::wait_until(
        "1.1.0 to take over",
        std::time::Duration::from_secs(30),
        || {
            let svc: ServiceView = host.view("/admin/services/hello");
            (svc.version("1.1.0").map(|v| v.weight) == Some(100)).then_some(())
        },
    );
    let reply = host.get("/hello");
    reply.expect_status(200);
    assert_eq!(reply.header("x-wasmhost-version"), Some("1.0.0"));
    assert_eq!(reply.header("x-wasmhost-fallback-from"), Some("1.1.0"));
    assert!(String::from_utf8_lossy(&reply.body).contains("hello"));
}

#[test]
fn an_idempotency_key_and_a_per_try_timeout_when_the_manifest_asks() {
    let host = TestHost::empty()
        .add(FAULTY, "faulty@1.0.0.wasm")
        .manifest(
            "faulty",
            "[limits]\ntimeout = \"5s\"\n[resilience]\nidempotency-key = true\nper-try-timeout = \"200ms\"\n",
        )
        .start();
    // With the key, a POST that wrote is repeated: deduplicating by key is
    // then the service's business (this fixture does not, so it counts 2).
    let reply = host.send_with(
        "POST",
        "/faulty/incr-then-trap/k",
        &[("idempotency-key", "order-7")],
    );
    reply.expect_status(500);
    assert_eq!(reply.header("x-wasmhost-attempts"), Some("2"));
    assert_eq!(host.get("/faulty/count/k").json()["value"], 2);
    // Without it, once.
    host.send("POST", "/faulty/incr-then-trap/j", "")
        .expect_status(500);
    assert_eq!(host.get("/faulty/count/j").json()["value"], 1);
    // Each attempt gets 200 ms of the 5 s: a GET that sleeps 1 s (and would
    // answer within the timeout) is cut twice and answered 504.
    let reply = host.get("/faulty/sleep/1000");
    reply.expect_status(504);
    assert_eq!(reply.header("x-wasmhost-attempts"), Some("2"));
    assert_eq!(reply.json()["limit"], "timeout");
    assert!(
        reply.json()["error"].as_str().unwrap().contains("200ms"),
        "{}",
        reply.json()
    );
}
