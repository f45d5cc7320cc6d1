//! Release state set through the admin API: per-service weight overrides,
//! stickiness, the stable version and a history of changes, persisted in the
//! state directory and restored at start.
//!
//! Every rule that changes a service's release — set weights, promote,
//! roll back, pause, a newcomer taking over, a removed version, a canary
//! step — is a pure function here, over the service's [`ServiceRelease`] and
//! what is loaded ([`Loaded`]), returning a [`ReleaseError`] that knows its
//! HTTP status. The control plane (`crate::control`) is the only caller.
//!
//! Invariant: the file is replaced atomically (write a temp file, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new
//! state, never a mix.

use crate::spec::{compare_versions, Sticky, Weights};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the release state inside the state directory.
pub const FILE: &str = "release.json";
/// History entries kept per service.
pub const MAX_HISTORY: usize = 100;

/// The release state of every service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReleaseState {
    /// Changes persisted so far: on a cluster, the release document's
    /// epoch (a write based on an older one is refused).
    #[serde(default)]
    pub epoch: u64,
    /// Per service.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRelease>,
    /// The route table last served (prefix → service): after a restart,
    /// the service that owned a contested prefix keeps it, as it would
    /// have while running.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub route_owners: BTreeMap<String, String>,
}

/// The release state of one service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceRelease {
    /// Weights set by an operator; they win over the manifest's.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, u32>>,
    /// Stickiness set by an operator (`header:NAME` / `cookie:NAME`).
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// The version a rollback during a gray release or a canary goes to: the
    /// last promoted one, or the one that served before a newcomer took over.
    #[serde(default)]
    pub stable: Option<String>,
    /// The stable version before the last promotion: where a rollback right
    /// after a promotion goes.
    #[serde(default)]
    pub previous: Option<String>,
    /// A canary in progress, if any.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// What changed, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Versions rolled back (by an operator or by canary analysis) and not
    /// given traffic since: an outside pin does not reach them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub rolled_back: std::collections::BTreeSet<String>,
}

/// A canary release in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Canary {
    /// The new version.
    pub candidate: String,
    /// The version it is compared with.
    pub stable: String,
    /// Index into the manifest's steps of the current weight.
    pub step: usize,
    /// Paused by an operator: no step is taken, no analysis done.
    #[serde(default)]
    pub paused: bool,
    /// Times the candidate was ejected during the current step; the
    /// second rolls the canary back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ejections: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Ejections of a canary's candidate within one step that roll it back.
pub const EJECTIONS_PER_STEP: u32 = 2;

/// One change of a service's release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `release`, `promote` or `rollback`.
    pub action: String,
    /// What it did, e.g. `1.0.0=90,1.1.0=10`.
    pub detail: String,
}

impl ServiceRelease {
    /// Whether nothing is on record (such an entry need not be kept).
    pub fn is_empty(&self) -> bool {
        self.weights.is_none()
            && self.sticky.is_none()
            && self.stable.is_none()
            && self.previous.is_none()
            && self.canary.is_none()
            && self.history.is_empty()
    }

    /// Appends a history entry, keeping the last [`MAX_HISTORY`].
    pub fn record(&mut self, action: &str, detail: String) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.history.push(HistoryEntry {
            at,
            action: action.to_string(),
            detail,
        });
        if self.history.len() > MAX_HISTORY {
            self.history.remove(0);
        }
    }
}

