//! The admin API, on its own listener (loopback by default), every call
//! with `Authorization: Bearer TOKEN`.
//!
//! - `GET  /admin/services`                      every service: versions, weights, metrics, load errors
//! - `GET  /admin/services/{name}`               one service, with its release history
//! - `PUT  /admin/services/{name}/release`       `{"weights": {"1.0.0": 90, "1.1.0": 10}, "sticky": "header:x-user-id"}`
//! - `POST /admin/services/{name}/promote`       `{"version": "1.1.0"}`: it takes 100% and becomes stable
//! - `POST /admin/services/{name}/rollback`      the stable version takes 100%
//! - `GET  /metrics`                              Prometheus text, labelled by service and version
//!
//! Invariant: a change is validated in full before anything moves; bad
//! input is a 4xx with a JSON error and changes nothing. Accepted changes
//! are persisted before they take effect.

use crate::dispatch::Dispatcher;
use crate::http::error_response;
use crate::registry::{Registry, ServiceEntry};
use crate::release::{validate_weights, Sticky};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Shared state of the admin handlers.
#[derive(Clone)]
struct Admin {
    dispatcher: Arc<Dispatcher>,
    token: Arc<str>,
}

/// The admin app; every route requires `token`.
pub fn app(dispatcher: Arc<Dispatcher>, token: &str) -> axum::Router {
    let state = Admin {
        dispatcher,
        token: token.into(),
    };
    axum::Router::new()
        .route("/admin/services", get(list))
        .route("/admin/services/{name}", get(show))
        .route("/admin/services/{name}/release", put(release))
        .route("/admin/services/{name}/promote", post(promote))
        .route("/admin/services/{name}/rollback", post(rollback))
        .route("/admin/services/{name}/pause", post(pause))
        .route("/admin/services/{name}/resume", post(resume))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

async fn authorize(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), admin.token.as_bytes()) => next.run(req).await,
        _ => error_response(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer TOKEN)",
            None,
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list(State(admin): State<Admin>) -> Json<Value> {
    let registry = admin.dispatcher.registry();
    let services: Vec<Value> = registry.services().map(describe).collect();
    let errors: Vec<Value> = registry
        .errors()
        .map(|e| json!({"file": e.file, "error": e.error}))
        .collect();
    Json(json!({ "services": services, "load_errors": errors }))
}

async fn show(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    let registry = admin.dispatcher.registry();
    let Some(service) = registry.service(&name) else {
        return not_found(&name);
    };
    let mut body = describe(service);
    let release = admin
        .dispatcher
        .writer()
        .await
        .services
        .get(&name)
        .cloned()
        .unwrap_or_default();
    body["canary"] = json!(release.canary);
    body["history"] = json!(release.history);
    body["load_errors"] = json!(registry
        .errors()
        .filter(|e| e.file.starts_with(&format!("{name}@"))
            || e.file == format!("{name}.toml")
            || e.file == format!("{name}.wasm"))
        .map(|e| json!({"file": e.file, "error": e.error}))
        .collect::<Vec<_>>());
    Json(body).into_response()
}

/// The body of `PUT …/release`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    weights: BTreeMap<String, u32>,
    #[serde(default)]
    sticky: Option<String>,
}

/// The body of `POST …/promote`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    version: String,
}

async fn release(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    body: Result<Json<ReleaseBody>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let result = admin
        .dispatcher
        .change_release(|registry, state| {
            let service = service_of(registry, &name)?;
            validate_weights(&body.weights).map_err(|e| e.to_string())?;
            for version in body.weights.keys() {
                if service.version(version).is_none() {
                    return Err(format!(
                        "service `{name}` has no loaded version `{version}`"
                    ));
                }
            }
            if let Some(spec) = &body.sticky {
                Sticky::parse(spec).map_err(|e| e.to_string())?;
            }
            let entry = state.services.entry(name.clone()).or_default();
            let detail = body
                .weights
                .iter()
                .map(|(v, w)| format!("{v}={w}"))
                .collect::<Vec<_>>()
                .join(",");
            entry.weights = Some(body.weights);
            entry.canary = None;
            if body.sticky.is_some() {
                entry.sticky = body.sticky;
            }
            entry.record("release", detail.clone());
            Ok(detail)
        })
        .await;
    respond(&admin, &name, "release", result)
}

async fn promote(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    body: Result<Json<PromoteBody>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let result = admin
        .dispatcher
        .change_release(|registry, state| {
            let service = service_of(registry, &name)?;
            if service.version(&body.version).is_none() {
                return Err(format!(
                    "service `{name}` has no loaded version `{}`",
                    body.version
                ));
            }
            let live = service.live().map(|v| v.version.to_string());
            let entry = state.services.entry(name.clone()).or_default();
            let before = entry.stable.clone().or(live);
            if before.as_deref() != Some(body.version.as_str()) {
                entry.previous = before;
            }
            entry.weights = Some([(body.version.clone(), 100)].into());
            entry.canary = None;
            entry.stable = Some(body.version.clone());
            entry.record("promote", body.version.clone());
            Ok(body.version.clone())
        })
        .await;
    respond(&admin, &name, "promote", result)
}

