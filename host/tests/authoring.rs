//! Writing a service as a new user does: `wasmhost new` in each language,
//! `wasmhost build`, the real host over HTTP and the template's own
//! `test.sh`; then `wasmhost dev`, where a saved edit is served without a
//! failed request and a broken edit leaves the last good build serving.
//!
//! The tools are the ones `make plugins` installs into the repository
//! (componentize-py in `.tools/py`; npm's cache holds componentize-js);
//! Rust builds share one target directory, so only the first compiles the
//! dependencies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wasmhost_test_support::{bin, state_dir, wait_until, Host, Traffic};

/// How long a build may take: the first Rust build compiles serde and
/// wit-bindgen for wasm32-wasip2, the first JavaScript one runs npm install.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the build tools are, for every `wasmhost` this file runs.
fn tool_env() -> Vec<(&'static str, String)> {
    let py = root().join(".tools/py/bin/componentize-py");
    assert!(
        py.is_file(),
        "{} is missing: `make plugins` installs it (make test runs it first)",
        py.display()
    );
    vec![
        ("WASMHOST_COMPONENTIZE_PY", py.display().to_string()),
        (
            "CARGO_TARGET_DIR",
            root().join("target/templates").display().to_string(),
        ),
    ]
}

fn wasmhost(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .envs(tool_env())
        .output()
        .expect("run wasmhost")
}