impl ReleaseState {
    /// Reads the state from `dir`; a missing file is the empty state.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&bytes, &format!("release state {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => {
                Err(e).with_context(|| format!("failed to read release state {}", path.display()))
            }
        }
    }

    /// The state encoded in `bytes`, refused (naming `origin`) when it is
    /// not JSON of this shape or its weights cannot apply.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self> {
        let state: Self = serde_json::from_slice(bytes)
            .with_context(|| format!("{origin} is corrupt; move it aside to start afresh"))?;
        // Weights that cannot apply would send the traffic somewhere
        // nobody chose: refuse them here, naming the service.
        for (service, entry) in &state.services {
            if let Some(weights) = &entry.weights {
                crate::spec::validate_weights(weights).with_context(|| {
                    format!(
                        "{origin}: the weights of `{service}` are invalid; fix them or move it aside to start afresh"
                    )
                })?;
            }
        }
        Ok(state)
    }

    /// Writes the state to `dir` atomically and durably.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let tmp: PathBuf = dir.join(format!(".{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).context("failed to encode release state")?;
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("failed to replace {}", path.display()))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// Why a release change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// No service of that name is loaded.
    #[error("no service named `{0}`")]
    UnknownService(String),
    /// The service has no loaded version of that name.
    #[error("service `{service}` has no loaded version `{version}`")]
    UnknownVersion {
        /// Service name.
        service: String,
        /// The version asked for.
        version: String,
    },
    /// Weights or stickiness that cannot apply.
    #[error("{0}")]
    Invalid(String),
    /// Nothing to roll back to.
    #[error("service `{0}` has no stable version to roll back to")]
    NoStable(String),
    /// Pause or resume without a canary.
    #[error("service `{0}` has no canary in progress")]
    NoCanary(String),
    /// The new state could not be written; the old one stays in effect.
    #[error("could not persist the release state: {0}")]
    Persist(String),
    /// On a cluster: the version is not loaded on every replica yet.
    #[error("`{service}@{version}` is not loaded on every replica yet; it can take traffic once it is (see `loaded_on` in GET /admin/services/{service})")]
    NotEverywhere {
        /// Service name.
        service: String,
        /// The version asked for.
        version: String,
    },
    /// The change was based on an older epoch than the release's own
    /// (another replica, or another operator, changed it first).
    #[error("the release changed first (it is at epoch {current}, this change was based on epoch {based_on}): read it again and retry")]
    Stale {
        /// The epoch now.
        current: u64,
        /// The epoch the change was based on.
        based_on: u64,
    },
}

impl ReleaseError {
    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ReleaseError::UnknownService(_) => http::StatusCode::NOT_FOUND,
            ReleaseError::Persist(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
            ReleaseError::Stale { .. } | ReleaseError::NotEverywhere { .. } => {
                http::StatusCode::CONFLICT
            }
            ReleaseError::UnknownVersion { .. }
            | ReleaseError::Invalid(_)
            | ReleaseError::NoStable(_)
            | ReleaseError::NoCanary(_) => http::StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// What a rule needs to know of a service: its name, its loaded versions
/// (oldest first) and the version that takes new traffic now.
#[derive(Debug, Clone, Copy)]
pub struct Loaded<'a> {
    /// Service name.
    pub service: &'a str,
    /// Loaded versions, oldest first.
    pub names: &'a [Arc<str>],
    /// The version with the largest weight.
    pub live: Option<&'a str>,
}

impl Loaded<'_> {
    fn has(&self, version: &str) -> bool {
        self.names.iter().any(|v| **v == *version)
    }

    fn require(&self, version: &str) -> Result<(), ReleaseError> {
        if self.has(version) {
            Ok(())
        } else {
            Err(ReleaseError::UnknownVersion {
                service: self.service.to_string(),
                version: version.to_string(),
            })
        }
    }
}

/// `PUT …/release`: operator weights (and optionally stickiness); ends a
/// canary. Returns the history detail.
pub fn set_weights(
    entry: &mut ServiceRelease,
    loaded: Loaded<'_>,
    weights: BTreeMap<String, u32>,
    sticky: Option<&str>,
) -> Result<String, ReleaseError> {
    let weights = Weights::new(weights).map_err(|e| ReleaseError::Invalid(e.to_string()))?;
    for version in weights.as_map().keys() {
        loaded.require(version)?;
    }
    let sticky = sticky
        .map(Sticky::parse)
        .transpose()
        .map_err(|e| ReleaseError::Invalid(e.to_string()))?;
    let detail = weights.summary();
    for (version, weight) in weights.as_map() {
        if *weight > 0 {
            entry.rolled_back.remove(version);
        }
    }
    entry.weights = Some(weights.into());
    entry.canary = None;
    if sticky.is_some() {
        entry.sticky = sticky;
    }
    entry.record("release", detail.clone());
    Ok(detail)
}

