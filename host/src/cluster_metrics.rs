//! What a cluster knows of its replicas: each one's counters and latency
//! histograms per version (summed, they are what the one canary decider
//! judges), the lease that makes one replica the decider, and each one's
//! report of the release epoch it applied and the versions it has loaded.
//!
//! Invariant: a replica writes only its own field (`wh:m:{SERVICE}:VERSION`,
//! field = the replica's id, value = its cumulative counts since it
//! started), so a flush repeated or lost never counts a request twice, and
//! the sum over the fields is the version's total; the histograms share
//! [`crate::metrics::BUCKETS_US`], so they add up bucket by bucket. The
//! lease (`wh:leader:canary`) is held by at most one replica at a time: it
//! is taken only when free (`SET NX PX`) and renewed only by its holder.

use crate::metrics::Snapshot;
use crate::redis_kv::RedisKv;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often a replica writes its counters.
pub const FLUSH: Duration = Duration::from_secs(5);
/// How long the lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often the holder renews it (and the others try to take it).
pub const RENEW: Duration = Duration::from_secs(3);
const LEADER: &str = "wh:leader:canary";
/// A field not written for this long is dropped with its key's expiry.
const KEEP_SECS: i64 = 3600;

/// Takes the lease when free, renews it when held by `ARGV[1]`.
/// KEYS: lease. ARGV: replica id, lease ms. Returns 1 when held after.
const LEAD: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// How often a replica reports what it serves.
pub const REPORT: Duration = Duration::from_secs(2);
/// A replica that has not reported for this long is gone.
pub const GONE_MS: u64 = 10_000;
const REPLICAS: &str = "wh:replicas";

/// What one replica said it serves, at `at_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Its id.
    #[serde(default)]
    pub replica: String,
    /// The release epoch it applied.
    pub epoch: u64,
    /// The versions it has loaded, as `SERVICE@VERSION`.
    pub versions: Vec<String>,
    /// Of those, the ones it holds (no traffic) until every replica has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One replica's counts of one version, as written.
#[derive(Debug, Serialize, Deserialize)]
struct Counts {
    requests: u64,
    errors: u64,
    traps: u64,
    cumulative: Vec<u64>,
    sum_seconds: f64,
}

/// The merged metrics and the lease, for replica `replica`.
#[derive(Clone)]
pub struct ClusterMetrics {
    redis: RedisKv,
    replica: String,
    lead: redis::Script,
}

fn key(service: &str, version: &str) -> String {
    format!("wh:m:{{{service}}}:{version}")
}

impl ClusterMetrics {
    /// Metrics on `redis`'s server, written as this replica, whose id is
    /// `HOSTNAME` (a pod's name) with a random suffix, new at every start.
    pub fn new(redis: RedisKv) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_string());
        Self {
            redis,
            replica: format!("{host}-{:08x}", fastrand::u32(..)),
            lead: redis::Script::new(LEAD),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Writes this replica's cumulative counts of each (service, version).
    pub async fn flush(&self, rows: &[(String, String, Snapshot)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (service, version, s) in rows {
            let counts = Counts {
                requests: s.requests,
                errors: s.errors,
                traps: s.traps,
                cumulative: s.cumulative.clone(),
                sum_seconds: s.sum_seconds,
            };
            let k = key(service, version);
            pipe.hset(&k, &self.replica, serde_json::to_string(&counts)?)
                .ignore()
                .expire(&k, KEEP_SECS)
                .ignore();
        }
        let mut conn = self.redis.connection();
        self.redis.checked(pipe.query_async::<()>(&mut conn).await)
    }

    /// The sum over every replica of `version` of `service`.
    pub async fn merged(&self, service: &str, version: &str) -> Result<Snapshot> {
        let mut conn = self.redis.connection();
        let fields: std::collections::HashMap<String, String> = self.redis.checked(
            redis::cmd("HGETALL")
                .arg(key(service, version))
                .query_async(&mut conn)
                .await,
        )?;
        let parts: Vec<Snapshot> = fields
            .values()
            .filter_map(|v| serde_json::from_str::<Counts>(v).ok())
            .map(|c| Snapshot {
                requests: c.requests,
                errors: c.errors,
                traps: c.traps,
                cumulative: c.cumulative,
                sum_seconds: c.sum_seconds,
                ..Snapshot::default()
            })
            .collect();
        Ok(Snapshot::sum(&parts))
    }

    /// Writes this replica's report.
    pub async fn report(&self, report: &Report) -> Result<()> {
        let mut conn = self.redis.connection();
        let mut pipe = redis::pipe();
        pipe.hset(REPLICAS, &self.replica, serde_json::to_string(report)?)
            .ignore();
        self.redis.checked(pipe.query_async::<()>(&mut conn).await)
    }

    /// Withdraws this replica's report (it stops).
    pub async fn leave(&self) -> Result<()> {
        let mut conn = self.redis.connection();
        self.redis.checked(
            redis::cmd("HDEL")
                .arg(REPLICAS)
                .arg(&self.replica)
                .query_async::<i64>(&mut conn)
                .await,
        )?;
        Ok(())
    }

    /// The replicas that reported within [`GONE_MS`] of `now_ms`, by id;
    /// older reports are removed.
    pub async fn replicas(&self, now_ms: u64) -> Result<Vec<Report>> {
        let mut conn = self.redis.connection();
        let all: std::collections::HashMap<String, String> = self.redis.checked(
            redis::cmd("HGETALL")
                .arg(REPLICAS)
                .query_async(&mut conn)
                .await,
        )?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<Report>(&json) {
                Ok(mut r) if now_ms.saturating_sub(r.at_ms) <= GONE_MS => {
                    r.replica = id;
                    live.push(r);
                }
                _ => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("HDEL")
                .arg(REPLICAS)
                .arg(&gone)
                .query_async(&mut conn)
                .await;
        }
        live.sort_by(|a, b| a.replica.cmp(&b.replica));
        Ok(live)
    }

    /// Takes or renews the lease; whether this replica holds it now.
    pub async fn lead(&self) -> Result<bool> {
        let mut conn = self.redis.connection();
        let mut invocation = self.lead.prepare_invoke();
        invocation
            .key(LEADER)
            .arg(&self.replica)
            .arg(LEASE.as_millis() as u64);
        let held: u8 = self
            .redis
            .checked(invocation.invoke_async(&mut conn).await)
            .context("the canary lease")?;
        Ok(held == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_histograms_add_up() {
        let one = Snapshot {
            requests: 10,
            errors: 1,
            cumulative: vec![10; crate::metrics::BUCKETS_US.len()],
            ..Snapshot::default()
        };
        let mut slow = vec![0; crate::metrics::BUCKETS_US.len()];
        let last = slow.len() - 1;
        slow[last - 1] = 10;
        slow[last] = 10;
        let two = Snapshot {
            requests: 10,
            errors: 3,
            cumulative: slow,
            ..Snapshot::default()
        };
        let sum = Snapshot::sum([&one, &two]);
        assert_eq!((sum.requests, sum.errors), (20, 4));
        assert_eq!(sum.cumulative[0], 10);
        assert_eq!(sum.cumulative[last], 20);
        // Half the requests were in the fastest bucket, half in the slowest.
        assert!(sum.p50_ms <= one.p50_ms.max(0.5));
        assert!(sum.p99_ms > 100.0, "{}", sum.p99_ms);
        assert_eq!(key("user", "1.1.0"), "wh:m:{user}:1.1.0");
    }
}
