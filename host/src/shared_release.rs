//! A cluster's one release document, on its Redis: the release state
//! (weights, stickiness, stable versions, canaries, history) every replica
//! serves, so a user hashed to a version on one replica gets the same
//! version on every other.
//!
//! Invariant: the document (`wh:{release}`) and its epoch
//! (`wh:{release}:epoch`) change together and only through one
//! compare-and-set on the epoch (a Lua script, atomic in Redis): a write
//! based on epoch N succeeds only while the epoch is still N, and makes it
//! N + 1. Each change is announced on [`CHANNEL`] with its new epoch; a
//! replica that misses a notice (it was reconnecting) sees the epoch on its
//! next poll, every [`POLL`].

use crate::redis_kv::RedisKv;
use crate::release_state::ReleaseState;
use anyhow::{Context, Result};
use futures::StreamExt;
use std::time::Duration;

/// Where each change is announced (the payload: its epoch).
pub const CHANNEL: &str = "wh:release-changed";
/// How often a replica checks the epoch, in case it missed a notice.
pub const POLL: Duration = Duration::from_secs(2);
const DOC: &str = "wh:{release}";
const EPOCH: &str = "wh:{release}:epoch";

/// Sets the document if the epoch is still the one the writer read.
/// KEYS: document, epoch. ARGV: expected epoch, new epoch, document, channel.
/// Returns {1, new} when stored, {0, current} when stale.
const CAS: &str = r"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return {1, tonumber(ARGV[2])}
";

/// What a compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Stored as this epoch.
    Stored(u64),
    /// Refused: another write came first; this is the epoch now.
    Stale(u64),
}

/// The release document of the cluster whose Redis `redis` is.
#[derive(Clone)]
pub struct SharedRelease {
    redis: RedisKv,
    cas: redis::Script,
}

impl SharedRelease {
    /// The document on `redis`'s server (sharing its connection).
    pub fn new(redis: RedisKv) -> Self {
        Self {
            redis,
            cas: redis::Script::new(CAS),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        self.redis.addr()
    }

    /// Whether the server could not be reached last time.
    pub fn unreachable(&self) -> bool {
        self.redis.is_failing()
    }

    /// The document, if one was ever written.
    pub async fn load(&self) -> Result<Option<ReleaseState>> {
        let mut conn = self.redis.connection();
        let doc: Option<Vec<u8>> = self
            .redis
            .checked(redis::cmd("GET").arg(DOC).query_async(&mut conn).await)?;
        doc.map(|bytes| {
            ReleaseState::parse(
                &bytes,
                &format!("the release document at {DOC} on {}", self.addr()),
            )
        })
        .transpose()
    }

    /// The epoch now (0 before the first write).
    pub async fn epoch(&self) -> Result<u64> {
        let mut conn = self.redis.connection();
        let epoch: Option<u64> = self
            .redis
            .checked(redis::cmd("GET").arg(EPOCH).query_async(&mut conn).await)?;
        Ok(epoch.unwrap_or(0))
    }

    /// Stores `state` as epoch `expected + 1` if the epoch is still
    /// `expected`.
    pub async fn save(&self, state: &ReleaseState, expected: u64) -> Result<Saved> {
        let next = expected + 1;
        let mut doc = state.clone();
        doc.epoch = next;
        let bytes = serde_json::to_vec(&doc).context("failed to encode the release state")?;
        let mut conn = self.redis.connection();
        let mut invocation = self.cas.prepare_invoke();
        invocation
            .key(DOC)
            .key(EPOCH)
            .arg(expected)
            .arg(next)
            .arg(bytes)
            .arg(CHANNEL);
        let (stored, epoch): (u8, u64) = self
            .redis
            .checked(invocation.invoke_async(&mut conn).await)?;
        Ok(if stored == 1 {
            Saved::Stored(epoch)
        } else {
            Saved::Stale(epoch)
        })
    }

    /// The epochs announced from now on, until the subscription breaks
    /// (then the stream ends; subscribe again).
    pub async fn notices(&self) -> Result<impl futures::Stream<Item = u64> + Send + 'static> {
        let mut pubsub = self
            .redis
            .client()
            .get_async_pubsub()
            .await
            .with_context(|| format!("cannot subscribe to {CHANNEL} on {}", self.addr()))?;
        pubsub
            .subscribe(CHANNEL)
            .await
            .with_context(|| format!("cannot subscribe to {CHANNEL} on {}", self.addr()))?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move { msg.get_payload::<u64>().ok() }))
    }
}
