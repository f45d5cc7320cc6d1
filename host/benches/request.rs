//! Per-request cost of the host without the network: one request through the
//! HTTP front (`wasmhost::front::app`) as a tower `oneshot`, each in a fresh
//! instance with every limit on — store, instantiate, call, drop.
//!
//! Contestants, measured in the same run so their ratio is meaningful on a
//! noisy machine:
//! - `native`: an axum handler doing the user service's work in Rust (read
//!   the stored JSON from the same redb store, parse it, serialize it);
//! - `user`: the Rust user service's `GET /users/1` through the wasmhost WIT;
//! - `hello`: the wasi:http example component's `GET /hello`.
//!
//! `cargo bench -p wasmhost --bench request` (builds the guests first, via
//! wasmhost-test-support). `cargo test -p wasmhost --bench request` runs
//! each once, as a check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use tower::ServiceExt;
use wasmhost::kv::{KvStore, Namespace};
use wasmhost_test_support as support;

/// A loaded host: its HTTP front and its key-value store.
struct Bench {
    app: axum::Router,
    kv: KvStore,
    _dirs: (support::Plugins, tempfile::TempDir),
}

fn host(rt: &tokio::runtime::Runtime) -> Bench {
    let plugins = support::Plugins::new();
    plugins
        .add(support::USER, "user@1.0.0.wasm")
        .add(support::HTTP_HELLO, "hello@1.0.0.wasm")
        .copy_manifest("user.toml");
    let state = tempfile::tempdir().unwrap();
    let cache = std::path::PathBuf::from(support::TEST_CACHE_DIR);
    let host = wasmhost::Host::builder()
        .plugins(plugins.path())
        .state(state.path())
        .cache_dir(cache)
        .build()
        .unwrap();
    rt.block_on(host.load()).unwrap();
    let snapshot = host.control().snapshot();
    let errors: Vec<String> = snapshot
        .registry
        .errors()
        .map(|e| format!("{e:?}"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let kv = host.dispatcher().kv().clone();
    let app = host.front();
    let created = rt.block_on(send(
        &app,
        "POST",
        "/users",
        r#"{"name":"Ada Lovelace","email":"ada@example.com"}"#,
    ));
    assert!(created < 300, "POST /users answered {created}");
    Bench {
        app,
        kv,
        _dirs: (plugins, state),
    }
}

/// Sends one request through `app`, reads the whole response, returns its status.
async fn send(app: &axum::Router, method: &str, path: &str, body: &'static str) -> u16 {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// The baseline: the user service's GET written as a native axum handler
/// over the same store.
fn native(kv: KvStore) -> axum::Router {
    async fn get_user(State(kv): State<KvStore>, Path(id): Path<u64>) -> axum::response::Response {
        let ns = Namespace::new("user", "users").unwrap();
        match kv.get(&ns, &format!("user:{id}")).unwrap() {
            Some(bytes) => {
                let user: User = serde_json::from_slice(&bytes).unwrap();
                axum::Json(user).into_response()
            }
            None => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
    axum::Router::new()
        .route("/users/{id}", axum::routing::get(get_user))
        .with_state(kv)
}

fn requests(c: &mut Criterion) {
    // One thread, as one worker of the server: tasks a request spawns run
    // beside it (a multi-thread runtime would add cross-thread wake-ups
    // that `block_on` from outside the runtime incurs, and a server does not).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = host(&rt);
    let baseline = native(bench.kv.clone());
    assert_eq!(rt.block_on(send(&baseline, "GET", "/users/1", "")), 200);
    assert_eq!(rt.block_on(send(&bench.app, "GET", "/users/1", "")), 200);
    assert_eq!(rt.block_on(send(&bench.app, "GET", "/hello", "")), 200);

    let mut group = c.benchmark_group("request");
    group.bench_function("native", |b| {
        b.iter(|| rt.block_on(send(&baseline, "GET", "/users/1", "")))
    });
    group.bench_function("user", |b| {
        b.iter(|| rt.block_on(send(&bench.app, "GET", "/users/1", "")))
    });
    group.bench_function("hello", |b| {
        b.iter(|| rt.block_on(send(&bench.app, "GET", "/hello", "")))
    });
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
