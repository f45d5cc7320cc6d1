//! Plugin file names: `NAME@VERSION.wasm` is service NAME at VERSION; a bare
//! `NAME.wasm` is a version named by its content hash.
//!
//! Names are checked here so that every later stage can trust them: a service
//! name is lowercase ASCII letters, digits and `-` (it appears in URLs, log
//! lines and key-value namespaces); a version is letters, digits, `.`, `-`, `+`
//! and `_`.

pub use crate::spec::{validate_service_name, validate_version};
use anyhow::{bail, Result};
use std::path::Path;

/// The service name and (optional) version that a file name declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginName {
    /// Service name, e.g. `user`.
    pub service: String,
    /// Declared version, e.g. `1.0.0`; `None` for a bare `NAME.wasm`.
    pub version: Option<String>,
}

impl PluginName {
    /// Parses the file name of `path` (which must end in `.wasm`).
    pub fn from_path(path: &Path) -> Result<Self> {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        Self::parse(file)
    }

    /// Parses a file name such as `user@1.0.0.wasm` or `user.wasm`.
    pub fn parse(file: &str) -> Result<Self> {
        let Some(stem) = file.strip_suffix(".wasm") else {
            bail!("`{file}` is not a `.wasm` file");
        };
        let (service, version) = match stem.split_once('@') {
            Some((s, v)) => (s, Some(v)),
            None => (stem, None),
        };
        validate_service_name(service)
            .map_err(|e| anyhow::anyhow!("invalid plugin file name `{file}`: {e}"))?;
        if let Some(v) = version {
            validate_version(v)
                .map_err(|e| anyhow::anyhow!("invalid plugin file name `{file}`: {e}"))?;
        }
        Ok(Self {
            service: service.to_string(),
            version: version.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_version() {
        let p = PluginName::parse("user@1.0.0.wasm").unwrap();
        assert_eq!(p.service, "user");
        assert_eq!(p.version.as_deref(), Some("1.0.0"));
        let p = PluginName::parse("order-history@2.0.0-rc.1+build_7.wasm").unwrap();
        assert_eq!(p.service, "order-history");
        assert_eq!(p.version.as_deref(), Some("2.0.0-rc.1+build_7"));
    }

    #[test]
    fn bare_name_has_no_version() {
        let p = PluginName::parse("user.wasm").unwrap();
        assert_eq!(
            p,
            PluginName {
                service: "user".into(),
                version: None
            }
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "User.wasm",
            "@1.wasm",
            "user@.wasm",
            "us er.wasm",
            "1user.wasm",
            "user@1/2.wasm",
            "user.toml",
        ] {
            assert!(PluginName::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    mod fuzz {
        //! `PROPTEST_CASES=100000 cargo test -p wasmhost --lib fuzz` for a longer run.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_file_name_parses_or_is_refused(name in ".{0,80}") {
                let _ = PluginName::parse(&name);
            }

            #[test]
            fn valid_names_round_trip(service in "[a-z][a-z0-9-]{0,30}", version in "[A-Za-z0-9._+-]{1,30}") {
                let parsed = PluginName::parse(&format!("{service}@{version}.wasm")).unwrap();
                prop_assert_eq!(parsed.service, service);
                prop_assert_eq!(parsed.version, Some(version));
            }
        }
    }
}