/// `POST …/promote`: `version` takes all traffic and becomes stable; the
/// stable (or live) version before it is kept for a rollback.
pub fn promote(
    entry: &mut ServiceRelease,
    loaded: Loaded<'_>,
    version: &str,
) -> Result<String, ReleaseError> {
    loaded.require(version)?;
    let before = entry.stable.clone().or(loaded.live.map(str::to_string));
    if before.as_deref() != Some(version) {
        entry.previous = before;
    }
    entry.weights = Some(Weights::all(version).into());
    entry.canary = None;
    entry.stable = Some(version.to_string());
    entry.rolled_back.remove(version);
    entry.record("promote", version.to_string());
    Ok(version.to_string())
}

/// The version a rollback goes to: right after a promotion (the stable
/// version has everything), the one before it; otherwise — a gray release,
/// a canary, a newcomer that took over — the stable version; with neither on
/// record, the highest version below the live one.
pub fn rollback_target(entry: &ServiceRelease, loaded: Loaded<'_>) -> Option<String> {
    let just_promoted = entry.stable.as_ref().is_some_and(|stable| {
        entry
            .weights
            .as_ref()
            .is_some_and(|w| w.len() == 1 && w.get(stable) == Some(&100))
    });
    let recorded = if just_promoted {
        entry.previous.clone()
    } else {
        entry.stable.clone()
    };
    recorded.filter(|v| loaded.has(v)).or_else(|| {
        let live = loaded.live?;
        loaded
            .names
            .iter()
            .rev()
            .find(|v| compare_versions(v, live).is_lt())
            .map(|v| v.to_string())
    })
}

/// `POST …/rollback`: the rollback target takes all traffic.
pub fn rollback(entry: &mut ServiceRelease, loaded: Loaded<'_>) -> Result<String, ReleaseError> {
    let target = rollback_target(entry, loaded)
        .ok_or_else(|| ReleaseError::NoStable(loaded.service.to_string()))?;
    let mut from: Vec<String> = entry
        .weights
        .iter()
        .flatten()
        .filter(|(_, w)| **w > 0)
        .map(|(v, _)| v.clone())
        .chain(loaded.live.map(str::to_string))
        .chain(entry.canary.as_ref().map(|c| c.candidate.clone()))
        .collect();
    from.retain(|v| *v != target);
    entry.rolled_back.extend(from);
    entry.weights = Some(Weights::all(&target).into());
    entry.stable = Some(target.clone());
    entry.previous = None;
    entry.canary = None;
    entry.record("rollback", target.clone());
    Ok(target)
}

/// `POST …/pause` and `…/resume`: stops or restarts a canary's steps.
pub fn set_paused(
    entry: &mut ServiceRelease,
    loaded: Loaded<'_>,
    paused: bool,
) -> Result<String, ReleaseError> {
    let Some(canary) = entry.canary.as_mut() else {
        return Err(ReleaseError::NoCanary(loaded.service.to_string()));
    };
    canary.paused = paused;
    let detail = canary.candidate.clone();
    entry.record(if paused { "pause" } else { "resume" }, detail.clone());
    Ok(detail)
}

/// A rescan made `now_live` take over from `was_live` without an operator
/// choosing it (an immediate rollout): `was_live` is the version a rollback
/// returns to. Returns whether the state changed.
pub fn on_takeover(entry: &mut ServiceRelease, was_live: &str, now_live: &str) -> bool {
    if was_live == now_live || entry.weights.is_some() || entry.canary.is_some() {
        return false;
    }
    entry.stable = Some(was_live.to_string());
    entry.record("deploy", format!("{now_live} takes over from {was_live}"));
    true
}

