//! Where published messages wait for their groups: the embedded log in the
//! host's own redb, or NATS JetStream shared by a cluster's replicas
//! (`--messaging nats://…`).
//!
//! Invariant: the delivery loop, the request path and the admin API reach
//! the message log only through [`Bus`], so both logs keep one contract:
//! a message is stored only after the request's key-value writes are (one
//! transaction, embedded), a claimed delivery is leased until its outcome
//! is recorded or its lease runs out, and an outcome is an ack, a retry at
//! a time, or a dead letter.

use crate::kv::{KvStore, WriteSet};
use crate::messages::{DeadLetter, Delivery, GroupStats, Outgoing, Settle};
use crate::nats_log::NatsLog;
use anyhow::Result;
use std::time::Duration;

/// The message log.
#[derive(Clone)]
pub enum Bus {
    /// In the host's redb (one process).
    Embedded(KvStore),
    /// On NATS JetStream (every replica of a cluster).
    Nats(NatsLog),
}

async fn blocking<T: Send + 'static>(op: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| anyhow::anyhow!("the message log task failed: {e}"))?
}

impl Bus {
    /// Reaches the broker now (NATS); embedded, nothing to reach.
    pub async fn check(&self) -> Result<()> {
        match self {
            Bus::Embedded(_) => Ok(()),
            Bus::Nats(nats) => nats.check().await,
        }
    }

    /// Where messages live, for logs: `embedded` or the broker's URL.
    pub fn describe(&self) -> String {
        match self {
            Bus::Embedded(_) => "embedded".into(),
            Bus::Nats(nats) => nats.redacted(),
        }
    }

    /// Stores a request's key-value writes (held in the host's own store,
    /// `kv`) and its messages: embedded in one transaction; on NATS the
    /// writes first, then the messages, so a message never tells of a
    /// write that did not happen.
    pub async fn commit(
        &self,
        kv: &KvStore,
        writes: Option<WriteSet>,
        messages: Vec<Outgoing>,
    ) -> Result<()> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                blocking(move || log.commit_request(writes.as_ref(), &messages)).await
            }
            Bus::Nats(nats) => {
                if let Some(writes) = writes {
                    let kv = kv.clone();
                    blocking(move || kv.commit(&writes)).await?;
                }
                if messages.is_empty() {
                    return Ok(());
                }
                nats.publish(&messages).await
            }
        }
    }

    /// Leases up to `max` of `group`'s ready deliveries for `lease`;
    /// `one_at_a_time` for a subscription ordered by key (embedded, the
    /// log holds back only later messages of the same key).
    pub async fn claim(
        &self,
        group: &str,
        max: usize,
        lease: Duration,
        one_at_a_time: bool,
    ) -> Result<Vec<Delivery>> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                let group = group.to_string();
                let lease_ms = lease.as_millis() as u64;
                blocking(move || log.claim(&group, crate::messages::now_ms(), max, lease_ms)).await
            }
            Bus::Nats(nats) => nats.claim(group, max, lease, one_at_a_time).await,
        }
    }

    /// Records deliveries' outcomes (embedded: in one transaction).
    pub async fn settle(&self, outcomes: Vec<(String, u64, Settle)>) -> Result<()> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                blocking(move || log.settle(&outcomes)).await
            }
            Bus::Nats(nats) => nats.settle(&outcomes).await,
        }
    }

    /// Keeps a running handler's lease until `until` (ms since the epoch;
    /// on NATS, another ack-wait from now).
    pub async fn extend_lease(&self, group: &str, seq: u64, until: u64) -> Result<()> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                let group = group.to_string();
                blocking(move || log.extend_lease(&group, seq, until)).await
            }
            Bus::Nats(nats) => nats.extend_lease(group, seq).await,
        }
    }

    /// Up to `limit` of `group`'s dead letters, oldest first.
    pub async fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                let group = group.to_string();
                blocking(move || log.dead_letters(&group, limit)).await
            }
            Bus::Nats(nats) => nats.dead_letters(group, limit).await,
        }
    }

    /// Delivers `group`'s dead letters (those named, or all) again.
    pub async fn replay(&self, group: &str, seqs: Option<Vec<u64>>, now: u64) -> Result<u64> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                let group = group.to_string();
                blocking(move || log.replay(&group, seqs.as_deref(), now)).await
            }
            Bus::Nats(nats) => nats.replay(group, seqs.as_deref()).await,
        }
    }

    /// Drops `group`'s dead letters; returns how many.
    pub async fn purge(&self, group: &str) -> Result<u64> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                let group = group.to_string();
                blocking(move || log.purge(&group)).await
            }
            Bus::Nats(nats) => nats.purge(group).await,
        }
    }

    /// `group`'s counts at `now`.
    pub async fn group_stats(&self, group: &str, now: u64) -> Result<GroupStats> {
        match self {
            Bus::Embedded(log) => {
                let log = log.clone();
                let group = group.to_string();
                blocking(move || log.group_stats(&group, now)).await
            }
            Bus::Nats(nats) => nats.group_stats(group, now).await,
        }
    }
}
