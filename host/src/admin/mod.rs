//! The admin API, on its own listener (loopback by default), every call
//! with `Authorization: Bearer TOKEN`.
//!
//! - `GET  /admin/services`                      every service: versions, weights, metrics, load errors
//! - `GET  /admin/services/{name}`               one service, with its release history
//! - `PUT  /admin/services/{name}/release`       `{"weights": {"1.0.0": 90, "1.1.0": 10}, "sticky": "header:x-user-id"}`
//! - `POST /admin/services/{name}/promote`       `{"version": "1.1.0"}`: it takes 100% and becomes stable
//! - `POST /admin/services/{name}/rollback`      the stable version takes 100%
//! - `GET  /admin/logs?service=NAME&after=SEQ`   the service's recent log lines (`wasmhost logs`)
//! - `GET  /admin/services/{name}/timeline`      the last five minutes, per version: req/s, error rate, p50, p99
//! - `POST /admin/drain`                          ready turns 503; the host serves for `--drain-delay`, then stops
//! - `GET  /metrics`                              Prometheus text, labelled by service and version
//! - `/ui`                                        the release dashboard (see [`ui`])
//!
//! The dashboard's session cookie stands in for the token (see
//! [`session`]); a change made with it must also carry `x-wasmhost-ui: 1`,
//! which no cross-site form can send.
//!
//! Invariant: reads load the snapshot and never wait (not even behind a
//! compile); every change goes to the control plane, whose typed error
//! gives the status — bad input is a 4xx with a JSON error and changes
//! nothing, and an accepted change is persisted before it takes effect.

mod prometheus;
pub mod session;
pub mod ui;

use crate::control::{Change, Control};
use crate::front::error_response;
use crate::registry::{LoadError, Loading, ServiceEntry};
use crate::resilience::Standing;
use crate::timeline::Timeline;
use crate::views::{
    LimitsView, LoadErrorView, LoadingView, LogsView, ServiceView, ServicesView, VersionView,
};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use serde::Deserialize;
use session::Session;
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shared state of the admin handlers.
#[derive(Clone)]
struct Admin {
    control: Arc<Control>,
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    token: Arc<str>,
    timeline: Arc<Timeline>,
}

/// The admin app; every route but the dashboard's login requires `token`
/// (or a dashboard session made with it).
pub fn app(
    control: Arc<Control>,
    dispatcher: Arc<crate::dispatch::Dispatcher>,
    token: &str,
    timeline: Arc<Timeline>,
) -> axum::Router {
    let topics = crate::topics_api::routes(control.clone(), dispatcher.bus().clone());
    let state = Admin {
        control,
        dispatcher,
        token: token.into(),
        timeline,
    };
    axum::Router::new()
        .route("/admin/services", get(list))
        .route("/admin/services/{name}", get(show))
        .route("/admin/services/{name}/release", put(release))
        .route("/admin/services/{name}/promote", post(promote))
        .route("/admin/services/{name}/rollback", post(rollback))
        .route("/admin/services/{name}/pause", post(pause))
        .route("/admin/services/{name}/resume", post(resume))
        .route("/admin/services/{name}/timeline", get(timeline_of))
        .route("/admin/logs", get(logs))
        .route("/admin/drain", post(drain))
        .route("/metrics", get(prometheus::metrics))
        .with_state(state.clone())
        .merge(topics)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .merge(ui::routes(state))
}

async fn authorize(State(admin): State<Admin>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if bool::from(t.as_bytes().ct_eq(admin.token.as_bytes())) => next.run(req).await,
        Some(_) => unauthorized(),
        None => match ui::session_of(&admin.token, req.headers()) {
            Session::Valid if reads(&req) || req.headers().contains_key(UI_HEADER) => {
                next.run(req).await
            }
            Session::Valid => error_response(
                StatusCode::FORBIDDEN,
                "a change made with a dashboard session must carry the header x-wasmhost-ui: 1",
                None,
            ),
            Session::Expired => error_response(
                StatusCode::UNAUTHORIZED,
                "the dashboard session expired: log in again",
                None,
            ),
            Session::Missing | Session::Invalid => unauthorized(),
        },
    }
}

/// The header a dashboard change carries (a cross-site form cannot).
const UI_HEADER: &str = "x-wasmhost-ui";

fn reads(req: &Request) -> bool {
    matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    )
}

fn unauthorized() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token (Authorization: Bearer TOKEN)",
        None,
    )
}

/// `GET /admin/services/NAME/timeline`.
async fn timeline_of(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    if admin.control.snapshot().registry.service(&name).is_none() {
        return not_found(&name);
    }
    Json(admin.timeline.view(&name)).into_response()
}

/// The query of `GET /admin/logs`.
#[derive(Deserialize)]
struct LogsQuery {
    service: String,
    #[serde(default)]
    after: u64,
    #[serde(default = "default_log_limit")]
    limit: usize,
}

