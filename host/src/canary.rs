//! Canary releases: a newly dropped version of a service whose manifest says
//! `rollout = "canary"` takes traffic in steps; before each step its error
//! rate and p99 latency over the last window are compared with the stable
//! version's, and it advances, holds (too few requests) or is rolled back to
//! 0% by the host itself, with the reason in the release history.
//!
//! The analyst reads the snapshot without a lock; every decision it takes
//! is a [`Change::Canary`] for the control plane, which applies it only if
//! the canary is still at the step the analyst saw, persists it, and swaps
//! it in like any other release change.
//!
//! On a cluster (`--cluster`) one replica decides, the holder of the lease
//! in `cluster_metrics`, over every replica's metrics summed; the others
//! flush their counters and hold. Without the lease nobody decides: no
//! replica acts on its own numbers.

use crate::cluster_metrics::{self, ClusterMetrics};
use crate::control::{Change, Control};
use crate::manifest::Manifest;
use crate::metrics::Snapshot;
use crate::registry::Registry;
use crate::release_state::{CanaryDecision, CanaryVerdict, ReleaseState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Latency differences up to this many milliseconds are noise, whatever
/// their ratio.
pub const LATENCY_NOISE_MS: f64 = 5.0;

/// How often the analyst looks at running canaries.
pub const TICK: Duration = Duration::from_millis(250);

/// The start of the current analysis window of one canary.
#[derive(Clone)]
struct Window {
    started: Instant,
    step: usize,
    candidate: Snapshot,
    stable: Snapshot,
}

/// Runs forever, analysing canaries every [`TICK`]: it reads the snapshot
/// (never waiting on a writer) and hands its decisions to the control plane.
///
/// On a cluster (`cluster`) it judges the replicas' merged metrics, and
/// only while this replica holds the canary lease; without the lease (or
/// without Redis) it holds, never acting on its own replica's numbers.
pub async fn analyst(control: Arc<Control>, cluster: Option<ClusterMetrics>) {
    let mut windows: HashMap<String, Window> = HashMap::new();
    let mut lease = Lease::default();
    loop {
        tokio::time::sleep(TICK).await;
        let snapshot = control.snapshot();
        if let Some(cluster) = &cluster {
            if !lease.held(cluster).await {
                windows.clear();
                continue;
            }
        }
        if !snapshot
            .release
            .services
            .values()
            .any(|s| s.canary.is_some())
        {
            windows.clear();
            continue;
        }
        let merged = match &cluster {
            Some(cluster) => match merged_metrics(cluster, &snapshot.release).await {
                Ok(m) => Some(m),
                Err(error) => {
                    tracing::debug!(error = %format!("{error:#}"), "merged metrics unavailable: analysis holds");
                    windows.clear();
                    continue;
                }
            },
            None => None,
        };
        let metrics_of = |service: &str, version: &crate::registry::Version| match &merged {
            Some(m) => m
                .get(&(service.to_string(), version.version.to_string()))
                .cloned()
                .unwrap_or_default(),
            None => version.metrics.snapshot(),
        };
        let decisions = analyse(
            &snapshot.registry,
            &snapshot.release,
            &mut windows,
            Instant::now(),
            &metrics_of,
        );
        if decisions.is_empty() {
            continue;
        }
        for d in &decisions {
            log_decision(d);
        }
        if let Err(error) = control.apply(Change::Canary(decisions)).await {
            tracing::error!(%error, "canary analysis could not be applied");
        }
    }
}

/// Whether this replica holds the canary lease, renewed every
/// [`cluster_metrics::RENEW`]; changes are logged.
#[derive(Default)]
struct Lease {
    held: bool,
    checked: Option<Instant>,
}

impl Lease {
    async fn held(&mut self, cluster: &ClusterMetrics) -> bool {
        if self
            .checked
            .is_some_and(|at| at.elapsed() < cluster_metrics::RENEW)
        {
            return self.held;
        }
        self.checked = Some(Instant::now());
        let now = cluster.lead().await.unwrap_or(false);
        if now != self.held {
            if now {
                tracing::info!(replica = %cluster.replica(), "this replica leads canary analysis (over every replica's metrics)");
            } else {
                tracing::warn!(replica = %cluster.replica(), "this replica no longer leads canary analysis");
            }
        }
        self.held = now;
        now
    }
}

/// The merged metrics of both sides of every canary in `release`.
async fn merged_metrics(
    cluster: &ClusterMetrics,
    release: &ReleaseState,
) -> anyhow::Result<HashMap<(String, String), Snapshot>> {
    let mut merged = HashMap::new();
    for (service, entry) in &release.services {
        if let Some(canary) = &entry.canary {
            for version in [&canary.candidate, &canary.stable] {
                let m = cluster.merged(service, version).await?;
                merged.insert((service.clone(), version.clone()), m);
            }
        }
    }
    Ok(merged)
}

/// Gives the control plane what the other replicas reported loaded: a
/// version some of them lack takes no traffic here (left as it is when the
/// reports cannot be read).
pub async fn hold_for_replicas(control: &Control, cluster: &ClusterMetrics) {
    match cluster.replicas(crate::messages::now_ms()).await {
        Ok(reports) => {
            let mut others = crate::registry::Replicas::default();
            for r in reports
                .into_iter()
                .filter(|r| r.replica != cluster.replica())
            {
                let held: std::collections::BTreeSet<String> = r.held.into_iter().collect();
                others
                    .admitted
                    .extend(r.versions.iter().filter(|v| !held.contains(*v)).cloned());
                others.loaded.push(r.versions.into_iter().collect());
            }
            if let Err(error) = control.apply(Change::Replicas(others)).await {
                tracing::warn!(%error, "cannot apply the replicas' reports");
            }
        }
        Err(error) => {
            tracing::debug!(error = %format!("{error:#}"), "the replica reports could not be read")
        }
    }
}

/// Every replica's part: reports the epoch it applied and the versions it
/// has loaded every [`cluster_metrics::REPORT`], and writes its counters
/// of every version every [`cluster_metrics::FLUSH`].
pub async fn flusher(control: Arc<Control>, cluster: ClusterMetrics) {
    let mut tick = tokio::time::interval(cluster_metrics::REPORT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushed: Option<Instant> = None;
    loop {
        tick.tick().await;
        let snapshot = control.snapshot();
        let report = cluster_metrics::Report {
            replica: cluster.replica().to_string(),
            epoch: snapshot.release.epoch,
            versions: snapshot
                .registry
                .services()
                .flat_map(|s| {
                    s.versions
                        .iter()
                        .map(|v| crate::registry::version_key(&s.name, &v.version))
                })
                .collect(),
            held: snapshot
                .held
                .iter()
                .flat_map(|(s, vs)| vs.iter().map(move |v| crate::registry::version_key(s, v)))
                .collect(),
            at_ms: crate::messages::now_ms(),
        };
        if let Err(error) = cluster.report(&report).await {
            tracing::debug!(error = %format!("{error:#}"), "the replica report failed");
        }
        hold_for_replicas(&control, &cluster).await;
        if flushed.is_some_and(|at| at.elapsed() < cluster_metrics::FLUSH) {
            continue;
        }
        flushed = Some(Instant::now());
        let rows: Vec<(String, String, Snapshot)> = snapshot
            .registry
            .services()
            .flat_map(|s| {
                s.versions.iter().map(|v| {
                    (
                        s.name.to_string(),
                        v.version.to_string(),
                        v.metrics.snapshot(),
                    )
                })
            })
            .collect();
        if let Err(error) = cluster.flush(&rows).await {
            tracing::debug!(error = %format!("{error:#}"), "the metrics flush failed");
        }
    }
}

fn log_decision(d: &CanaryDecision) {
    let (service, version) = (&d.service, &d.candidate);
    match &d.verdict {
        CanaryVerdict::Advance { share, summary } if *share >= 100 => {
            tracing::info!(%service, %version, %summary, "canary promoted")
        }
        CanaryVerdict::Advance { share, summary } => {
            tracing::info!(%service, %version, weight = share, %summary, "canary advances")
        }
        CanaryVerdict::Rollback { reason } => {
            tracing::warn!(%service, %version, %reason, "canary rolled back")
        }
        CanaryVerdict::End => {
            tracing::info!(%service, %version, "canary ended: a version was removed")
        }
    }
}

/// One pass over every canary at `now`: the decisions whose window is over
/// (holds are logged, not returned). Pure but for the windows it keeps.
fn analyse(
    registry: &Registry,
    state: &ReleaseState,
    windows: &mut HashMap<String, Window>,
    now: Instant,
    metrics_of: &dyn Fn(&str, &crate::registry::Version) -> Snapshot,
) -> Vec<CanaryDecision> {
    let mut decisions = Vec::new();
    windows.retain(|name, _| state.services.get(name).is_some_and(|s| s.canary.is_some()));
    for (name, release) in &state.services {
        let Some(canary) = release.canary.clone() else {
            continue;
        };
        let Some(service) = registry.service(name) else {
            continue;
        };
        let manifest = registry.manifest(name).cloned().unwrap_or_default();
        let decide = |verdict| CanaryDecision {
            service: name.clone(),
            candidate: canary.candidate.clone(),
            step: canary.step,
            verdict,
        };
        let (Some(cand), Some(stable)) = (
            service.version(&canary.candidate),
            service.version(&canary.stable),
        ) else {
            // One side is gone: the canary cannot go on.
            decisions.push(decide(CanaryVerdict::End));
            continue;
        };
        let current = Window {
            started: now,
            step: canary.step,
            candidate: metrics_of(name, cand),
            stable: metrics_of(name, stable),
        };
        let window = windows
            .entry(name.clone())
            .or_insert_with(|| current.clone());
        if canary.paused || window.step != canary.step {
            *window = current;
            continue;
        }
        if now.duration_since(window.started) < Duration::from_secs(manifest.step_interval_secs) {
            continue;
        }
        let verdict = judge(
            &manifest,
            &current.candidate,
            &window.candidate,
            &current.stable,
            &window.stable,
        );
        *window = current;
        match verdict {
            Verdict::Hold(reason) => {
                tracing::info!(service = %name, version = %canary.candidate, %reason, "canary holds");
            }
            Verdict::Rollback(reason) => decisions.push(decide(CanaryVerdict::Rollback { reason })),
            Verdict::Advance(summary) => {
                let share = manifest.steps.get(canary.step + 1).copied().unwrap_or(100);
                decisions.push(decide(CanaryVerdict::Advance { share, summary }));
            }
        }
    }
    decisions
}

enum Verdict {
    Hold(String),
    Rollback(String),
    Advance(String),
}

/// Compares the candidate with the stable version over one window.
fn judge(
    m: &Manifest,
    cand: &Snapshot,
    cand0: &Snapshot,
    stable: &Snapshot,
    stable0: &Snapshot,
) -> Verdict {
    let (c_req, c_err) = cand.delta(cand0);
    let (s_req, s_err) = stable.delta(stable0);
    if c_req < m.min_requests {
        return Verdict::Hold(format!(
            "{c_req} requests in the window, {} needed",
            m.min_requests
        ));
    }
    let c_rate = c_err as f64 / c_req as f64;
    let s_rate = if s_req == 0 {
        0.0
    } else {
        s_err as f64 / s_req as f64
    };
    if c_rate > s_rate + m.max_error_rate {
        return Verdict::Rollback(format!(
            "error rate {:.1}% against {:.1}% for the stable version (allowed: +{:.1} points)",
            c_rate * 100.0,
            s_rate * 100.0,
            m.max_error_rate * 100.0
        ));
    }
    let (c_p99, s_p99) = (
        cand.percentile_since(cand0, 0.99),
        stable.percentile_since(stable0, 0.99),
    );
    // A few milliseconds apart, one slow request (a cold first instance, a
    // busy machine) says nothing: only a real slowdown rolls back.
    if s_req >= m.min_requests
        && c_p99 > s_p99 * m.max_p99_ratio
        && c_p99 - s_p99 > LATENCY_NOISE_MS
    {
        return Verdict::Rollback(format!(
            "p99 latency {c_p99} ms against {s_p99} ms for the stable version (allowed: {}x)",
            m.max_p99_ratio
        ));
    }
    Verdict::Advance(format!(
        "{c_req} requests, error rate {:.1}% vs {:.1}%, p99 {c_p99} ms vs {s_p99} ms",
        c_rate * 100.0,
        s_rate * 100.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::VersionMetrics;

    /// Metrics of `n` requests taking `ms` each, plus `slow` taking `slow_ms`.
    fn served(n: u64, ms: u64, slow: u64, slow_ms: u64) -> Snapshot {
        let m = VersionMetrics::default();
        for _ in 0..n {
            m.start().finish(200, false, Duration::from_millis(ms));
        }
        for _ in 0..slow {
            m.start().finish(200, false, Duration::from_millis(slow_ms));
        }
        m.snapshot()
    }

    fn verdict(cand: &Snapshot, stable: &Snapshot) -> Verdict {
        let m = Manifest::default();
        let zero = VersionMetrics::default().snapshot();
        judge(&m, cand, &zero, stable, &zero)
    }

    #[test]
    fn a_few_slow_milliseconds_are_noise_but_a_real_slowdown_rolls_back() {
        let stable = served(100, 0, 1, 1);
        // p99 of 2.5 ms against 1 ms: over the ratio, but within the noise.
        let noisy = served(95, 0, 5, 2);
        assert!(matches!(verdict(&noisy, &stable), Verdict::Advance(_)));
        // p99 of 50 ms against 1 ms: rolled back, with the reason.
        let slow = served(90, 0, 10, 40);
        match verdict(&slow, &stable) {
            Verdict::Rollback(reason) => assert!(reason.contains("p99 latency"), "{reason}"),
            _ => panic!("a 40x slowdown was not rolled back"),
        }
    }
}
