//! The admin API's answers to bad input, in-process (`Host::builder()` and
//! `oneshot`, no listener): each refusal has its status and its exact JSON
//! error, and changes nothing.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use wasmhost::views::ServiceView;
use wasmhost_test_support::{Plugins, TEST_CACHE_DIR, USER};

const TOKEN: &str = "in-process-token";

/// A host with user 1.0.0 and 1.1.0, loaded; its directories live as long
/// as it does.
struct InProcess {
    host: wasmhost::Host,
    _dirs: (Plugins, tempfile::TempDir),
}

async fn host() -> InProcess {
    let plugins = Plugins::new();
    plugins
        .add(USER, "user@1.0.0.wasm")
        .add(USER, "user@1.1.0.wasm")
        .copy_manifest("user.toml");
    let state = tempfile::tempdir().unwrap();
    let host = wasmhost::Host::builder()
        .plugins(plugins.path())
        .state(state.path())
        .cache_dir(TEST_CACHE_DIR)
        .build()
        .unwrap();
    host.load().await.unwrap();
    InProcess {
        host,
        _dirs: (plugins, state),
    }
}

/// Sends one admin request; returns the status and the JSON body.
async fn call(
    host: &InProcess,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or_default().to_string()))
        .unwrap();
    let resp = host.host.admin(TOKEN).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// (method, path, body, token, status, error).
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    u16,
    Value,
);

