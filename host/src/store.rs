//! Where the services' key-value data lives: the embedded redb file of one
//! host ([`KvStore`]), or the cluster's Redis shared by every replica
//! ([`RedisKv`], `--cluster redis://…`).
//!
//! Invariant: both give a service the same contract — its own namespace,
//! read-your-writes, exact increments, a held [`WriteSet`] written at once
//! or not at all — so a service cannot tell which one it runs on. Embedded
//! writes wait for the disk, so they run on the blocking pool; embedded
//! reads are served from redb's cache and run in place.

use crate::kv::{page_of, KvStore, Namespace, WriteSet};
use crate::redis_kv::RedisKv;
use anyhow::{Context, Result};

/// The services' key-value store; cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// The host's own redb file.
    Embedded(KvStore),
    /// The cluster's Redis.
    Redis(RedisKv),
}

/// Runs a blocking embedded operation off the async runtime.
async fn blocking<R: Send + 'static>(
    kv: &KvStore,
    op: impl FnOnce(&KvStore) -> Result<R> + Send + 'static,
) -> Result<R> {
    let kv = kv.clone();
    tokio::task::spawn_blocking(move || op(&kv))
        .await
        .context("the key-value task failed")?
}

impl Store {
    /// What it is, for logs: `embedded` or `redis HOST:PORT`.
    pub fn describe(&self) -> String {
        match self {
            Store::Embedded(_) => "embedded".to_string(),
            Store::Redis(r) => format!("redis {}", r.addr()),
        }
    }

    /// Whether the store failed its last operation and has not recovered.
    pub fn is_failing(&self) -> bool {
        match self {
            Store::Embedded(kv) => kv.is_failing(),
            Store::Redis(r) => r.is_failing(),
        }
    }

    /// The value of `key`, if any.
    pub async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Store::Embedded(kv) => kv.get(ns, key),
            Store::Redis(r) => r.get(ns, key).await,
        }
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, ns: &Namespace, key: &str) -> Result<bool> {
        match self {
            Store::Embedded(kv) => kv.exists(ns, key),
            Store::Redis(r) => r.exists(ns, key).await,
        }
    }

    /// Stores `value` under `key`.
    pub async fn set(&self, ns: Namespace, key: String, value: Vec<u8>) -> Result<()> {
        match self {
            Store::Embedded(kv) => blocking(kv, move |kv| kv.set(&ns, &key, &value)).await,
            Store::Redis(r) => r.set(&ns, &key, &value).await,
        }
    }

    /// Removes `key`.
    pub async fn delete(&self, ns: Namespace, key: String) -> Result<()> {
        match self {
            Store::Embedded(kv) => blocking(kv, move |kv| kv.delete(&ns, &key)).await,
            Store::Redis(r) => r.delete(&ns, &key).await,
        }
    }

    /// Adds `delta` to the number under `key` and returns the new value.
    pub async fn increment(&self, ns: Namespace, key: String, delta: u64) -> Result<u64> {
        match self {
            Store::Embedded(kv) => blocking(kv, move |kv| kv.increment(&ns, &key, delta)).await,
            Store::Redis(r) => r.increment(&ns, &key, delta).await,
        }
    }

    /// One page of the keys of `ns` from `cursor`, as `pending` (the
    /// request's held writes, for a `transactional-kv` service) would leave
    /// them.
    ///
    /// On Redis a transactional service's cursor is an offset into the
    /// merged list, whether or not its writes touch the bucket, so that a
    /// cursor means the same thing on every page of one walk.
    pub async fn list_keys(
        &self,
        ns: &Namespace,
        cursor: Option<u64>,
        pending: Option<&WriteSet>,
    ) -> Result<(Vec<String>, Option<u64>)> {
        match (self, pending) {
            (Store::Embedded(kv), None) => kv.list_keys(ns, cursor),
            (Store::Embedded(kv), Some(pending)) => kv.list_keys_with(ns, cursor, pending),
            (Store::Redis(r), None) => r.list_keys(ns, cursor).await,
            (Store::Redis(r), Some(pending)) => {
                Ok(page_of(pending.merged(ns, r.all_keys(ns).await?), cursor))
            }
        }
    }

    /// Writes `set` at once or not at all.
    pub async fn commit(&self, set: WriteSet) -> Result<()> {
        match self {
            Store::Embedded(kv) => blocking(kv, move |kv| kv.commit(&set)).await,
            Store::Redis(r) => r.commit(&set).await,
        }
    }
}
