//! The service's key-value store (`wasi:keyvalue`), with errors that become
//! responses.
//!
//! Invariant: every bucket is the service's own (the host namespaces it), a
//! write is durable when its call returns, and any failure of the store is a
//! 500 naming the bucket or the key, never a panic.

use crate::wasi::keyvalue::{atomics, store};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One of the service's buckets (the raw binding, with the helpers below).
pub use store::Bucket;

/// Opens the bucket `name` (any name; buckets of different services never
/// overlap).
pub fn open(name: &str) -> Result<Bucket> {
    store::open(name).map_err(|e| failed(&format!("bucket `{name}`"), e))
}

/// The helpers on a [`Bucket`].
pub trait BucketExt {
    /// The value of `key` as JSON, `None` when absent; a stored value that is
    /// not the JSON expected is a 500.
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>>;
    /// Stores `value` under `key` as JSON.
    fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()>;
    /// The raw value of `key`.
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`.
    fn set_bytes(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Removes `key` (absent is fine).
    fn remove(&self, key: &str) -> Result<()>;
    /// Every key, all pages read, in the store's order.
    fn keys(&self) -> Result<Vec<String>>;
    /// Adds `delta` to the counter `key` (0 when absent) and returns the new
    /// value, atomically across concurrent requests: ids that never repeat.
    fn increment(&self, key: &str, delta: u64) -> Result<u64>;
}

impl BucketExt for Bucket {
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_bytes(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!(
                    "key-value store: `{key}` is not the JSON expected: {e}"
                ))
            }),
        }
    }

    fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("key-value store: `{key}`: {e}")))?;
        self.set_bytes(key, &bytes)
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.get(key)
            .map_err(|e| failed(&format!("key `{key}`"), e))
    }

    fn set_bytes(&self, key: &str, value: &[u8]) -> Result<()> {
        self.set(key, value)
            .map_err(|e| failed(&format!("key `{key}`"), e))
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.delete(key)
            .map_err(|e| failed(&format!("key `{key}`"), e))
    }

    fn keys(&self) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .list_keys(cursor)
                .map_err(|e| failed("listing keys", e))?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64> {
        atomics::increment(self, key, delta).map_err(|e| failed(&format!("key `{key}`"), e))
    }
}

/// The 500 of a failed store call on `what` (a bucket, a key).
fn failed(what: &str, e: store::Error) -> Error {
    let detail = match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(msg) => msg,
    };
    Error::internal(format!("key-value store ({what}): {detail}"))
}
