//! The `{{name}}` service.
//!
//! - `GET /{{name}}?name=ada` → `{"greeting": "hello, ada", "visits": 1}`
//!   (`visits` counts every greeting, in the service's key-value store)
//!
//! Build it with `wasmhost build` (or `cargo build --release --target
//! wasm32-wasip2`, or `cargo component build --release`); `wasmhost dev`
//! rebuilds it and swaps it in on every save. Test it with `cargo test`
//! (its logic) and `./test.sh` (against the running host).

use serde::Serialize;
use wasmhost_guest::prelude::*;

struct Service;

impl Handler for Service {
    fn handle(req: Request) -> Response {
        respond(route(&req))
    }
}

wasmhost_guest::export!(Service);

/// The answer to `GET /{{name}}`.
#[derive(Serialize)]
struct Greeting {
    greeting: String,
    visits: u64,
}

/// Dispatches on method and path; an `Err` becomes `{"error": ...}`.
fn route(req: &Request) -> Result {
    match (req.method.as_str(), req.segments().as_slice()) {
        ("GET", ["{{name}}"]) => {
            let name = req.query_param("name").unwrap_or_else(|| "world".into());
            let visits = kv::open("visits")?.increment("count", 1)?;
            let greeting = greeting(&name);
            Ok(Response::json(200, &Greeting { greeting, visits }))
        }
        (_, ["{{name}}"]) => Err(Error::method_not_allowed()),
        _ => Err(Error::not_found("no such resource")),
    }
}

fn greeting(name: &str) -> String {
    format!("hello, {name}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn greets_by_name() {
        assert_eq!(super::greeting("ada"), "hello, ada");
    }
}
