//! `wasmhost new`: a ready service from a template, in Rust, Python or
//! JavaScript.
//!
//! Invariant: `new` never overwrites anything. It writes the service's
//! folder (source, build file, the WIT it needs, `test.sh`) and its manifest
//! `NAME.toml` only where neither exists, and the guest SDK (`sdk/`, for
//! Rust) only where it is missing, so an edited service or SDK is never
//! replaced. Every template and the WIT come from the binary itself: what
//! `new` writes is the contract this host serves.

use super::sources::Lang;
use crate::plugin::validate_service_name;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The placeholder each template file holds for the service's name.
const NAME: &str = "{{name}}";

/// A template file: its path under the service folder and its text.
type File = (&'static str, &'static str);

const RUST: &[File] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    ("test.sh", include_str!("../../templates/test.sh")),
];

const PYTHON: &[File] = &[
    (
        "pyproject.toml",
        include_str!("../../templates/python/pyproject.toml"),
    ),
    ("app.py", include_str!("../../templates/python/app.py")),
    ("test.sh", include_str!("../../templates/test.sh")),
];

const JS: &[File] = &[
    (
        "package.json",
        include_str!("../../templates/js/package.json"),
    ),
    ("build.mjs", include_str!("../../templates/js/build.mjs")),
    ("app.js", include_str!("../../templates/js/app.js")),
    ("test.sh", include_str!("../../templates/test.sh")),
];

/// The contract, 0.2.0, with its dependencies: `wit/` of a Python or
/// JavaScript service, and of the SDK.
const WIT: &[File] = &[
    ("plugin.wit", include_str!("../../../wit/v0.2/plugin.wit")),
    (
        "deps/config/store.wit",
        include_str!("../../../wit/deps/config/store.wit"),
    ),
    (
        "deps/config/world.wit",
        include_str!("../../../wit/deps/config/world.wit"),
    ),
    (
        "deps/keyvalue/atomic.wit",
        include_str!("../../../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "deps/keyvalue/store.wit",
        include_str!("../../../wit/deps/keyvalue/store.wit"),
    ),
    (
        "deps/keyvalue/world.wit",
        include_str!("../../../wit/deps/keyvalue/world.wit"),
    ),
    (
        "deps/logging/logging.wit",
        include_str!("../../../wit/deps/logging/logging.wit"),
    ),
    (
        "deps/messaging/guest.wit",
        include_str!("../../../wit/deps/messaging/guest.wit"),
    ),
    (
        "deps/messaging/messaging.wit",
        include_str!("../../../wit/deps/messaging/messaging.wit"),
    ),
    (
        "deps/messaging/producer.wit",
        include_str!("../../../wit/deps/messaging/producer.wit"),
    ),
    (
        "deps/messaging/request-reply.wit",
        include_str!("../../../wit/deps/messaging/request-reply.wit"),
    ),
    (
        "deps/messaging/types.wit",
        include_str!("../../../wit/deps/messaging/types.wit"),
    ),
];

/// The guest SDK (`plugins/sdk`), written beside a Rust service that has
/// none; its `wit/` is [`WIT`].
const SDK: &[File] = &[
    (
        "Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../../plugins/sdk/src/error.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../plugins/sdk/src/http.rs"),
    ),
    ("src/kv.rs", include_str!("../../../plugins/sdk/src/kv.rs")),
    (
        "src/log.rs",
        include_str!("../../../plugins/sdk/src/log.rs"),
    ),
    (
        "src/messages.rs",
        include_str!("../../../plugins/sdk/src/messages.rs"),
    ),
    (
        "src/services.rs",
        include_str!("../../../plugins/sdk/src/services.rs"),
    ),
];

const MANIFEST: &str = include_str!("../../templates/manifest.toml");

/// What `new` wrote.
#[derive(Debug)]
pub struct Created {
    /// The service's folder.
    pub dir: PathBuf,
    /// Its manifest, `PLUGINS/NAME.toml`.
    pub manifest: PathBuf,
    /// The SDK folder, when `new` wrote it (first Rust service).
    pub sdk: Option<PathBuf>,
}

