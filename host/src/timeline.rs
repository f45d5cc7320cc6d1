//! The last minutes of each version's traffic, for the dashboard's charts:
//! every [`STEP`] the sampler adds one point per loaded version — requests
//! per second, share of 5xx answers, p50 and p99 — taken from the
//! difference of two snapshots of its lock-free counters.
//!
//! Invariant: at most [`POINTS`] points per version, oldest dropped first;
//! a version no longer loaded is forgotten at the next sample. The request
//! path never comes here: it only bumps the counters the sampler reads.

use crate::metrics::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Time between two points.
pub const STEP: Duration = Duration::from_secs(2);
/// Points kept per version: five minutes.
pub const POINTS: usize = 150;

/// One version over one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// End of the step, ms since the Unix epoch.
    pub at_ms: u64,
    /// Requests finished in the step.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Share of the step's requests answered with a 5xx, 0 to 1.
    pub error_rate: f64,
    /// Median latency of the step's requests, ms (0 with none).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// The points of one version, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesView {
    /// Version name.
    pub version: String,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// `GET /admin/services/NAME/timeline`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineView {
    /// Service name.
    pub service: String,
    /// Seconds between points.
    pub step_secs: u64,
    /// One series per loaded version, by version name.
    pub versions: Vec<SeriesView>,
}

struct Series {
    last: Snapshot,
    last_at_ms: u64,
    points: VecDeque<Point>,
}

/// Every version's recent points.
#[derive(Default)]
pub struct Timeline {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

impl Timeline {
    /// Adds a point for each `(service, version, counters now)`, at
    /// `at_ms`; forgets versions not listed.
    pub fn sample<'a>(
        &self,
        at_ms: u64,
        versions: impl IntoIterator<Item = (&'a str, &'a str, Snapshot)>,
    ) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let mut seen = Vec::new();
        for (service, version, now) in versions {
            let key = (service.to_string(), version.to_string());
            seen.push(key.clone());
            let Some(s) = series.get_mut(&key) else {
                // The first sight of a version is its baseline.
                series.insert(
                    key,
                    Series {
                        last: now,
                        last_at_ms: at_ms,
                        points: VecDeque::with_capacity(POINTS),
                    },
                );
                continue;
            };
            let (requests, errors) = now.delta(&s.last);
            let secs = at_ms.saturating_sub(s.last_at_ms) as f64 / 1e3;
            let point = Point {
                at_ms,
                requests,
                rps: if secs > 0.0 {
                    requests as f64 / secs
                } else {
                    0.0
                },
                error_rate: if requests > 0 {
                    errors as f64 / requests as f64
                } else {
                    0.0
                },
                p50_ms: now.percentile_since(&s.last, 0.50),
                p99_ms: now.percentile_since(&s.last, 0.99),
            };
            if s.points.len() == POINTS {
                s.points.pop_front();
            }
            s.points.push_back(point);
            s.last = now;
            s.last_at_ms = at_ms;
        }
        series.retain(|key, _| seen.contains(key));
    }

    /// The series of `service`'s versions.
    pub fn view(&self, service: &str) -> TimelineView {
        let versions = match self.series.lock() {
            Ok(series) => series
                .iter()
                .filter(|((s, _), _)| s == service)
                .map(|((_, v), s)| SeriesView {
                    version: v.clone(),
                    points: s.points.iter().copied().collect(),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        TimelineView {
            service: service.to_string(),
            step_secs: STEP.as_secs(),
            versions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::VersionMetrics;

    #[test]
    fn a_point_is_the_difference_of_two_samples() {
        let m = VersionMetrics::default();
        let t = Timeline::default();
        for _ in 0..10 {
            m.start().finish(200, false, Duration::from_micros(300));
        }
        t.sample(1_000, [("user", "1.0.0", m.snapshot())]);
        assert!(
            t.view("user").versions[0].points.is_empty(),
            "a baseline only"
        );
        for _ in 0..3 {
            m.start().finish(200, false, Duration::from_micros(300));
        }
        m.start().finish(500, true, Duration::from_millis(40));
        t.sample(3_000, [("user", "1.0.0", m.snapshot())]);
        let view = t.view("user");
        let p = view.versions[0].points[0];
        assert_eq!((p.at_ms, p.requests), (3_000, 4));
        assert_eq!(p.rps, 2.0);
        assert_eq!(p.error_rate, 0.25);
        assert_eq!((p.p50_ms, p.p99_ms), (0.5, 50.0));
        assert!(t.view("order").versions.is_empty());
    }

    #[test]
    fn old_points_and_unloaded_versions_go() {
        let m = VersionMetrics::default();
        let t = Timeline::default();
        for i in 0..=(POINTS as u64 + 5) {
            t.sample(
                i * 2_000,
                [
                    ("user", "1.0.0", m.snapshot()),
                    ("user", "1.1.0", m.snapshot()),
                ],
            );
        }
        let view = t.view("user");
        assert_eq!(view.versions.len(), 2);
        assert_eq!(view.versions[0].points.len(), POINTS);
        assert_eq!(
            view.versions[0].points.last().map(|p| p.at_ms),
            Some((POINTS as u64 + 5) * 2_000)
        );
        t.sample(1_000_000, [("user", "1.1.0", m.snapshot())]);
        let view = t.view("user");
        assert_eq!(view.versions.len(), 1);
        assert_eq!(view.versions[0].version, "1.1.0");
    }
}
