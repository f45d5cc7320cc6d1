//! Service sources under the plugins directory: which folder is a service,
//! in which language, under which name and version.
//!
//! Invariant: a folder is a [`Source`] only when its build file names a
//! valid service name and version, so what it builds can always be dropped
//! in as `NAME@VERSION.wasm`; a folder that looks like a service but cannot
//! build one (a Rust crate without `crate-type = ["cdylib"]`, say) is
//! [`Skipped`] with the reason, never silently ignored.

use crate::plugin::{validate_service_name, validate_version};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The guest SDK's own crate: a library services link, not a service.
pub const SDK_CRATE: &str = "wasmhost-guest";

/// The language of a service, so how it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust: `cargo build --release --target wasm32-wasip2`.
    Rust,
    /// Python: `componentize-py`.
    Python,
    /// JavaScript: componentize-js, through the service's `npm run build`.
    Js,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        })
    }
}

/// One service's source folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The folder (holding `Cargo.toml`, `pyproject.toml` or `package.json`).
    pub dir: PathBuf,
    /// The service it builds.
    pub service: String,
    /// The version it builds.
    pub version: String,
    /// Its language.
    pub lang: Lang,
    /// For Python: the WIT folder, world and module componentize-py takes.
    pub python: PythonBuild,
}

/// What componentize-py needs besides the source (`[tool.wasmhost]` in
/// `pyproject.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonBuild {
    /// The WIT folder, relative to the source folder (default `wit`).
    pub wit: PathBuf,
    /// The world (default `service`).
    pub world: String,
    /// The module holding the exports (default `app`).
    pub module: String,
}

impl Default for PythonBuild {
    fn default() -> Self {
        Self {
            wit: PathBuf::from("wit"),
            world: "service".into(),
            module: "app".into(),
        }
    }
}

impl Source {
    /// The file the build lands in: `PLUGINS/NAME@VERSION.wasm`.
    pub fn component_file(&self, plugins: &Path) -> PathBuf {
        plugins.join(format!("{}@{}.wasm", self.service, self.version))
    }
}

impl Source {
    /// Whether `PLUGINS/NAME@VERSION.wasm` is newer than every file of the
    /// source (build output, dependencies and hidden files aside): then a
    /// build would only make it again.
    pub fn is_built(&self, plugins: &Path) -> bool {
        let Ok(built) = std::fs::metadata(self.component_file(plugins)).and_then(|m| m.modified())
        else {
            return false;
        };
        newest_change(&self.dir).is_some_and(|newest| newest <= built)
    }
}

/// The newest modification time of the files under `dir`, skipping what a
/// build writes (`target`, `node_modules`, `__pycache__`, hidden entries).
fn newest_change(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or(".");
        if name.starts_with('.') || matches!(name, "target" | "node_modules" | "__pycache__") {
            continue;
        }
        let meta = entry.metadata().ok()?;
        let time = if meta.is_dir() {
            newest_change(&entry.path())
        } else {
            meta.modified().ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// A folder that looks like a service but cannot be built as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The folder.
    pub dir: PathBuf,
    /// Why, and what to change.
    pub reason: String,
}

/// Every service source directly under `plugins`, in name order.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The folders that build a service.
    pub sources: Vec<Source>,
    /// The folders that look like one and do not.
    pub skipped: Vec<Skipped>,
}

/// Looks at each folder directly under `plugins` (hidden ones, `target` and
/// `node_modules` excepted).
pub fn discover(plugins: &Path) -> Result<Discovery> {
    // Absolute, so the tools run in a source folder find every path.
    let plugins = &plugins
        .canonicalize()
        .with_context(|| format!("plugins directory {} is not readable", plugins.display()))?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(plugins)
        .with_context(|| format!("plugins directory {} is not readable", plugins.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && name != "target" && name != "node_modules"
        })
        .collect();
    dirs.sort();
    let mut found = Discovery::default();
    for dir in dirs {
        match source_of(&dir) {
            Ok(Some(source)) => found.sources.push(source),
            Ok(None) => {}
            Err(e) => found.skipped.push(Skipped {
                dir,
                reason: format!("{e:#}"),
            }),
        }
    }
    found.sources.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(found)
}

