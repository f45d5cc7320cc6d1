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

use serde::{Deserialize, Serialize};
use wasmhost_guest::prelude::*;

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

impl Handler for Service {
    fn handle(req: Request) -> Response {
        respond(route(&req))
    }
}

wasmhost_guest::export!(Service);

/// Dispatches on method and path.
fn route(req: &Request) -> Result {
    match (req.method.as_str(), req.segments().as_slice()) {
        ("POST", ["users"]) => create(req),
        ("GET", ["users"]) => list(),
        ("GET", ["users", id]) => get(parse_id(id)?),
        ("GET", ["user"]) => get(req.require_param("id")?),
        (_, ["users"] | ["users", _] | ["user"]) => Err(Error::method_not_allowed()),
        _ => Err(Error::not_found("no such resource")),
    }
}

fn create(req: &Request) -> Result {
    let new: NewUser = serde_json::from_slice(&req.body)
        .map_err(|e| Error::bad_request(format!("invalid user: {e}")))?;
    let name = new.name.trim();
    if name.is_empty() {
        return Err(Error::bad_request("invalid user: `name` must not be empty"));
    }
    let email = new.email.trim();
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(Error::bad_request(
            "invalid user: `email` must look like name@domain",
        ));
    }
    let bucket = kv::open("users")?;
    let id = bucket.increment("next-id", 1)?;
    let user = User {
        id,
        name: name.to_string(),
        email: email.to_string(),
    };
    bucket.set_json(&user_key(id), &user)?;
    Ok(Response::json(201, &present(&user)))
}

fn get(id: u64) -> Result {
    match kv::open("users")?.get_json::<User>(&user_key(id))? {
        Some(user) => Ok(Response::json(200, &present(&user))),
        None => Err(Error::not_found(format!("user {id} not found"))),
    }
}

fn list() -> Result {
    let bucket = kv::open("users")?;
    let mut users = Vec::new();
    for key in bucket.keys()?.iter().filter(|k| k.starts_with("user:")) {
        if let Some(user) = bucket.get_json::<User>(key)? {
            users.push(user);
        }
    }
    users.sort_by_key(|u| u.id);
    let users: Vec<Shown> = users.iter().map(present).collect();
    Ok(Response::json(200, &users))
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

fn user_key(id: u64) -> String {
    format!("user:{id}")
}

fn parse_id(raw: &str) -> Result<u64> {
    raw.parse()
        .map_err(|_| Error::bad_request(format!("invalid user id `{raw}`")))
}
