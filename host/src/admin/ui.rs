//! The release dashboard at `/ui` on the admin listener: a page that
//! polls the admin API every two seconds and draws each service's
//! versions, weights, canary and history, and per-version request rate,
//! error rate and latency charts; its buttons call the same API the CLI
//! does and show the API's own error when it refuses.
//!
//! - `GET  /ui`            the page (a login form without a session)
//! - `GET  /ui/login`      the login form; `POST` it with `token=…`
//! - `POST /ui/logout`     ends the session
//! - `GET  /ui/app.js`, `/ui/style.css`, `/ui/charts.js` the page's code
//!
//! Invariant: the assets are compiled into the binary and only ever load
//! from this listener (a content-security policy of `'self'`, no CDN); no
//! page here shows data without a valid session — the data itself comes
//! from the token-checked admin API.

use super::session::{self, Session};
use super::Admin;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

const INDEX: &str = include_str!("ui/index.html");
const LOGIN: &str = include_str!("ui/login.html");
const APP_JS: &str = include_str!("ui/app.js");
const CHARTS_JS: &str = include_str!("ui/charts.js");
const STYLE: &str = include_str!("ui/style.css");

/// What every page and asset is sent with.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The routes; they check sessions themselves (the login form needs none).
pub(super) fn routes(state: Admin) -> axum::Router {
    axum::Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route(
            "/ui/charts.js",
            get(|| async { asset(CHARTS_JS, "text/javascript") }),
        )
        .route("/ui/style.css", get(|| async { asset(STYLE, "text/css") }))
        .with_state(state)
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, kind)], body).into_response();
    harden(resp.headers_mut());
    resp
}

fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    harden(resp.headers_mut());
    resp
}

/// The session `headers` carry under `token`.
pub(super) fn session_of(token: &str, headers: &HeaderMap) -> Session {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    session::check(
        token,
        Some(&cookies).filter(|c| !c.is_empty()).map(|c| c.as_str()),
    )
}

async fn index(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    match session_of(&admin.token, &headers) {
        Session::Valid => html(StatusCode::OK, INDEX.to_string()),
        Session::Expired => Redirect::to("/ui/login?why=expired").into_response(),
        Session::Missing | Session::Invalid => Redirect::to("/ui/login").into_response(),
    }
}

/// `?why=` of the login form: why the user is there.
#[derive(Deserialize)]
struct Why {
    #[serde(default)]
    why: Option<String>,
}

async fn login_form(Query(q): Query<Why>) -> Response {
    let message = match q.why.as_deref() {
        Some("expired") => "Your session expired: log in again.",
        Some("logout") => "Logged out.",
        _ => "",
    };
    login_page(StatusCode::OK, message)
}

/// The login form with `message` (one of ours, never user input).
fn login_page(status: StatusCode, message: &str) -> Response {
    let shown = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"message\" role=\"alert\">{message}</p>")
    };
    html(status, LOGIN.replace("<!--message-->", &shown))
}

/// The login form's body.
#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(admin): State<Admin>, form: axum::extract::RawForm) -> Response {
    let token = serde_urlencoded::from_bytes::<Login>(&form.0)
        .map(|l| l.token)
        .unwrap_or_default();
    let token = token.trim();
    if !bool::from(token.as_bytes().ct_eq(admin.token.as_bytes())) {
        tracing::warn!("dashboard login refused: wrong admin token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            "Wrong admin token. It is in STATE/admin-token, or WASMHOST_ADMIN_TOKEN.",
        );
    }
    tracing::info!("dashboard login");
    let mut resp = Redirect::to("/ui").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&session::issue(&admin.token))) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/ui/login?why=logout").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

/// Adds a point per version to `timeline` every [`crate::timeline::STEP`],
/// until the host stops.
pub async fn sampler(
    control: Arc<crate::control::Control>,
    timeline: Arc<crate::timeline::Timeline>,
) {
    let mut tick = tokio::time::interval(crate::timeline::STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = control.snapshot();
        let now = crate::messages::now_ms();
        timeline.sample(
            now,
            snapshot.registry.services().flat_map(|s| {
                s.versions
                    .iter()
                    .map(move |v| (s.name.as_str(), &*v.version, v.metrics.snapshot()))
            }),
        );
    }
}