fn default_log_limit() -> usize {
    200
}

/// A service's recent log lines, after the number `after`.
async fn logs(axum::extract::Query(q): axum::extract::Query<LogsQuery>) -> Json<LogsView> {
    Json(LogsView {
        kept: crate::logbook::installed(),
        lines: crate::logbook::lines(&q.service, q.after, q.limit.min(crate::logbook::CAPACITY)),
    })
}

async fn list(State(admin): State<Admin>) -> Json<ServicesView> {
    let snapshot = admin.control.snapshot();
    let registry = &snapshot.registry;
    let mut services: Vec<ServiceView> = registry.services().map(describe).collect();
    for view in &mut services {
        mark_held(&snapshot.held, view);
    }
    let replicas = with_replicas(&admin, &mut services).await;
    Json(ServicesView {
        services,
        replicas,
        loading: snapshot
            .loading
            .iter()
            .enumerate()
            .map(|(at, l)| loading_view(at, l))
            .collect(),
        load_errors: registry.errors().map(load_error_view).collect(),
        warnings: registry.warnings().map(load_error_view).collect(),
        scans: snapshot.scans,
        watch_events: admin.control.watch_events(),
    })
}

/// Versions held until every replica has them show as `waiting`.
fn mark_held(held: &crate::registry::Held, view: &mut ServiceView) {
    if let Some(versions) = held.get(&view.name) {
        for v in &mut view.versions {
            if versions.contains(&v.version) {
                v.state = "waiting".into();
            }
        }
    }
}

/// On a cluster, fills in how many replicas report now and how many of
/// them have each version loaded; left out when the reports cannot be read.
/// Returns the reports.
async fn with_replicas(
    admin: &Admin,
    services: &mut [ServiceView],
) -> Vec<crate::cluster_metrics::Report> {
    let Some(cluster) = admin.control.cluster() else {
        return Vec::new();
    };
    let reports = match cluster.replicas(crate::messages::now_ms()).await {
        Ok(reports) => reports,
        Err(error) => {
            tracing::debug!(error = %format!("{error:#}"), "the replica reports could not be read");
            return Vec::new();
        }
    };
    for service in services {
        service.replicas = Some(reports.len() as u32);
        for version in &mut service.versions {
            let name = crate::registry::version_key(&service.name, &version.version);
            let on = reports
                .iter()
                .filter(|r| r.versions.contains(&name))
                .count();
            version.loaded_on = Some(on as u32);
        }
    }
    reports
}

/// A version being compiled, as the admin API lists it.
fn loading_view(queued_behind: usize, l: &Loading) -> LoadingView {
    LoadingView {
        service: l.service.clone(),
        version: l.version.clone(),
        file: l.file.clone(),
        state: "loading".into(),
        queued_behind,
        elapsed_ms: l.since.elapsed().map_or(0, |d| d.as_millis() as u64),
    }
}

fn load_error_view(e: &LoadError) -> LoadErrorView {
    LoadErrorView {
        file: e.file.clone(),
        error: e.error.clone(),
    }
}

async fn show(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    let snapshot = admin.control.snapshot();
    let registry = &snapshot.registry;
    let loading: Vec<LoadingView> = snapshot
        .loading
        .iter()
        .enumerate()
        .filter(|(_, l)| l.service == name)
        .map(|(at, l)| loading_view(at, l))
        .collect();
    let mut view = match registry.service(&name) {
        Some(service) => describe(service),
        // Still compiling its first version: shown, with nothing to serve yet.
        None if !loading.is_empty() => ServiceView {
            name: name.clone(),
            ..ServiceView::default()
        },
        None => return not_found(&name),
    };
    let release = snapshot
        .release
        .services
        .get(&name)
        .cloned()
        .unwrap_or_default();
    view.loading = loading;
    view.release_epoch = snapshot.release.epoch;
    mark_held(&snapshot.held, &mut view);
    with_replicas(&admin, std::slice::from_mut(&mut view)).await;
    view.stable = release.stable.clone();
    view.canary = release.canary;
    view.history = release.history;
    view.load_errors = registry
        .errors()
        .filter(|e| {
            e.file.starts_with(&format!("{name}@"))
                || e.file == format!("{name}.toml")
                || e.file == format!("{name}.wasm")
        })
        .map(load_error_view)
        .collect();
    with_etag(Json(view).into_response(), snapshot.release.epoch)
}