/// The service `dir` builds: `None` when it holds no build file (or is the
/// SDK), an error saying what to fix when its build file cannot build one.
pub fn source_of(dir: &Path) -> Result<Option<Source>> {
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("{} is not readable", dir.display()))?;
    let cargo = dir.join("Cargo.toml");
    let pyproject = dir.join("pyproject.toml");
    let package = dir.join("package.json");
    let (service, version, lang, python) = if cargo.is_file() {
        match rust(&cargo)? {
            Some((s, v)) => (s, v, Lang::Rust, PythonBuild::default()),
            None => return Ok(None),
        }
    } else if pyproject.is_file() {
        let (s, v, p) = python(&pyproject)?;
        (s, v, Lang::Python, p)
    } else if package.is_file() {
        let (s, v) = js(&package)?;
        (s, v, Lang::Js, PythonBuild::default())
    } else {
        return Ok(None);
    };
    validate_service_name(&service)
        .with_context(|| format!("`{service}` cannot be a service name"))?;
    validate_version(&version).with_context(|| format!("`{version}` cannot be a version"))?;
    Ok(Some(Source {
        dir: dir.to_path_buf(),
        service,
        version,
        lang,
        python,
    }))
}

/// `[package.metadata.wasmhost]`, `[tool.wasmhost]` or `"wasmhost"`: the
/// service's name when it differs from the package's.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Meta {
    service: Option<String>,
    /// Why `wasmhost build` leaves this source alone (it is built
    /// elsewhere, say): said, not built.
    skip: Option<String>,
    wit: Option<PathBuf>,
    world: Option<String>,
    module: Option<String>,
}

