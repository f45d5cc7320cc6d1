//! Gray releases from the manifest: weighted splits, pins, stickiness.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmhost_test_support::{wait_until, Host, Plugins, TestHost, USER};

fn two_versions(manifest: &str) -> Plugins {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .add(USER, "user@1.1.0.wasm");
    plugins.write(
        "user.toml",
        format!("routes = [\"/users\", \"/user\"]\n{manifest}"),
    );
    plugins
}

fn version_of(host: &Host, headers: &[(&str, &str)]) -> String {
    let client = reqwest::blocking::Client::new();
    let mut req = client.get(host.url("/users"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-wasmhost-version"]
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn weights_split_traffic_within_two_points() {
    let plugins = two_versions("weights = { \"1.0.0\" = 90, \"1.1.0\" = 10 }\n");
    let host = TestHost::with_plugins(plugins).start();
    let (old, new) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..2500 {
                    match host
                        .get("/users")
                        .expect_status(200)
                        .header("x-wasmhost-version")
                    {
                        Some("1.0.0") => old.fetch_add(1, Ordering::Relaxed),
                        Some("1.1.0") => new.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected version {other:?}"),
                    };
                }
            });
        }
    });
    let (old, new) = (old.into_inner(), new.into_inner());
    let share = new as f64 * 100.0 / (old + new) as f64;
    eprintln!("1.1.0 got {new} of {} requests ({share:.2}%)", old + new);
    assert!(
        (8.0..=12.0).contains(&share),
        "expected 10% ± 2 for 1.1.0, got {share:.2}% ({new} of {})",
        old + new
    );
}

#[test]
fn a_pin_by_header_or_cookie_selects_any_loaded_version() {
    let plugins = two_versions("");
    let host = TestHost::with_plugins(plugins).start();
    assert_eq!(version_of(&host, &[]), "1.1.0");
    for _ in 0..20 {
        assert_eq!(
            version_of(&host, &[("x-wasmhost-version", "1.0.0")]),
            "1.0.0"
        );
        assert_eq!(
            version_of(&host, &[("cookie", "theme=dark; wasmhost-version=1.0.0")]),
            "1.0.0"
        );
    }
    // A pin to a version that is not loaded falls back to the policy.
    assert_eq!(
        version_of(&host, &[("x-wasmhost-version", "7.0.0")]),
        "1.1.0"
    );
}

#[test]
fn sticky_keys_stay_put_and_only_move_towards_the_candidate() {
    let plugins = two_versions(
        "sticky = \"header:x-user-id\"\nweights = { \"1.0.0\" = 80, \"1.1.0\" = 20 }\n",
    );
    let host = TestHost::with_plugins(plugins).start();
    let ids: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let placement = |host: &Host| -> HashMap<String, String> {
        ids.iter()
            .map(|id| (id.clone(), version_of(host, &[("x-user-id", id)])))
            .collect()
    };
    let first = placement(&host);
    assert_eq!(
        placement(&host),
        first,
        "a sticky key changed version while the weights did not"
    );
    let on_new = first.values().filter(|v| *v == "1.1.0").count();
    assert!(
        (120..=280).contains(&on_new),
        "expected about 200 of 1000 keys on 1.1.0, got {on_new}"
    );

    host.plugins().write("user.toml", "routes = [\"/users\", \"/user\"]\nsticky = \"header:x-user-id\"\nweights = { \"1.0.0\" = 50, \"1.1.0\" = 50 }\n");
    let second = wait_until("the new weights apply", Duration::from_secs(15), || {
        let p = placement(&host);
        (p.values().filter(|v| *v == "1.1.0").count() > on_new).then_some(p)
    });
    for id in &ids {
        if first[id] == "1.1.0" {
            assert_eq!(second[id], "1.1.0", "{id} moved back from the candidate");
        }
    }
    let moved = ids
        .iter()
        .filter(|id| first[*id] == "1.0.0" && second[*id] == "1.1.0")
        .count();
    assert!(moved > 0, "raising the weight moved no key");
}

#[test]
fn weights_naming_a_missing_version_are_refused_and_the_highest_serves() {
    let plugins = two_versions("weights = { \"1.0.0\" = 50, \"3.0.0\" = 50 }\n");
    let host = TestHost::with_plugins(plugins).start();
    host.wait_for_log(
        &["user.toml", "`3.0.0`, which is not loaded"],
        Duration::from_secs(5),
    );
    assert_eq!(version_of(&host, &[]), "1.1.0");
}

#[test]
fn the_example_second_version_adds_a_field_and_shares_the_data() {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .add(wasmhost_test_support::USER_V2, "user@1.1.0.wasm");
    plugins.write(
        "user.toml",
        "routes = [\"/users\", \"/user\"]\nweights = { \"1.0.0\" = 100, \"1.1.0\" = 0 }\n",
    );
    let host = TestHost::with_plugins(plugins).start();
    host.post_json(
        "/users",
        serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .expect_status(201);
    let v1 = host.get("/users/1").expect_status(200).json();
    assert_eq!(v1.get("display_name"), None);
    let client = reqwest::blocking::Client::new();
    let v2: serde_json::Value = client
        .get(host.url("/users/1"))
        .header("x-wasmhost-version", "1.1.0")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v2["display_name"], "Ada <ada@example.com>");
    assert_eq!(v2["name"], v1["name"]);
}
