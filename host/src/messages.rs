//! The embedded durable message log, in the same redb file as the
//! key-value store: the messages, each subscribing group's pending
//! deliveries with their leases, and the dead letters.
//!
//! - A message is stored once (`log`, by a global sequence number) with a
//!   reference count; each group whose subscription matched its topic when
//!   it was committed gets a `pending` row (attempt, not-before, lease).
//! - [`KvStore::commit_request`] writes a request's key-value writes and its
//!   messages in one transaction: a request's messages exist only if it
//!   answered (the outbox needs no table in the guest).
//! - A row may carry an ordering key (the subscription's `ordered-by`):
//!   a claim skips a row while an earlier row of its group has the same
//!   key, whatever that row's state (waiting, leased, retrying), so a key's
//!   messages are handled one at a time in publish order. A dead letter
//!   leaves the queue, and with it the key.
//! - A claim leases up to N ready rows; an ack deletes the row; a retry
//!   clears the lease and sets the next attempt's time; a dead letter is
//!   written and the row deleted in one transaction, so a message is never
//!   lost between the two (dapr#8284). A lease that expires (the host
//!   crashed, the handler hung) makes the row ready again: at least once.
//!
//! Invariant: every state change of a delivery is one redb transaction,
//! committed with immediate durability; times are milliseconds since the
//! Unix epoch, passed in, so the rules are testable without a clock.

use crate::kv::{KvStore, WriteSet};
use anyhow::{bail, Context, Result};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// One stored message: (id, topic, headers as JSON, body, published-at ms,
/// publish key).
type Stored<'a> = (&'a str, &'a str, &'a [u8], &'a [u8], u64, Option<&'a str>);
/// Messages: seq → the message.
const LOG: TableDefinition<u64, Stored> = TableDefinition::new("msg_log");
/// How many groups still hold each message: seq → count.
const REFS: TableDefinition<u64, u32> = TableDefinition::new("msg_refs");
/// The next sequence number: "seq" → u64.
const META: TableDefinition<&str, u64> = TableDefinition::new("msg_meta");
/// A pending delivery: (attempt so far, not before, lease until, ordering key).
type Row<'a> = (u32, u64, u64, Option<&'a str>);
/// Pending deliveries: (group, seq) → the row.
const PENDING: TableDefinition<(&str, u64), Row> = TableDefinition::new("msg_pending");
/// Dead letters: (group, seq) → (attempts, reason, version, at).
const DEAD: TableDefinition<(&str, u64), (u32, &str, &str, u64)> = TableDefinition::new("msg_dead");

/// Largest message body accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Deliveries one version handled, by outcome (for Prometheus); kept
/// across reloads of the version.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    /// Acknowledged.
    pub ack: std::sync::atomic::AtomicU64,
    /// The handler asked for a retry.
    pub retry: std::sync::atomic::AtomicU64,
    /// The handler rejected the message.
    pub reject: std::sync::atomic::AtomicU64,
    /// The handler trapped, hit a limit or timed out.
    pub trap: std::sync::atomic::AtomicU64,
    /// Deliveries after the first of a message.
    pub redeliveries: std::sync::atomic::AtomicU64,
    /// Time from publish to acknowledgement of the messages it handled.
    pub latency: crate::metrics::VersionMetrics,
}

/// What becomes of one delivery (see [`KvStore::settle`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Done: the group is through with the message.
    Ack,
    /// Deliver again at this time (ms since the epoch).
    RetryAt(u64),
    /// Into the dead letters.
    Dead {
        /// Deliveries it had.
        attempts: u32,
        /// Why.
        reason: String,
        /// The version that failed it last.
        version: String,
        /// When (ms since the epoch).
        at: u64,
    },
}

/// A message to store with its request's outcome.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its id (returned to the publisher at once).
    pub id: String,
    /// The topic.
    pub topic: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// When it was published, ms since the epoch.
    pub published_at_ms: u64,
    /// Not delivered before this, ms since the epoch.
    pub not_before_ms: u64,
    /// The key it was published with.
    pub key: Option<String>,
    /// The groups that receive it, each with the message's ordering key
    /// for that group's subscription (resolved from the subscriptions when
    /// the request commits).
    pub groups: Vec<(String, Option<String>)>,
}

/// One message handed to a group's handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The group it is for.
    pub group: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its id.
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// When it was published.
    pub published_at_ms: u64,
    /// The key it was published with.
    pub key: Option<String>,
    /// This delivery's attempt, 1-based.
    pub attempt: u32,
}

