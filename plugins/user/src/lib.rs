//! The `user` service: a small JSON API over the host's key-value store.
//!
//! - `POST /users` `{"name", "email"}` → 201 with the stored user and its id
//! - `GET /users` → every user, by id
//! - `GET /users/{id}` → the user, or 404
//! - `GET /user?id=N` → the same as `GET /users/N` (the original query-style API)
//!
//! Built with the feature `v2` it is version 1.1.0 of the service, which adds
//! a `display_name` to every user it returns (`make plugins` builds it as
//! `examples/user@1.1.0.wasm`, ready for a gray release).
//!
//! Users live in the bucket `users` under their decimal id; ids come from an
//! atomic counter, so concurrent creations never share one.

wit_bindgen::generate!({ path: "../../wit", world: "service", generate_all });

use exports::wasmhost::plugin::handler::Guest;
use serde::{Deserialize, Serialize};
use wasi::keyvalue::{atomics, store};
use wasmhost::plugin::types::{Request, Response};

/// A stored user.
#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// The body of `POST /users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    email: String,
}

struct Service;

impl Guest for Service {
    fn handle(req: Request) -> Response {
        match route(&req) {
            Ok(resp) => resp,
            Err(resp) => resp,
        }
    }
}

export!(Service);

/// Dispatches on method and path; `Err` carries an error response.
fn route(req: &Request) -> Result<Response, Response> {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["users"]) => create(&req.body),
        ("GET", ["users"]) => list(),
        ("GET", ["users", id]) => get(parse_id(id)?),
        ("GET", ["user"]) => {
            let id = query_param(&req.query, "id")
                .ok_or_else(|| error(400, "missing query parameter `id`"))?;
            get(parse_id(&id)?)
        }
        (_, ["users"] | ["users", _] | ["user"]) => Err(error(405, "method not allowed")),
        _ => Err(error(404, "no such resource")),
    }
}

fn create(body: &[u8]) -> Result<Response, Response> {
    let new: NewUser =
        serde_json::from_slice(body).map_err(|e| error(400, &format!("invalid user: {e}")))?;
    let name = new.name.trim();
    if name.is_empty() {
        return Err(error(400, "invalid user: `name` must not be empty"));
    }
    let email = new.email.trim();
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(error(
            400,
            "invalid user: `email` must look like name@domain",
        ));
    }
    let bucket = bucket()?;
    let id = atomics::increment(&bucket, "next-id", 1).map_err(kv_error)?;
    let user = User {
        id,
        name: name.to_string(),
        email: email.to_string(),
    };
    let bytes = serde_json::to_vec(&user).map_err(|e| error(500, &e.to_string()))?;
    bucket.set(&user_key(id), &bytes).map_err(kv_error)?;
    Ok(json(201, &present(&user)))
}

fn get(id: u64) -> Result<Response, Response> {
    match bucket()?.get(&user_key(id)).map_err(kv_error)? {
        Some(bytes) => {
            let user: User =
                serde_json::from_slice(&bytes).map_err(|e| error(500, &e.to_string()))?;
            Ok(json(200, &present(&user)))
        }
        None => Err(error(404, &format!("user {id} not found"))),
    }
}

fn list() -> Result<Response, Response> {
    let bucket = bucket()?;
    let mut users = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor).map_err(kv_error)?;
        for key in page.keys.iter().filter(|k| k.starts_with("user:")) {
            if let Some(bytes) = bucket.get(key).map_err(kv_error)? {
                let user: User =
                    serde_json::from_slice(&bytes).map_err(|e| error(500, &e.to_string()))?;
                users.push(user);
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    users.sort_by_key(|u| u.id);
    let users: Vec<Shown> = users.iter().map(present).collect();
    Ok(json(200, &users))
}

/// A user as the API shows it, fields in this order. Version 1.1.0
/// (feature `v2`) adds a `display_name` field; the stored data is the same
/// in both versions, so either can serve any user during a gray release.
/// A struct rather than a `json!` map: no map, so no hasher seeded from
/// `wasi:random` on every request.
#[derive(Serialize)]
struct Shown<'a> {
    id: u64,
    name: &'a str,
    email: &'a str,
    #[cfg(feature = "v2")]
    display_name: String,
}

fn present(user: &User) -> Shown<'_> {
    Shown {
        id: user.id,
        name: &user.name,
        email: &user.email,
        #[cfg(feature = "v2")]
        display_name: format!("{} <{}>", user.name, user.email),
    }
}

fn bucket() -> Result<store::Bucket, Response> {
    store::open("users").map_err(kv_error)
}

fn user_key(id: u64) -> String {
    format!("user:{id}")
}

fn parse_id(raw: &str) -> Result<u64, Response> {
    raw.parse()
        .map_err(|_| error(400, &format!("invalid user id `{raw}`")))
}

/// The first value of `name` in a raw query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn kv_error(e: store::Error) -> Response {
    let detail = match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(msg) => msg,
    };
    error(500, &format!("key-value store: {detail}"))
}

fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".to_string(), "application/json".to_string())]
}

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response {
        status,
        headers: json_headers(),
        body,
    }
}

fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}
