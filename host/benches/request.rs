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
//! And the cost of fault tolerance, below the HTTP front (`Dispatcher`):
//! - `one-attempt`: the user service's `GET /users/1` picked, claimed and
//!   run once, as before retries existed (the baseline);
//! - `serve`: the same through `Dispatcher::serve`, the retry loop, on the
//!   healthy path (budget deposit, deadline, standing);
//! - `fallback`: a candidate that traps on every request, answered by the
//!   stable version (ejection off, so every request fails over).
//!
//! After the group, the same three interleaved over several rounds print
//! their ratios to `one-attempt`.
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
use wasmhost::dispatch::Dispatcher;
use wasmhost::kv::{KvStore, Namespace};
use wasmhost::release::Pins;
use wasmhost_test_support as support;

/// A loaded host: its HTTP front and its key-value store.
struct Bench {
    app: axum::Router,
    kv: KvStore,
    dispatcher: std::sync::Arc<Dispatcher>,
    _dirs: (support::Plugins, tempfile::TempDir),
}

fn host(rt: &tokio::runtime::Runtime) -> Bench {
    let plugins = support::Plugins::new();
    plugins
        .add(support::USER, "user@1.0.0.wasm")
        .add(support::HTTP_HELLO, "hello@1.0.0.wasm")
        .add(support::FAULTY, "faulty@1.0.0.wasm")
        .add(support::FAULTY_BROKEN, "faulty@1.1.0.wasm")
        .write("faulty.toml", "[resilience]\neject = { consecutive = 0 }\n")
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
    // The broken faulty 1.1.0 takes all traffic; 1.0.0 stays the stable version.
    let control = host.control().clone();
    rt.block_on(async {
        use wasmhost::control::Change;
        let promote = Change::Promote {
            service: "faulty".into(),
            version: "1.0.0".into(),
        };
        control.apply(promote).await.unwrap();
        let weights = Change::SetWeights {
            service: "faulty".into(),
            weights: [("1.0.0".to_string(), 0), ("1.1.0".to_string(), 100)].into(),
            sticky: None,
        };
        control.apply(weights).await.unwrap();
    });
    let dispatcher = host.dispatcher().clone();
    let kv = dispatcher.kv().clone();
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
        dispatcher,
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

    let d = &bench.dispatcher;
    let contestants: [(&str, &str, Way); 3] = [
        ("one-attempt", "/users/1", Way::Once),
        ("serve", "/users/1", Way::Serve),
        ("fallback", "/faulty/ok", Way::Serve),
    ];
    for (_, path, way) in &contestants {
        assert_eq!(rt.block_on(dispatch(d, path, *way)), 200, "{path}");
    }
    let mut group = c.benchmark_group("resilience");
    for (name, path, way) in &contestants {
        group.bench_function(*name, |b| b.iter(|| rt.block_on(dispatch(d, path, *way))));
    }
    group.finish();

    // Interleaved rounds, so the machine's drift hits all three alike.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, per_round) = if full { (10, 500) } else { (1, 3) };
    let mut totals = [std::time::Duration::ZERO; 3];
    for _ in 0..rounds {
        for (i, (_, path, way)) in contestants.iter().enumerate() {
            let started = std::time::Instant::now();
            for _ in 0..per_round {
                rt.block_on(dispatch(d, path, *way));
            }
            totals[i] += started.elapsed();
        }
    }
    let per = |i: usize| totals[i].as_secs_f64() * 1e6 / f64::from(rounds * per_round);
    println!("resilience, {rounds} interleaved rounds of {per_round} requests each:");
    for (i, (name, _, _)) in contestants.iter().enumerate() {
        println!(
            "  {name:<12} {:>8.1} µs/request  ×{:.3} of one-attempt",
            per(i),
            per(i) / per(0)
        );
    }
}

/// How a request goes through the dispatcher.
#[derive(Clone, Copy)]
enum Way {
    /// Picked, claimed and run once: no retry layer.
    Once,
    /// Through `Dispatcher::serve`.
    Serve,
}

/// One GET of `path` through the dispatcher (no HTTP front); its status.
async fn dispatch(d: &std::sync::Arc<Dispatcher>, path: &str, way: Way) -> u16 {
    let (parts, ()) = axum::http::Request::builder()
        .uri(path)
        .body(())
        .unwrap()
        .into_parts();
    let req = wasmhost::contract::request(&parts, Vec::new(), Vec::new());
    let picked = d.pick(path, &[], Pins::Outside).unwrap();
    let result = match way {
        Way::Once => {
            let (version, _permit) = picked.claim().unwrap();
            let timeout = version.sandbox.limits.timeout;
            d.run(&version, &req, 0, false, timeout).await.result
        }
        Way::Serve => d.serve(picked, &req, 0).await.result,
    };
    result.map_or(500, |r| r.status)
}

criterion_group!(benches, requests);
criterion_main!(benches);
