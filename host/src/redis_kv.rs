//! The services' key-value data on Redis (`--cluster redis://…`), shared by
//! every replica that names the same server.
//!
//! Invariant: a service's key lives at `wh:{SERVICE}:BUCKET:KEY` — the
//! service in a hash tag (a Redis Cluster keeps one service on one slot),
//! the bucket with `%` and `:` percent-encoded so that no bucket's keys read
//! as another bucket's — and the service is the one the host runs, never a
//! name the guest chose. Each operation is one Redis command: an increment
//! is `INCRBY`, so it is exact across replicas; the held writes of a
//! `transactional-kv` request are one `MULTI`/`EXEC`; listing walks `SCAN`
//! (never `KEYS`, which stops the server). A server that goes away fails the
//! operations with an error naming it — logged once per episode — while the
//! connection manager reconnects in the background; nothing waits longer
//! than [`RESPONSE_TIMEOUT`].

use crate::kv::{Entry, Namespace, WriteSet, MAX_VALUE_LEN};
use anyhow::{bail, Context, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest a command may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a (re)connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys a `SCAN` step looks at.
const SCAN_COUNT: usize = 1000;

/// A connection to the cluster's Redis; cheap to clone (one multiplexed
/// connection shared by every request).
#[derive(Clone)]
pub struct RedisKv {
    conn: ConnectionManager,
    client: redis::Client,
    shared: Arc<Shared>,
}

struct Shared {
    /// The server's address, without credentials (for messages).
    addr: String,
    /// Whether the last operation failed to reach the server.
    failing: AtomicBool,
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// The Redis key of `key` in bucket `bucket` of `service`.
pub fn redis_key(service: &str, bucket: &str, key: &str) -> String {
    format!("{}{key}", prefix(service, bucket))
}

/// What every key of one bucket starts with.
fn prefix(service: &str, bucket: &str) -> String {
    let bucket = bucket.replace('%', "%25").replace(':', "%3A");
    format!("wh:{{{service}}}:{bucket}:")
}

/// `text` with the characters `SCAN MATCH` treats as a pattern escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The (service, bucket, key) a Redis key of ours names, if it is one.
pub fn parse_key(full: &str) -> Option<(String, String, String)> {
    let rest = full.strip_prefix("wh:{")?;
    let (service, rest) = rest.split_once("}:")?;
    let (bucket, key) = rest.split_once(':')?;
    let bucket = bucket.replace("%3A", ":").replace("%25", "%");
    Some((service.to_string(), bucket, key.to_string()))
}

impl RedisKv {
    /// A connection to the server at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`),
    /// made in the background: [`RedisKv::ping`] says whether it answers.
    pub fn open(url: &str) -> Result<Self> {
        let shown = redacted(url);
        let client = redis::Client::open(url)
            .with_context(|| format!("`{shown}` is not a Redis URL (redis://HOST:PORT)"))?;
        let addr = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .with_context(|| format!("cannot use the Redis at {addr}"))?;
        Ok(Self {
            conn,
            client,
            shared: Arc::new(Shared {
                addr,
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// The server's address (no credentials).
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// The shared connection, for another user of the same server.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for a connection of its own (a subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Whether the last operation could not reach the server.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let answer: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        self.checked(answer).map(drop)
    }

    /// `result`, with an error that names the server, and the episode of
    /// failures logged once (and its end).
    pub fn checked<T>(&self, result: redis::RedisResult<T>) -> Result<T> {
        match result {
            Ok(v) => {
                if self.shared.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(redis = %self.shared.addr, "the shared key-value store answers again");
                }
                Ok(v)
            }
            Err(e) => {
                let unreachable = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error();
                if unreachable {
                    if !self.shared.failing.swap(true, Ordering::AcqRel) {
                        tracing::error!(
                            redis = %self.shared.addr,
                            error = %e,
                            "the shared key-value store is unreachable; key-value calls fail until it answers"
                        );
                    }
                    bail!(
                        "the shared key-value store (Redis at {}) is unreachable: {e}",
                        self.shared.addr
                    )
                }
                Err(anyhow::Error::new(e).context(format!(
                    "the Redis at {} refused the command",
                    self.shared.addr
                )))
            }
        }
    }

    fn full(ns: &Namespace, key: &str) -> Result<String> {
        ns.check_key(key)?;
        let (service, bucket) = ns.parts();
        Ok(redis_key(service, bucket, key))
    }

    /// The value of `key`, if any.
    pub async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>> {
        let full = Self::full(ns, key)?;
        let mut conn = self.conn.clone();
        self.checked(conn.get(full).await)
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, ns: &Namespace, key: &str) -> Result<bool> {
        let full = Self::full(ns, key)?;
        let mut conn = self.conn.clone();
        self.checked(conn.exists(full).await)
    }

    /// Stores `value` under `key`.
    pub async fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_LEN {
            bail!("value larger than {MAX_VALUE_LEN} bytes");
        }
        let full = Self::full(ns, key)?;
        let mut conn = self.conn.clone();
        self.checked(conn.set(full, value).await)
    }

    /// Removes `key`; removing a missing key is not an error.
    pub async fn delete(&self, ns: &Namespace, key: &str) -> Result<()> {
        let full = Self::full(ns, key)?;
        let mut conn = self.conn.clone();
        self.checked(conn.del::<_, i64>(full).await).map(drop)
    }

    /// Adds `delta` to the decimal number under `key` (0 when absent) with
    /// `INCRBY`, and returns the new value.
    pub async fn increment(&self, ns: &Namespace, key: &str, delta: u64) -> Result<u64> {
        let full = Self::full(ns, key)?;
        let delta = i64::try_from(delta).context("increment larger than 2^63 - 1")?;
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> = conn.incr(full, delta).await;
        if let Err(e) = &result {
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) {
                bail!("value of `{key}` is not a decimal u64 (or the sum overflows)");
            }
        }
        let next = self.checked(result)?;
        u64::try_from(next).with_context(|| format!("value of `{key}` is negative"))
    }

    /// One `SCAN` page of the keys of `ns`, from `cursor` (`None`: the
    /// start); the returned cursor is `None` once the walk is over. A page
    /// holds at least one key unless the walk is over; a key can (rarely)
    /// appear on two pages, as `SCAN` promises no more.
    pub async fn list_keys(
        &self,
        ns: &Namespace,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>)> {
        let (service, bucket) = ns.parts();
        let prefix = prefix(service, bucket);
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut conn = self.conn.clone();
        let mut at = cursor.unwrap_or(0);
        loop {
            let step: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(at)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await;
            let (next, found) = self.checked(step)?;
            let mut keys: Vec<String> = found
                .into_iter()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
                .collect();
            keys.sort();
            keys.dedup();
            if next == 0 {
                return Ok((keys, None));
            }
            if !keys.is_empty() {
                return Ok((keys, Some(next)));
            }
            at = next;
        }
    }

    /// Every key of `ns`, in key order.
    pub async fn all_keys(&self, ns: &Namespace) -> Result<Vec<String>> {
        let mut all = std::collections::BTreeSet::new();
        let mut cursor = None;
        loop {
            let (keys, next) = self.list_keys(ns, cursor).await?;
            all.extend(keys);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(all.into_iter().collect()),
            }
        }
    }

    /// Writes every entry of `set` in one `MULTI`/`EXEC`.
    pub async fn commit(&self, set: &WriteSet) -> Result<()> {
        if set.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (service, bucket, key, value) in set.entries() {
            let full = redis_key(service, bucket, key);
            match value {
                Some(v) => pipe.set(full, v).ignore(),
                None => pipe.del(full).ignore(),
            };
        }
        let mut conn = self.conn.clone();
        self.checked(pipe.query_async::<()>(&mut conn).await)
    }

    /// Every entry of every service (for `wasmhost kv export`), a `SCAN`
    /// page at a time, handed to `each`.
    pub async fn export(&self, mut each: impl FnMut(Entry) -> Result<()>) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut at = 0u64;
        let mut count = 0;
        loop {
            let step: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(at)
                .arg("MATCH")
                .arg("wh:{*}:*")
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await;
            let (next, keys) = self.checked(step)?;
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| parse_key(k).is_some())
                .collect();
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    self.checked(redis::cmd("MGET").arg(&keys).query_async(&mut conn).await)?;
                for (full, value) in keys.iter().zip(values) {
                    let (Some((service, bucket, key)), Some(value)) = (parse_key(full), value)
                    else {
                        continue;
                    };
                    each(Entry {
                        service,
                        bucket,
                        key,
                        value,
                    })?;
                    count += 1;
                }
            }
            if next == 0 {
                return Ok(count);
            }
            at = next;
        }
    }

    /// Stores `entries` (for `wasmhost kv import`), in pipelines of 500.
    pub async fn import(&self, entries: &[Entry]) -> Result<()> {
        let mut conn = self.conn.clone();
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for e in chunk {
                Namespace::new(&e.service, &e.bucket)?.check_key(&e.key)?;
                pipe.set(redis_key(&e.service, &e.bucket, &e.key), &e.value)
                    .ignore();
            }
            self.checked(pipe.query_async::<()>(&mut conn).await)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_service_and_bucket_without_overlap() {
        assert_eq!(redis_key("user", "users", "42"), "wh:{user}:users:42");
        // A bucket with a colon cannot read as another bucket's key.
        let tricky = redis_key("user", "a:b", "c");
        assert_ne!(tricky, redis_key("user", "a", "b:c"));
        assert_eq!(
            parse_key(&tricky),
            Some(("user".into(), "a:b".into(), "c".into()))
        );
        assert_eq!(
            parse_key(&redis_key("user", "100%", "k:1")),
            Some(("user".into(), "100%".into(), "k:1".into()))
        );
        assert_eq!(parse_key("other:thing"), None);
        assert_eq!(glob_escape("wh:{u}:a*b?[c]:"), "wh:{u}:a\\*b\\?\\[c\\]:");
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(RedisKv::open("http://nope").is_err());
    }
}
