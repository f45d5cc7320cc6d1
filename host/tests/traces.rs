//! Traces through the real binary, exported to a real OTLP/HTTP receiver:
//! an axum server inside the test that decodes each protobuf
//! `ExportTraceServiceRequest` with `opentelemetry-proto` (the OpenTelemetry
//! Collector is not packaged for this machine; this decodes the same wire
//! format it would).
//!
//! One order crosses four services — `order` calls `user`, `catalog` (JS)
//! and `inventory` (Python), and its `orders.created` message is delivered
//! to `notify` — and every span lands in the trace the client's
//! `traceparent` named. A collector that is down costs no request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmhost_test_support::{wait_until, TestHost};

/// The spans a receiver got, with the addresses to send them to.
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    url: String,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut spans = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            spans,
            url,
            _runtime: runtime,
        }
    }

    fn of_trace(&self, trace_id: &[u8]) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

#[test]
fn one_order_is_one_trace_across_four_services_and_its_message() {
    let receiver = Receiver::start();
    let host = TestHost::examples()
        .args(&["--otlp", &receiver.url])
        .start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.stock("KB-1", "Keyboard", 4999, 10);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let order = reqwest::blocking::Client::new()
        .post(host.url("/orders"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .header("content-type", "application/json")
        .body(json!({"user_id": 1, "items": [{"sku": "KB-1", "quantity": 1}]}).to_string())
        .send()
        .unwrap();
    assert_eq!(order.status(), 201, "{}", order.text().unwrap());

    let trace = hex::decode(trace_id).unwrap();
    let spans = wait_until(
        "the order's spans, its message's delivery among them",
        Duration::from_secs(30),
        || {
            let spans = receiver.of_trace(&trace);
            spans
                .iter()
                .any(|s| {
                    attribute(s, "service").as_deref() == Some("notify")
                        && s.name.starts_with("deliver")
                })
                .then_some(spans)
        },
    );
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    // The request span continues the client's span.
    let root = spans
        .iter()
        .find(|s| s.name == "POST order")
        .unwrap_or_else(|| panic!("no `POST order` span in {names:?}"));
    assert_eq!(root.parent_span_id, hex::decode(client_span).unwrap());
    assert_eq!(attribute(root, "service").as_deref(), Some("order"));
    assert_eq!(attribute(root, "version").as_deref(), Some("1.0.0"));
    assert_eq!(attribute(root, "status").as_deref(), Some("201"));
    assert_eq!(attribute(root, "attempts").as_deref(), Some("1"));

    // Each callee ran in a span of the same trace, under the order's.
    for callee in ["user", "catalog", "inventory"] {
        let call = spans
            .iter()
            .find(|s| s.name == format!("call {callee}"))
            .unwrap_or_else(|| panic!("no `call {callee}` span in {names:?}"));
        assert_eq!(attribute(call, "callee").as_deref(), Some(callee));
        let attempt = spans
            .iter()
            .find(|s| s.parent_span_id == call.span_id && s.name.starts_with(callee))
            .unwrap_or_else(|| panic!("no attempt under `call {callee}` in {names:?}"));
        assert_eq!(attribute(attempt, "service").as_deref(), Some(callee));
        assert_eq!(attribute(attempt, "attempt").as_deref(), Some("1"));
        assert_eq!(attribute(attempt, "fallback").as_deref(), Some("false"));
    }
    let ids: std::collections::HashSet<&[u8]> =
        spans.iter().map(|s| s.span_id.as_slice()).collect();
    for s in &spans {
        if s.span_id != root.span_id {
            assert!(
                ids.contains(s.parent_span_id.as_slice()),
                "`{}` hangs outside the trace's tree: {names:?}",
                s.name
            );
        }
    }
    // The message's delivery continues the trace of the request that published it.
    let deliver = spans
        .iter()
        .find(|s| {
            attribute(s, "service").as_deref() == Some("notify") && s.name.starts_with("deliver")
        })
        .unwrap();
    assert_eq!(
        attribute(deliver, "topic").as_deref(),
        Some("orders.created")
    );
    let services: std::collections::BTreeSet<String> = spans
        .iter()
        .filter_map(|s| attribute(s, "service"))
        .collect();
    assert_eq!(
        services,
        ["catalog", "inventory", "notify", "order", "user"]
            .map(String::from)
            .into(),
        "{names:?}"
    );

    let metrics = String::from_utf8(host.admin("GET", "/metrics", None, None).body).unwrap();
    assert!(
        !metrics.contains("wasmhost_trace_spans_total{outcome=\"exported\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn a_collector_that_is_down_costs_no_request() {
    // Nothing listens on a port a just-closed listener had.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = TestHost::examples()
        .args(&["--otlp", &format!("http://127.0.0.1:{port}")])
        .start();
    for _ in 0..50 {
        host.get("/users").expect_status(200);
    }
    let failed = wait_until(
        "the failed exports to be counted",
        Duration::from_secs(30),
        || {
            let metrics =
                String::from_utf8(host.admin("GET", "/metrics", None, None).body).unwrap();
            let line = metrics
                .lines()
                .find(|l| l.starts_with("wasmhost_trace_spans_total{outcome=\"failed\"}"))?
                .to_string();
            let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
            (n > 0).then_some(n)
        },
    );
    assert!(
        failed >= 50,
        "every request's span was lost and counted: {failed}"
    );
    host.wait_for_log(&["span export failed"], Duration::from_secs(5));
}
