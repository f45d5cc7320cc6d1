//! The admin API of the message log, on the admin listener (behind its
//! token): each consumer group's counts, its dead letters, replay and purge.
//!
//! - `GET /admin/topics`: per subscription, its service, group, topic and
//!   counts (backlog, in flight, redelivering, dead letters);
//! - `GET /admin/groups/SERVICE/GROUP/dead-letters?limit=50`;
//! - `POST /admin/groups/SERVICE/GROUP/replay` with `{"all": true}` or
//!   `{"seqs": [3, 7]}`: back for delivery, from attempt 1;
//! - `DELETE /admin/groups/SERVICE/GROUP/dead-letters`: purge.
//!
//! Invariant: reads and writes go to the message log only; nothing here
//! changes what is served.

use crate::bus::Bus;
use crate::control::Control;
use crate::front::error_response;
use crate::messages::{now_ms, DeadLetter, GroupStats};
use crate::registry::group_key;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone)]
struct Topics {
    control: Arc<Control>,
    bus: Bus,
}

/// One subscription and its group's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    /// The subscribing service.
    pub service: String,
    /// Its consumer group.
    pub group: String,
    /// The topic or pattern.
    pub topic: String,
    /// The counts.
    #[serde(flatten)]
    pub stats: GroupStats,
}

/// The routes (the caller adds the token check).
pub fn routes(control: Arc<Control>, bus: Bus) -> axum::Router {
    axum::Router::new()
        .route("/admin/topics", get(list))
        .route(
            "/admin/groups/{service}/{group}/dead-letters",
            get(dead_letters).delete(purge),
        )
        .route("/admin/groups/{service}/{group}/replay", post(replay))
        .with_state(Topics { control, bus })
}

fn failed(e: anyhow::Error) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the message log cannot answer: {e:#}"),
        None,
    )
}

async fn list(State(t): State<Topics>) -> Response {
    let snapshot = t.control.snapshot();
    let subs: Vec<(String, String, String)> = snapshot
        .registry
        .subscriptions()
        .map(|(service, sub)| {
            (
                service.to_string(),
                sub.group_name(service).to_string(),
                sub.topic.to_string(),
            )
        })
        .collect();
    let now = now_ms();
    let mut views = Vec::new();
    for (service, group, topic) in subs {
        match t.bus.group_stats(&group_key(&service, &group), now).await {
            Ok(stats) => views.push(GroupView {
                service,
                group,
                topic,
                stats,
            }),
            Err(e) => return failed(e),
        }
    }
    Json(serde_json::json!({ "groups": views })).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn dead_letters(
    State(t): State<Topics>,
    Path((service, group)): Path<(String, String)>,
    Query(q): Query<Limit>,
) -> Response {
    let key = group_key(&service, &group);
    let limit = q.limit.unwrap_or(50).min(1000);
    match t.bus.dead_letters(&key, limit).await.map_err(failed) {
        Ok(list) => Json::<serde_json::Value>(
            serde_json::json!({ "dead_letters": list as Vec<DeadLetter> }),
        )
        .into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    seqs: Option<Vec<u64>>,
}

async fn replay(
    State(t): State<Topics>,
    Path((service, group)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let asked: Replay = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"all\": true}} or {{\"seqs\": [..]}}: {e}"),
                None,
            )
        }
    };
    if asked.all == asked.seqs.is_some() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "give exactly one of \"all\": true and \"seqs\": [..]",
            None,
        );
    }
    let key = group_key(&service, &group);
    match t
        .bus
        .replay(&key, asked.seqs, now_ms())
        .await
        .map_err(failed)
    {
        Ok(n) => {
            tracing::info!(%service, %group, replayed = n, "dead letters replayed");
            Json(serde_json::json!({ "replayed": n })).into_response()
        }
        Err(r) => r,
    }
}

async fn purge(
    State(t): State<Topics>,
    Path((service, group)): Path<(String, String)>,
) -> Response {
    let key = group_key(&service, &group);
    match t.bus.purge(&key).await.map_err(failed) {
        Ok(n) => {
            tracing::info!(%service, %group, purged = n, "dead letters purged");
            Json(serde_json::json!({ "purged": n })).into_response()
        }
        Err(r) => r,
    }
}

/// The message families for `/metrics`: published by topic, deliveries by
/// version and outcome, and each group's backlog, in flight and dead letters.
pub async fn metrics(
    out: &mut String,
    dispatcher: &crate::dispatch::Dispatcher,
    snapshot: &crate::registry::Snapshot,
) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(out, "# HELP wasmhost_messages_published_total Messages stored, by topic.\n# TYPE wasmhost_messages_published_total counter");
    for (topic, n) in dispatcher.published_by_topic() {
        let _ = writeln!(
            out,
            "wasmhost_messages_published_total{{topic=\"{topic}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP wasmhost_messages_delivered_total Deliveries handled, by outcome.\n# TYPE wasmhost_messages_delivered_total counter");
    for service in snapshot.registry.services() {
        for v in &service.versions {
            let d = &v.deliveries;
            for (outcome, n) in [
                ("ack", d.ack.load(Relaxed)),
                ("retry", d.retry.load(Relaxed)),
                ("reject", d.reject.load(Relaxed)),
                ("trap", d.trap.load(Relaxed)),
            ] {
                if n > 0 {
                    let _ = writeln!(out, "wasmhost_messages_delivered_total{{service=\"{}\",version=\"{}\",outcome=\"{outcome}\"}} {n}", service.name, v.version);
                }
            }
        }
    }
    let _ = writeln!(out, "# HELP wasmhost_message_redeliveries_total Deliveries after the first of a message.\n# TYPE wasmhost_message_redeliveries_total counter");
    for service in snapshot.registry.services() {
        for v in &service.versions {
            let _ = writeln!(
                out,
                "wasmhost_message_redeliveries_total{{service=\"{}\",version=\"{}\"}} {}",
                service.name,
                v.version,
                v.deliveries.redeliveries.load(Relaxed)
            );
        }
    }
    let groups: Vec<(String, String)> = snapshot
        .registry
        .subscriptions()
        .map(|(s, sub)| (s.to_string(), sub.group_name(s).to_string()))
        .collect();
    let now = now_ms();
    let mut stats = Vec::new();
    for (s, g) in groups {
        if let Ok(counts) = dispatcher.bus().group_stats(&group_key(&s, &g), now).await {
            stats.push((s, g, counts));
        }
    }
    for (family, help) in [
        ("wasmhost_message_backlog", "Messages waiting for delivery."),
        (
            "wasmhost_messages_in_flight",
            "Messages leased to a handler now.",
        ),
        ("wasmhost_dead_letters", "Messages in the dead letters."),
        (
            "wasmhost_consumer_lag_seconds",
            "Age of the oldest message not yet acknowledged.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} gauge");
        for (service, group, s) in &stats {
            let value = match family {
                "wasmhost_message_backlog" => s.backlog as f64,
                "wasmhost_messages_in_flight" => s.in_flight as f64,
                "wasmhost_consumer_lag_seconds" => s.lag_ms as f64 / 1e3,
                _ => s.dead_letters as f64,
            };
            let _ = writeln!(
                out,
                "{family}{{service=\"{service}\",group=\"{group}\"}} {value}"
            );
        }
    }
}
