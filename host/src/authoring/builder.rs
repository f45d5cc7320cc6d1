//! Building one service source into a component and dropping it into the
//! plugins directory.
//!
//! Invariant: the plugins directory only ever sees a whole component, put in
//! place by copy-then-rename (the watcher never reads half a file), and only
//! after its build succeeded: a failed build leaves the last good
//! `NAME@VERSION.wasm` untouched and serving, and says why as
//! [`Diagnostic`]s (file, line, message) beside the tool's own output.

use super::sources::{Lang, Source};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The pinned componentize-py the Python template is written for.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.0";

/// Where a build error is, as the compiler or interpreter said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, relative to the source folder where the tool says so.
    pub file: Option<String>,
    /// The line, from 1.
    pub line: Option<u32>,
    /// The column, from 1.
    pub column: Option<u32>,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(col)) => {
                write!(f, "{file}:{line}:{col}: {}", self.message)
            }
            (Some(file), Some(line), None) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None, _) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// A build that produced no component.
#[derive(Debug, thiserror::Error)]
#[error("{service} did not build: {}", summary(.diagnostics, .output))]
pub struct BuildFailed {
    /// The service.
    pub service: String,
    /// What the tool pointed at (empty when it said nothing parseable).
    pub diagnostics: Vec<Diagnostic>,
    /// What the tool said that was not shown as it came (cargo's rendered
    /// errors), to print before the diagnostics.
    pub output: String,
}

fn summary(diagnostics: &[Diagnostic], output: &str) -> String {
    match diagnostics.first() {
        Some(d) => d.to_string(),
        None => output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("the build tool failed without a message")
            .trim()
            .to_string(),
    }
}

/// Prints why a build failed; the plugins directory keeps its last good
/// build.
pub fn report_failure(service: &str, e: &anyhow::Error, took: Duration) {
    match e.downcast_ref::<BuildFailed>() {
        Some(failed) => {
            if !failed.output.trim().is_empty() {
                eprint!("{}", failed.output);
            }
            for d in &failed.diagnostics {
                eprintln!("error: {service}: {d}");
            }
            if failed.diagnostics.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!(
                "    {service} did not build ({:.1} s); the plugins directory keeps its last good build",
                took.as_secs_f64()
            );
        }
        None => eprintln!("error: {service}: {e:#}"),
    }
}

/// A component built and dropped in.
#[derive(Debug, Clone)]
pub struct Built {
    /// The file it landed in, `PLUGINS/NAME@VERSION.wasm`.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// How long the build took.
    pub took: Duration,
}

/// Builds `source` and puts the component in `plugins` as
/// `NAME@VERSION.wasm`. An `Err` that is a [`BuildFailed`] is the source's
/// fault (a compile error); any other is the machine's (a missing tool).
pub fn build(source: &Source, plugins: &Path) -> Result<Built> {
    let started = Instant::now();
    let plugins = &plugins
        .canonicalize()
        .with_context(|| format!("plugins directory {} is not readable", plugins.display()))?;
    // Built beside the source, in a hidden folder the source watcher skips,
    // never in the plugins directory, where the host would try to load it.
    let scratch_dir = source.dir.join(".wasmhost-build");
    let scratch = scratch_dir.join(format!("{}.wasm", source.service));
    if source.lang != Lang::Rust {
        std::fs::create_dir_all(&scratch_dir)
            .with_context(|| format!("cannot create {}", scratch_dir.display()))?;
    }
    // Never mistake a leftover of an earlier build for this one's output.
    let _ = std::fs::remove_file(&scratch);
    let built = match source.lang {
        Lang::Rust => rust(source)?,
        Lang::Python => {
            python(source, &scratch)?;
            scratch.clone()
        }
        Lang::Js => {
            js(source, &scratch)?;
            scratch.clone()
        }
    };
    let file = source.component_file(plugins);
    let bytes = drop_in(&built, &file)?;
    let _ = std::fs::remove_file(&scratch);
    Ok(Built {
        file,
        bytes,
        took: started.elapsed(),
    })
}

/// Copies `built` to `file` through a hidden temporary beside it, then
/// renames it into place.
fn drop_in(built: &Path, file: &Path) -> Result<u64> {
    let dir = file.parent().context("the component file has no folder")?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("component.wasm");
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = std::fs::copy(built, &tmp)
        .with_context(|| format!("cannot copy {} into {}", built.display(), dir.display()))?;
    std::fs::rename(&tmp, file)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), file.display()))?;
    Ok(bytes)
}