/// `response` with the release epoch as its entity tag.
fn with_etag(mut response: Response, epoch: u64) -> Response {
    if let Ok(value) = header::HeaderValue::from_str(&format!("\"{epoch}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The epoch an `If-Match` header names (`"12"` or `12`), `Ok(None)`
/// without one, or a 400.
fn if_match(headers: &header::HeaderMap) -> Result<Option<u64>, Box<Response>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Box::new(error_response(
                StatusCode::BAD_REQUEST,
                "If-Match must be a release epoch (the ETag or `release_epoch` of GET /admin/services/NAME)",
                None,
            ))
        })
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
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match json_body::<ReleaseBody>(&body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let change = Change::SetWeights {
        service: name.clone(),
        weights: body.weights,
        sticky: body.sticky,
    };
    respond(&admin, &name, "release", &headers, change).await
}

async fn promote(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    headers: header::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match json_body::<PromoteBody>(&body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let change = Change::Promote {
        service: name.clone(),
        version: body.version,
    };
    respond(&admin, &name, "promote", &headers, change).await
}

async fn rollback(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    headers: header::HeaderMap,
) -> Response {
    let change = Change::Rollback {
        service: name.clone(),
    };
    respond(&admin, &name, "rollback", &headers, change).await
}

async fn pause(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    headers: header::HeaderMap,
) -> Response {
    let change = Change::Pause {
        service: name.clone(),
        paused: true,
    };
    respond(&admin, &name, "pause", &headers, change).await
}

async fn resume(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    headers: header::HeaderMap,
) -> Response {
    let change = Change::Pause {
        service: name.clone(),
        paused: false,
    };
    respond(&admin, &name, "resume", &headers, change).await
}

/// `POST /admin/drain`: ready turns 503 at once; the host serves for the
/// drain delay, then stops as on SIGTERM.
async fn drain(State(admin): State<Admin>) -> Response {
    tracing::info!("drain asked for through the admin API");
    admin.control.health().start_drain();
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"draining": true})),
    )
        .into_response()
}

/// The parsed body, or a 400 saying what is wrong with it. The body is
/// JSON whatever its content type says (`curl -d` sends a form type).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not the JSON expected: {e}"),
            None,
        ))
    })
}

/// Applies `change` and answers with the service as it is now, or with the
/// error's own status.
async fn respond(
    admin: &Admin,
    name: &str,
    action: &str,
    headers: &header::HeaderMap,
    change: Change,
) -> Response {
    let based_on = match if_match(headers) {
        Ok(epoch) => epoch,
        Err(resp) => return *resp,
    };
    match admin.control.apply_based_on(change, based_on).await {
        Ok(applied) => {
            let epoch = applied.after.release.epoch;
            tracing::info!(service = %name, action, epoch, detail = %applied.detail, "release changed");
            match applied.after.registry.service(name) {
                Some(s) => {
                    let mut view = describe(s);
                    view.release_epoch = epoch;
                    mark_held(&applied.after.held, &mut view);
                    with_replicas(admin, std::slice::from_mut(&mut view)).await;
                    with_etag(Json(view).into_response(), epoch)
                }
                None => not_found(name),
            }
        }
        Err(error) => error_response(error.status(), &error.to_string(), None),
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
fn describe(service: &ServiceEntry) -> ServiceView {
    let weight = |v: &str| {
        service
            .policy
            .weights
            .iter()
            .find(|(n, _)| **n == *v)
            .map(|(_, w)| *w)
            .unwrap_or(0)
    };
    let versions = service
        .versions
        .iter()
        .rev()
        .map(|v| {
            let now = tokio::time::Instant::now();
            let standing = v.outlier.standing(now);
            VersionView {
                version: v.version.to_string(),
                weight: weight(&v.version),
                digest: v.digest.clone(),
                size: v.size,
                world: v.pre.world().to_string(),
                metrics: v.metrics.snapshot(),
                pinned_metrics: v.pinned_metrics.snapshot(),
                state: standing.name().to_string(),
                ejected_for_secs: match standing {
                    Standing::Ejected(until) => {
                        Some(until.saturating_duration_since(now).as_secs_f64().ceil() as u64)
                    }
                    _ => None,
                },
                ejections: v.outlier.ejections(),
                retries: v.counters.retries().values().sum(),
                fallbacks: v.counters.fallbacks().values().sum(),
                message_latency: v.deliveries.latency.snapshot(),
                loaded_on: None,
            }
        })
        .collect();
    // Every version of a service shares its manifest, so one sandbox speaks for all.
    let sandbox = service.versions.last().map(|v| &v.sandbox);
    ServiceView {
        name: service.name.clone(),
        routes: service.routes.iter().map(ToString::to_string).collect(),
        private_routes: if service.private {
            service.routes.iter().map(ToString::to_string).collect()
        } else {
            service
                .private_routes
                .iter()
                .map(ToString::to_string)
                .collect()
        },
        sticky: service.policy.sticky.as_ref().map(ToString::to_string),
        versions,
        running: service.concurrency as usize - service.slots.available_permits(),
        limits: sandbox.map(|s| LimitsView::from(&s.limits)),
        grants: sandbox.map(|s| s.grants_view()),
        ..ServiceView::default()
    }
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
    // A file that existed before keeps its old mode through `open`: set it.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("failed to make {} private (mode 0600)", path.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}
