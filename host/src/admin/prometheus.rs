//! `GET /metrics`: every version's counters, latency histogram and
//! resilience figures, and the trace exporter's, as Prometheus text.
//!
//! Invariant: one pass over the snapshot the call loaded; every family is
//! written with its HELP and TYPE lines even when it has no sample yet, so
//! a dashboard's queries never name a family that is missing.

use super::Admin;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

pub(super) async fn metrics(State(admin): State<Admin>) -> Response {
    let snapshot = admin.control.snapshot();
    let registry = &snapshot.registry;
    let mut out = String::new();
    let families = [
        ("wasmhost_requests_total", "counter", "Requests finished."),
        (
            "wasmhost_errors_total",
            "counter",
            "Requests answered with a 5xx.",
        ),
        (
            "wasmhost_traps_total",
            "counter",
            "Requests that trapped or hit a deadline.",
        ),
        ("wasmhost_in_flight", "gauge", "Requests running now."),
        ("wasmhost_weight_percent", "gauge", "Share of new traffic."),
    ];
    let snapshots: Vec<_> = registry
        .services()
        .flat_map(|s| s.versions.iter().map(move |v| (s, v, v.metrics.snapshot())))
        .collect();
    for (family, kind, help) in families {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for (s, v, m) in &snapshots {
            let value = match family {
                "wasmhost_requests_total" => m.requests,
                "wasmhost_errors_total" => m.errors,
                "wasmhost_traps_total" => m.traps,
                "wasmhost_in_flight" => m.in_flight,
                _ => u64::from(
                    s.policy
                        .weights
                        .iter()
                        .find(|(n, _)| **n == *v.version)
                        .map(|(_, w)| *w)
                        .unwrap_or(0),
                ),
            };
            let _ = writeln!(
                out,
                "{family}{{service=\"{}\",version=\"{}\"}} {value}",
                s.name, v.version
            );
        }
    }
    let _ = writeln!(out, "# HELP wasmhost_request_duration_seconds Request latency.\n# TYPE wasmhost_request_duration_seconds histogram");
    for (s, v, m) in &snapshots {
        for (bound, count) in crate::metrics::BUCKETS_US.iter().zip(&m.cumulative) {
            let le = if *bound == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", *bound as f64 / 1e6)
            };
            let _ = writeln!(out, "wasmhost_request_duration_seconds_bucket{{service=\"{}\",version=\"{}\",le=\"{le}\"}} {count}", s.name, v.version);
        }
        let _ = writeln!(
            out,
            "wasmhost_request_duration_seconds_sum{{service=\"{}\",version=\"{}\"}} {}",
            s.name, v.version, m.sum_seconds
        );
        let _ = writeln!(
            out,
            "wasmhost_request_duration_seconds_count{{service=\"{}\",version=\"{}\"}} {}",
            s.name,
            v.version,
            m.cumulative.last().copied().unwrap_or(0)
        );
    }
    resilience_metrics(&mut out, &snapshots);
    trace_metrics(&mut out);
    crate::topics_api::metrics(&mut out, &admin.dispatcher, &snapshot).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The resilience families: retries by reason, fallbacks by target,
/// ejections, budget refusals and each version's state.
fn resilience_metrics(
    out: &mut String,
    snapshots: &[(
        &crate::registry::ServiceEntry,
        &std::sync::Arc<crate::registry::Version>,
        crate::metrics::Snapshot,
    )],
) {
    let _ = writeln!(out, "# HELP wasmhost_retries_total Failed attempts tried again, by what failed.\n# TYPE wasmhost_retries_total counter");
    for (s, v, _) in snapshots {
        for (reason, n) in v.counters.retries() {
            let _ = writeln!(
                out,
                "wasmhost_retries_total{{service=\"{}\",version=\"{}\",reason=\"{reason}\"}} {n}",
                s.name, v.version
            );
        }
    }
    let _ = writeln!(out, "# HELP wasmhost_fallbacks_total Requests a version failed that another answered.\n# TYPE wasmhost_fallbacks_total counter");
    for (s, v, _) in snapshots {
        for (to, n) in v.counters.fallbacks() {
            let _ = writeln!(
                out,
                "wasmhost_fallbacks_total{{service=\"{}\",from=\"{}\",to=\"{to}\"}} {n}",
                s.name, v.version
            );
        }
    }
    let _ = writeln!(out, "# HELP wasmhost_ejections_total Times a version was taken out of selection.\n# TYPE wasmhost_ejections_total counter");
    for (s, v, _) in snapshots {
        let _ = writeln!(
            out,
            "wasmhost_ejections_total{{service=\"{}\",version=\"{}\"}} {}",
            s.name,
            v.version,
            v.outlier.ejections()
        );
    }
    let _ = writeln!(out, "# HELP wasmhost_retry_budget_exhausted_total Retries refused because the service's budget was spent.\n# TYPE wasmhost_retry_budget_exhausted_total counter");
    let mut seen = std::collections::BTreeSet::new();
    for (s, _, _) in snapshots {
        if seen.insert(&s.name) {
            let _ = writeln!(
                out,
                "wasmhost_retry_budget_exhausted_total{{service=\"{}\"}} {}",
                s.name,
                s.budget.exhausted()
            );
        }
    }
    let _ = writeln!(out, "# HELP wasmhost_version_state Whether a version is serving, ejected or on probation (1 for its state).\n# TYPE wasmhost_version_state gauge");
    let now = tokio::time::Instant::now();
    for (s, v, _) in snapshots {
        let state = v.outlier.standing(now).name();
        for name in ["serving", "ejected", "probation"] {
            let _ = writeln!(
                out,
                "wasmhost_version_state{{service=\"{}\",version=\"{}\",state=\"{name}\"}} {}",
                s.name,
                v.version,
                u8::from(state == name)
            );
        }
    }
}

/// The trace exporter's counters (all zero without `--otlp`).
fn trace_metrics(out: &mut String) {
    let s = crate::traces::stats();
    let _ = writeln!(out, "# HELP wasmhost_trace_spans_total Spans handed to the OTLP exporter, by what became of them.\n# TYPE wasmhost_trace_spans_total counter");
    for (outcome, n) in [
        ("exported", s.exported),
        ("dropped", s.dropped),
        ("failed", s.failed),
    ] {
        let _ = writeln!(
            out,
            "wasmhost_trace_spans_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
}