/// Operator weights that name versions no longer loaded: those versions
/// are dropped and the rest renormalised to 100 (largest remainder), or the
/// weights are cleared when nothing named is left (the highest version then
/// takes all). Returns whether the state changed.
pub fn prune_removed(entry: &mut ServiceRelease, loaded: Loaded<'_>) -> bool {
    // (A version removed and deployed again later starts afresh.)
    entry.rolled_back.retain(|v| loaded.has(v));
    let Some(weights) = entry.weights.as_ref() else {
        return false;
    };
    let gone: Vec<String> = weights.keys().filter(|v| !loaded.has(v)).cloned().collect();
    if gone.is_empty() {
        return false;
    }
    let kept: BTreeMap<String, u32> = weights
        .iter()
        .filter(|(v, _)| loaded.has(v))
        .map(|(v, w)| (v.clone(), *w))
        .collect();
    let total: u32 = kept.values().sum();
    let removed = gone.join(", ");
    if total == 0 {
        entry.weights = None;
        entry.record(
            "release",
            format!("weights cleared: {removed} removed; the highest version takes all"),
        );
        return true;
    }
    let next = renormalise(&kept, total);
    let detail = Weights::new(next.clone()).map_or_else(|_| String::new(), |w| w.summary());
    entry.weights = Some(next);
    entry.record("release", format!("{detail} ({removed} removed)"));
    true
}

/// `weights` scaled to sum to 100, by largest remainder.
fn renormalise(weights: &BTreeMap<String, u32>, total: u32) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    let mut remainders = Vec::new();
    for (v, w) in weights {
        let scaled = u64::from(*w) * 100;
        out.insert(v.clone(), (scaled / u64::from(total)) as u32);
        remainders.push((scaled % u64::from(total), v.clone()));
    }
    let mut short = 100 - out.values().sum::<u32>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, v) in remainders {
        if short == 0 {
            break;
        }
        if let Some(w) = out.get_mut(&v) {
            *w += 1;
            short -= 1;
        }
    }
    out
}

/// What the canary analyst decided for one canary, at the step it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryDecision {
    /// Service name.
    pub service: String,
    /// The candidate the decision is about.
    pub candidate: String,
    /// The step it was at.
    pub step: usize,
    /// What to do.
    pub verdict: CanaryVerdict,
}

/// The outcome of one analysis window.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryVerdict {
    /// Go to `share` percent (100 promotes).
    Advance {
        /// The candidate's next share.
        share: u32,
        /// The figures that justified it.
        summary: String,
    },
    /// Back to the stable version at 100%.
    Rollback {
        /// Why.
        reason: String,
    },
    /// A version of the canary is gone: it ends without a change of weights.
    End,
}

/// Applies `decision` if the canary is still where the analyst saw it (same
/// candidate, same step, not paused). Returns whether the state changed.
pub fn apply_canary(entry: &mut ServiceRelease, decision: &CanaryDecision) -> bool {
    let Some(canary) = entry.canary.clone() else {
        return false;
    };
    if canary.candidate != decision.candidate || canary.step != decision.step || canary.paused {
        return false;
    }
    match &decision.verdict {
        CanaryVerdict::End => {
            entry.canary = None;
            entry.record("canary", "ended: a version of it was removed".into());
        }
        CanaryVerdict::Rollback { reason } => {
            entry.rolled_back.insert(canary.candidate.clone());
            entry.weights = Some(Weights::all(&canary.stable).into());
            entry.canary = None;
            entry.record(
                "rollback",
                format!("{} rolled back automatically: {reason}", canary.candidate),
            );
        }
        CanaryVerdict::Advance { share, summary } => {
            entry.weights = Some(canary_weights(&canary.stable, &canary.candidate, *share));
            if *share >= 100 {
                entry.canary = None;
                entry.previous = Some(canary.stable.clone());
                entry.stable = Some(canary.candidate.clone());
                entry.record(
                    "promote",
                    format!("{} promoted after its canary ({summary})", canary.candidate),
                );
            } else {
                entry.canary = Some(Canary {
                    step: canary.step + 1,
                    ejections: 0,
                    ..canary.clone()
                });
                entry.record(
                    "canary",
                    format!("{} advances to {share}% ({summary})", canary.candidate),
                );
            }
        }
    }
    true
}

