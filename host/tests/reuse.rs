//! Opt-in instance reuse (`requests-per-instance` above 1): faster, less
//! isolated, and only for the service that asks for it.
#![allow(clippy::unwrap_used)]

use wasmhost::views::ServiceView;

use wasmhost_test_support::{bin, state_dir, wait_until, Host, Plugins, PROBE};

/// The count the probe's instance keeps across requests it serves.
fn served(host: &Host) -> u64 {
    host.get("/probe/served").expect_status(200).json()["served"]
        .as_u64()
        .unwrap()
}

#[test]
fn instances_are_fresh_by_default_and_reused_only_up_to_the_quota() {
    let plugins = Plugins::new();
    plugins.add(PROBE, "probe@0.1.0.wasm");
    let state = state_dir();
    let host = Host::start(&bin(), plugins.path(), state.path());
    // Default: every request sees a fresh instance.
    assert_eq!([served(&host), served(&host), served(&host)], [1, 1, 1]);
    let probe: ServiceView = host.view("/admin/services/probe");
    assert_eq!(probe.limits.unwrap().requests_per_instance, 1);
    drop(host);

    // Opted in: one instance serves three requests, then a fresh one.
    plugins.write("probe.toml", "[limits]\nrequests-per-instance = 3\n");
    let host = Host::start(&bin(), plugins.path(), state.path());
    let counts: Vec<u64> = (0..7).map(|_| served(&host)).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1]);

    // A fault drops the instance: the next request starts fresh.
    assert_eq!(served(&host), 2);
    host.get("/probe/trap").expect_status(500);
    assert_eq!(served(&host), 1);
    assert_eq!(served(&host), 2);
}

#[test]
fn a_zero_quota_is_refused_with_its_reason() {
    let plugins = Plugins::new();
    plugins
        .add(PROBE, "probe@0.1.0.wasm")
        .write("probe.toml", "[limits]\nrequests-per-instance = 0\n");
    let state = state_dir();
    let host = Host::start(&bin(), plugins.path(), state.path());
    host.get("/probe/served").expect_status(404);
    host.wait_for_log(
        &["requests-per-instance", "must be above zero"],
        std::time::Duration::from_secs(10),
    );
}

#[test]
fn a_retired_version_frees_its_idle_instances() {
    // Two instance slots in the whole host: idle instances left behind by
    // retired versions would soon take them all.
    let plugins = Plugins::new();
    plugins
        .add(PROBE, "probe@0.1.0.wasm")
        .write("probe.toml", "[limits]\nrequests-per-instance = 5\n");
    let state = state_dir();
    let host = Host::start_with(
        &bin(),
        plugins.path(),
        state.path(),
        &["--max-instances", "2"],
    );
    for round in 1..=4u64 {
        // Leaves one instance idle for reuse...
        assert_eq!(served(&host), 1, "round {round}");
        assert_eq!(served(&host), 2, "round {round}");
        // ...then a changed manifest makes a new version of the service.
        let cpu = format!("{}ms", 900 + round);
        plugins.write(
            "probe.toml",
            format!("[limits]\nrequests-per-instance = 5\ncpu-time = \"{cpu}\"\n"),
        );
        wait_until(
            "the manifest applies",
            std::time::Duration::from_secs(15),
            || {
                let probe: ServiceView = host.view("/admin/services/probe");
                (probe.limits?.cpu_time == cpu).then_some(())
            },
        );
    }
    // The new version starts fresh, and a slot is free for it.
    assert_eq!(served(&host), 1);
}