/// A dead letter, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message's sequence number (what replay names).
    pub seq: u64,
    /// Its id.
    pub id: String,
    /// Its topic.
    pub topic: String,
    /// Deliveries it had.
    pub attempts: u32,
    /// Why it is here.
    pub reason: String,
    /// The version that failed it last.
    pub version: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// Counts of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Messages waiting for a first or later delivery.
    pub backlog: u64,
    /// Messages leased to a handler now.
    pub in_flight: u64,
    /// Messages delivered more than once so far.
    pub redelivering: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Age of the oldest message not yet acknowledged, in milliseconds (0
    /// when there is none).
    #[serde(default)]
    pub lag_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode_headers(headers: &[(String, String)]) -> Vec<u8> {
    serde_json::to_vec(headers).unwrap_or_default()
}

fn decode_headers(bytes: &[u8]) -> Vec<(String, String)> {
    serde_json::from_slice(bytes).unwrap_or_default()
}

impl KvStore {
    /// Writes a request's key-value writes and messages in one transaction.
    pub fn commit_request(&self, writes: Option<&WriteSet>, messages: &[Outgoing]) -> Result<()> {
        if messages.is_empty() {
            return writes.map_or(Ok(()), |w| self.commit(w));
        }
        for m in messages {
            if m.body.len() > MAX_MESSAGE_BYTES {
                bail!("message larger than {MAX_MESSAGE_BYTES} bytes");
            }
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            if let Some(writes) = writes {
                crate::kv::apply_writes(&txn, writes)?;
            }
            {
                let mut meta = txn.open_table(META)?;
                let mut log = txn.open_table(LOG)?;
                let mut refs = txn.open_table(REFS)?;
                let mut pending = txn.open_table(PENDING)?;
                let mut seq = meta.get("seq")?.map_or(1, |v| v.value());
                for m in messages.iter().filter(|m| !m.groups.is_empty()) {
                    let headers = encode_headers(&m.headers);
                    log.insert(
                        seq,
                        (
                            m.id.as_str(),
                            m.topic.as_str(),
                            headers.as_slice(),
                            m.body.as_slice(),
                            m.published_at_ms,
                            m.key.as_deref(),
                        ),
                    )?;
                    refs.insert(seq, m.groups.len() as u32)?;
                    for (group, order) in &m.groups {
                        let row = (0, m.not_before_ms, 0, order.as_deref());
                        pending.insert((group.as_str(), seq), row)?;
                    }
                    seq += 1;
                }
                meta.insert("seq", seq)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Leases up to `max` of `group`'s ready deliveries (not before and
    /// lease both past at `now`, and no earlier row with the same ordering
    /// key) until `now + lease_ms`, oldest first.
    pub fn claim(&self, group: &str, now: u64, max: usize, lease_ms: u64) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let mut out = Vec::new();
            {
                let mut pending = txn.open_table(PENDING)?;
                let log = txn.open_table(LOG)?;
                let mut ready = Vec::new();
                // Ordering keys of the rows seen so far: a later row of one waits.
                let mut held = std::collections::HashSet::new();
                for row in pending.range((group, 0)..=(group, u64::MAX))? {
                    let (key, value) = row?;
                    let (attempt, not_before, lease, order) = value.value();
                    let first_of_key = order.is_none_or(|k| held.insert(k.to_string()));
                    if first_of_key && not_before <= now && lease <= now {
                        ready.push((key.value().1, attempt, order.map(str::to_string)));
                        if ready.len() == max {
                            break;
                        }
                    }
                }
                for (seq, attempt, order) in ready {
                    let Some(entry) = log.get(seq)? else {
                        pending.remove((group, seq))?;
                        continue;
                    };
                    let (id, topic, headers, body, published, key) = entry.value();
                    out.push(Delivery {
                        group: group.to_string(),
                        seq,
                        id: id.to_string(),
                        topic: topic.to_string(),
                        headers: decode_headers(headers),
                        body: body.to_vec(),
                        published_at_ms: published,
                        key: key.map(str::to_string),
                        attempt: attempt + 1,
                    });
                    let row = (
                        attempt + 1,
                        0,
                        now.saturating_add(lease_ms),
                        order.as_deref(),
                    );
                    pending.insert((group, seq), row)?;
                }
            }
            txn.commit()?;
            Ok(out)
        })
    }

    /// Records many deliveries' outcomes in one transaction (group commit:
    /// one disk flush for all of them).
    pub fn settle(&self, outcomes: &[(String, u64, Settle)]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write()?;
            for (group, seq, outcome) in outcomes {
                let (group, seq) = (group.as_str(), *seq);
                match outcome {
                    Settle::Ack => release(&txn, group, seq)?,
                    Settle::RetryAt(at) => {
                        let mut pending = txn.open_table(PENDING)?;
                        let current = pending
                            .get((group, seq))?
                            .map(|v| (v.value().0, v.value().3.map(str::to_string)));
                        if let Some((attempt, order)) = current {
                            pending.insert((group, seq), (attempt, *at, 0, order.as_deref()))?;
                        }
                    }
                    Settle::Dead {
                        attempts,
                        reason,
                        version,
                        at,
                    } => {
                        txn.open_table(PENDING)?.remove((group, seq))?;
                        let reason = crate::files::clip(reason, 600);
                        txn.open_table(DEAD)?.insert(
                            (group, seq),
                            (*attempts, reason.as_str(), version.as_str(), *at),
                        )?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Extends the lease of a delivery still being handled.
    pub fn extend_lease(&self, group: &str, seq: u64, until: u64) -> Result<()> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut pending = txn.open_table(PENDING)?;
                let current = pending.get((group, seq))?.map(|v| {
                    let (attempt, not_before, _, order) = v.value();
                    (attempt, not_before, order.map(str::to_string))
                });
                if let Some((attempt, not_before, order)) = current {
                    pending.insert((group, seq), (attempt, not_before, until, order.as_deref()))?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The dead letters of `group`, oldest first, at most `limit`.
    pub fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            // No table yet: no dead letter was ever written.
            let (Ok(dead), Ok(log)) = (txn.open_table(DEAD), txn.open_table(LOG)) else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in dead.range((group, 0)..=(group, u64::MAX))?.take(limit) {
                let (key, value) = row?;
                let seq = key.value().1;
                let (attempts, reason, version, at_ms) = value.value();
                let (id, topic) = log.get(seq)?.map_or((String::new(), String::new()), |e| {
                    let v = e.value();
                    (v.0.to_string(), v.1.to_string())
                });
                out.push(DeadLetter {
                    seq,
                    id,
                    topic,
                    attempts,
                    reason: reason.to_string(),
                    version: version.to_string(),
                    at_ms,
                });
            }
            Ok(out)
        })
    }

    /// Puts dead letters of `group` back for delivery, with attempt 1
    /// again: the ones named by `seqs`, or all. Returns how many. A
    /// replayed message holds no ordering key: its key's later messages
    /// were handled already, and it must not hold back newer ones.
    pub fn replay(&self, group: &str, seqs: Option<&[u64]>, now: u64) -> Result<u64> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let mut n = 0;
            {
                let mut dead = txn.open_table(DEAD)?;
                let mut pending = txn.open_table(PENDING)?;
                let chosen: Vec<u64> = match seqs {
                    Some(seqs) => seqs.to_vec(),
                    None => dead
                        .range((group, 0)..=(group, u64::MAX))?
                        .map(|r| r.map(|(k, _)| k.value().1))
                        .collect::<Result<_, _>>()?,
                };
                for seq in chosen {
                    if dead.remove((group, seq))?.is_some() {
                        pending.insert((group, seq), (0, now, 0, None))?;
                        n += 1;
                    }
                }
            }
            txn.commit()?;
            Ok(n)
        })
    }

    /// Deletes the dead letters of `group`. Returns how many.
    pub fn purge(&self, group: &str) -> Result<u64> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let seqs: Vec<u64> = {
                let dead = txn.open_table(DEAD)?;
                dead.range((group, 0)..=(group, u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?
            };
            {
                let mut dead = txn.open_table(DEAD)?;
                for seq in &seqs {
                    dead.remove((group, *seq))?;
                }
            }
            for seq in &seqs {
                unref(&txn, *seq)?;
            }
            txn.commit()?;
            Ok(seqs.len() as u64)
        })
    }

    /// The counts of `group` at `now`.
    pub fn group_stats(&self, group: &str, now: u64) -> Result<GroupStats> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let mut stats = GroupStats::default();
            if let Ok(pending) = txn.open_table(PENDING) {
                let oldest = pending.range((group, 0)..=(group, u64::MAX))?.next();
                if let (Some(row), Ok(log)) = (oldest, txn.open_table(LOG)) {
                    let seq = row?.0.value().1;
                    if let Some(entry) = log.get(seq)? {
                        stats.lag_ms = now.saturating_sub(entry.value().4);
                    }
                }
                for row in pending.range((group, 0)..=(group, u64::MAX))? {
                    let (_, value) = row?;
                    let (attempt, _, lease, _) = value.value();
                    if lease > now {
                        stats.in_flight += 1;
                    } else {
                        stats.backlog += 1;
                    }
                    if attempt > 1 || (attempt == 1 && lease <= now) {
                        stats.redelivering += 1;
                    }
                }
            }
            if let Ok(dead) = txn.open_table(DEAD) {
                stats.dead_letters = dead.range((group, 0)..=(group, u64::MAX))?.count() as u64;
            }
            Ok(stats)
        })
    }
}