/// The request path ejected `version` (`detail` says why and for how
/// long): the history records it, and a canary whose candidate is ejected
/// a second time in one step is rolled back. Returns whether the state
/// changed (always: the history grew).
pub fn on_ejection(entry: &mut ServiceRelease, version: &str, detail: &str) -> bool {
    entry.record("eject", format!("{version} ejected {detail}"));
    let Some(canary) = entry.canary.as_mut() else {
        return true;
    };
    if canary.candidate != version {
        return true;
    }
    canary.ejections += 1;
    if canary.ejections >= EJECTIONS_PER_STEP && !canary.paused {
        let decision = CanaryDecision {
            service: String::new(),
            candidate: canary.candidate.clone(),
            step: canary.step,
            verdict: CanaryVerdict::Rollback {
                reason: format!("ejected {} times in one step", canary.ejections),
            },
        };
        apply_canary(entry, &decision);
    }
    true
}

/// Starts a canary of `candidate` beside `stable` at `first` percent.
pub fn start_canary(entry: &mut ServiceRelease, stable: &str, candidate: &str, first: u32) {
    entry.weights = Some(canary_weights(stable, candidate, first));
    entry.rolled_back.remove(candidate);
    entry.stable = Some(stable.to_string());
    entry.canary = Some(Canary {
        candidate: candidate.to_string(),
        stable: stable.to_string(),
        step: 0,
        paused: false,
        ejections: 0,
    });
    entry.record(
        "canary",
        format!("{candidate} gets {first}% beside {stable}"),
    );
}

