//! The release dashboard in a real browser: Debian's Chromium, headless,
//! driven by Playwright (`tests/ui/dashboard.mjs`) against the real binary
//! serving a canary of `user` under traffic. The script logs in (a wrong
//! token and an expired cookie refused first), watches both versions'
//! numbers move, pauses the canary, tries a weight change the API refuses,
//! makes one it accepts, promotes, and logs out; this test then checks
//! through the admin API that the host is where the page left it.
//! Screenshots go to `target/ui/`.
//!
//! Without Chromium, Node.js or `tests/ui/node_modules` (`make test`
//! installs it) the test says what is missing and passes; under `CI=true`
//! it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wasmhost::views::ServiceView;
use wasmhost_test_support::{wait_until, TestHost, Traffic, ADMIN_TOKEN, USER, USER_V2};

const MANIFEST: &str = "routes = [\"/users\", \"/user\"]\nrollout = \"canary\"\nsteps = [10, 50, 100]\nstep-interval-secs = 3600\n";

/// What the browser test needs, or why it cannot run here.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let chromium = std::env::var_os("WASMHOST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (apt-get install -y chromium, or set WASMHOST_CHROMIUM)",
            chromium.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is missing (install Node.js 18+)".into());
    }
    if !ui.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "{}/node_modules has no playwright-core (make test runs npm ci there)",
            ui.display()
        ));
    }
    Ok((chromium, ui))
}

#[test]
fn the_dashboard_drives_a_canary_in_a_real_browser() {
    let (chromium, ui) = match browser() {
        Ok(found) => found,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped the browser test: {why}");
            return;
        }
        Err(why) => panic!("the browser test cannot run in CI: {why}"),
    };
    let host = TestHost::empty()
        .add(USER, "user@1.0.0.wasm")
        .manifest("user", MANIFEST)
        .start();
    host.post_json(
        "/users",
        serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .expect_status(201);
    host.plugins().deploy(USER_V2, "user@1.1.0.wasm");
    host.plugins().write("broken@1.0.0.wasm", "not a component");
    wait_until("the canary to start", Duration::from_secs(30), || {
        let svc: ServiceView = host.view("/admin/services/user");
        svc.canary.is_some().then_some(())
    });

    // Steady traffic, one client: both versions' numbers move, and not one
    // request fails through the page's pause, weight changes and promote.
    let traffic = Traffic::start(host.url("/users/1"), 1);

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui");
    let out = Command::new("node")
        .arg(ui.join("dashboard.mjs"))
        .current_dir(&ui)
        .env("ADMIN_URL", format!("http://{}", host.admin_addr()))
        .env("TOKEN", ADMIN_TOKEN)
        .env("CHROMIUM", &chromium)
        .env("SHOTS", &shots)
        .output()
        .expect("run node");
    let served = traffic.finish();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed (screenshot in {}):\n{stdout}\n{stderr}\nhost log:\n{}",
        shots.display(),
        host.log()
    );
    assert!(stdout.contains("dashboard: all steps passed"), "{stdout}");
    assert!(served > 100, "traffic ran: {served} requests");

    // The host is where the page left it.
    let svc: ServiceView = host.view("/admin/services/user");
    assert_eq!(svc.version("1.1.0").unwrap().weight, 100, "{svc:?}");
    assert!(svc.canary.is_none(), "{svc:?}");
    let actions: Vec<&str> = svc.history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(
        actions,
        ["canary", "pause", "release", "promote"],
        "{svc:?}"
    );
    assert!(shots.join("dashboard-canary.png").exists());
}

/// The Grafana dashboard under `deploy/` asks only for metric families the
/// host exports, grouped by labels those families carry.
#[test]
fn the_grafana_dashboard_asks_only_for_what_the_host_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/wasmhost.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {panel}"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 12, "{exprs:?}");

    let host = TestHost::empty()
        .add(USER, "user@1.0.0.wasm")
        .manifest("user", "routes = [\"/users\"]\n")
        .start();
    for _ in 0..5 {
        host.get("/users").expect_status(200);
    }
    let metrics = String::from_utf8(host.admin("GET", "/metrics", None, None).body).unwrap();
    for expr in &exprs {
        for name in metric_names(expr) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| metrics.contains(&format!("# TYPE {f} histogram")))
                .unwrap_or(&name);
            assert!(
                metrics.contains(&format!("# TYPE {family} ")),
                "`{expr}` asks for {name}, which /metrics does not export"
            );
            let samples: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .collect();
            for label in grouped_by(expr) {
                if label == "le" || samples.is_empty() {
                    continue;
                }
                assert!(
                    samples.iter().all(|s| s.contains(&format!("{label}=\""))),
                    "`{expr}` groups {name} by `{label}`, which its samples lack: {samples:?}"
                );
            }
        }
    }
}

/// The `wasmhost_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("wasmhost_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The labels of every `by (…)` in a PromQL expression.
fn grouped_by(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .filter_map(|s| s.split_once(')'))
        .flat_map(|(labels, _)| labels.split(',').map(|l| l.trim().to_string()))
        .collect()
}
