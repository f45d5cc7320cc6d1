//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics` over the embedded store.
//!
//! `open(name)` hands out a bucket inside the calling service's own namespace
//! (see [`crate::store::Namespace`]); the guest cannot name another's. Writes
//! run on the blocking pool, since each one waits for the disk.

use super::HostState;
use crate::bindings::wasi::keyvalue::{atomics, store};
use crate::store::Namespace;
use wasmtime::component::Resource;

/// The host side of an open bucket.
pub struct Bucket {
    ns: Namespace,
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

impl HostState {
    fn bucket_ns(&self, bucket: &Resource<Bucket>) -> Result<Namespace, KvError> {
        Ok(self.table.get(bucket)?.ns.clone())
    }

    /// Runs a blocking store operation off the async runtime. (The future
    /// must not borrow `self`, which is not `Sync`.)
    fn blocking<R: Send + 'static>(
        &self,
        op: impl FnOnce(&crate::store::KvStore) -> anyhow::Result<R> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, KvError>> + Send + 'static {
        let kv = self.dispatcher.kv().clone();
        async move {
            tokio::task::spawn_blocking(move || op(&kv))
                .await
                .map_err(|e| KvError::Other(format!("key-value task failed: {e}")))?
                .map_err(KvError::from)
        }
    }
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let ns = Namespace::new(&self.version.service, &identifier)?;
        Ok(self.table.push(Bucket { ns })?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::AccessDenied => store::Error::AccessDenied,
            KvError::Other(msg) => store::Error::Other(msg),
        })
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let ns = self.bucket_ns(&bucket)?;
        Ok(self.dispatcher.kv().get(&ns, &key)?)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        let ns = self.bucket_ns(&bucket)?;
        self.blocking(move |kv| kv.set(&ns, &key, &value)).await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        let ns = self.bucket_ns(&bucket)?;
        self.blocking(move |kv| kv.delete(&ns, &key)).await
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        let ns = self.bucket_ns(&bucket)?;
        Ok(self.dispatcher.kv().exists(&ns, &key)?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let ns = self.bucket_ns(&bucket)?;
        let (keys, cursor) = self.dispatcher.kv().list_keys(&ns, cursor)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, KvError> {
        let ns = self.bucket_ns(&bucket)?;
        self.blocking(move |kv| kv.increment(&ns, &key, delta))
            .await
    }
}