async fn user(host: &InProcess) -> ServiceView {
    let (status, body) = call(host, "GET", "/admin/services/user", None, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_has_its_status_and_error_and_changes_nothing() {
    let host = host().await;
    let before = user(&host).await;
    assert_eq!(
        before.weights(),
        [("1.1.0".to_string(), 100), ("1.0.0".to_string(), 0)]
    );
    let release = "/admin/services/user/release";
    let cases: &[Case] = &[
        // (method, path, body, token, status, error)
        (
            "GET",
            "/admin/services",
            None,
            None,
            401,
            json!("missing or wrong admin token (Authorization: Bearer TOKEN)"),
        ),
        (
            "GET",
            "/admin/services",
            None,
            Some("wrong"),
            401,
            json!("missing or wrong admin token (Authorization: Bearer TOKEN)"),
        ),
        (
            "GET",
            "/admin/services/nobody",
            None,
            Some(TOKEN),
            404,
            json!("no service named `nobody`"),
        ),
        (
            "PUT",
            release,
            Some(r#"{"weights": {"1.0.0": 90, "1.1.0": 20}}"#),
            Some(TOKEN),
            422,
            json!("weights must sum to 100, not 110"),
        ),
        (
            "PUT",
            release,
            Some(r#"{"weights": {"1.0.0": 50, "9.9.9": 50}}"#),
            Some(TOKEN),
            422,
            json!("service `user` has no loaded version `9.9.9`"),
        ),
        (
            "PUT",
            release,
            Some(r#"{"weights": {"1.0.0": 150}}"#),
            Some(TOKEN),
            422,
            json!("weight 150 of `1.0.0` is over 100"),
        ),
        (
            "PUT",
            release,
            Some(r#"{"weights": {"1.0.0": 100}, "sticky": "ip"}"#),
            Some(TOKEN),
            422,
            json!("sticky must be `header:NAME` or `cookie:NAME`, not `ip`"),
        ),
        (
            "PUT",
            "/admin/services/nobody/release",
            Some(r#"{"weights": {"1.0.0": 100}}"#),
            Some(TOKEN),
            404,
            json!("no service named `nobody`"),
        ),
        (
            "POST",
            "/admin/services/user/promote",
            Some(r#"{"version": "3.0.0"}"#),
            Some(TOKEN),
            422,
            json!("service `user` has no loaded version `3.0.0`"),
        ),
        (
            "POST",
            "/admin/services/nobody/rollback",
            None,
            Some(TOKEN),
            404,
            json!("no service named `nobody`"),
        ),
        (
            "POST",
            "/admin/services/user/pause",
            None,
            Some(TOKEN),
            422,
            json!("service `user` has no canary in progress"),
        ),
        (
            "POST",
            "/admin/services/user/resume",
            None,
            Some(TOKEN),
            422,
            json!("service `user` has no canary in progress"),
        ),
    ];
    for (method, path, body, token, status, error) in cases {
        let (got, answer) = call(&host, method, path, *body, *token).await;
        assert_eq!(got, *status, "{method} {path} {body:?}: {answer}");
        assert_eq!(
            &answer["error"], error,
            "{method} {path} {body:?}: {answer}"
        );
    }
    // Malformed bodies are 400, with serde's reason.
    for (body, reason) in [
        (r#"{"weights": "all"}"#, "invalid type"),
        (
            r#"{"weights": {"1.0.0": 100}, "extra": 1}"#,
            "unknown field `extra`",
        ),
        ("not json", "expected ident"),
    ] {
        let (got, answer) = call(&host, "PUT", release, Some(body), Some(TOKEN)).await;
        assert_eq!(got, 400, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(reason), "{body}: {message}");
    }
    let (got, answer) = call(
        &host,
        "POST",
        "/admin/services/user/promote",
        None,
        Some(TOKEN),
    )
    .await;
    assert_eq!(got, 400, "{answer}");

    // Nothing moved, and nothing was recorded.
    let after = user(&host).await;
    assert_eq!(after.weights(), before.weights());
    assert!(after.history.is_empty(), "{:?}", after.history);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_with_nowhere_to_go_is_refused() {
    let host = host().await;
    // Promote 1.0.0, then roll back to 1.1.0 (the one before it); a second
    // rollback goes back to 1.0.0, the highest version below the live one.
    let (s, _) = call(
        &host,
        "POST",
        "/admin/services/user/promote",
        Some(r#"{"version": "1.0.0"}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(s, 200);
    let rollback = || {
        call(
            &host,
            "POST",
            "/admin/services/user/rollback",
            None,
            Some(TOKEN),
        )
    };
    let live = |body: Value| {
        let view: ServiceView = serde_json::from_value(body).unwrap();
        view.versions
            .into_iter()
            .find(|v| v.weight == 100)
            .unwrap()
            .version
    };
    let (s, body) = rollback().await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(live(body), "1.1.0");
    let (s, body) = rollback().await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(live(body), "1.0.0");
    // 1.0.0 is the lowest: nothing is below it, and nothing on record.
    let (s, body) = rollback().await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(
        body["error"],
        "service `user` has no stable version to roll back to"
    );
}

/// `curl -d '{…}'` sends the form content type: the body is still read as
/// the JSON it is (the README's examples work as written).
#[tokio::test(flavor = "multi_thread")]
async fn a_json_body_sent_with_a_form_content_type_is_accepted() {
    let host = host().await;
    let req = http::Request::builder()
        .method("PUT")
        .uri("/admin/services/user/release")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(r#"{"weights": {"1.0.0": 100}}"#))
        .unwrap();
    let resp = host.host.admin(TOKEN).oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let weights = user(&host).await.weights();
    assert!(weights.contains(&("1.0.0".to_string(), 100)), "{weights:?}");
}

/// Sends `req` to the admin app; the status, the headers and the body.
async fn raw(host: &InProcess, req: http::Request<Body>) -> (u16, http::HeaderMap, String) {
    let resp = host.host.admin(TOKEN).oneshot(req).await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn with_cookie(method: &str, path: &str, cookie: &str, ui_header: bool) -> http::Request<Body> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", cookie);
    if ui_header {
        req = req.header("x-wasmhost-ui", "1");
    }
    req.body(Body::empty()).unwrap()
}

/// The dashboard's sessions: a login sets a cookie that stands in for the
/// token; a change made with it needs the dashboard's header; an expired or
/// foreign cookie is refused with its reason, and nothing changes.
#[tokio::test]
async fn dashboard_sessions_stand_in_for_the_token_and_nothing_more() {
    let host = host().await;
    // Without a session, the page is a redirect to the login form.
    let req = http::Request::get("/ui").body(Body::empty()).unwrap();
    let (status, headers, _) = raw(&host, req).await;
    assert_eq!(
        (status, headers["location"].to_str().unwrap()),
        (303, "/ui/login")
    );
    // A wrong token: 401, the form again, no cookie.
    let login = |token: &str| {
        http::Request::post("/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let (status, headers, page) = raw(&host, login("nope")).await;
    assert_eq!(status, 401);
    assert!(page.contains("Wrong admin token"), "{page}");
    assert!(!headers.contains_key("set-cookie"));
    // The right one: a session cookie, HttpOnly and SameSite=Strict.
    let (status, headers, _) = raw(&host, login(TOKEN)).await;
    assert_eq!(status, 303);
    let set = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();

    // It reads, and it reaches the page.
    let (status, _, body) = raw(
        &host,
        with_cookie("GET", "/admin/services/user", &cookie, false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, page) = raw(&host, with_cookie("GET", "/ui", &cookie, false)).await;
    assert_eq!(status, 200);
    assert!(page.contains("/ui/app.js"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'self'"));
    // A change needs the dashboard's header, which a cross-site form cannot send.
    let before = user_view(&host, &cookie).await;
    let weights = json!({"weights": {"1.0.0": 50, "1.1.0": 50}}).to_string();
    let mut put = with_cookie("PUT", "/admin/services/user/release", &cookie, false);
    *put.body_mut() = Body::from(weights.clone());
    let (status, _, body) = raw(&host, put).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("x-wasmhost-ui"), "{body}");
    let after = user_view(&host, &cookie).await;
    assert_eq!(
        (after.weights(), after.history.len()),
        (before.weights(), before.history.len())
    );
    let mut put = with_cookie("PUT", "/admin/services/user/release", &cookie, true);
    *put.body_mut() = Body::from(weights);
    let (status, _, body) = raw(&host, put).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        user_view(&host, &cookie)
            .await
            .version("1.1.0")
            .unwrap()
            .weight,
        50
    );

    // A cookie of another token, a forged one and an expired one.
    let other = wasmhost::admin::session::issue("another-token");
    let (status, _, _) = raw(
        &host,
        with_cookie(
            "GET",
            "/admin/services",
            &format!("wasmhost_session={other}"),
            false,
        ),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, body) = raw(
        &host,
        with_cookie("GET", "/admin/services", "wasmhost_session=1.00", false),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("admin token"), "{body}");
    let expired = expired_cookie(TOKEN);
    let (status, _, body) = raw(
        &host,
        with_cookie("GET", "/admin/services", &expired, false),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("session expired"), "{body}");
    let (status, headers, _) = raw(&host, with_cookie("GET", "/ui", &expired, false)).await;
    assert_eq!(
        (status, headers["location"].to_str().unwrap()),
        (303, "/ui/login?why=expired")
    );
    let (status, _, _) = raw(
        &host,
        with_cookie("PUT", "/admin/services/user/release", &expired, true),
    )
    .await;
    assert_eq!(status, 401);
}

async fn user_view(host: &InProcess, cookie: &str) -> ServiceView {
    let req = with_cookie("GET", "/admin/services/user", cookie, false);
    serde_json::from_str(&raw(host, req).await.2).unwrap()
}

/// A session cookie made the way the host makes one, expired a minute ago.
fn expired_cookie(token: &str) -> String {
    use hmac::Mac;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(format!("wasmhost-session:{expiry}").as_bytes());
    format!(
        "wasmhost_session={expiry}.{}",
        hex::encode(mac.finalize().into_bytes())
    )
}
