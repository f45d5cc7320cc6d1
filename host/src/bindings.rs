//! Rust bindings of the `wasmhost:plugin/service` world (`wit/`).
//!
//! Imports that reach the key-value store or other services are async so
//! they never block a runtime thread; every import is trappable so a host fault becomes a
//! trap of that one request, never a panic. The key-value resource and
//! error types the bindings map to live here too, beside the generated code,
//! so the bindings depend on no capability.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmhost:plugin/service",
    imports: {
        "wasmhost:plugin/services": async | trappable,
        // Opening a bucket touches no store. Reads are async too: on
        // Redis (`--cluster`) they go over the network.
        "wasi:keyvalue/store.open": trappable,
        "wasi:keyvalue": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": Bucket,
    },
    trappable_error_type: {
        "wasi:keyvalue/store.error" => KvError,
    },
});

pub use self::wasmhost::plugin::types::{Request, Response};

/// The host side of an open bucket.
pub struct Bucket {
    pub(crate) ns: crate::kv::Namespace,
}

/// A key-value failure, turned into the interface's `error` for the guest.
#[derive(Debug)]
pub enum KvError {
    /// The request is invalid (e.g. a key too long) or access is refused.
    AccessDenied,
    /// Anything else, with a message for the guest.
    Other(String),
}

impl From<anyhow::Error> for KvError {
    fn from(e: anyhow::Error) -> Self {
        KvError::Other(format!("{e:#}"))
    }
}

impl From<wasmtime::component::ResourceTableError> for KvError {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        KvError::Other(e.to_string())
    }
}

/// Bindings of `wasmhost:plugin@0.2.0` (`wit/v0.2/`): 0.1.0 plus
/// `messaging` (an import) and `subscriber` (an export of the
/// `subscriber-service` world). The records and the WASI interfaces are
/// 0.1.0's own Rust types, so both versions share every host
/// implementation but `messaging` and `services`.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "wasmhost:plugin/subscriber-service",
        imports: {
            "wasmhost:plugin/services": async | trappable,
            "wasmhost:plugin/messaging": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "wasmhost:plugin/types": super::wasmhost::plugin::types,
            "wasi:keyvalue": super::wasi::keyvalue,
            "wasi:config": super::wasi::config,
            "wasi:logging": super::wasi::logging,
        },
    });
}

/// Bindings of the standard `wasi:messaging@0.2.0-draft` (`wit/deps/messaging/`),
/// world `messaging-core`: `producer` imported, `incoming-handler` exported.
/// Its `client` and `message` resources are the host types below.
pub mod wasi_messaging {
    wasmtime::component::bindgen!({
        path: "../wit/deps/messaging",
        world: "wasi:messaging/messaging-core",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:messaging/types.client": Client,
            "wasi:messaging/types.message": Message,
        },
    });

    /// A connection to the host's broker (there is one: `default`).
    pub struct Client;

    /// A message as a standard component builds or receives it.
    #[derive(Debug, Clone, Default)]
    pub struct Message {
        /// Its payload.
        pub data: Vec<u8>,
        /// Its `content-type`, if set.
        pub content_type: Option<String>,
        /// Its metadata (headers).
        pub metadata: Vec<(String, String)>,
        /// The topic it came on (received messages only).
        pub topic: Option<String>,
    }
}
