//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics` over the host's store
//! ([`crate::store::Store`]: embedded, or the cluster's Redis).
//!
//! `open(name)` hands out a bucket inside the calling service's own namespace
//! (see [`crate::kv::Namespace`]); the guest cannot name another's.
//!
//! Every write marks the attempt as touched before it starts (a write cut
//! off by a timeout may still commit). With `transactional-kv` sets and
//! deletes go to the request's write set instead (its reads see them), and
//! leave the attempt untouched; an increment still commits at once.

use super::HostState;
use crate::bindings::wasi::keyvalue::{atomics, store};
pub use crate::bindings::{Bucket, KvError};
use crate::kv::Namespace;
use wasmtime::component::Resource;

impl HostState {
    fn bucket_ns(&self, bucket: &Resource<Bucket>) -> Result<Namespace, KvError> {
        Ok(self.table.get(bucket)?.ns.clone())
    }
}

impl store::Host for HostState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let ns = Namespace::new(&self.id.service, &identifier)?;
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
        if let Some(held) = self.pending.as_ref().and_then(|p| p.lookup(&ns, &key)) {
            return Ok(held.map(<[u8]>::to_vec));
        }
        Ok(self.kv.get(&ns, &key).await?)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        let ns = self.bucket_ns(&bucket)?;
        if let Some(pending) = &mut self.pending {
            return Ok(pending.set(&ns, &key, value)?);
        }
        self.touched = true;
        Ok(self.kv.set(ns, key, value).await?)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        let ns = self.bucket_ns(&bucket)?;
        if let Some(pending) = &mut self.pending {
            return Ok(pending.delete(&ns, &key)?);
        }
        self.touched = true;
        Ok(self.kv.delete(ns, key).await?)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        let ns = self.bucket_ns(&bucket)?;
        if let Some(held) = self.pending.as_ref().and_then(|p| p.lookup(&ns, &key)) {
            return Ok(held.is_some());
        }
        Ok(self.kv.exists(&ns, &key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let ns = self.bucket_ns(&bucket)?;
        let (keys, cursor) = self
            .kv
            .list_keys(&ns, cursor, self.pending.as_ref())
            .await?;
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
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.lookup(&ns, &key).is_some())
        {
            return Err(KvError::Other(format!(
                "`{key}` has a write this request has not committed; an increment commits at once and cannot follow it"
            )));
        }
        self.touched = true;
        Ok(self.kv.increment(ns, key, delta).await?)
    }
}