/// Runs `command`, showing its stderr as it comes (cargo's progress, a
/// traceback) indented under the service's line, and returns everything it
/// wrote.
fn run(mut command: Command, what: &str, install_hint: &str) -> Result<Output> {
    use std::io::BufRead;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{what} is not installed (or not on PATH): {install_hint}")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot run {what}")),
    };
    let stderr = child.stderr.take();
    let echo = std::thread::spawn(move || {
        let mut seen = Vec::new();
        if let Some(stderr) = stderr {
            for line in std::io::BufReader::new(stderr)
                .split(b'\n')
                .map_while(|l| l.ok())
            {
                eprintln!("    {}", String::from_utf8_lossy(&line).trim_end());
                seen.extend_from_slice(&line);
                seen.push(b'\n');
            }
        }
        seen
    });
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        std::io::Read::read_to_end(&mut out, &mut stdout)
            .with_context(|| format!("cannot read {what}'s output"))?;
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for {what}"))?;
    let stderr = echo.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn rust(source: &Source) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&source.dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["--message-format", "json"])
        .arg("--manifest-path")
        .arg(source.dir.join("Cargo.toml"));
    let out = run(
        command,
        "cargo",
        "install Rust with rustup (https://rustup.rs)",
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut diagnostics = Vec::new();
    let mut rendered = String::new();
    let mut artifact = None;
    for message in cargo_metadata::Message::parse_stream(stdout.as_bytes()).flatten() {
        match message {
            // The service's own warnings, shown as cargo would.
            cargo_metadata::Message::CompilerMessage(m)
                if m.message.level == cargo_metadata::diagnostic::DiagnosticLevel::Warning =>
            {
                if let Some(text) = &m.message.rendered {
                    eprint!("{text}");
                }
            }
            cargo_metadata::Message::CompilerMessage(m)
                if m.message.level == cargo_metadata::diagnostic::DiagnosticLevel::Error =>
            {
                if let Some(text) = &m.message.rendered {
                    rendered.push_str(text);
                }
                let span = m.message.spans.iter().find(|s| s.is_primary);
                diagnostics.push(Diagnostic {
                    file: span.map(|s| s.file_name.clone()),
                    line: span.map(|s| s.line_start as u32),
                    column: span.map(|s| s.column_start as u32),
                    message: m.message.message.clone(),
                });
            }
            cargo_metadata::Message::CompilerArtifact(a)
                if a.target.kind.iter().any(|k| k.to_string() == "cdylib") =>
            {
                artifact = a
                    .filenames
                    .iter()
                    .find(|f| f.extension() == Some("wasm"))
                    .map(|f| PathBuf::from(f.as_std_path()))
                    .or(artifact);
            }
            _ => {}
        }
    }
    if !out.status.success() {
        // cargo's stderr was shown as it came; its diagnostics were JSON.
        let output = rendered;
        if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            bail!("the wasm32-wasip2 Rust target is missing: rustup target add wasm32-wasip2");
        }
        return Err(BuildFailed {
            service: source.service.clone(),
            diagnostics,
            output,
        }
        .into());
    }
    artifact.with_context(|| {
        format!(
            "cargo built {} but no .wasm: is it a `cdylib`?",
            source.dir.display()
        )
    })
}

fn python(source: &Source, out_file: &Path) -> Result<()> {
    let tool =
        std::env::var_os("WASMHOST_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into());
    let mut command = Command::new(tool);
    command
        .current_dir(&source.dir)
        .arg("-q")
        .arg("-d")
        .arg(&source.python.wit)
        .args([
            "-w",
            &source.python.world,
            "componentize",
            &source.python.module,
            "-o",
        ])
        .arg(out_file);
    let hint =
        format!("pip install {COMPONENTIZE_PY} (or set WASMHOST_COMPONENTIZE_PY to its path)");
    // Its own Rust backtrace says nothing of the service's code.
    command
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    let out = run(command, "componentize-py", &hint)?;
    if out.status.success() {
        return Ok(());
    }
    Err(failed(source, &out, python_diagnostics))
}

/// The [`BuildFailed`] of a tool whose stderr was shown as it came: only
/// the diagnostics `parse` finds in its output are left to say.
fn failed(source: &Source, out: &Output, parse: fn(&str) -> Vec<Diagnostic>) -> anyhow::Error {
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    BuildFailed {
        service: source.service.clone(),
        diagnostics: parse(&output),
        output: String::new(),
    }
    .into()
}

/// Where a Python build error is: componentize-py ends with
/// `SyntaxError: MSG (app.py, line N)`; otherwise the innermost
/// `File "…", line N` of the service's own code and the error line.
fn python_diagnostics(output: &str) -> Vec<Diagnostic> {
    // componentize-py maps the source folder to `/0/`.
    let local = |file: &str| file.trim_start_matches("/0/").to_string();
    for line in output.lines().rev().map(str::trim) {
        let Some((message, place)) = line.strip_suffix(')').and_then(|l| l.rsplit_once(" ("))
        else {
            continue;
        };
        let Some((file, number)) = place.split_once(", line ") else {
            continue;
        };
        if let (true, Ok(number)) = (message.contains("Error"), number.parse()) {
            return vec![Diagnostic {
                file: Some(local(file)),
                line: Some(number),
                column: None,
                message: message.to_string(),
            }];
        }
    }
    let mut at = None;
    for line in output.lines() {
        let line = line.trim();
        let Some(rest) = line.split_once("File \"").map(|(_, r)| r) else {
            continue;
        };
        if let Some((file, tail)) = rest.split_once('"') {
            let number = tail
                .trim_start_matches(", line ")
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
            // Frames of componentize-py itself say nothing of the service.
            if !file.starts_with('<')
                && !file.contains("site-packages")
                && !file.contains("componentize-py")
            {
                at = Some((local(file), number));
            }
        }
    }
    let message = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.contains("Error"))
        .unwrap_or_default()
        .to_string();
    if message.is_empty() && at.is_none() {
        return Vec::new();
    }
    vec![Diagnostic {
        file: at.as_ref().map(|(f, _)| f.clone()),
        line: at.and_then(|(_, l)| l),
        column: None,
        message,
    }]
}

