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
