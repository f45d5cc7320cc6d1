//! Per-version request metrics: counts, in-flight gauge and a latency
//! histogram, all lock-free atomics updated on the request path.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (the last is +Inf).
pub const BUCKETS_US: [u64; 16] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    u64::MAX,
];

/// Metrics of one version.
#[derive(Debug, Default)]
pub struct VersionMetrics {
    requests: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    in_flight: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
}

/// A point-in-time copy of [`VersionMetrics`].
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Snapshot {
    /// Requests finished.
    pub requests: u64,
    /// Requests answered with a 5xx (traps included).
    pub errors: u64,
    /// Requests that trapped or hit a deadline.
    pub traps: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Latency percentiles in milliseconds (bucket upper bounds).
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Cumulative counts per bucket (for Prometheus).
    #[serde(skip)]
    pub cumulative: Vec<u64>,
    /// Sum of latencies in seconds.
    #[serde(skip)]
    pub sum_seconds: f64,
}

/// Marks a request in flight; records it when finished.
pub struct InFlight<'a> {
    metrics: &'a VersionMetrics,
}

impl VersionMetrics {
    /// Counts a request as started.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { metrics: self }
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut cumulative = Vec::with_capacity(counts.len());
        let mut acc = 0;
        for c in &counts {
            acc += c;
            cumulative.push(acc);
        }
        let pct = |q: f64| percentile(&cumulative, q);
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            cumulative,
        }
    }
}

impl Snapshot {
    /// The counts of several snapshots added up (the replicas of one
    /// version, whose histograms share [`BUCKETS_US`]), percentiles
    /// recomputed from the summed buckets.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Snapshot>) -> Snapshot {
        let mut total = Snapshot {
            cumulative: vec![0; BUCKETS_US.len()],
            ..Snapshot::default()
        };
        for p in parts {
            total.requests += p.requests;
            total.errors += p.errors;
            total.traps += p.traps;
            total.in_flight += p.in_flight;
            total.sum_seconds += p.sum_seconds;
            for (t, c) in total.cumulative.iter_mut().zip(&p.cumulative) {
                *t += c;
            }
        }
        total.p50_ms = percentile(&total.cumulative, 0.50);
        total.p90_ms = percentile(&total.cumulative, 0.90);
        total.p99_ms = percentile(&total.cumulative, 0.99);
        total
    }

    /// Requests and errors between `earlier` and `self`.
    pub fn delta(&self, earlier: &Snapshot) -> (u64, u64) {
        (
            self.requests.saturating_sub(earlier.requests),
            self.errors.saturating_sub(earlier.errors),
        )
    }

    /// The `q` latency percentile (ms) of the requests between `earlier` and
    /// `self`; 0 when there were none.
    pub fn percentile_since(&self, earlier: &Snapshot, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .cumulative
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(earlier.cumulative.get(i).copied().unwrap_or(0)))
            .collect();
        percentile(&counts, q)
    }
}

/// The `q` percentile, in ms, of cumulative bucket counts: the upper bound
/// of the bucket holding that rank (the last finite bound for the overflow
/// bucket); 0 with no requests.
fn percentile(cumulative: &[u64], q: f64) -> f64 {
    let total = cumulative.last().copied().unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    let rank = (q * total as f64).ceil() as u64;
    let i = cumulative
        .iter()
        .position(|c| *c >= rank)
        .unwrap_or(BUCKETS_US.len() - 1);
    BUCKETS_US[i.min(BUCKETS_US.len() - 2)] as f64 / 1000.0
}

impl InFlight<'_> {
    /// Records the outcome: `status` sent, whether the guest failed, and the latency.
    pub fn finish(self, status: u16, trapped: bool, elapsed: Duration) {
        let m = self.metrics;
        m.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            m.errors.fetch_add(1, Ordering::Relaxed);
        }
        if trapped {
            m.traps.fetch_add(1, Ordering::Relaxed);
        }
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len() - 1);
        m.buckets[i].fetch_add(1, Ordering::Relaxed);
        m.sum_us.fetch_add(us, Ordering::Relaxed);
        drop(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentiles() {
        let m = VersionMetrics::default();
        for _ in 0..98 {
            m.start().finish(200, false, Duration::from_micros(300));
        }
        m.start().finish(500, true, Duration::from_millis(40));
        let live = m.start();
        m.start().finish(503, false, Duration::from_millis(40));
        let s = m.snapshot();
        assert_eq!((s.requests, s.errors, s.traps, s.in_flight), (100, 2, 1, 1));
        assert_eq!(s.p50_ms, 0.5);
        assert_eq!(s.p99_ms, 50.0);
        drop(live);
        assert_eq!(m.snapshot().in_flight, 0);
    }
}
