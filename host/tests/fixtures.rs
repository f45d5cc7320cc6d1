//! Every guest component the build script discovers is exercised by a
//! test (the `assert_test_exists` check of wasmtime's test-programs): a new
//! fixture under `plugins/` fails here until a test uses it.
#![allow(clippy::unwrap_used)]

use wasmhost_test_support::COMPONENTS;

#[test]
fn every_component_has_a_test() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let sources: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("fixtures.rs"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    // The example services reach every test that starts from
    // `Plugins::examples()`, which `services.rs` and `polyglot.rs` drive.
    let support = include_str!("../test-support/src/lib.rs");
    let examples = support
        .split_once("pub fn examples() -> Self {")
        .and_then(|(_, rest)| rest.split_once("\n    }\n"))
        .map(|(body, _)| body.to_string())
        .unwrap();
    let mut sources = sources;
    sources.push(("Plugins::examples".into(), examples));
    let used = |constant: &str| {
        sources.iter().any(|(_, text)| {
            text.match_indices(constant).any(|(at, _)| {
                let before = text[..at].chars().last();
                let after = text[at + constant.len()..].chars().next();
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !ident(before) && !ident(after)
            })
        })
    };
    let untested: Vec<_> = COMPONENTS.iter().filter(|c| !used(c)).collect();
    assert!(
        untested.is_empty(),
        "components with no test in host/tests: {untested:?} (use each in a test, or remove it from plugins/)"
    );
    assert!(COMPONENTS.len() >= 10, "{COMPONENTS:?}");
}
