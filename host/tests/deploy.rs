//! `deploy/k8s`: what the manifests promise the host must keep. (Their
//! shape is checked against the Kubernetes schemas by `make deploy-check`.)
#![allow(clippy::unwrap_used)]

const DEPLOYMENT: &str = include_str!("../../deploy/k8s/deployment.yaml");
const CONFIGMAP: &str = include_str!("../../deploy/k8s/configmap.yaml");

/// The value after `key: ` on the first line that has it.
fn value<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}` in the manifest"))
}

#[test]
fn every_service_manifest_in_the_configmap_loads() {
    let mut found = 0;
    let mut lines = CONFIGMAP.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_suffix(".toml: |") else {
            continue;
        };
        let mut text = String::new();
        while let Some(body) = lines.next_if(|l| l.starts_with("    ") || l.is_empty()) {
            text.push_str(body.trim_start());
            text.push('\n');
        }
        wasmhost::Manifest::parse(&text, &format!("{name}.toml"))
            .unwrap_or_else(|e| panic!("{name}.toml in the ConfigMap: {e:#}"));
        // Each is mounted beside its component.
        assert!(
            DEPLOYMENT.contains(&format!(
                "mountPath: /app/plugins/{name}.toml, subPath: {name}.toml"
            )),
            "{name}.toml is not mounted"
        );
        found += 1;
    }
    assert!(found > 0);
}

#[test]
fn the_grace_period_covers_the_drain() {
    let grace: u64 = value(DEPLOYMENT, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let delay: u64 = DEPLOYMENT
        .lines()
        .find_map(|l| l.trim().strip_prefix("- --drain-delay="))
        .and_then(|d| d.strip_suffix('s'))
        .unwrap()
        .parse()
        .unwrap();
    let drain = wasmhost::DRAIN_TIMEOUT.as_secs();
    assert!(
        grace >= delay + drain,
        "grace {grace} s < drain delay {delay} s + in-flight drain {drain} s"
    );
    for path in ["/.well-known/wasmhost/ready", "/.well-known/wasmhost/live"] {
        assert!(DEPLOYMENT.contains(path), "{path}");
    }
}