fn ok(out: &std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// `wasmhost new NAME --lang LANG` in a fresh plugins directory.
fn new_service(name: &str, lang: &str) -> tempfile::TempDir {
    let plugins = tempfile::tempdir().unwrap();
    let dir = plugins.path().to_str().unwrap();
    let out = ok(
        &wasmhost(&["new", name, "--lang", lang, "--plugins", dir]),
        "wasmhost new",
    );
    assert!(
        out.contains("next:") && out.contains("wasmhost dev"),
        "{out}"
    );
    plugins
}

fn template_builds_and_answers(lang: &str, source_file: &str) {
    let plugins = new_service("hello", lang);
    let p = plugins.path();
    assert!(p.join("hello").join(source_file).is_file());
    assert!(p.join("hello.toml").is_file());
    // From the folder above, with a relative path, as a user types it.
    let relative = p.file_name().unwrap().to_str().unwrap();
    let built = Command::new(bin())
        .args(["build", "--plugins", relative])
        .current_dir(p.parent().unwrap())
        .envs(tool_env())
        .output()
        .unwrap();
    let out = ok(&built, "wasmhost build");
    assert!(out.contains("[1/1] building hello 0.1.0"), "{out}");
    assert!(p.join("hello@0.1.0.wasm").is_file(), "{out}");

    let state = state_dir();
    let host = Host::start(&bin(), p, state.path());
    for visit in 1..=2 {
        let reply = host.get("/hello?name=ada%20lovelace");
        reply.expect_status(200);
        let body = reply.json();
        assert_eq!(body["greeting"], "hello, ada lovelace", "{body}");
        assert_eq!(body["visits"], visit, "{body}");
    }
    let missing = host.get("/hello/nothing");
    missing.expect_status(404);
    assert_eq!(missing.json()["error"], "no such resource");
    // The template's own test, against the real host.
    let test = Command::new(p.join("hello/test.sh"))
        .arg(format!("http://{}", host.addr()))
        .output()
        .unwrap();
    let said = ok(&test, "the template's test.sh");
    assert!(said.starts_with("ok: "), "{said}");
    host.stop();
}

#[test]
fn the_rust_template_builds_and_answers() {
    template_builds_and_answers("rust", "src/lib.rs");
}

#[test]
fn the_python_template_builds_and_answers() {
    template_builds_and_answers("python", "app.py");
}

#[test]
fn the_javascript_template_builds_and_answers() {
    template_builds_and_answers("js", "app.js");
}

#[test]
fn build_says_what_it_cannot_build() {
    let plugins = tempfile::tempdir().unwrap();
    let p = plugins.path();
    // A crate without `crate-type = ["cdylib"]` builds no .wasm: said so.
    std::fs::create_dir_all(p.join("lib-only/src")).unwrap();
    std::fs::write(
        p.join("lib-only/Cargo.toml"),
        "[package]\nname = \"lib-only\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(p.join("lib-only/src/lib.rs"), "").unwrap();
    let out = wasmhost(&["build", "--plugins", p.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("lib-only is not built: Cargo.toml has no `[lib] crate-type = [\"cdylib\"]`"),
        "{text}"
    );
    assert!(text.contains("no service sources"), "{text}");
    let unknown = wasmhost(&["build", "nope", "--plugins", p.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no source for [\"nope\"]"));
}

/// Edits `file` under the plugins directory: replaces `from` with `to`.
fn edit(plugins: &Path, file: &str, from: &str, to: &str) {
    let path = plugins.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn greeting(host: &Host) -> (String, u64) {
    let body = host.get("/hello?name=test").json();
    (
        body["greeting"].as_str().unwrap_or_default().to_string(),
        body["visits"].as_u64().unwrap_or_default(),
    )
}

/// Under `wasmhost dev`: a saved edit is served, a concurrent stream of
/// requests never fails, the key-value count carries on, a broken edit is
/// reported with its file and line and the last good build keeps serving.
fn dev_loop(
    lang: &str,
    file: &str,
    (from, to, expected): (&str, &str, &str),
    broken: (&str, &str),
    points_at: &str,
) {
    let plugins = new_service("hello", lang);
    let p = plugins.path();
    let state = state_dir();
    let envs = tool_env();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut host = Host::start_dev(&bin(), p, state.path(), &envs);
    let (first, before) = greeting(&host);
    assert_eq!(first, "hello, test");

    let traffic = Traffic::start(host.url("/hello?name=stream"), 2);
    let saved = Instant::now();
    edit(p, file, from, to);
    let served = wait_until("the edit is served", BUILD_TIMEOUT, || {
        let (text, visits) = greeting(&host);
        (text == expected).then_some(visits)
    });
    eprintln!(
        "{lang}: save to first answer of the new build: {:.2} s",
        saved.elapsed().as_secs_f64()
    );
    assert!(
        served > before,
        "the visit count went on: {before} then {served}"
    );

    edit(p, file, broken.0, broken.1);
    host.wait_for_log(&["did not build"], BUILD_TIMEOUT);
    let log = host.log();
    assert!(
        log.contains(points_at),
        "the error names {points_at}:\n{log}"
    );
    let (still, _) = greeting(&host);
    assert_eq!(still, expected, "the last good build serves");
    let answered = traffic.finish();
    assert!(answered > 0);

    // Ctrl-C stops the host and the watcher together.
    let pid = host.pid().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = host.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "dev exits cleanly on Ctrl-C: {status}");
}

#[test]
fn dev_serves_a_python_edit_and_keeps_serving_through_a_broken_one() {
    dev_loop(
        "python",
        "hello/app.py",
        ("f\"hello, {name}\"", "f\"hi, {name}\"", "hi, test"),
        (
            "def greeting(name: str) -> str:",
            "def greeting(name: str) -> str",
        ),
        "app.py",
    );
}

#[test]
fn dev_serves_a_rust_edit_and_keeps_serving_through_a_broken_one() {
    dev_loop(
        "rust",
        "hello/src/lib.rs",
        (
            "format!(\"hello, {name}\")",
            "format!(\"hi, {name}\")",
            "hi, test",
        ),
        (
            "fn greeting(name: &str) -> String {",
            "fn greeting(name: &str) -> String { oops",
        ),
        "src/lib.rs:",
    );
}

/// A component built with the guest SDK imports only the interfaces its
/// code calls: the user service uses the key-value store and nothing else
/// of the contract (no config, logging, services or messaging).
#[test]
fn an_sdk_component_imports_only_what_it_uses() {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let imports = |file: &str| -> Vec<String> {
        let component = wasmtime::component::Component::from_file(&engine, file).unwrap();
        component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_string())
            .filter(|name| !name.starts_with("wasi:cli/") && !name.starts_with("wasi:io/"))
            .collect()
    };
    assert_eq!(
        imports(wasmhost_test_support::USER),
        [
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:keyvalue/atomics@0.2.0-draft",
            "wasmhost:plugin/types@0.2.0"
        ]
    );
    let order = imports(wasmhost_test_support::ORDER);
    for wanted in [
        "wasmhost:plugin/services@0.2.0",
        "wasmhost:plugin/messaging@0.2.0",
        "wasi:logging/logging@0.1.0-draft",
    ] {
        assert!(order.contains(&wanted.to_string()), "{order:?}");
    }
    assert!(
        !order.iter().any(|i| i.starts_with("wasi:config")),
        "{order:?}"
    );
}

/// `wasmhost logs NAME`: the service's own lines and the host's about it,
/// with its version, and no other service's.
#[test]
fn logs_show_one_services_lines() {
    let host = wasmhost_test_support::TestHost::examples().start();
    host.post_json(
        "/products",
        serde_json::json!({"sku": "LOG-1", "name": "Lamp", "price_cents": 1200}),
    )
    .expect_status(201);
    let shown = wait_until(
        "the catalog's line is kept",
        Duration::from_secs(10),
        || {
            let out = host.cli(&["logs", "catalog"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains("product LOG-1 created").then_some(text)
        },
    );
    assert!(
        shown.contains("catalog@1.0.0: product LOG-1 created"),
        "{shown}"
    );
    assert!(
        shown.contains("(host): service loaded"),
        "the host's line about it: {shown}"
    );
    let user = host.cli(&["logs", "user"]);
    let user = String::from_utf8_lossy(&user.stdout);
    assert!(
        !user.contains("LOG-1") && user.contains("user@1.0.0"),
        "{user}"
    );
}