async fn rollback(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    let result = admin
        .dispatcher
        .change_release(|registry, state| {
            let service = service_of(registry, &name)?;
            let live = service.live().map(|v| v.version.to_string());
            let entry = state.services.entry(name.clone()).or_default();
            let loaded = |v: &String| service.version(v).is_some();
            // During a gray release, back to the stable version; right after a
            // promotion (the stable one is live), back to the one before it;
            // with no history, the highest version below the live one.
            let just_promoted = entry.stable.as_ref().is_some_and(|st| {
                entry
                    .weights
                    .as_ref()
                    .is_some_and(|w| w.len() == 1 && w.get(st) == Some(&100))
            });
            let stable = if just_promoted {
                entry.previous.clone().filter(loaded)
            } else {
                entry.stable.clone().filter(loaded)
            }
            .or_else(|| {
                let live = live.clone()?;
                service
                    .names
                    .iter()
                    .rev()
                    .find(|v| crate::registry::compare_versions(v, &live).is_lt())
                    .map(|v| v.to_string())
            });
            let Some(stable) = stable else {
                return Err(format!(
                    "service `{name}` has no stable version to roll back to"
                ));
            };
            entry.weights = Some([(stable.clone(), 100)].into());
            entry.stable = Some(stable.clone());
            entry.previous = None;
            entry.canary = None;
            entry.record("rollback", stable.clone());
            Ok(stable)
        })
        .await;
    respond(&admin, &name, "rollback", result)
}

async fn pause(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    set_paused(admin, name, true).await
}

async fn resume(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    set_paused(admin, name, false).await
}

async fn set_paused(admin: Admin, name: String, paused: bool) -> Response {
    let action = if paused { "pause" } else { "resume" };
    let result = admin
        .dispatcher
        .change_release(|registry, state| {
            service_of(registry, &name)?;
            let entry = state.services.entry(name.clone()).or_default();
            let Some(canary) = entry.canary.as_mut() else {
                return Err(format!("service `{name}` has no canary in progress"));
            };
            canary.paused = paused;
            let detail = canary.candidate.clone();
            entry.record(action, detail.clone());
            Ok(detail)
        })
        .await;
    respond(&admin, &name, action, result)
}

/// The parsed body, or a 400 saying what is wrong with it.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Box<Response>> {
    body.map(|Json(b)| b).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            &e.body_text(),
            None,
        ))
    })
}

fn service_of<'a>(registry: &'a Registry, name: &str) -> Result<&'a ServiceEntry, String> {
    registry
        .service(name)
        .ok_or_else(|| format!("no service named `{name}`"))
}

fn respond(admin: &Admin, name: &str, action: &str, result: Result<String, String>) -> Response {
    match result {
        Ok(detail) => {
            tracing::info!(service = %name, action, detail = %detail, "release changed");
            let registry = admin.dispatcher.registry();
            match registry.service(name) {
                Some(s) => Json(describe(s)).into_response(),
                None => not_found(name),
            }
        }
        Err(message) if message.starts_with("no service named") => not_found(name),
        Err(message) => error_response(StatusCode::UNPROCESSABLE_ENTITY, &message, None),
    }
}

fn not_found(name: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("no service named `{name}`"),
        None,
    )
}

/// A service as the admin API shows it.
fn describe(service: &ServiceEntry) -> Value {
    let weight = |v: &str| {
        service
            .policy
            .weights
            .iter()
            .find(|(n, _)| **n == *v)
            .map(|(_, w)| *w)
            .unwrap_or(0)
    };
    let versions: Vec<Value> = service
        .versions
        .iter()
        .rev()
        .map(|v| {
            json!({
                "version": &*v.version,
                "weight": weight(&v.version),
                "digest": v.digest,
                "size": v.size,
                "world": v.pre.world(),
                "metrics": v.metrics.snapshot(),
            })
        })
        .collect();
    let sticky = service.policy.sticky.as_ref().map(|s| match s {
        Sticky::Header(h) => format!("header:{h}"),
        Sticky::Cookie(c) => format!("cookie:{c}"),
    });
    // Every version of a service shares its manifest, so one sandbox speaks for all.
    let sandbox = service.versions.last().map(|v| &v.sandbox);
    json!({
        "name": service.name,
        "routes": service.routes,
        "sticky": sticky,
        "versions": versions,
        "running": service.concurrency as usize - service.slots.available_permits(),
        "limits": sandbox.map(|s| s.limits.to_json()),
        "grants": sandbox.map(|s| s.grants_json()),
    })
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let registry = admin.dispatcher.registry();
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The admin token: `WASMHOST_ADMIN_TOKEN` if set, else a new random token
/// written to `STATE/admin-token` (mode 0600).
pub fn token(state_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    if let Ok(t) = std::env::var("WASMHOST_ADMIN_TOKEN") {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom")
            .context("failed to open /dev/urandom for the admin token")?,
        &mut bytes,
    )?;
    let token = hex::encode(bytes);
    let path = state_dir.join("admin-token");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}
