//! Rust bindings of the `wasmhost:plugin/service` world (`wit/`).
//!
//! Imports that touch the disk or other services are async so they never
//! block a runtime thread; every import is trappable so a host fault becomes a
//! trap of that one request, never a panic.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmhost:plugin/service",
    imports: {
        "wasmhost:plugin/services": async | trappable,
        "wasi:keyvalue": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::capabilities::keyvalue::Bucket,
    },
    trappable_error_type: {
        "wasi:keyvalue/store.error" => crate::capabilities::keyvalue::KvError,
    },
});

pub use self::wasmhost::plugin::types::{Request, Response};
