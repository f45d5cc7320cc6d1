//! A component source's address (`--source oci://REGISTRY/REPO…`), as
//! parsed from the command line: what `oci_source` pulls from.
//!
//! Invariant: a `Source` names a registry, a repository whose last segment
//! is a valid service name, and at most one tag and one sha256 manifest
//! digest; it prints back as it was given.

use anyhow::{bail, Context as _, Result};
use std::time::Duration;

/// How often a source is looked at by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// One `--source`: a repository, read over HTTPS (`oci://`) or plain HTTP
/// (`oci+http://`, for a registry on loopback), optionally pinned to one
/// tag and a manifest digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// `HOST[:PORT]`.
    pub registry: String,
    /// `PATH/NAME`.
    pub repository: String,
    /// Only this tag, when pinned.
    pub tag: Option<String>,
    /// Only this manifest digest (`sha256:…`), when pinned.
    pub digest: Option<String>,
    /// Plain HTTP.
    pub insecure: bool,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.insecure { "oci+http" } else { "oci" };
        write!(f, "{scheme}://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Source {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (insecure, rest) = if let Some(rest) = text.strip_prefix("oci+http://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("oci://") {
            (false, rest)
        } else {
            bail!("`{text}` is not a source: expected oci://REGISTRY/REPO[:TAG][@sha256:DIGEST] (or oci+http:// for a registry without TLS)");
        };
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => {
                if !d.starts_with("sha256:") || d.len() != 71 {
                    bail!("`{text}`: the pin `{d}` is not a sha256:… manifest digest");
                }
                (r, Some(d.to_string()))
            }
            None => (rest, None),
        };
        let Some((registry, path)) = rest.split_once('/') else {
            bail!("`{text}` names no repository: expected oci://REGISTRY/REPO");
        };
        // A tag follows the last `:` after the last `/`.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let source = Source {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
            insecure,
        };
        crate::spec::ServiceName::parse(source.service()).with_context(|| {
            format!("`{text}`: the repository's last segment names the service")
        })?;
        Ok(source)
    }
}

impl Source {
    /// The service its components are versions of.
    pub fn service(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_their_pins() {
        let s: Source = "oci://ghcr.io/acme/user".parse().unwrap();
        assert_eq!(s.registry, "ghcr.io");
        assert_eq!(s.repository, "acme/user");
        assert_eq!(s.service(), "user");
        assert_eq!(s.tag, None);
        let s: Source = "oci+http://127.0.0.1:5000/user:1.2.0".parse().unwrap();
        assert!(s.insecure);
        assert_eq!(s.registry, "127.0.0.1:5000");
        assert_eq!(s.tag.as_deref(), Some("1.2.0"));
        let pin = format!("sha256:{}", "a".repeat(64));
        let s: Source = format!("oci://r.example/user:1.0.0@{pin}").parse().unwrap();
        assert_eq!(s.digest.as_deref(), Some(pin.as_str()));
        assert_eq!(s.to_string(), format!("oci://r.example/user:1.0.0@{pin}"));
        for bad in [
            "ghcr.io/user",
            "oci://ghcr.io",
            "oci://r/user@md5:00",
            "oci://r/Bad_Name",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
    }
}
