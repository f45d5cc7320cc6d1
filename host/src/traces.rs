//! OpenTelemetry traces over OTLP/HTTP (`--otlp URL`, or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): the host's `request`, `attempt`, `call`,
//! `publish` and `deliver` spans, bridged from `tracing` by
//! `tracing-opentelemetry` and sent as protobuf to `URL/v1/traces`.
//!
//! W3C trace context flows through everything a request starts: a client's
//! `traceparent` becomes the parent of its `request` span
//! ([`continue_from`]), a nested call or an outbound request carries the
//! `traceparent` of the span it runs under ([`inject`]), and a published
//! message keeps it in its headers, so its delivery joins the trace.
//!
//! Invariant: exporting never blocks or fails a request. A finished span is
//! handed to a bounded queue with `try_send`; when the queue is full the
//! span is dropped and counted ([`stats`]); the export runs on a task of
//! its own, once a second, and a collector that is slow or gone only costs
//! that task. Without `--otlp` nothing here runs: the spans stay
//! debug-level and disabled, as before.

use anyhow::{Context as _, Result};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Finished spans waiting for export; beyond this they are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Spans per OTLP request.
pub const BATCH_SIZE: usize = 512;
/// How often the queue is sent.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one export may take before it counts as failed.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// What the exporter has done since the host started (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Whether spans are exported at all.
    pub enabled: bool,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// Spans lost because their export failed (collector down, refused, slow).
    pub failed: u64,
}

/// The exporter's counters.
pub fn stats() -> Stats {
    Stats {
        enabled: enabled(),
        exported: EXPORTED.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
    }
}

/// Whether spans are exported (`--otlp` was given).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OTLP/HTTP traces URL for `endpoint`: a base URL gets the signal path
/// `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` does); a URL that already
/// ends in it is kept.
pub fn traces_url(endpoint: &str) -> Result<String> {
    let uri: http::Uri = endpoint
        .parse()
        .with_context(|| format!("--otlp `{endpoint}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => anyhow::bail!(
            "--otlp `{endpoint}` must be an http:// or https:// URL (OTLP/HTTP, e.g. http://127.0.0.1:4318)"
        ),
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// The export pipeline: keep it until the host stops, then [`Self::finish`].
pub struct Pipeline {
    provider: SdkTracerProvider,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    /// Sends what is queued (for at most `timeout`) and stops exporting.
    pub async fn finish(self, timeout: Duration) {
        let _ = self.provider.shutdown();
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

/// A `tracing` layer that exports the host's spans to `endpoint`, and the
/// pipeline behind it. Must be called inside the tokio runtime.
///
/// Only spans (of the host's own modules) and warnings become OTLP data:
/// a debug event never reaches the exporter.
pub fn layer<S>(endpoint: &str) -> Result<(impl Layer<S>, Pipeline)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let url = traces_url(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Client(reqwest::Client::new()))
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("failed to set up the OTLP exporter")?;
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(export(exporter, rx, stopped));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("wasmhost")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue(tx))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("wasmhost");
    ENABLED.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Nothing per poll: no busy/idle clock on every enter and exit, no
        // OpenTelemetry context made current (the host asks a span for its
        // context when it propagates one).
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        // (FilterFn caches each callsite's verdict: a debug event on the
        // request path stays free.)
        .with_filter(tracing_subscriber::filter::filter_fn(exported));
    Ok((
        layer,
        Pipeline {
            provider,
            stop,
            task,
        },
    ))
}

/// What becomes OTLP data: the host's spans, and its warnings (as span events).
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("wasmhost")
        && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
}

/// Hands finished spans to the export task, never waiting.
#[derive(Debug)]
struct Queue(tokio::sync::mpsc::Sender<SpanData>);

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.0.try_send(span).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Sends the queue every [`EXPORT_INTERVAL`] in batches of [`BATCH_SIZE`];
/// on `stop`, sends what is left and ends. A failing collector is logged
/// once when it starts failing and once when it answers again.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queue: tokio::sync::mpsc::Receiver<SpanData>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(EXPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        loop {
            let mut batch = Vec::with_capacity(BATCH_SIZE);
            while batch.len() < BATCH_SIZE {
                match queue.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
                Ok(Ok(())) => {
                    EXPORTED.fetch_add(n, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        tracing::info!("the OTLP collector accepts spans again");
                    }
                }
                outcome => {
                    FAILED.fetch_add(n, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        let error = match outcome {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {EXPORT_TIMEOUT:?}"),
                        };
                        tracing::warn!(spans = n, %error, "span export failed; spans are dropped until the collector answers");
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// The OTLP exporter's HTTP client: the host's own reqwest.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .timeout(EXPORT_TIMEOUT)
            .send()
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut out = http::Response::new(resp.bytes().await?);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// Makes `span` a child of the trace that `traceparent` (and `tracestate`)
/// in `headers` name, when there is one and spans are exported.
pub fn continue_from(span: &tracing::Span, headers: impl Extractor) {
    if !enabled() || headers.get(TRACEPARENT).is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&headers);
    let _ = span.set_parent(parent);
}

/// An HTTP header map, read as trace context.
pub struct Http<'a>(pub &'a http::HeaderMap);

impl Extractor for Http<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Names `span` in the exported trace, once it has started (the
/// `otel.name` field only names a span that has not).
pub fn rename(span: &tracing::Span, name: String) {
    if !enabled() || span.is_disabled() {
        return;
    }
    use opentelemetry::trace::TraceContextExt as _;
    span.context().span().update_name(name);
}

/// Headers as a contract request holds them, read as trace context.
pub struct Pairs<'a>(pub &'a [(String, String)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Sets `traceparent` (and `tracestate`) in `headers` to the context of the
/// current span, replacing what was there, when spans are exported.
pub fn inject(headers: &mut Vec<(String, String)>) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut PairsMut(headers));
}

/// Sets `traceparent` in an HTTP header map to the current span's context.
pub fn inject_http(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new()
        .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
}

struct PairsMut<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairsMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/v1/traces").unwrap(),
            "https://otel.example/v1/traces"
        );
        let e = traces_url("127.0.0.1:4317").unwrap_err().to_string();
        assert!(e.contains("http:// or https://"), "{e}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let queue = Queue(tx);
        let span = || SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "request".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        };
        let before = stats().dropped;
        for _ in 0..5 {
            queue.on_end(span());
        }
        // Other tests may drop too: at least these three were counted.
        assert!(stats().dropped >= before + 3);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "the queue held two");
    }

    #[test]
    fn pairs_find_headers_in_any_case() {
        let h = vec![("TraceParent".to_string(), "00-x".to_string())];
        assert_eq!(Pairs(&h).get("traceparent"), Some("00-x"));
        let mut h = h;
        PairsMut(&mut h).set("traceparent", "00-y".into());
        assert_eq!(h, vec![("traceparent".to_string(), "00-y".to_string())]);
    }
}