/// Removes `group`'s pending row of `seq` and drops its reference.
fn release(txn: &redb::WriteTransaction, group: &str, seq: u64) -> Result<()> {
    let removed = txn.open_table(PENDING)?.remove((group, seq))?.is_some();
    if removed {
        unref(txn, seq)?;
    }
    Ok(())
}

/// Drops one reference to message `seq`, deleting it after the last.
fn unref(txn: &redb::WriteTransaction, seq: u64) -> Result<()> {
    let mut refs = txn.open_table(REFS)?;
    let left = refs
        .get(seq)?
        .map(|v| v.value())
        .context("message without a reference count")?
        .saturating_sub(1);
    if left == 0 {
        refs.remove(seq)?;
        txn.open_table(LOG)?.remove(seq)?;
    } else {
        refs.insert(seq, left)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(kv: &KvStore, group: &str, seq: u64, outcome: Settle) {
        kv.settle(&[(group.to_string(), seq, outcome)]).unwrap();
    }

    fn ack(kv: &KvStore, group: &str, seq: u64) {
        settle(kv, group, seq, Settle::Ack);
    }

    fn bury(kv: &KvStore, seq: u64, attempts: u32, reason: &str, at: u64) {
        let version = "1.0.0".to_string();
        let reason = reason.to_string();
        settle(
            kv,
            "g",
            seq,
            Settle::Dead {
                attempts,
                reason,
                version,
                at,
            },
        );
    }

    fn store() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        (dir, kv)
    }

    fn message(id: &str, groups: &[&str], not_before: u64) -> Outgoing {
        Outgoing {
            id: id.into(),
            topic: "orders.created".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: id.as_bytes().to_vec(),
            published_at_ms: 1,
            not_before_ms: not_before,
            key: None,
            groups: groups.iter().map(|g| (g.to_string(), None)).collect(),
        }
    }

    #[test]
    fn each_group_gets_each_message_and_an_ack_is_final() {
        let (_d, kv) = store();
        kv.commit_request(
            None,
            &[message("a", &["g1", "g2"], 0), message("b", &["g1"], 0)],
        )
        .unwrap();
        let first = kv.claim("g1", 10, 16, 1000).unwrap();
        assert_eq!(
            first.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(first[0].attempt, 1);
        assert_eq!(first[0].headers[0].0, "content-type");
        // Leased: not handed out again until the lease ends.
        assert!(kv.claim("g1", 500, 16, 1000).unwrap().is_empty());
        ack(&kv, "g1", first[0].seq);
        // The lease of "b" expires (a crash): it comes back as attempt 2.
        assert_eq!(
            kv.group_stats("g1", 1011).unwrap().lag_ms,
            1010,
            "published at 1"
        );
        let again = kv.claim("g1", 1011, 16, 1000).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id.as_str(), again[0].attempt), ("b", 2));
        // g2 still has "a" although g1 acknowledged it.
        let g2 = kv.claim("g2", 10, 16, 1000).unwrap();
        assert_eq!(g2.len(), 1);
        ack(&kv, "g2", g2[0].seq);
        ack(&kv, "g1", again[0].seq);
        assert_eq!(kv.group_stats("g1", 2000).unwrap(), GroupStats::default());
    }

    #[test]
    fn retries_wait_and_dead_letters_can_be_replayed_or_purged() {
        let (_d, kv) = store();
        assert!(kv.dead_letters("g", 10).unwrap().is_empty());
        kv.commit_request(None, &[message("a", &["g"], 0)]).unwrap();
        let d = kv.claim("g", 0, 1, 100).unwrap().remove(0);
        settle(&kv, "g", d.seq, Settle::RetryAt(5_000));
        assert!(kv.claim("g", 4_999, 1, 100).unwrap().is_empty());
        let d = kv.claim("g", 5_000, 1, 100).unwrap().remove(0);
        assert_eq!(d.attempt, 2);
        bury(&kv, d.seq, 2, "rejected: bad order", 6_000);
        assert!(kv.claim("g", 99_999, 1, 100).unwrap().is_empty());
        let dead = kv.dead_letters("g", 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].attempts, dead[0].id.as_str()), (2, "a"));
        assert_eq!(kv.group_stats("g", 7_000).unwrap().dead_letters, 1);
        assert_eq!(kv.replay("g", None, 7_000).unwrap(), 1);
        let d = kv.claim("g", 7_000, 1, 100).unwrap().remove(0);
        assert_eq!(d.attempt, 1, "a replay starts again at attempt 1");
        bury(&kv, d.seq, 1, "again", 8_000);
        assert_eq!(kv.purge("g").unwrap(), 1);
        assert!(kv.dead_letters("g", 10).unwrap().is_empty());
    }

    #[test]
    fn many_outcomes_settle_in_one_transaction() {
        let (_d, kv) = store();
        let msgs: Vec<Outgoing> = (0..3)
            .map(|i| message(&format!("m{i}"), &["g"], 0))
            .collect();
        kv.commit_request(None, &msgs).unwrap();
        let d = kv.claim("g", 0, 3, 100).unwrap();
        kv.settle(&[
            ("g".into(), d[0].seq, Settle::Ack),
            ("g".into(), d[1].seq, Settle::RetryAt(50)),
            (
                "g".into(),
                d[2].seq,
                Settle::Dead {
                    attempts: 1,
                    reason: "no".into(),
                    version: "1.0.0".into(),
                    at: 1,
                },
            ),
        ])
        .unwrap();
        let stats = kv.group_stats("g", 60).unwrap();
        assert_eq!(
            (stats.backlog, stats.in_flight, stats.dead_letters),
            (1, 0, 1)
        );
        assert_eq!(kv.claim("g", 60, 3, 100).unwrap()[0].id, "m1");
    }

    #[test]
    fn a_key_is_handled_one_message_at_a_time_in_order() {
        let (_d, kv) = store();
        let keyed = |id: &str, key: Option<&str>| Outgoing {
            groups: vec![("g".into(), key.map(str::to_string))],
            ..message(id, &[], 0)
        };
        let msgs = [
            keyed("a1", Some("a")),
            keyed("b1", Some("b")),
            keyed("a2", Some("a")),
            keyed("free", None),
            keyed("a3", Some("a")),
        ];
        kv.commit_request(None, &msgs).unwrap();
        let ids = |d: &[Delivery]| d.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        // One per key, and the message without a key is not held back.
        let first = kv.claim("g", 10, 16, 100_000).unwrap();
        assert_eq!(ids(&first), ["a1", "b1", "free"]);
        // In flight or waiting for a retry, a1 still holds a2 back.
        assert!(kv.claim("g", 20, 16, 100).unwrap().is_empty());
        settle(&kv, "g", first[0].seq, Settle::RetryAt(500));
        assert!(kv.claim("g", 200, 16, 100).unwrap().is_empty());
        let again = kv.claim("g", 500, 16, 100).unwrap();
        assert_eq!(ids(&again), ["a1"]);
        assert_eq!(again[0].attempt, 2);
        ack(&kv, "g", again[0].seq);
        assert_eq!(ids(&kv.claim("g", 501, 16, 100).unwrap()), ["a2"]);
        // A lease that runs out makes the same message ready, not the next.
        assert_eq!(ids(&kv.claim("g", 700, 16, 100).unwrap()), ["a2"]);
        // A dead letter leaves the queue, and the key moves on.
        let a2 = kv.claim("g", 900, 16, 100).unwrap();
        bury(&kv, a2[0].seq, a2[0].attempt, "no", 900);
        assert_eq!(ids(&kv.claim("g", 901, 16, 100).unwrap()), ["a3"]);
    }

    #[test]
    fn a_delayed_message_waits_and_a_request_commits_its_writes_with_its_messages() {
        let (_d, kv) = store();
        let ns = crate::kv::Namespace::new("s", "b").unwrap();
        let mut writes = WriteSet::default();
        writes.set(&ns, "k", b"v".to_vec()).unwrap();
        kv.commit_request(Some(&writes), &[message("a", &["g"], 3_000)])
            .unwrap();
        assert_eq!(kv.get(&ns, "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(kv.claim("g", 2_999, 1, 100).unwrap().is_empty());
        assert_eq!(kv.claim("g", 3_000, 1, 100).unwrap().len(), 1);
        let big = Outgoing {
            body: vec![0; MAX_MESSAGE_BYTES + 1],
            ..message("b", &["g"], 0)
        };
        assert!(kv.commit_request(None, &[big]).is_err());
    }
}