/// `share` percent to the candidate, the rest to the stable version.
pub fn canary_weights(stable: &str, candidate: &str, share: u32) -> BTreeMap<String, u32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_ejected_twice_in_one_step_is_rolled_back() {
        let mut entry = ServiceRelease::default();
        start_canary(&mut entry, "1.0.0", "1.1.0", 5);
        // An ejection of another version is only recorded.
        assert!(on_ejection(&mut entry, "1.0.1", "for 30s: x"));
        assert_eq!(entry.canary.as_ref().unwrap().ejections, 0);
        assert!(on_ejection(
            &mut entry,
            "1.1.0",
            "for 30s (ejection 1): 5 consecutive failures"
        ));
        assert_eq!(entry.canary.as_ref().unwrap().ejections, 1);
        // A step taken in between starts the count again.
        let advance = CanaryDecision {
            service: "user".into(),
            candidate: "1.1.0".into(),
            step: 0,
            verdict: CanaryVerdict::Advance {
                share: 25,
                summary: "ok".into(),
            },
        };
        assert!(apply_canary(&mut entry, &advance));
        assert_eq!(entry.canary.as_ref().unwrap().ejections, 0);
        on_ejection(
            &mut entry,
            "1.1.0",
            "for 60s (ejection 2): its probe failed",
        );
        assert!(entry.canary.is_some(), "one ejection in this step");
        on_ejection(
            &mut entry,
            "1.1.0",
            "for 120s (ejection 3): its probe failed",
        );
        assert!(
            entry.canary.is_none(),
            "the second ejection in a step rolls back"
        );
        assert_eq!(entry.weights, Some(Weights::all("1.0.0").into()));
        assert!(entry.rolled_back.contains("1.1.0"));
        let last = entry.history.last().unwrap();
        assert_eq!(last.action, "rollback");
        assert!(
            last.detail.contains("ejected 2 times in one step"),
            "{}",
            last.detail
        );
        let ejects = entry.history.iter().filter(|h| h.action == "eject").count();
        assert_eq!(ejects, 4);
    }

    #[test]
    fn round_trips_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ReleaseState::load(dir.path()).unwrap().services.is_empty());
        let mut state = ReleaseState::default();
        let svc = state.services.entry("user".into()).or_default();
        svc.weights = Some([("1.0.0".to_string(), 100)].into());
        svc.record("promote", "1.0.0".into());
        state.save(dir.path()).unwrap();
        let back = ReleaseState::load(dir.path()).unwrap();
        assert_eq!(back.services["user"].history[0].action, "promote");
        std::fs::write(dir.path().join(FILE), b"{broken").unwrap();
        assert!(ReleaseState::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
    }

    fn names(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    fn loaded<'a>(names: &'a [Arc<str>], live: &'a str) -> Loaded<'a> {
        Loaded {
            service: "user",
            names,
            live: Some(live),
        }
    }

    fn weights(w: &[(&str, u32)]) -> BTreeMap<String, u32> {
        w.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn rollback_after_a_takeover_and_a_gray_release_goes_to_the_version_before() {
        // user@1.0.0 serves; user@1.1.0 is dropped in and takes over.
        let v = names(&["1.0.0", "1.1.0"]);
        let mut entry = ServiceRelease::default();
        assert!(on_takeover(&mut entry, "1.0.0", "1.1.0"));
        // The operator then splits 90/10: 1.0.0 is live again.
        set_weights(
            &mut entry,
            loaded(&v, "1.1.0"),
            weights(&[("1.0.0", 90), ("1.1.0", 10)]),
            None,
        )
        .unwrap();
        assert_eq!(rollback(&mut entry, loaded(&v, "1.0.0")).unwrap(), "1.0.0");
        assert_eq!(entry.weights, Some(weights(&[("1.0.0", 100)])));
    }

    #[test]
    fn rollback_right_after_a_takeover_goes_back() {
        let v = names(&["1.0.0", "1.1.0"]);
        let mut entry = ServiceRelease::default();
        on_takeover(&mut entry, "1.0.0", "1.1.0");
        assert_eq!(rollback(&mut entry, loaded(&v, "1.1.0")).unwrap(), "1.0.0");
    }

    #[test]
    fn rollback_during_a_gray_release_goes_to_the_stable_version() {
        let v = names(&["1.0.0", "1.1.0", "1.2.0"]);
        let mut entry = ServiceRelease::default();
        promote(&mut entry, loaded(&v, "1.2.0"), "1.1.0").unwrap();
        set_weights(
            &mut entry,
            loaded(&v, "1.1.0"),
            weights(&[("1.1.0", 50), ("1.2.0", 50)]),
            None,
        )
        .unwrap();
        assert_eq!(rollback(&mut entry, loaded(&v, "1.1.0")).unwrap(), "1.1.0");
    }

    #[test]
    fn rollback_right_after_a_promotion_goes_to_the_version_before_it() {
        let v = names(&["1.0.0", "1.1.0"]);
        let mut entry = ServiceRelease::default();
        promote(&mut entry, loaded(&v, "1.1.0"), "1.0.0").unwrap();
        assert_eq!(entry.previous.as_deref(), Some("1.1.0"));
        assert_eq!(rollback(&mut entry, loaded(&v, "1.0.0")).unwrap(), "1.1.0");
    }

    #[test]
    fn rollback_without_history_goes_to_the_highest_version_below_the_live_one() {
        let v = names(&["1.0.0", "1.1.0", "2.0.0"]);
        let mut entry = ServiceRelease::default();
        assert_eq!(rollback(&mut entry, loaded(&v, "2.0.0")).unwrap(), "1.1.0");
        let one = names(&["1.0.0"]);
        let mut entry = ServiceRelease::default();
        assert_eq!(
            rollback(&mut entry, loaded(&one, "1.0.0")),
            Err(ReleaseError::NoStable("user".into()))
        );
        assert_eq!(
            ReleaseError::NoStable("user".into()).status(),
            http::StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn rollback_during_a_canary_goes_to_its_stable_version() {
        let v = names(&["1.0.0", "1.1.0"]);
        let mut entry = ServiceRelease::default();
        start_canary(&mut entry, "1.0.0", "1.1.0", 5);
        assert_eq!(rollback(&mut entry, loaded(&v, "1.0.0")).unwrap(), "1.0.0");
        assert!(entry.canary.is_none());
    }

    #[test]
    fn bad_release_changes_are_typed_and_change_nothing() {
        let v = names(&["1.0.0", "1.1.0"]);
        let mut entry = ServiceRelease::default();
        let err = set_weights(
            &mut entry,
            loaded(&v, "1.1.0"),
            weights(&[("1.0.0", 90), ("1.1.0", 20)]),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ReleaseError::Invalid(ref m) if m.contains("sum to 100")));
        let err = set_weights(
            &mut entry,
            loaded(&v, "1.1.0"),
            weights(&[("1.0.0", 50), ("9.9.9", 50)]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ReleaseError::UnknownVersion {
                service: "user".into(),
                version: "9.9.9".into()
            }
        );
        assert!(promote(&mut entry, loaded(&v, "1.1.0"), "3.0.0").is_err());
        assert_eq!(
            set_paused(&mut entry, loaded(&v, "1.1.0"), true),
            Err(ReleaseError::NoCanary("user".into()))
        );
        assert!(entry.weights.is_none() && entry.history.is_empty());
        assert_eq!(
            ReleaseError::UnknownService("x".into()).status(),
            http::StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn pause_and_resume_toggle_the_canary() {
        let v = names(&["1.0.0", "1.1.0"]);
        let mut entry = ServiceRelease::default();
        start_canary(&mut entry, "1.0.0", "1.1.0", 5);
        set_paused(&mut entry, loaded(&v, "1.0.0"), true).unwrap();
        assert!(entry.canary.as_ref().unwrap().paused);
        // A paused canary takes no step.
        let step = CanaryDecision {
            service: "user".into(),
            candidate: "1.1.0".into(),
            step: 0,
            verdict: CanaryVerdict::Advance {
                share: 25,
                summary: String::new(),
            },
        };
        assert!(!apply_canary(&mut entry, &step));
        set_paused(&mut entry, loaded(&v, "1.0.0"), false).unwrap();
        assert!(apply_canary(&mut entry, &step));
        assert_eq!(entry.canary.as_ref().unwrap().step, 1);
        // A decision about a step already taken is stale.
        assert!(!apply_canary(&mut entry, &step));
    }

    #[test]
    fn a_canary_advances_then_promotes() {
        let mut entry = ServiceRelease::default();
        start_canary(&mut entry, "1.0.0", "1.1.0", 50);
        let last = CanaryDecision {
            service: "user".into(),
            candidate: "1.1.0".into(),
            step: 0,
            verdict: CanaryVerdict::Advance {
                share: 100,
                summary: "ok".into(),
            },
        };
        assert!(apply_canary(&mut entry, &last));
        assert_eq!(entry.stable.as_deref(), Some("1.1.0"));
        assert_eq!(entry.previous.as_deref(), Some("1.0.0"));
        assert_eq!(entry.weights, Some(weights(&[("1.1.0", 100)])));
    }

    #[test]
    fn removing_a_weighted_version_renormalises_the_rest() {
        let v = names(&["1.0.0", "1.2.0"]);
        let mut entry = ServiceRelease {
            weights: Some(weights(&[("1.0.0", 30), ("1.1.0", 40), ("1.2.0", 30)])),
            ..Default::default()
        };
        assert!(prune_removed(&mut entry, loaded(&v, "1.0.0")));
        assert_eq!(
            entry.weights,
            Some(weights(&[("1.0.0", 50), ("1.2.0", 50)]))
        );
        let mut entry = ServiceRelease {
            weights: Some(weights(&[("1.0.0", 1), ("1.1.0", 97), ("1.2.0", 2)])),
            ..Default::default()
        };
        assert!(prune_removed(&mut entry, loaded(&v, "1.0.0")));
        let w = entry.weights.clone().unwrap();
        assert_eq!(w.values().sum::<u32>(), 100, "{w:?}");
        assert_eq!(w, weights(&[("1.0.0", 33), ("1.2.0", 67)]));
        // Nothing named is left: the weights go, the highest version serves.
        let mut entry = ServiceRelease {
            weights: Some(weights(&[("1.1.0", 100)])),
            ..Default::default()
        };
        assert!(prune_removed(&mut entry, loaded(&v, "1.2.0")));
        assert!(entry.weights.is_none());
        assert!(!prune_removed(&mut entry, loaded(&v, "1.2.0")));
    }
}
