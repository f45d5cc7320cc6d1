//! Release state set through the admin API: per-service weight overrides,
//! stickiness, the stable version and a history of changes, persisted in the
//! state directory and restored at start.
//!
//! Invariant: the file is replaced atomically (write a temp file, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new
//! state, never a mix.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the release state inside the state directory.
pub const FILE: &str = "release.json";
/// History entries kept per service.
pub const MAX_HISTORY: usize = 100;

/// The release state of every service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReleaseState {
    /// Per service.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRelease>,
}

/// The release state of one service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceRelease {
    /// Weights set by an operator; they win over the manifest's.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, u32>>,
    /// Stickiness set by an operator (`header:NAME` / `cookie:NAME`).
    #[serde(default)]
    pub sticky: Option<String>,
    /// The last promoted version: where a rollback during a gray release goes.
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
}

/// One change of a service's release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `release`, `promote` or `rollback`.
    pub action: String,
    /// What it did, e.g. `1.0.0=90,1.1.0=10`.
    pub detail: String,
}

impl ServiceRelease {
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
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "release state {} is corrupt; move it aside to start afresh",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => {
                Err(e).with_context(|| format!("failed to read release state {}", path.display()))
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
