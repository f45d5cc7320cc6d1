//! The sandbox of one service: its effective limits and the capabilities
//! its manifest grants, resolved once at load.
//!
//! Everything not granted here is denied: no files, no environment, no
//! sockets, no outbound HTTP, no calls to other services. A service always
//! has its own key-value namespace, its `[config]` values and logging.

use crate::config::Limits;
use crate::manifest::{Grants, Manifest};
use crate::spec::HostPattern;
use crate::views::{DirView, GrantsView};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one service may use and how much of it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Values the service reads through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// Effective limits: the host's defaults with the manifest's overrides.
    pub limits: Limits,
    /// Granted capabilities, with the directory resolved to a host path.
    pub grants: Grants,
    /// The parsed `[grants] http` patterns.
    pub http: Arc<[HostPattern]>,
    /// The granted directory as an absolute host path.
    pub dir: Option<PathBuf>,
    /// Retries, fallback and ejection, and whether key-value writes wait
    /// for the response (`[resilience]`).
    pub resilience: crate::resilience::ResiliencePolicy,
    /// Whether the manifest subscribes to topics (the component must then
    /// export `subscriber`).
    pub subscribes: bool,
}

impl PartialEq for Sandbox {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.limits == other.limits
            && self.grants == other.grants
            && self.dir == other.dir
            && self.resilience == other.resilience
            && self.subscribes == other.subscribes
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            config: BTreeMap::new(),
            limits: Limits::default(),
            grants: Grants::default(),
            http: Arc::from(Vec::new()),
            dir: None,
            resilience: Default::default(),
            subscribes: false,
        }
    }
}

impl Sandbox {
    /// The sandbox `manifest` describes over the host's `defaults`; a granted
    /// directory is resolved against `plugins_dir` and must exist.
    pub fn resolve(
        manifest: &Manifest,
        defaults: &Limits,
        plugins_dir: &Path,
        origin: &str,
    ) -> Result<Self> {
        let limits = defaults.with_overrides(&manifest.limits, origin)?;
        let http: Vec<HostPattern> = manifest.grants.http.clone();
        let dir = match &manifest.grants.dir {
            None => None,
            Some(grant) => {
                let path = plugins_dir.join(&grant.host);
                let resolved = path.canonicalize().with_context(|| {
                    format!(
                        "invalid manifest {origin}: granted directory {} does not exist",
                        path.display()
                    )
                })?;
                if !resolved.is_dir() {
                    bail!(
                        "invalid manifest {origin}: granted directory {} is not a directory",
                        path.display()
                    );
                }
                Some(resolved)
            }
        };
        Ok(Self {
            config: manifest.config.clone(),
            limits,
            grants: manifest.grants.clone(),
            http: http.into(),
            dir,
            resilience: manifest.resilience.clone(),
            subscribes: !manifest.subscribe.is_empty(),
        })
    }

    /// Whether `service` may be called through `services.call`.
    pub fn may_call(&self, service: &str) -> bool {
        self.grants.services.iter().any(|s| s.as_str() == service)
    }

    /// The grants as the admin API shows them (environment values are not).
    pub fn grants_view(&self) -> GrantsView {
        GrantsView {
            services: self
                .grants
                .services
                .iter()
                .map(ToString::to_string)
                .collect(),
            http: self.grants.http.iter().map(ToString::to_string).collect(),
            env: self.grants.env.keys().cloned().collect(),
            dir: self.grants.dir.as_ref().map(|d| DirView {
                host: self.dir.as_ref().map(|p| p.display().to_string()),
                guest: d.guest.clone(),
                access: "read-only".into(),
            }),
            config: self.config.keys().cloned().collect(),
            keyvalue: "own namespace".into(),
            logging: true,
        }
    }
}
