//! `wasmhost-guest`: write a wasmhost service in Rust.
//!
//! The contract's bindings (`wit/`, contract 0.2.0) are generated here once,
//! so a service holds only its handlers:
//!
//! ```ignore
//! use wasmhost_guest::prelude::*;
//!
//! struct Hello;
//!
//! impl Handler for Hello {
//!     fn handle(req: Request) -> Response {
//!         respond(route(&req))
//!     }
//! }
//!
//! fn route(req: &Request) -> Result<Response> {
//!     match (req.method.as_str(), req.segments().as_slice()) {
//!         ("GET", ["hello"]) => {
//!             let name = req.query_param("name").unwrap_or_else(|| "world".into());
//!             Ok(Response::json(200, &serde_json::json!({ "greeting": format!("hello, {name}") })))
//!         }
//!         _ => Err(Error::not_found("no such resource")),
//!     }
//! }
//!
//! wasmhost_guest::export!(Hello);
//! ```
//!
//! Invariants:
//! - every helper that can fail returns [`Error`], an HTTP status with a
//!   message, and [`respond`] turns it into the JSON error response the host's
//!   own errors use (`{"error": "..."}`), so `?` is all the error handling a
//!   handler needs;
//! - nothing here calls an import the service does not call itself: the
//!   linker drops every helper a service leaves unused, so the component
//!   imports only the interfaces its own code reaches.
//!
//! The raw bindings stay public ([`wasi`], [`wasmhost`], [`exports`]) for
//! anything the helpers do not cover. With the feature `subscriber` the
//! bindings target the `subscriber-service` world and a service also
//! implements [`Subscriber`].

#[cfg(not(feature = "subscriber"))]
wit_bindgen::generate!({
    path: "wit",
    world: "service",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "wasmhost_guest",
});

#[cfg(feature = "subscriber")]
wit_bindgen::generate!({
    path: "wit",
    world: "subscriber-service",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "wasmhost_guest",
});

mod error;
mod http;
pub mod kv;
pub mod log;
pub mod messages;
pub mod services;

pub use error::{respond, Error, Result};
pub use exports::wasmhost::plugin::handler::Guest as Handler;
#[cfg(feature = "subscriber")]
pub use exports::wasmhost::plugin::subscriber::{Failure, Guest as Subscriber};
pub use wasmhost::plugin::types::{Header, Request, Response};

/// Configuration values: the `[config]` table of the service's manifest.
pub mod config {
    use crate::{Error, Result};

    /// The value of `key`, `None` when the manifest does not set it.
    pub fn get(key: &str) -> Result<Option<String>> {
        crate::wasi::config::store::get(key)
            .map_err(|e| Error::internal(format!("config `{key}`: {e:?}")))
    }
}

/// What a handler needs, in one `use wasmhost_guest::prelude::*;`.
pub mod prelude {
    pub use crate::kv::{self, Bucket, BucketExt as _};
    pub use crate::{config, log, messages, services};
    pub use crate::{respond, Error, Handler, Request, Response, Result};
    #[cfg(feature = "subscriber")]
    pub use crate::{Failure, Subscriber};
}
