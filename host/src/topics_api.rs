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

use crate::control::Control;
use crate::front::error_response;
use crate::kv::KvStore;
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
    kv: KvStore,
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
pub fn routes(control: Arc<Control>, kv: KvStore) -> axum::Router {
    axum::Router::new()
        .route("/admin/topics", get(list))
        .route(
            "/admin/groups/{service}/{group}/dead-letters",
            get(dead_letters).delete(purge),
        )
        .route("/admin/groups/{service}/{group}/replay", post(replay))
        .with_state(Topics { control, kv })
}

fn failed(e: anyhow::Error) -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the message log cannot answer: {e:#}"),
        None,
    )
}

async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(e)),
        Err(e) => Err(failed(anyhow::anyhow!("{e}"))),
    }
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
    let kv = t.kv.clone();
    let views = blocking(move || {
        let now = now_ms();
        subs.into_iter()
            .map(|(service, group, topic)| {
                let stats = kv.group_stats(&group_key(&service, &group), now)?;
                Ok(GroupView {
                    service,
                    group,
                    topic,
                    stats,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await;
    match views {
        Ok(v) => Json(serde_json::json!({ "groups": v })).into_response(),
        Err(r) => r,
    }
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
    let kv = t.kv.clone();
    match blocking(move || kv.dead_letters(&key, limit)).await {
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
    let kv = t.kv.clone();
    let seqs = asked.seqs;
    match blocking(move || kv.replay(&key, seqs.as_deref(), now_ms())).await {
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
    let kv = t.kv.clone();
    match blocking(move || kv.purge(&key)).await {
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
    let kv = dispatcher.kv().clone();
    let stats = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        groups
            .into_iter()
            .filter_map(|(s, g)| {
                let stats = kv.group_stats(&group_key(&s, &g), now).ok()?;
                Some((s, g, stats))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
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
