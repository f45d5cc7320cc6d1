//! Canary releases: a newly dropped version of a service whose manifest says
//! `rollout = "canary"` takes traffic in steps; before each step its error
//! rate and p99 latency over the last window are compared with the stable
//! version's, and it advances, holds (too few requests) or is rolled back to
//! 0% by the host itself, with the reason in the release history.
//!
//! Every decision is a change of the release state made under the writer
//! lock, persisted, then swapped in atomically like any other release change.

use crate::config::{Manifest, Rollout};
use crate::dispatch::Dispatcher;
use crate::metrics::Snapshot;
use crate::registry::Registry;
use crate::rollout::{Canary, ReleaseState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Latency differences up to this many milliseconds are noise, whatever
/// their ratio.
pub const LATENCY_NOISE_MS: f64 = 5.0;

/// How often the analyst looks at running canaries.
pub const TICK: Duration = Duration::from_millis(250);

/// Starts a canary for every service whose manifest asks for one and that
/// gained a new version between `previous` and `next`. Returns whether the
/// release state changed.
pub fn on_new_versions(previous: &Registry, next: &Registry, state: &mut ReleaseState) -> bool {
    let mut changed = false;
    for service in next.services() {
        let manifest = next.manifest(&service.name).cloned().unwrap_or_default();
        if manifest.rollout != Rollout::Canary {
            continue;
        }
        let Some(old) = previous.service(&service.name) else {
            continue;
        };
        let Some(stable) = old.live().map(|v| v.version.to_string()) else {
            continue;
        };
        // The newest version that was not loaded before is the candidate.
        let Some(candidate) = service
            .names
            .iter()
            .rev()
            .find(|v| old.version(v).is_none())
            .map(|v| v.to_string())
        else {
            continue;
        };
        if crate::registry::compare_versions(&candidate, &stable).is_le() {
            continue;
        }
        let first = manifest.steps[0];
        let entry = state.services.entry(service.name.clone()).or_default();
        entry.weights = Some(weights(&stable, &candidate, first));
        entry.canary = Some(Canary {
            candidate: candidate.clone(),
            stable: stable.clone(),
            step: 0,
            paused: false,
        });
        entry.record(
            "canary",
            format!("{candidate} gets {first}% beside {stable}"),
        );
        tracing::info!(service = %service.name, version = %candidate, stable = %stable, weight = first, "canary started");
        changed = true;
    }
    changed
}

fn weights(stable: &str, candidate: &str, share: u32) -> std::collections::BTreeMap<String, u32> {
    if share >= 100 {
        [(candidate.to_string(), 100)].into()
    } else {
        [
            (stable.to_string(), 100 - share),
            (candidate.to_string(), share),
        ]
        .into()
    }
}

/// The start of the current analysis window of one canary.
struct Window {
    started: Instant,
    step: usize,
    candidate: Snapshot,
    stable: Snapshot,
}

/// Runs forever, analysing canaries every [`TICK`].
pub async fn analyst(dispatcher: Arc<Dispatcher>) {
    let mut windows: HashMap<String, Window> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        // Most of the time no canary runs: do not copy the release state then.
        if !dispatcher
            .writer()
            .await
            .services
            .values()
            .any(|s| s.canary.is_some())
        {
            windows.clear();
            continue;
        }
        let result = dispatcher
            .maybe_change_release(|registry, state| Ok(analyse(registry, state, &mut windows)))
            .await;
        if let Err(e) = result {
            tracing::error!("canary analysis could not be applied: {e}");
        }
    }
}

/// One pass over every canary; returns whether anything changed.
fn analyse(
    registry: &Registry,
    state: &mut ReleaseState,
    windows: &mut HashMap<String, Window>,
) -> bool {
    let mut changed = false;
    windows.retain(|name, _| state.services.get(name).is_some_and(|s| s.canary.is_some()));
    for (name, release) in state.services.iter_mut() {
        let Some(canary) = release.canary.clone() else {
            continue;
        };
        let (Some(service), manifest) = (
            registry.service(name),
            registry.manifest(name).cloned().unwrap_or_default(),
        ) else {
            continue;
        };
        let (Some(cand), Some(stable)) = (
            service.version(&canary.candidate),
            service.version(&canary.stable),
        ) else {
            // One side is gone: the canary cannot go on.
            release.canary = None;
            release.record("canary", "ended: a version of it was removed".into());
            changed = true;
            continue;
        };
        let now = (cand.metrics.snapshot(), stable.metrics.snapshot());
        let window = windows.entry(name.clone()).or_insert_with(|| Window {
            started: Instant::now(),
            step: canary.step,
            candidate: now.0.clone(),
            stable: now.1.clone(),
        });
        if canary.paused || window.step != canary.step {
            *window = Window {
                started: Instant::now(),
                step: canary.step,
                candidate: now.0,
                stable: now.1,
            };
            continue;
        }
        if window.started.elapsed() < Duration::from_secs(manifest.step_interval_secs) {
            continue;
        }
        let verdict = judge(&manifest, &now.0, &window.candidate, &now.1, &window.stable);
        *window = Window {
            started: Instant::now(),
            step: canary.step,
            candidate: now.0,
            stable: now.1,
        };
        match verdict {
            Verdict::Hold(reason) => {
                tracing::info!(service = %name, version = %canary.candidate, "canary holds: {reason}");
            }
            Verdict::Rollback(reason) => {
                release.weights = Some([(canary.stable.clone(), 100)].into());
                release.canary = None;
                release.record(
                    "rollback",
                    format!("{} rolled back automatically: {reason}", canary.candidate),
                );
                tracing::warn!(service = %name, version = %canary.candidate, "canary rolled back: {reason}");
                changed = true;
            }
            Verdict::Advance(summary) => {
                let step = canary.step + 1;
                let share = manifest.steps.get(step).copied().unwrap_or(100);
                release.weights = Some(weights(&canary.stable, &canary.candidate, share));
                if share >= 100 {
                    release.canary = None;
                    release.previous = Some(canary.stable.clone());
                    release.stable = Some(canary.candidate.clone());
                    release.record(
                        "promote",
                        format!("{} promoted after its canary ({summary})", canary.candidate),
                    );
                    tracing::info!(service = %name, version = %canary.candidate, "canary promoted: {summary}");
                } else {
                    release.canary = Some(Canary {
                        step,
                        ..canary.clone()
                    });
                    release.record(
                        "canary",
                        format!("{} advances to {share}% ({summary})", canary.candidate),
                    );
                    tracing::info!(service = %name, version = %canary.candidate, weight = share, "canary advances: {summary}");
                }
                changed = true;
            }
        }
    }
    changed
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