fn js(source: &Source, out_file: &Path) -> Result<()> {
    let hint = "install Node.js 18+ and npm (e.g. apt install nodejs npm)";
    if !source.dir.join("node_modules").is_dir() {
        eprintln!("    {}: npm install (first build)", source.service);
        let mut install = Command::new("npm");
        install.current_dir(&source.dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]);
        let out = run(install, "npm", hint)?;
        if !out.status.success() {
            bail!(
                "npm install failed in {}:\n{}",
                source.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut command = Command::new("npm");
    command
        .current_dir(&source.dir)
        .args(["run", "--silent", "build", "--"])
        .arg(out_file);
    let out = run(command, "npm", hint)?;
    if out.status.success() && out_file.is_file() {
        return Ok(());
    }
    if out.status.success() {
        bail!(
            "`npm run build -- {}` succeeded but wrote no component there: the build script must write the component to the path it is given",
            out_file.display()
        );
    }
    Err(failed(source, &out, js_diagnostics))
}

/// The first `file.js:LINE[:COL]` outside `node_modules` that the output
/// names, and its error line (`SyntaxError: …`).
fn js_diagnostics(output: &str) -> Vec<Diagnostic> {
    let message = output
        .lines()
        .map(str::trim)
        .find(|l| {
            l.split_once(": ")
                .is_some_and(|(kind, _)| kind.ends_with("Error") && !kind.contains(' '))
        })
        .unwrap_or_default()
        .to_string();
    let place = output.split_whitespace().find_map(|word| {
        let word = word.trim_matches(|c| c == '(' || c == ')' || c == ',');
        if word.contains("node_modules") {
            return None;
        }
        let (file, numbers) = word.split_once(".js:")?;
        let mut numbers = numbers.split(':').map(|n| n.parse::<u32>().ok());
        let line = numbers.next()??;
        let col = numbers.next().flatten();
        let file = format!("{}.js", file.rsplit('/').next().unwrap_or(file));
        Some((file, line, col))
    });
    if message.is_empty() && place.is_none() {
        return Vec::new();
    }
    vec![Diagnostic {
        file: place.as_ref().map(|(f, _, _)| f.clone()),
        line: place.as_ref().map(|(_, l, _)| *l),
        column: place.and_then(|(_, _, c)| c),
        message,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_syntax_error_points_at_its_line() {
        let out = "Traceback (most recent call last):\n  File \"/x/bin/componentize-py\", line 8, in <module>\nAssertionError:   File \"/0/app.py\", line 28\n    def greeting(name: str) -> str\n\nSyntaxError: expected ':'\n\nCaused by:\n    SyntaxError: expected ':' (app.py, line 28)\n";
        let d = python_diagnostics(out);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].to_string(), "app.py:28: SyntaxError: expected ':'");
    }

    #[test]
    fn a_python_traceback_points_at_the_service_line() {
        let out = r#"Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/componentize_py/x.py", line 3, in <module>
  File "/tmp/p/hello/app.py", line 12
    return Response(200, [], b"x"
                   ^
SyntaxError: '(' was never closed
"#;
        let d = python_diagnostics(out);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].file.as_deref(), Some("/tmp/p/hello/app.py"));
        assert_eq!(d[0].line, Some(12));
        assert_eq!(d[0].message, "SyntaxError: '(' was never closed");
    }

    #[test]
    fn a_js_error_points_at_the_service_line() {
        // What `node --check` says (the template's build.mjs runs it first).
        let out = "/tmp/pj/hello/app.js:24\n    return `hello`;)\n                   ^\n\nSyntaxError: Unexpected token ')'\n    at wrapSafe (node:internal/modules/cjs/loader:1469:18)\n";
        let d = js_diagnostics(out);
        assert_eq!(
            d[0].to_string(),
            "app.js:24: SyntaxError: Unexpected token ')'"
        );
        let runtime = "file:///x/node_modules/@bytecodealliance/componentize-js/src/componentize.js:639\nError: boom\n    at async file:///x/hello/app.js:7:12\n";
        let d = js_diagnostics(runtime);
        assert_eq!(d[0].to_string(), "app.js:7:12: Error: boom");
    }
}