/// Writes the service `name` in `lang` under `plugins`.
pub fn create(plugins: &Path, name: &str, lang: Lang) -> Result<Created> {
    validate_service_name(name).with_context(|| format!("`{name}` cannot be a service name"))?;
    // Folders `build` and `dev` never read as a service.
    if matches!(name, "sdk" | "target" | "node_modules") {
        bail!("`{name}` is a folder of its own under the plugins directory: pick another name");
    }
    let dir = plugins.join(name);
    let manifest = plugins.join(format!("{name}.toml"));
    for taken in [&dir, &manifest] {
        if taken.exists() {
            bail!(
                "{} already exists: pick another name, or remove it first",
                taken.display()
            );
        }
    }
    // A component of that name already served would be replaced, silently,
    // by the first build.
    if let Some(component) = component_of(plugins, name) {
        bail!(
            "{} is already in the plugins directory: service `{name}` exists, pick another name",
            component.display()
        );
    }
    let sdk_dir = plugins.join("sdk");
    if lang == Lang::Rust && sdk_dir.exists() && !sdk_dir.join("Cargo.toml").is_file() {
        bail!(
            "{} exists but is not the guest SDK: a Rust service needs the SDK there (move that folder away)",
            sdk_dir.display()
        );
    }
    std::fs::create_dir_all(plugins)
        .with_context(|| format!("cannot create {}", plugins.display()))?;
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    write_all(&dir, files, name)?;
    if lang != Lang::Rust {
        write_all(&dir.join("wit"), WIT, name)?;
    }
    let sdk = if lang == Lang::Rust && !sdk_dir.exists() {
        write_all(&sdk_dir, SDK, name)?;
        write_all(&sdk_dir.join("wit"), WIT, name)?;
        Some(sdk_dir)
    } else {
        None
    };
    write(&manifest, &MANIFEST.replace(NAME, name), false)?;
    Ok(Created { dir, manifest, sdk })
}

/// A `NAME.wasm` or `NAME@VERSION.wasm` already in `plugins`.
fn component_of(plugins: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(plugins)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            file == format!("{name}.wasm")
                || (file.starts_with(&format!("{name}@")) && file.ends_with(".wasm"))
        })
}

fn write_all(dir: &Path, files: &[File], name: &str) -> Result<()> {
    for (path, text) in files {
        write(
            &dir.join(path),
            &text.replace(NAME, name),
            path.ends_with(".sh"),
        )?;
    }
    Ok(())
}

fn write(path: &Path, text: &str, executable: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_service_and_never_overwrites_one() {
        let plugins = tempfile::tempdir().unwrap();
        let created = create(plugins.path(), "hello", Lang::Python).unwrap();
        let app = std::fs::read_to_string(created.dir.join("app.py")).unwrap();
        assert!(app.contains("[\"hello\"]") && !app.contains(NAME), "{app}");
        assert!(created.dir.join("wit/deps/keyvalue/store.wit").is_file());
        assert!(created.sdk.is_none());
        let manifest = std::fs::read_to_string(&created.manifest).unwrap();
        assert!(manifest.contains("routes = [\"/hello\"]"), "{manifest}");
        crate::manifest::Manifest::parse(&manifest, "hello.toml").unwrap();

        let again = create(plugins.path(), "hello", Lang::Rust).unwrap_err();
        assert!(format!("{again:#}").contains("already exists"), "{again:#}");
        assert!(create(plugins.path(), "Hello", Lang::Js).is_err());
        assert!(create(plugins.path(), "sdk", Lang::Python).is_err());

        let rust = create(plugins.path(), "greeter", Lang::Rust).unwrap();
        assert_eq!(
            rust.sdk.as_deref(),
            Some(plugins.path().join("sdk").as_path())
        );
        assert!(plugins.path().join("sdk/wit/plugin.wit").is_file());
        let second = create(plugins.path(), "third", Lang::Rust).unwrap();
        assert!(second.sdk.is_none(), "the SDK is written once");

        std::fs::write(plugins.path().join("served@1.0.0.wasm"), b"").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(elsewhere.path().join("sdk")).unwrap();
        let not_sdk = create(elsewhere.path(), "rusty", Lang::Rust).unwrap_err();
        assert!(
            format!("{not_sdk:#}").contains("not the guest SDK"),
            "{not_sdk:#}"
        );
        assert!(
            !elsewhere.path().join("rusty").exists(),
            "nothing half-written"
        );

        let served = create(plugins.path(), "served", Lang::Js).unwrap_err();
        assert!(
            format!("{served:#}").contains("served@1.0.0.wasm is already"),
            "{served:#}"
        );
    }
}
