//! The layering of `host/src` (DESIGN.md, "Layers"): every module belongs to
//! one layer and imports only from its own layer or a lower one, and no set
//! of modules imports each other in a cycle.
//!
//! The check reads the sources: every `crate::…` and `super::…` path outside
//! `#[cfg(test)]` code is an edge from the module that writes it to the
//! top-level module it names (`capabilities/*` is one module). A module that
//! is missing from [`LAYERS`] fails the check until it is given a layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `host/src` and its layer (0 = data, 4 = edges).
const LAYERS: &[(&str, u8)] = &[
    // L0 — data and pure logic
    ("spec", 0),
    ("config", 0),
    ("manifest", 0),
    ("router", 0),
    ("release", 0),
    ("release_state", 0),
    ("resilience", 0),
    ("metrics", 0),
    ("kv", 0),
    ("redis_kv", 0),
    ("store", 0),
    ("shared_release", 0),
    ("cluster_metrics", 0),
    ("messages", 0),
    ("nats_log", 0),
    ("bus", 0),
    ("oci_ref", 0),
    ("plugin", 0),
    ("files", 0),
    ("health", 0),
    ("views", 0),
    ("shutdown", 0),
    ("logbook", 0),
    ("traces", 0),
    ("timeline", 0),
    // L1 — the Wasm runtime
    ("engine", 1),
    ("function_cache", 1),
    ("cache_guard", 1),
    ("sandbox", 1),
    ("bindings", 1),
    ("capabilities", 1),
    ("instance", 1),
    ("contract", 1),
    // L2 — loaded code
    ("registry", 2),
    ("loader", 2),
    // L3 — the request path
    ("error", 3),
    ("dispatch", 3),
    ("proxy", 3),
    // L4 — the edges
    ("control", 4),
    ("canary", 4),
    ("release_follower", 4),
    ("ejections", 4),
    ("delivery", 4),
    ("watcher", 4),
    ("front", 4),
    ("server", 4),
    ("admin", 4),
    ("topics_api", 4),
    ("client", 4),
    ("kv_transfer", 4),
    ("oci_source", 4),
    ("status", 4),
    ("host", 4),
    ("authoring", 4),
    ("lib", 5),
];

/// The import graph of the crate rooted at `src`: module → modules it uses.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let module = top_module(rel);
        if module == "main" {
            continue; // the binary: it uses the library by name
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let code = without_tests(&text);
        let nested = rel.components().count() > 1;
        let entry = graph.entry(module.clone()).or_default();
        for target in crate_paths(code) {
            if target != module {
                entry.insert(target);
            }
        }
        // `super::x` from a top-level file names the crate root's `x`; from
        // a file inside a module directory it stays inside that module.
        if !nested {
            for target in super_paths(code) {
                if target != module {
                    entry.insert(target);
                }
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `capabilities/keyvalue.rs` → `capabilities`; `dispatch.rs` → `dispatch`.
fn top_module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The source before its `#[cfg(test)]` module (tests sit at the end).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Top-level modules named by `crate::a…` and `crate::{a…, b…}` paths.
fn crate_paths(code: &str) -> BTreeSet<String> {
    paths_after(code, "crate::")
}

fn super_paths(code: &str) -> BTreeSet<String> {
    paths_after(code, "super::")
}

fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `$crate::`, `my_crate::`…
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    out.extend(first_segment(item.trim()));
                }
            } else {
                out.extend(first_segment(rest));
            }
        }
    }
    out
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// Every edge that points to a higher layer, or from or to a module with no
/// layer.
fn layer_violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut out = Vec::new();
    for (from, targets) in graph {
        let Some(&lf) = layer.get(from.as_str()) else {
            out.push(format!("`{from}` has no layer: add it to LAYERS"));
            continue;
        };
        for to in targets.iter().filter(|t| graph.contains_key(*t)) {
            match layer.get(to.as_str()) {
                Some(&lt) if lt > lf => {
                    out.push(format!("`{from}` (L{lf}) imports `{to}` (L{lt})"))
                }
                Some(_) => {}
                None => out.push(format!("`{to}` has no layer: add it to LAYERS")),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn host_src_has_no_import_cycle() {
    let graph = import_graph(&src_dir());
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "host/src has import cycles (each list imports itself around): {found:#?}"
    );
}

#[test]
fn every_module_imports_only_its_layer_or_lower() {
    let graph = import_graph(&src_dir());
    let violations = layer_violations(&graph);
    assert!(
        violations.is_empty(),
        "layering broken (DESIGN.md, \"Layers\"):\n{}",
        violations.join("\n")
    );
}

/// The check itself: it finds a cycle and an upward import in a tree that
/// has them, and none in one that does not.
#[test]
fn the_check_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |file: &str, text: &str| {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write(
        "lib.rs",
        "pub mod spec;\npub mod dispatch;\npub mod capabilities;\n",
    );
    write("spec.rs", "pub struct Name;\n");
    write(
        "dispatch.rs",
        "use crate::{spec::Name, capabilities::Calls};\n",
    );
    write("capabilities/mod.rs", "use super::other::X;\npub trait Calls {}\n#[cfg(test)]\nmod tests { use crate::dispatch::X; }\n");
    let graph = import_graph(dir.path());
    assert!(cycles(&graph).is_empty(), "{graph:?}");
    assert!(layer_violations(&graph).is_empty(), "{graph:?}");

    write("capabilities/mod.rs", "use crate::dispatch::Dispatcher;\n");
    let graph = import_graph(dir.path());
    assert_eq!(
        cycles(&graph),
        vec![vec!["capabilities".to_string(), "dispatch".to_string()]]
    );
    assert_eq!(
        layer_violations(&graph),
        vec!["`capabilities` (L1) imports `dispatch` (L3)".to_string()]
    );
}