fn rust(manifest: &Path) -> Result<Option<(String, String)>> {
    #[derive(Deserialize)]
    struct CargoToml {
        package: Option<Package>,
        lib: Option<Lib>,
    }
    #[derive(Deserialize)]
    struct Package {
        name: String,
        version: Option<toml::Value>,
        metadata: Option<Metadata>,
    }
    #[derive(Deserialize)]
    struct Metadata {
        wasmhost: Option<Meta>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Lib {
        crate_type: Option<Vec<String>>,
    }
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let parsed: CargoToml =
        toml::from_str(&text).with_context(|| format!("invalid {}", manifest.display()))?;
    let Some(package) = parsed.package else {
        return Ok(None); // a workspace root
    };
    if package.name == SDK_CRATE {
        return Ok(None);
    }
    let cdylib = parsed
        .lib
        .and_then(|l| l.crate_type)
        .is_some_and(|t| t.iter().any(|t| t == "cdylib"));
    if !cdylib {
        bail!(
            "Cargo.toml has no `[lib] crate-type = [\"cdylib\"]`, so cargo builds no .wasm: add it"
        );
    }
    let version = match package.version {
        Some(toml::Value::String(v)) => v,
        Some(_) => bail!("Cargo.toml's `version` must be written out (not inherited from a workspace): the component is named after it"),
        None => bail!("Cargo.toml has no `version`: the component is named after it"),
    };
    let meta = package
        .metadata
        .and_then(|m| m.wasmhost)
        .unwrap_or_default();
    if let Some(why) = meta.skip {
        bail!("skipped ([package.metadata.wasmhost] skip): {why}");
    }
    Ok(Some((meta.service.unwrap_or(package.name), version)))
}

fn python(pyproject: &Path) -> Result<(String, String, PythonBuild)> {
    #[derive(Deserialize)]
    struct Pyproject {
        project: Option<Project>,
        tool: Option<Tool>,
    }
    #[derive(Deserialize)]
    struct Project {
        name: String,
        version: Option<String>,
    }
    #[derive(Deserialize)]
    struct Tool {
        wasmhost: Option<Meta>,
    }
    let text = std::fs::read_to_string(pyproject)
        .with_context(|| format!("cannot read {}", pyproject.display()))?;
    let parsed: Pyproject =
        toml::from_str(&text).with_context(|| format!("invalid {}", pyproject.display()))?;
    let Some(project) = parsed.project else {
        bail!("pyproject.toml has no [project] table with the service's name and version");
    };
    let Some(version) = project.version else {
        bail!("pyproject.toml has no [project] version: the component is named after it");
    };
    let meta = parsed.tool.and_then(|t| t.wasmhost).unwrap_or_default();
    if let Some(why) = meta.skip {
        bail!("skipped ([tool.wasmhost] skip): {why}");
    }
    let defaults = PythonBuild::default();
    let build = PythonBuild {
        wit: meta.wit.unwrap_or(defaults.wit),
        world: meta.world.unwrap_or(defaults.world),
        module: meta.module.unwrap_or(defaults.module),
    };
    Ok((meta.service.unwrap_or(project.name), version, build))
}

fn js(package: &Path) -> Result<(String, String)> {
    #[derive(Deserialize)]
    struct PackageJson {
        name: Option<String>,
        version: Option<String>,
        #[serde(default)]
        scripts: serde_json::Map<String, serde_json::Value>,
        wasmhost: Option<Meta>,
    }
    let text = std::fs::read_to_string(package)
        .with_context(|| format!("cannot read {}", package.display()))?;
    let parsed: PackageJson =
        serde_json::from_str(&text).with_context(|| format!("invalid {}", package.display()))?;
    if !parsed.scripts.contains_key("build") {
        bail!("package.json has no `build` script (`node build.mjs`, writing the component to the path it is given)");
    }
    let Some(version) = parsed.version else {
        bail!("package.json has no `version`: the component is named after it");
    };
    let meta = parsed.wasmhost.unwrap_or_default();
    if let Some(why) = meta.skip {
        bail!("skipped (\"wasmhost\": {{\"skip\"}}): {why}");
    }
    let service = meta
        .service
        .or(parsed.name)
        .context("package.json has no `name`")?;
    Ok((service, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn finds_each_language_and_says_why_a_crate_is_skipped() {
        let plugins = tempfile::tempdir().unwrap();
        let p = plugins.path();
        write(
            &p.join("hello"),
            "Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\n[lib]\ncrate-type = [\"cdylib\"]\n",
        );
        write(
            &p.join("lib-only"),
            "Cargo.toml",
            "[package]\nname = \"lib-only\"\nversion = \"0.1.0\"\n",
        );
        write(
            &p.join("sdk"),
            "Cargo.toml",
            "[package]\nname = \"wasmhost-guest\"\nversion = \"0.2.0\"\n",
        );
        write(&p.join("inv"), "pyproject.toml", "[project]\nname = \"wasmhost-inventory\"\nversion = \"1.0.0\"\n[tool.wasmhost]\nservice = \"inventory\"\nwit = \"../../wit/v0.2\"\n");
        write(
            &p.join("cat-js"),
            "package.json",
            r#"{"name": "cat", "version": "1.0.0", "scripts": {"build": "node build.mjs"}, "wasmhost": {"service": "catalog"}}"#,
        );
        write(
            &p.join("Bad"),
            "package.json",
            r#"{"name": "Bad", "version": "1.0.0", "scripts": {"build": "x"}}"#,
        );
        write(&p.join("node_modules").join("x"), "package.json", "{}");
        let found = discover(p).unwrap();
        let names: Vec<_> = found
            .sources
            .iter()
            .map(|s| (s.service.as_str(), s.version.as_str(), s.lang))
            .collect();
        assert_eq!(
            names,
            [
                ("catalog", "1.0.0", Lang::Js),
                ("hello", "0.1.0", Lang::Rust),
                ("inventory", "1.0.0", Lang::Python)
            ]
        );
        let inventory = &found.sources[2];
        assert_eq!(inventory.python.wit, PathBuf::from("../../wit/v0.2"));
        assert_eq!(inventory.python.world, "service");
        let skipped: Vec<_> = found
            .skipped
            .iter()
            .map(|s| {
                (
                    s.dir.file_name().unwrap().to_str().unwrap(),
                    s.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(skipped[0].0, "Bad");
        assert!(
            skipped[0].1.contains("cannot be a service name"),
            "{skipped:?}"
        );
        assert_eq!(skipped[1].0, "lib-only");
        assert!(
            skipped[1].1.contains("crate-type = [\"cdylib\"]"),
            "{skipped:?}"
        );
        let hello = &found.sources[1];
        assert_eq!(hello.component_file(p), p.join("hello@0.1.0.wasm"));
        assert!(!hello.is_built(p), "never built");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(p.join("hello@0.1.0.wasm"), b"").unwrap();
        assert!(hello.is_built(p), "built after its last change");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&p.join("hello").join("src"), "lib.rs", "// edited");
        assert!(!hello.is_built(p), "a source changed since");
    }
}
