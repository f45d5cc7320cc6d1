//! Components from a real OCI registry (`--source`, `wasmhost push`): a
//! version pushed is pulled and served by every replica within 10 s; a
//! layer whose content does not match its digest is refused, named in the
//! log, and never written; a pinned source takes only its tag.
//!
//! The test starts its own `docker-registry` (the CNCF distribution
//! server, Debian's package) on a random loopback port; without it the
//! test says it skipped and why, and under `CI=true` it fails instead.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use wasmhost_test_support::servers::{or_skip, Registry};
use wasmhost_test_support::{bin, wait_until, TestHost, PROBE, USER};

fn push(file: &str, target: &str) -> String {
    let out = std::process::Command::new(bin())
        .args(["push", file, target])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

fn sha256_hex(file: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(file).unwrap()))
}

fn version_of(host: &TestHost) -> Option<String> {
    let reply = reqwest::blocking::get(host.url("/users")).ok()?;
    reply
        .headers()
        .get("x-wasmhost-version")
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn replicas_pull_what_is_pushed_and_refuse_a_bad_digest() {
    let Some(registry) = or_skip(
        "replicas_pull_what_is_pushed_and_refuse_a_bad_digest",
        Registry::start(),
    ) else {
        return;
    };
    let repo = format!("oci+http://{}/user", registry.addr());
    let said = push(USER, &format!("{repo}:1.0.0"));
    assert!(said.starts_with("pushed "), "{said}");
    // 1.2.0 is damaged in the registry before anyone pulls it.
    push(PROBE, &format!("{repo}:1.2.0"));
    let blob = registry.blob_file(&sha256_hex(PROBE));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    // Something that is not a component is not pushed.
    let out = std::process::Command::new(bin())
        .args(["push", "Cargo.toml", &format!("{repo}:9.9.9")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot be pushed"), "{said}");

    let start = |source: &str| {
        TestHost::empty()
            .with(|p| {
                p.copy_manifest("user.toml");
            })
            .args(&["--source", source, "--source-interval", "1s"])
            .start()
    };
    let replicas: Vec<TestHost> = (0..3).map(|_| start(&repo)).collect();
    let pinned = start(&format!("{repo}:1.0.0"));
    for r in replicas.iter().chain([&pinned]) {
        wait_until("1.0.0 served", Duration::from_secs(15), || {
            (version_of(r).as_deref() == Some("1.0.0")).then_some(())
        });
    }
    for r in &replicas {
        let line = r.wait_for_log(&["was refused", "1.2.0", "digest"], Duration::from_secs(10));
        assert!(line.contains("Expected sha256:"), "{line}");
        assert!(!r.plugins().path().join("user@1.2.0.wasm").exists());
    }

    // A new version pushed: every replica serves it within 10 s.
    push(USER, &format!("{repo}:1.1.0"));
    let pushed = Instant::now();
    for r in &replicas {
        wait_until("1.1.0 served", Duration::from_secs(10), || {
            (version_of(r).as_deref() == Some("1.1.0")).then_some(())
        });
    }
    eprintln!(
        "1.1.0 served by 3 replicas {:?} after the push",
        pushed.elapsed()
    );
    assert!(pushed.elapsed() <= Duration::from_secs(10));
    // The pinned one takes only its tag.
    assert!(!pinned.plugins().path().join("user@1.1.0.wasm").exists());
    assert_eq!(version_of(&pinned).as_deref(), Some("1.0.0"));
}
